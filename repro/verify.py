"""``repro verify``: build a recipe twice, independently, and compare the results.

The two builds share nothing BuildKit could reuse between them:
- the second build runs with no cache. With ``cache=True`` (the default) the first
  is the image ``repro build`` wrote from the same inputs when that is still there
  (repro.inputs: taken, not built again; on one builder, without secrets or
  ``raw``), else it may come from BuildKit's cache: either way it is the image
  ``repro build`` made, and the second, built from scratch, checks that it
  reproduces. ``cache=False`` (``--no-cache``) builds both from scratch;
- each gets its own copy of the recipe directory, at different paths (so the
  session's shared key, which BuildKit keys its context cache on, differs too);
- the second build gets its own sandbox hostname (build arg
  ``BUILDKIT_SANDBOX_HOSTNAME``), and so does the first when it may not use the
  cache (one that may keeps BuildKit's default, as ``repro build`` does).
  This matters most: BuildKit merges identical vertices of concurrent solves even
  with no-cache, so two concurrent builds of a RUN that writes random bytes would
  otherwise come out byte-identical. A different hostname changes every ExecOp's
  digest, so no step of one build can be shared with the other;
- the second build starts `stagger` seconds after the first build's first RUN step
  has started, so a clock read during the build differs between the two (a time
  gap from thread start alone is not enough: BuildKit lets a build that started
  later catch up, e.g. on a shared image resolve). When that step came from the
  cache, the second build starts once the first one's steps are all done (it is
  exporting) instead: the first build's steps ran at an earlier time, and its
  later steps cannot run alongside.
The builds run concurrently, so verify costs about one build plus the stagger, or
one build plus exporting the cached one.
Each build is what ``repro build`` makes (normalised); ``raw`` compares BuildKit's
own exports instead, to see what normalisation is hiding.

Variations (``vary``), in the spirit of reprotest, applied to the second build only;
``DEFAULT_VARIATIONS`` (umask, timezone, locale, build_path) are on unless the
caller passes ``vary=[]`` (``--vary none``):
- ``umask``: the context copies get permissions as under umask 022 (first) and 002
  (second: group-writable wherever the owner can write);
- ``mtime``: the second copy's files get modification times far from the first's;
- ``timezone``: build args TZ=UTC vs TZ=<+14>-14 (a POSIX TZ, UTC+14, understood
  without tzdata), seen by RUN steps of recipes that declare ``ARG TZ``;
- ``locale``: build args LANG/LC_ALL=C.UTF-8 vs fr_FR.UTF-8, likewise;
- ``build_path``: the second copy of the recipe lies in a deeper directory (the two
  copies always have different paths; this makes their lengths differ too).
With ``bisect``, a difference under variations is followed by one double build per
variation (and one with none), naming the variations that cause it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.build import RecipeResult, SecretSpec, build_recipe
from repro.diff import (
    DEFAULT_SANDBOX_HOSTNAME,
    DIFFERENT,
    IDENTICAL,
    SAME_CONTENT,
    VERIFY_HOSTNAME_PREFIX,
    DiffReport,
    Hints,
    Options,
    PlatformVerdict,
    compare,
    open_source,
)
from repro.errors import InputError, ReproError
from repro.recipe import Recipe

VARIATIONS: dict[str, str] = {
    "umask": "context file permissions as under umask 022 vs 002",
    "mtime": "context file modification times moved in the second copy",
    "timezone": "build args TZ=UTC vs TZ=<+14>-14",
    "locale": "build args LANG/LC_ALL=C.UTF-8 vs fr_FR.UTF-8",
    "build_path": "the recipe copied to directories of different depths",
}
DEFAULT_VARIATIONS = ("umask", "timezone", "locale", "build_path")
# Recipes verified at a time by `verify_recipes`, and the least bound on builds at a
# time across them (the bound is `jobs` when that is more): a recipe is two builds,
# or one when its first is the image `repro build` wrote; `repro build --all` also
# runs 8 builds at a time.
DEFAULT_JOBS = 8
DEFAULT_BUILDS = 8
# The values each build-arg variation gives the first and the second build.
TIMEZONES = ("UTC", "<+14>-14")
LOCALES = ("C.UTF-8", "fr_FR.UTF-8")
ACCEPT_LEVELS = (IDENTICAL, SAME_CONTENT)
BUILD_LABELS = ("build 1", "build 2")
DEFAULT_STAGGER = 1.1  # seconds; `date` prints whole seconds
MAX_GATE_WAIT = 120.0  # longest wait for the first build's first RUN step
CANCEL_WAIT = 30.0  # longest wait, after Ctrl-C, for a build to stop and clean up


# Dockerfile steps are named "[2/3] COPY …" or "[stage 1/2] RUN …".
_STEP = re.compile(r"\[(?:[^\]]* )?\d+/\d+\] ")


def _is_run_step(name: str) -> bool:
    """Vertex names of Dockerfile RUN steps look like "[2/3] RUN make"."""
    return name.startswith("RUN ") or ("] RUN " in name and name.startswith("["))


def parse_vary(values: Sequence[str] | None) -> list[str]:
    """Variation names from --vary options: none given means the defaults, "none"
    means no variation, "all" every one."""
    if not values:
        return list(DEFAULT_VARIATIONS)
    out: list[str] = []
    if any(v.strip() == "none" for value in values for v in value.split(",")):
        if any(v.strip() not in ("none", "") for value in values for v in value.split(",")):
            raise InputError("--vary none: give it alone, not with other variations")
        return []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name == "all":
                out.extend(v for v in VARIATIONS if v not in out)
                continue
            if name not in VARIATIONS:
                raise InputError(
                    f"--vary {name!r}: expected one of {', '.join(VARIATIONS)}, all or none"
                )
            if name not in out:
                out.append(name)
    return out


@dataclass
class Side:
    """One of the two builds."""

    label: str
    directory: Path
    hostname: str
    builder: str | None
    build_args: dict[str, str]
    cache: bool = False  # whether BuildKit's cache could serve this build
    cached_steps: int = 0  # steps after FROM it served (counted for the first build)
    result: RecipeResult | None = None
    started: float = 0.0  # seconds since verify began, for showing the builds overlap
    finished: float = 0.0

    @property
    def reused(self) -> bool:
        """Whether this is the image an earlier `repro build` made from the same inputs."""
        return self.result is not None and self.result.reused

    def image(self, base: Path) -> Path:
        """Where this build's image is: its own in `base`, or the earlier one taken."""
        if self.reused and self.result is not None:
            return Path(self.result.output.partition(":")[2])
        return base / f"image-{self.label}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": BUILD_LABELS[self.label == "b"],
            "label": self.label,
            "directory": str(self.directory),
            "hostname": self.hostname,
            "builder": self.result.builder if self.result else self.builder,
            "builder_version": self.result.builder_version if self.result else "",
            "cache": self.cache,
            "cached_steps": self.cached_steps,
            "reused": self.result.output if self.reused and self.result else None,
            "digest": self.result.digest if self.result else None,
            "seconds": self.result.seconds if self.result else None,
            "started": round(self.started, 3),
            "finished": round(self.finished, 3),
        }


@dataclass
class VerifyResult:
    recipe: str
    verdict: str  # identical | same-content | different
    digest1: str
    digest2: str
    platforms: list[PlatformVerdict]
    seconds: float
    sides: list[Side]
    variations: list[str] = field(default_factory=list)
    report: DiffReport | None = None  # the comparison (its tree is None when identical)
    bisect: dict[str, str] | None = None  # "none" and each variation -> verdict

    def reproducible(self, accept: str = IDENTICAL) -> bool:
        if accept == SAME_CONTENT:
            return self.verdict in (IDENTICAL, SAME_CONTENT)
        return self.verdict == IDENTICAL

    def culprits(self) -> list[str]:
        """Variations that alone make the builds differ, when the plain builds agree."""
        if not self.bisect or self.bisect.get("none") != IDENTICAL:
            return []
        return [v for v, verdict in self.bisect.items() if v != "none" and verdict != IDENTICAL]

    def to_json(self, accept: str = IDENTICAL) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "verdict": self.verdict,
            "reproducible": self.reproducible(accept),
            "digest1": self.digest1,
            "digest2": self.digest2,
            "seconds": round(self.seconds, 3),
            "platforms": [p.to_json() for p in self.platforms],
            "variations": list(self.variations),
            "builds": [s.to_json() for s in self.sides],
            "bisect": self.bisect,
            "culprits": self.culprits(),
            "findings": [f.to_json() for f in self.report.findings] if self.report else [],
            "causes": [c.to_json() for c in self.report.causes()] if self.report else [],
        }


def _relocate(recipe: Recipe, directory: Path) -> Recipe:
    """The same recipe, read from a copy of its directory."""
    root = recipe.directory.resolve()
    return dataclasses.replace(
        recipe,
        directory=directory,
        dockerfile=directory / recipe.dockerfile.resolve().relative_to(root),
        context=directory / recipe.context.resolve().relative_to(root),
    )


def _walk_tree(root: Path) -> list[Path]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        paths.append(Path(dirpath))
        paths.extend(Path(dirpath) / n for n in dirnames + filenames)
    return paths


def _apply_umask(root: Path, group_writable: bool) -> None:
    for path in _walk_tree(root):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o7777 & ~0o022
        if group_writable:
            mode |= (mode & 0o200) >> 3
        os.chmod(path, mode)


def _move_mtimes(root: Path, offset: float) -> None:
    for path in _walk_tree(root):
        if path.is_symlink():
            continue
        st = path.stat()
        os.utime(path, (st.st_atime + offset, st.st_mtime + offset))


def _prepare(
    recipe: Recipe,
    base: Path,
    label: str,
    vary: Sequence[str],
    builder: str | None,
    cache: bool = False,
) -> tuple[Side, Recipe]:
    second = label == "b"
    # Different depths as well as names: paths that end up in files differ in length.
    parent = base / label / ("x" * 7 if second and "build_path" in vary else "")
    parent.mkdir(parents=True, exist_ok=True)
    directory = parent / recipe.directory.resolve().name
    shutil.copytree(recipe.directory, directory, symlinks=True)
    # The repo-wide settings travel with the copy (registry, vault, mirror names).
    settings = recipe.directory.resolve().parent / "repro.toml"
    if settings.is_file():
        shutil.copyfile(settings, parent / "repro.toml")
    args: dict[str, str] = {}
    if "umask" in vary:
        _apply_umask(directory, group_writable=second)
    if "mtime" in vary and second:
        _move_mtimes(directory, 86_400 * 1234 + 4321)
    if "timezone" in vary:
        args["TZ"] = TIMEZONES[second]
    if "locale" in vary:
        args["LANG"] = args["LC_ALL"] = LOCALES[second]
    if cache and not second:
        # What `repro build` runs, so that its cached steps serve this build; the
        # second build's own hostname keeps the two from sharing a step.
        hostname = DEFAULT_SANDBOX_HOSTNAME
    else:
        hostname = f"{VERIFY_HOSTNAME_PREFIX}{label}-{secrets.token_hex(4)}"
        args["BUILDKIT_SANDBOX_HOSTNAME"] = hostname
    side = Side(label, directory, hostname, builder, args, cache=cache and not second)
    return side, _relocate(recipe, directory)


def _double_build(
    recipe: Recipe,
    base: Path,
    vary: Sequence[str],
    builders: Sequence[str | None],
    stagger: float,
    progress: str,
    raw: bool = False,
    allow_unpinned: bool = False,
    secrets: Sequence[SecretSpec] = (),
    offline: bool = False,
    cancel: threading.Event | None = None,
    cache: bool = True,
    slots: threading.Semaphore | None = None,
) -> list[Side]:
    # The first build may be the image `repro build` made from the same inputs
    # (repro.inputs), not built again, when it may come from the cache at all, on
    # the one builder, of the normalised image, with no secrets to keep out of it.
    reuse = cache and builders[0] == builders[1] and not raw and not secrets
    sides = []
    recipes = []
    for label, builder in zip(("a", "b"), builders, strict=True):
        side, copy = _prepare(recipe, base, label, vary, builder, cache=cache)
        sides.append(side)
        recipes.append(copy)
    errors: list[tuple[Side, BaseException]] = []
    t0 = time.monotonic()
    # With no live progress, what each build says (a failing step's log, warnings) is
    # kept and told once at the end: both builds fail alike, and saying it twice, or
    # interleaved, helps no one.
    said: dict[str, io.StringIO] = {s.label: io.StringIO() for s in sides}
    kept = progress == "quiet"

    def run(
        side: Side, copy: Recipe, on_status: Callable[[Any], None] | None, reuse: bool
    ) -> None:
        # Only asked for with --raw, so verify does not depend on the option otherwise.
        extra: dict[str, Any] = {"normalise": False} if raw else {}
        if kept:
            extra["stream"] = said[side.label]
        slot = _build_slot(slots, cancel)
        side.started = time.monotonic() - t0
        try:
            side.result = build_recipe(
                copy,
                builder=side.builder,
                output=f"oci:{base / ('image-' + side.label)}",
                no_cache=not side.cache,
                progress=progress,
                build_args=side.build_args,
                on_status=on_status,
                allow_unpinned=allow_unpinned,
                secrets=list(secrets),
                offline=offline,
                cancel=cancel,
                reuse=reuse,
                remember=False,  # its image is deleted when verify ends
                **extra,
            )
        except BaseException as e:  # re-raised in the calling thread
            errors.append((side, e))
        finally:
            if slot:
                assert slots is not None
                slots.release()
        side.finished = time.monotonic() - t0

    def tell(side: Side) -> str:
        # The copy's paths read as the user's recipe.
        return said[side.label].getvalue().replace(str(side.directory), str(recipe.directory))

    # The second build starts `stagger` seconds after the first one's first RUN step
    # has started (when that step came from the cache: once the first build's steps
    # are done; when there is none: after the first build): a clock read in a RUN
    # step then differs, and neither build can wait on a step of the other.
    first_run = threading.Event()
    first_run_cached: list[bool] = []
    cached_steps: set[str] = set()
    exporting = threading.Event()  # the first build's steps are all done

    def watch(status: Any) -> None:
        for vertex in status.vertexes:
            if vertex.name.startswith("exporting to "):
                exporting.set()
            step = _STEP.match(vertex.name)
            if vertex.cached and step and not vertex.name[step.end() :].startswith("FROM "):
                cached_steps.add(vertex.digest)
            if vertex.HasField("started") and _is_run_step(vertex.name):
                if not first_run.is_set():
                    first_run_cached.append(bool(vertex.cached))
                first_run.set()

    threads: list[threading.Thread] = []
    try:
        for n, (side, copy) in enumerate(zip(sides, recipes, strict=True)):
            if n:
                while not first_run.wait(0.05) and threads[0].is_alive():
                    # (Counted from when the first build got its slot and started.)
                    began = sides[0].started
                    if began and time.monotonic() - t0 - began > MAX_GATE_WAIT:
                        break
                if first_run_cached and first_run_cached[0]:
                    while threads[0].is_alive() and not exporting.wait(0.05):
                        pass
                elif stagger > 0 and (first_run.is_set() or threads[0].is_alive()):
                    # (A first build that ended without a RUN step read no clock.)
                    time.sleep(stagger)
            t = threading.Thread(
                target=run,
                args=(side, copy, watch if n == 0 else None, n == 0 and reuse),
                name=f"verify-{side.label}",
                daemon=True,  # should the clean-up below not be waited for
            )
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        sides[0].cached_steps = len(cached_steps)
        taken, fresh = sides[0].result, sides[1].result
        if (
            not errors
            and taken is not None
            and fresh is not None
            and taken.reused
            and (taken.builder, taken.builder_version) != (fresh.builder, fresh.builder_version)
        ):
            # Made earlier by another BuildKit than the one here now: build it after all.
            run(sides[0], recipes[0], watch, False)
            sides[0].cached_steps = len(cached_steps)
    except KeyboardInterrupt:
        # Ctrl-C reaches this thread only: stop both builds and let them clean up
        # (sessions, staged exports) before the caller removes their directory.
        if cancel is not None:
            cancel.set()
        else:
            from repro.buildkit import cancel_builds

            cancel_builds()
        for t in threads:
            t.join(timeout=CANCEL_WAIT)
        raise
    if errors:
        failed, error = next(((s, e) for s, e in errors if isinstance(e, ReproError)), errors[0])
        if kept:
            sys.stderr.write(tell(failed))
        if isinstance(error, ReproError) and error.file:
            # Name the user's file, not its copy in the temporary directory.
            for side in sides:
                try:
                    inner = Path(error.file).resolve().relative_to(side.directory.resolve())
                except ValueError:
                    continue
                error.file = str(recipe.directory / inner)
                break
        raise error
    if kept:
        first, second = tell(sides[0]), tell(sides[1])
        sys.stderr.write(first + (second if second != first else ""))
    return sides


def _build_slot(slots: threading.Semaphore | None, cancel: threading.Event | None) -> bool:
    """Wait for one of `slots` (True once taken); False without slots, or when
    `cancel` is set meanwhile (the build then starts only to see it and stop)."""
    if slots is None:
        return False
    while not slots.acquire(timeout=0.05):
        if cancel is not None and cancel.is_set():
            return False
    return True


def verify_recipe(
    recipe: Recipe,
    *,
    builders: Sequence[str | None] = (None,),
    vary: Sequence[str] = DEFAULT_VARIATIONS,
    bisect: bool = False,
    stagger: float = DEFAULT_STAGGER,
    progress: str = "quiet",
    keep: Path | None = None,
    raw: bool = False,
    diff_options: Options | None = None,
    on_step: Callable[[str], None] | None = None,
    allow_unpinned: bool = False,
    secrets: Sequence[SecretSpec] = (),
    offline: bool = False,
    cancel: threading.Event | None = None,
    cache: bool = True,
    slots: threading.Semaphore | None = None,
) -> VerifyResult:
    """Build `recipe` twice, independently, compare, and diff on a mismatch. The
    second build is always from scratch; with `cache` the first may come from
    BuildKit's cache. Setting `cancel` from another thread stops both builds (they
    raise `Cancelled`). With `slots`, each build first takes one (builds at a time
    across recipes verified together)."""
    if not builders or len(builders) > 2:
        raise InputError("give one or two builders")
    pair = [builders[0], builders[-1]]
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="repro-verify-"))
    from repro.oci import scratch_dir

    held = contextlib.ExitStack()
    if keep is None:  # deleted when verify ends: not forced to disk
        held.enter_context(scratch_dir(base))
    try:
        if on_step:
            on_step(
                f"{recipe.name}: two independent builds"
                + (" (the first may come from the cache)" if cache else "")
                + (f", varying {', '.join(vary)}" if vary else "")
            )
        sides = _double_build(
            recipe,
            base,
            vary,
            pair,
            stagger,
            progress,
            raw,
            allow_unpinned,
            secrets,
            offline,
            cancel,
            cache,
            slots,
        )
        r1, r2 = sides[0].result, sides[1].result
        assert r1 is not None and r2 is not None
        report: DiffReport | None = None
        options = diff_options or Options()
        options = dataclasses.replace(
            options,
            hints=Hints(
                hostnames=tuple(s.hostname for s in sides),
                build_paths=tuple(str(s.directory) for s in sides),
                variations=tuple(
                    (name, values)
                    for name, values in (("timezone", TIMEZONES), ("locale", LOCALES))
                    if name in vary
                ),
            ),
            verify_blobs=False,  # both exports were checked blob by blob as they arrived
        )
        if on_step and r1.digest != r2.digest:
            on_step(f"{recipe.name}: digests differ; comparing")
        if any(s.reused for s in sides):
            # An earlier build's image, in a folder anyone may have written to since:
            # every blob read from it is checked against its digest.
            options = dataclasses.replace(options, verify_blobs=True)
        with (
            open_source(f"oci:{sides[0].image(base)}") as a,
            open_source(f"oci:{sides[1].image(base)}") as b,
        ):
            # The images live in a temporary directory: reports name the builds.
            a.label, b.label = BUILD_LABELS
            report = compare(a, b, options)
        verdict = report.verdict
        result = VerifyResult(
            recipe=recipe.name,
            verdict=verdict,
            digest1=r1.digest,
            digest2=r2.digest,
            platforms=report.platforms,
            seconds=0.0,
            sides=sides,
            variations=list(vary),
            report=report,
        )
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for side in sides:
                dest = keep / f"{recipe.name}-{side.label}"
                shutil.rmtree(dest, ignore_errors=True)
                if side.reused:  # the user's own output: copied, never moved
                    shutil.copytree(side.image(base), dest, symlinks=True)
                else:
                    shutil.move(str(side.image(base)), dest)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        held.close()
    if bisect and vary and verdict != IDENTICAL:
        result.bisect = {}
        for name in ["none", *vary]:
            if on_step:
                on_step(f"{recipe.name}: bisect: " + ("no variation" if name == "none" else name))
            sub = verify_recipe(
                recipe,
                builders=builders,
                vary=[] if name == "none" else [name],
                stagger=stagger,
                progress=progress,
                raw=raw,
                diff_options=diff_options,
                allow_unpinned=allow_unpinned,
                secrets=secrets,
                offline=offline,
                cancel=cancel,
                # From scratch, both: a cached first build may hold what BuildKit
                # does not key on (a context file's mtime), which no variation
                # would then explain.
                cache=False,
                slots=slots,
            )
            result.bisect[name] = sub.verdict
    result.seconds = time.monotonic() - started
    return result


@dataclass
class VerifyRun:
    """The results of verifying several recipes, in order, and the acceptance level."""

    results: list[VerifyResult]
    accept: str = IDENTICAL
    report_dirs: dict[str, Path] = field(default_factory=dict)  # recipe -> its report

    @property
    def ok(self) -> bool:
        return all(r.reproducible(self.accept) for r in self.results)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json(self.accept) for r in self.results]


def verify_recipes(
    recipes: Sequence[Recipe],
    *,
    accept: str = IDENTICAL,
    report_dir: Path | None = None,
    on_result: Callable[[VerifyResult], None] | None = None,
    jobs: int = DEFAULT_JOBS,
    builds: int | None = None,
    **options: Any,
) -> VerifyRun:
    """Verify each recipe (``verify_recipe`` with `options`), up to `jobs` recipes at
    a time and up to `builds` (default max(DEFAULT_BUILDS, `jobs`)) builds at a time
    across them (a recipe is two builds, or one when its first is taken from `repro
    build`), writing a report directory for every one when `report_dir` is given (a
    subdirectory per recipe when there are several), identical or not.

    Results come back in the order of `recipes`; `on_result` sees each as soon as it
    and the ones before it are ready, and is called in the calling thread. Recipes
    are independent here: each build takes its bases at the digests its lock pins.
    When one recipe fails (an error, not a difference), the builds still running are
    cancelled and its error is raised; so is KeyboardInterrupt, once they stopped.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from repro.diff import verify_present

    if accept not in ACCEPT_LEVELS:
        raise InputError(f"--accept {accept!r}: expected {' or '.join(ACCEPT_LEVELS)}")
    if options.get("bisect") and not options.get("vary", DEFAULT_VARIATIONS):
        raise InputError("--bisect needs variations: it names the variation that breaks the build")
    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    run = VerifyRun([], accept)

    def done(recipe: Recipe, result: VerifyResult) -> None:
        run.results.append(result)
        if report_dir is not None:
            target = report_dir / recipe.name if len(recipes) > 1 else report_dir
            verify_present.write_verify_report(result, target, accept)
            run.report_dirs[recipe.name] = target
        if on_result is not None:
            on_result(result)

    cancel = threading.Event()
    slots = threading.BoundedSemaphore(builds or max(DEFAULT_BUILDS, jobs))
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(jobs, len(recipes))), thread_name_prefix="repro-verify"
    )
    try:
        futures = [
            pool.submit(verify_recipe, r, cancel=cancel, slots=slots, **options) for r in recipes
        ]
        emitted = 0
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # the first failure, wherever it is in the order
            while emitted < len(futures) and futures[emitted].done():
                done(recipes[emitted], futures[emitted].result())
                emitted += 1
    except BaseException:
        # Stop what runs, drop what has not started, and let the running builds clean
        # up (sessions, staged exports) before the error goes up.
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return run


__all__ = [
    "ACCEPT_LEVELS",
    "BUILD_LABELS",
    "DEFAULT_VARIATIONS",
    "VerifyRun",
    "verify_recipes",
    "DIFFERENT",
    "IDENTICAL",
    "SAME_CONTENT",
    "VARIATIONS",
    "VerifyResult",
    "parse_vary",
    "verify_recipe",
]
