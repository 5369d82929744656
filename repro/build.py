"""Building recipes: a recipe plus options in, an OCI image on disk and its digests out."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from repro.errors import BuildFailed, ContextError, InputError, ReproError
from repro.recipe import Recipe
from repro.registry import LazyRegistry

if TYPE_CHECKING:
    from repro.buildkit import BuildRequest, Connection, Output
    from repro.normalise import NormaliseResult
    from repro.registry import Registry


@dataclass
class SecretSpec:
    id: str
    src: str = ""
    env: str = ""

    @classmethod
    def parse(cls, value: str) -> SecretSpec:
        """``id=NAME,src=PATH`` or ``id=NAME,env=VAR`` (``type=file|env`` accepted)."""
        fields: dict[str, str] = {}
        for part in value.split(","):
            key, sep, val = part.partition("=")
            if not sep or not val:
                raise InputError(
                    f"--secret {value!r}: expected id=NAME,src=PATH or id=NAME,env=VAR"
                )
            fields[key.strip()] = val.strip()
        unknown = set(fields) - {"id", "src", "source", "env", "type"}
        if unknown:
            raise InputError(f"--secret {value!r}: unknown field {sorted(unknown)[0]!r}")
        spec = cls(
            id=fields.get("id", ""),
            src=fields.get("src", fields.get("source", "")),
            env=fields.get("env", ""),
        )
        if fields.get("type") == "env" and not spec.env:
            spec.env, spec.src = spec.src or spec.id, ""
        if not spec.id:
            spec.id = Path(spec.src).name if spec.src else spec.env
        if not spec.id or (not spec.src and not spec.env):
            raise InputError(f"--secret {value!r}: needs id= and src= or env=")
        return spec

    def loader(self) -> Callable[[], bytes]:
        """Check the source now (bad input fails before the build), read it on demand."""
        if self.src:
            path = Path(self.src)
            if not path.is_file():
                raise ContextError(f"secret {self.id}: source file {self.src} does not exist")
            return path.read_bytes
        if self.env not in os.environ:
            raise ContextError(f"secret {self.id}: environment variable {self.env} is not set")
        name = self.env
        return lambda: os.environ[name].encode()


@dataclass
class RecipeResult:
    recipe: str
    digest: str
    config_digest: str
    output: str
    seconds: float
    builder: str
    builder_version: str
    source_date_epoch: int
    # With normalisation on (the default), `digest`/`config_digest` are the
    # normalised image's and `raw_digest` is what BuildKit exported.
    raw_digest: str = ""
    normalised: dict[str, Any] | None = None
    # The image's package database against base + lock (repro.binding), when checked.
    packages: dict[str, Any] | None = None
    # A [rootfs] recipe: its packages, what was reproduced of their scripts (repro.rootfs).
    rootfs: dict[str, Any] | None = None
    # The version the BuildKit reported and the OCI exporter options sent (None for
    # images repro writes itself); kept in the build record (repro.records).
    buildkit_version: str = ""
    exporter: dict[str, str] | None = None
    # The fingerprint of the build's inputs (repro.inputs; "" when not taken), and
    # whether this is the image an earlier build with the same inputs wrote, taken
    # instead of building (`reuse`; `output` then names where that build wrote it).
    inputs: str = ""
    reused: bool = False
    # What BuildKit sent of the export, and what it did not send because it was at
    # hand (the blob shelf, repro.oci.take_shelved): blobs and bytes of each.
    export: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_output(recipe: Recipe) -> str:
    return f"oci:out/{recipe.name}"


def shared_key(recipe: Recipe) -> str:
    """Keys BuildKit's cache of the transferred context: stable per checkout path."""
    return hashlib.sha256(str(recipe.context.resolve()).encode()).hexdigest()[:32]


def _credentials(host: str) -> tuple[str, str] | None:
    from repro import dockerconfig

    try:
        creds = dockerconfig.get_credentials(host)
    except Exception:  # a broken helper means anonymous, as for docker itself
        return None
    if creds is None:
        return None
    return creds.username, creds.secret


def build_recipe(recipe: Recipe, *, remember: bool = True, **options: Any) -> RecipeResult:
    """Build one recipe (see `_build_recipe` for the options). Folders made for the
    output are removed again when the build fails: nothing is left half-written.
    Unless `remember` is off (an output about to be deleted), the build's inputs are
    remembered with where its image went, for `repro verify` (repro.inputs)."""
    output = str(options.get("output") or default_output(recipe))
    made = _new_parents(Path(output.partition(":")[2] or output))
    try:
        result = _build_recipe(recipe, **options)
    except BaseException:
        for directory in made:
            try:
                directory.rmdir()  # only if still empty
            except OSError:
                break
        raise
    if not result.reused:
        record_build(recipe, result, remember)
    return result


def record_build(recipe: Recipe, result: RecipeResult, remember: bool = True) -> None:
    """Write the build record of `result` (repro.records) for publish and the
    provenance, and (`remember`) its inputs' fingerprint for `repro verify`."""
    from repro import __version__
    from repro.records import file_digest, write_build_record

    if remember:
        remember_build(result)
    write_build_record(
        {
            "digest": result.digest,
            "recipe": recipe.name,
            "lock": {"path": str(recipe.lock_file), "digest": file_digest(recipe.lock_file)},
            "builder": result.builder,
            "builder_version": result.builder_version,
            "buildkit_version": result.buildkit_version,
            "exporter": result.exporter,
            "source_date_epoch": result.source_date_epoch,
            "normalised": result.normalised is not None,
            "repro_version": __version__,
        }
    )


def remember_build(result: RecipeResult) -> None:
    """Remember `result` under its inputs' fingerprint (repro.inputs), with where its
    image is, for `repro verify` to take as its first build."""
    if not result.inputs:
        return
    from repro.oci import Output
    from repro.records import remember_inputs

    out = Output.parse(result.output)
    remember_inputs(result.inputs, {**result.to_json(), "output": f"oci:{out.path.absolute()}"})


class _LazyRegistry:
    """The shared registry client (left open), else one made on first use and closed
    on leaving: `get()` imports and opens it only when there is a question for it
    (importing the client, httpx, takes about 0.05 s that a build whose bases are
    known need not pay)."""

    def __init__(self, shared: Registry | LazyRegistry | None) -> None:
        self._own = LazyRegistry() if shared is None else None
        self._shared = shared if shared is not None else self._own

    def get(self) -> Registry:
        if isinstance(self._shared, LazyRegistry):
            return self._shared.get()
        assert self._shared is not None
        return self._shared

    def __enter__(self) -> _LazyRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()


def _new_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first."""
    out = []
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        out.append(parent)
        parent = parent.parent
    return out


def _build_recipe(
    recipe: Recipe,
    *,
    builder: str | None = None,
    output: str | None = None,
    no_cache: bool = False,
    secrets: list[SecretSpec] | None = None,
    progress: str = "auto",
    stream: TextIO | None = None,
    build_args: dict[str, str] | None = None,
    normalise: bool = True,
    rewrite_timestamp: bool | None = None,
    exporter_attrs: dict[str, str] | None = None,
    built: dict[str, str] | None = None,
    on_status: Callable[[Any], None] | None = None,
    allow_unpinned: bool = False,
    offline: bool = False,
    connection: Callable[[], Connection] | None = None,
    registry: Registry | LazyRegistry | None = None,
    cancel: threading.Event | None = None,
    reuse: bool = False,
    unchanged: bool = False,
) -> RecipeResult:
    """Build one recipe with BuildKit and write its OCI image (normalised unless told not).

    With `reuse`, when an earlier build had the same inputs (repro.inputs) and its
    image is still where it wrote it, that build's result is returned instead of
    building (`reused` set, `output` naming the earlier image; nothing is written).
    `unchanged` is the same for a rootfs recipe (no BuildKit, so no BuildKit cache)
    when the earlier build wrote to this very output: `repro build` does not unpack
    the same packages into the same image again.

    `rewrite_timestamp` and `exporter_attrs` (e.g. ``compression=zstd``) pass through
    to BuildKit's OCI exporter; normalisation makes the result independent of them.
    When normalising, BuildKit is asked for no work the normaliser redoes
    (`export_options`; `rewrite_timestamp` None is that default).
    `connection` (returning an open, preflighted builder connection, asked for just
    before the build needs it) and `registry` are shared by the builds of a graph
    instead of opened per build; `cancel`, set from another
    thread, abandons the build.
    """
    from repro import oci
    from repro.oci import Output  # (not via repro.buildkit: a rootfs build needs no grpc)

    out = Output.parse(output or default_output(recipe))
    if recipe.rootfs is not None:
        # Packages unpacked into one layer by repro itself: no Dockerfile, no BuildKit.
        from repro.rootfs import build_rootfs

        inputs = ""
        if out.kind == "oci":
            from repro.inputs import rootfs_fingerprint

            inputs = rootfs_fingerprint(recipe)
        if (reuse or unchanged) and inputs:
            from repro.lock import require_lock

            # A stale lock is refused before anything is taken (build_rootfs checks
            # it itself when it builds).
            require_lock(recipe)
            earlier = _recall(recipe, inputs, stream)
            if earlier is not None and reuse:
                return earlier
            if earlier is not None and _same_place(earlier.output, out):
                return dataclasses.replace(earlier, output=str(out))  # as the user wrote it
        made = build_rootfs(
            recipe, output=output, progress=progress, stream=stream, offline=offline
        )
        return dataclasses.replace(made, inputs=inputs)
    # Refused before anything is built: a sink replaces only an earlier output.
    oci.check_output_target(out.kind, out.path)
    # The lock makes the pins binding (repro.lock.apply_lock): a stale or missing lock
    # is refused, bases are rewritten to their locked digests in a rendered
    # Dockerfile, closures/checksums/commits arrive as build args.
    from repro.lock import apply_lock

    pinned = apply_lock(recipe, build_args or {}, built)
    from repro import dockerignore
    from repro.buildkit import BuildRequest, Progress, build, check_inputs, connect

    dockerignore.check(recipe.context, recipe.dockerfile)
    args = pinned.build_args
    rewrite, attrs = export_options(normalise, rewrite_timestamp, exporter_attrs)
    request = BuildRequest(
        context=recipe.context,
        dockerfile=pinned.dockerfile,
        source_dockerfile=recipe.dockerfile,
        source_policy=pinned.source_policy,
        output=out,
        build_args=args,
        labels=dict(recipe.labels),
        target=recipe.target,
        platforms=list(recipe.platforms),
        source_date_epoch=pinned.source_date_epoch,
        no_cache=no_cache,
        network=recipe.network,
        secrets={s.id: s.loader() for s in secrets or []},
        shared_key=shared_key(recipe),
        session_name=recipe.name,
        rewrite_timestamp=rewrite,
        exporter_attrs=attrs,
        cancel=cancel,
    )
    inputs = _fingerprint(recipe, request, builder, normalise) if out.kind == "oci" else ""
    earlier = _recall(recipe, inputs, stream) if reuse and inputs else None
    if earlier is not None:
        return earlier
    staging: Path | None = None
    from repro.binding import Binding, UnpinnedPackages, check_image, checked_base

    packages_dir = _package_context(recipe, pinned.lock, offline)
    if packages_dir is not None:
        from repro.recipe import PACKAGE_CONTEXT

        request.named_contexts[PACKAGE_CONTEXT] = packages_dir

    bind = bool(pinned.lock) and checked_base(recipe, pinned.lock or {}) is not None
    if normalise or bind:
        # BuildKit's export is staged beside the output, checked against the lock
        # and normalised (or moved) into place.
        check_inputs(request)
        staging = _normalise_staging(out.path)
        request.output = Output("oci", staging / "raw")
        if normalise:
            # Read by the normaliser only: received blob by blob, and the layers this
            # machine has on its shelf (a base's, above all) not sent at all.
            request.export_store = True
            request.take_blob = oci.take_shelved
    held = contextlib.ExitStack()
    if staging is not None and normalise:
        # Read, normalised into place and deleted: not forced to disk.
        held.enter_context(oci.scratch_dir(staging))
    display = Progress(mode=progress, stream=stream or sys.stderr, title=recipe.name)  # type: ignore[arg-type]
    success = False
    where = ""  # the failing Dockerfile lines, shown like buildx
    missing: InputError | None = None
    try:
        opened = contextlib.nullcontext(connection()) if connection else connect(builder)
        with opened as conn:
            conn.preflight()
            try:
                result = build(
                    conn,
                    request,
                    on_status=_tee(display.update, on_status),
                    credentials=_credentials,
                )
                success = True
            except (BuildFailed, InputError) as exc:
                # A locked base the registry no longer has is the cause, in one line
                # (BuildKit's own report says it three times over, and is not shown).
                # BuildKit's failure comes as BuildFailed, or as an InputError when
                # it names a Dockerfile line; a ContextError is the context's own.
                if not isinstance(exc, ContextError):
                    missing = _missing_base(recipe, pinned.lock, registry)
                    if missing is not None:
                        raise missing from None
                if isinstance(exc, (BuildFailed, ContextError)):
                    located = dockerignore.locate(exc.message, recipe.context, recipe.dockerfile)
                    if located is not None:
                        raise located from None
                if isinstance(exc, BuildFailed):
                    where = exc.source_snippet
                raise
            finally:
                display.close(success)
                if not success and missing is None:
                    report = display.failure_report()
                    if report:
                        print(report, file=stream or sys.stderr)
                    if where:
                        print(where, file=stream or sys.stderr)
        digest, config_digest, normalised = result.digest, result.config_digest, None
        binding = Binding()
        if staging is not None and bind:
            binding = check_image(recipe, pinned.lock, staging / "raw")
            if not binding.ok:
                if not allow_unpinned:
                    raise UnpinnedPackages(binding.message(recipe.name))
                print(f"repro: warning: {binding.message(recipe.name)}", file=stream or sys.stderr)
        if staging is not None and not normalise:
            _move_raw(staging / "raw", out)
        elif staging is not None:
            norm = normalise_output(
                recipe, staging / "raw", out, request.source_date_epoch, pinned.lock, registry
            )
            digest, config_digest, normalised = norm.digest, norm.config_digest, norm.to_json()
            for warning in norm.warnings:
                print(f"repro: warning: {warning}", file=stream or sys.stderr)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        held.close()
        if packages_dir is not None:
            shutil.rmtree(packages_dir, ignore_errors=True)
    return RecipeResult(
        recipe=recipe.name,
        digest=digest,
        config_digest=config_digest,
        raw_digest=result.digest,
        normalised=normalised,
        output=str(out),
        seconds=round(result.seconds, 3),
        builder=str(conn.address),
        builder_version=conn.engine_version,
        source_date_epoch=pinned.source_date_epoch,
        packages=binding.to_json() if binding.checked else None,
        buildkit_version=result.buildkit_version,
        exporter=dict(result.exporter_attrs),
        inputs=inputs,
        export={
            "received_blobs": result.received[0],
            "received_bytes": result.received[1],
            "at_hand_blobs": result.skipped[0],
            "at_hand_bytes": result.skipped[1],
        },
    )


def _recall(recipe: Recipe, inputs: str, stream: TextIO | None) -> RecipeResult | None:
    """The result of the last build with these inputs, if its image is still there,
    marked as taken rather than built (repro.records.recall_inputs)."""
    from repro.records import recall_inputs

    def warn(message: str) -> None:
        print(f"repro: warning: {recipe.name}: {message}", file=stream or sys.stderr)

    earlier = recall_inputs(inputs, warn)
    if earlier is None:
        return None
    fields = {f.name for f in dataclasses.fields(RecipeResult)}
    taken = RecipeResult(**{k: v for k, v in earlier.items() if k in fields})
    return dataclasses.replace(taken, seconds=0.0, reused=True)


def _same_place(earlier: str, out: Output) -> bool:
    from repro.oci import Output

    then = Output.parse(earlier)
    return then.kind == out.kind and then.path.resolve() == out.path.absolute().resolve()


def _fingerprint(
    recipe: Recipe, request: BuildRequest, builder: str | None, normalise: bool
) -> str:
    """The build's inputs fingerprinted (repro.inputs), or "" when they are not taken:
    with secrets (their values are hashed nowhere), or when no builder is named."""
    if request.secrets:
        return ""
    from repro.buildkit import find_builder
    from repro.inputs import fingerprint

    try:
        return fingerprint(recipe, request, str(find_builder(builder)), normalise)
    except (OSError, ReproError):
        return ""


def _missing_base(
    recipe: Recipe, lock: dict[str, Any] | None, registry: Registry | LazyRegistry | None
) -> InputError | None:
    """After a failed build: the error naming a locked base its registry does not
    have, if that is what happened. Asked only then, so that a build does not wait
    for the registry (nor import its client) first; BuildKit fails fast on a base it
    cannot pull. Other registry errors leave BuildKit's report standing."""
    try:
        _check_locked_bases(recipe, lock, registry)
    except InputError as exc:
        return exc
    except ReproError:
        pass
    return None


def _check_locked_bases(
    recipe: Recipe,
    lock: dict[str, Any] | None,
    registry: Registry | LazyRegistry | None = None,
) -> None:
    """Every base digest the lock pins must be in its registry: else an InputError,
    one line naming the lock entry (asked by `_missing_base` after a failed build)."""
    from repro.errors import RegistryError
    from repro.lock import image_name

    if not lock or not lock.get("bases"):
        return
    with _LazyRegistry(registry) as lazy:
        client = lazy.get()
        for ref, entry in lock["bases"].items():
            if entry.get("image"):
                image = str(entry["image"])  # a recipe: base, as it was published
            elif ref.startswith("recipe:"):
                continue
            else:
                image = image_name(ref)
            try:
                client.resolve(f"{image}@{entry['digest']}")
            except RegistryError as exc:
                if "not found" not in str(exc):
                    raise
                raise InputError(
                    f"{recipe.name}: repro.lock pins base {ref} to {entry['digest'][:19]}…, "
                    f"which {image.split('/')[0]} does not have; run repro lock --update "
                    "(or push that image)"
                ) from None


def _package_context(recipe: Recipe, lock: dict[str, Any] | None, offline: bool) -> Path | None:
    """The locked packages laid out for the build's ``repro-apt`` context, when the
    Dockerfile mounts it (from the checked cache, the mirror, or the vault)."""
    if not lock or not lock.get("packages"):
        return None
    from repro import vault  # with its package fetchers: only for recipes with packages

    try:
        text = recipe.dockerfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not vault.uses_package_context(text):
        if offline:
            raise InputError(
                f"{recipe.name}: --offline needs the Dockerfile to install from the "
                f"{vault.CONTEXT_NAME} context (see docs/recipes.md, the package vault)"
            )
        return None
    from repro.config import load_repo_config
    from repro.packages import cache_dir

    parent = cache_dir().parent / "contexts"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{recipe.name}-", dir=parent))
    try:
        repo = load_repo_config(recipe.directory.parent)
        return vault.package_context(recipe, lock, repo, directory, offline=offline)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _move_raw(raw: Path, out: Output) -> None:
    """Put BuildKit's export (a layout, unnormalised) at `out`."""
    from repro import oci

    if out.kind == "oci":
        oci.replace_output("oci", raw, out.path)
    else:
        oci.check_output_target(out.kind, out.path)
        oci.write_oci_archive(oci.OCILayout(raw), out.path)


def _tee(
    first: Callable[[Any], None], second: Callable[[Any], None] | None
) -> Callable[[Any], None]:
    """One status callback that feeds the display and, if given, the caller's (verify's)."""
    if second is None:
        return first

    def both(status: Any) -> None:
        first(status)
        second(status)

    return both


def _normalise_staging(dest: Path) -> Path:
    from repro import oci

    return oci.staging_dir_beside(dest, "raw")


def export_options(
    normalise: bool, rewrite_timestamp: bool | None = None, extra: dict[str, str] | None = None
) -> tuple[bool, dict[str, str]]:
    """Whether BuildKit rewrites timestamps, and the OCI exporter's other options.

    A raw export (not `normalise`) is BuildKit's usual one, with `rewrite-timestamp`.
    An export repro normalises asks BuildKit for no work the normaliser redoes: no
    `rewrite-timestamp` (its pass recompresses every new layer once more, serially,
    on every export; the normaliser clamps the same times) and the build's own layers
    uncompressed (the normaliser decompresses them to re-encode them). Base layers
    keep the blobs BuildKit has for them (without ``force-compression``), which is
    what lets `locked_base_layers` match them. Measured by hand on `web` (nginx on the
    Debian 12 base) from scratch: 3.97-4.34 s against 4.74-5.05 s with gzip; the
    normalised image is the same (tests/test_normalise_engine.py).

    `rewrite_timestamp` (None: as above) and `extra` (e.g. ``compression=zstd``) win.
    """
    extra = dict(extra or {})
    if not normalise:
        return rewrite_timestamp is not False, extra
    return bool(rewrite_timestamp), {"compression": "uncompressed", **extra}


def normalise_output(
    recipe: Recipe,
    raw: Path,
    out: Output,
    epoch: int | None,
    lock: dict[str, Any] | None = None,
    registry: Registry | LazyRegistry | None = None,
) -> NormaliseResult:
    """Normalise the raw export at `raw` into `out` (a layout or an archive).

    The base image's layers keep their bytes: with a lock, exactly the locked base's
    layers, restored from the registry where BuildKit exported other bytes; without
    one (or if the registry cannot say), those the image's history says are the base's.
    """
    from repro import oci
    from repro.errors import ReproError
    from repro.normalise import base_layer_count, locked_base_layers, normalise_layout

    layout = oci.OCILayout(raw)
    images = [d for d in layout.image_manifests() if not d.is_attestation]
    configs = [oci.read_config(layout, oci.read_manifest(layout, d))[1] for d in images]
    if epoch is None:  # no epoch given to BuildKit: its `created` is the build's time
        epoch = int(time.time())
    keep = min((base_layer_count(c, epoch) for c in configs), default=0)
    base_layers: tuple[oci.Descriptor, ...] = ()
    if lock and len(images) == 1:
        platform = str(images[0].platform) if images[0].platform else ""
        try:
            with _LazyRegistry(registry) as client:
                base = locked_base_layers(lock, platform, configs[0], client.get)
                if base is not None:
                    # The client is made only if a blob is missing from the layout.
                    lazy = oci.CachedDocuments(client.get)
                    oci.copy_blobs(lazy, base.repository, base.layers, layout)
                    keep, base_layers = len(base.layers), tuple(base.layers)
        except ReproError as e:
            # Not silently: guessing the base's layers from the history instead could
            # give another digest than a build that reached the registry.
            raise type(e)(
                f"cannot read the locked base image's layers for {recipe.name}: {e.message}"
            ) from None
    options = dataclasses.replace(
        recipe.normalise.options(epoch, keep_layers=keep), base_layers=base_layers
    )
    if out.kind == "oci":
        result = normalise_layout(layout, out.path, options, replace=True)
        oci.shelve_layers(oci.OCILayout(out.path))  # for the next build on this base
        return result
    result = normalise_layout(layout, raw.parent / "normalised", options)
    oci.shelve_layers(oci.OCILayout(raw.parent / "normalised"))
    oci.check_output_target(out.kind, out.path)
    oci.write_oci_archive(oci.OCILayout(raw.parent / "normalised"), out.path)
    return result


# --- a graph of recipes ------------------------------------------------------------------

# Builds at a time on each builder. BuildKit does the heavy work and this process
# mostly waits on it (normalising is the part that costs CPU here), so a 2-core
# machine keeps busy with a few more builds than cores.
DEFAULT_JOBS = 8


@dataclass
class BuildOutcome:
    """One recipe of `build_recipes`: built (`result`), failed (`error`), or not
    started because a base recipe it needs failed (`skipped_for`)."""

    recipe: str
    result: RecipeResult | None = None
    error: ReproError | None = None
    skipped_for: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def message(self) -> str:
        """One line saying why the recipe has no image ("" when it has one), naming
        the recipe."""
        if self.error is not None:
            text = str(self.error)
            return text if text.startswith(f"{self.recipe}: ") else f"{self.recipe}: {text}"
        if self.skipped_for:
            return f"{self.recipe}: not built: its base recipe:{self.skipped_for} failed"
        return ""

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return 1 if self.skipped_for else 0


def build_recipes(
    selected: Sequence[Recipe],
    everything: Sequence[Recipe] | None = None,
    *,
    builders: Sequence[str | None] = (None,),
    jobs: int = DEFAULT_JOBS,
    progress: str = "auto",
    stream: TextIO | None = None,
    on_outcome: Callable[[BuildOutcome], None] | None = None,
    speculate: bool = True,
    **options: Any,
) -> list[BuildOutcome]:
    """Build `selected` (a graph over `everything`, default `selected`) in one process.

    Each recipe starts as soon as the recipes it builds on are built (and pushed to
    their publish repository, where its lock expects them), up to `jobs` builds at a
    time on each of `builders`, over one connection per builder and one registry
    client. With `speculate`, a recipe whose lock pins its base recipes to digests the
    registry has already starts at once: it is built beside its output and moved
    there when the bases' rebuilds end with those digests (else it fails as a stale
    lock, its output untouched). A failed recipe stops its dependants, not the
    others. `options` go to `build_recipe` (output, no_cache, secrets, build_args,
    normalise, …).

    Progress goes to `stream` (default stderr): one build at a time is shown live as
    `progress` says; concurrent builds are shown as plain text, one block per recipe
    when it ends, in a GitHub Actions log group when GITHUB_ACTIONS=true. Returns one
    outcome per recipe in graph order; `on_outcome` sees each in that order as soon
    as the ones before it are done. Ctrl-C cancels every running build (nothing
    half-written is left) and raises KeyboardInterrupt.
    """
    import io
    from concurrent.futures import Future, ThreadPoolExecutor

    from repro.errors import ReproError
    from repro.graph import Outcome, schedule
    from repro.publish import push_recipe_image

    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    err = stream or sys.stderr
    slots = list(builders) or [None]
    concurrent = len(selected) > 1 and jobs * len(slots) > 1
    # Log groups on GitHub Actions, one per recipe when there are several (one
    # recipe's step is its own group already).
    groups = os.environ.get("GITHUB_ACTIONS") == "true" and len(selected) > 1
    cancel = threading.Event()
    write_lock = threading.Lock()
    buffers: dict[str, io.StringIO] = {}
    # One connection per builder, opened and checked in the background from the start
    # (creating the first gRPC channel alone takes a tenth of a second) while the
    # first builds read their locks and ask the registry about their bases.
    opening: dict[str | None, Future[Connection]] = {}
    if any(r.rootfs is None for r in selected):
        pool = ThreadPoolExecutor(max_workers=len(set(slots)), thread_name_prefix="repro-connect")
        opening = {b: pool.submit(_open_builder, b) for b in dict.fromkeys(slots)}
        pool.shutdown(wait=False)

    def start(recipe: Recipe, builder: str | None) -> None:
        if concurrent and progress != "quiet":
            buffers[recipe.name] = io.StringIO()
            with write_lock:
                print(f"repro: {recipe.name}: building", file=err, flush=True)
        elif groups and progress != "quiet":
            print(f"::group::repro build {recipe.name}", file=err, flush=True)

    def finish(outcome: Outcome[RecipeResult]) -> None:
        name = outcome.recipe.name
        if name in buffers:
            text = buffers.pop(name).getvalue()
            state = "done" if outcome.ok else "failed"
            with write_lock:
                title = f"repro build {name}"
                print(f"::group::{title}" if groups else f"--- {title} ({state})", file=err)
                err.write(text if text.endswith("\n") or not text else text + "\n")
                if groups:
                    print("::endgroup::", file=err)
                err.flush()
        elif groups and progress != "quiet":
            print("::endgroup::", file=err, flush=True)

    registry = LazyRegistry()  # one client for the graph's builds, made if one asks
    with contextlib.closing(registry):
        # Which recipes may start before their bases are rebuilt asks the registry:
        # asked in the background, while the recipes with no bases to wait for start.
        early: dict[str, dict[str, str]] = {}
        asking: Future[Collection[str]] | None = None
        if speculate and not options.get("output"):

            def find_early() -> Collection[str]:
                early.update(_early_recipes(selected, registry))
                return set(early)

            ask = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repro-early-ask")
            asking = ask.submit(find_early)
            ask.shutdown(wait=False)
        staged: dict[str, tuple[Path, Path]] = {}  # early recipe -> (staging dir, output)

        def started_early(recipe: Recipe, built: dict[str, str]) -> bool:
            """Whether this build started before its bases were rebuilt (a recipe the
            answer named may have started as usual, its bases done by then)."""
            return recipe.name in early and any(b not in built for b in early[recipe.name])

        def build_one(recipe: Recipe, builder: str | None, built: dict[str, str]) -> RecipeResult:
            buffer = buffers.get(recipe.name)
            extra = dict(options)
            if started_early(recipe, built):
                # Built beside its output and moved there once its bases are confirmed.
                final = Path(default_output(recipe).partition(":")[2])
                from repro import oci

                oci.check_output_target("oci", final)
                directory = oci.staging_dir_beside(final, "early")
                staged[recipe.name] = (directory, final)
                extra["output"] = f"oci:{directory / 'image'}"
                extra["remember"] = False  # remembered at its final place (confirm)
            try:
                with vanished_pins_explained(recipe):
                    return build_recipe(
                        recipe,
                        builder=builder,
                        built=built,
                        progress="plain" if buffer is not None else progress,
                        stream=buffer if buffer is not None else err,
                        connection=opening[builder].result if builder in opening else None,
                        registry=registry,
                        cancel=cancel,
                        **extra,
                    )
            except BaseException:
                if recipe.name in staged:
                    shutil.rmtree(staged.pop(recipe.name)[0], ignore_errors=True)
                raise

        def confirm(recipe: Recipe, result: RecipeResult, built: dict[str, str]) -> RecipeResult:
            """An early recipe's bases were rebuilt as its lock says: its image stands."""
            from repro import oci
            from repro.lock import StaleLock

            directory, final = staged.pop(recipe.name)
            try:
                for base, locked in early[recipe.name].items():
                    if built.get(base) != locked:
                        raise StaleLock(
                            f"{recipe.name}: base recipe:{base} was rebuilt as "
                            f"{built.get(base, '?')[:19]}… but the lock has {locked[:19]}…: "
                            "run repro lock"
                        )
                oci.replace_output("oci", directory / "image", final)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            result = dataclasses.replace(result, output=f"oci:{final}")
            remember_build(result)
            return result

        def discard(recipe: Recipe, result: RecipeResult) -> None:
            directory, _ = staged.pop(recipe.name, (None, None))
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

        def publish(recipe: Recipe, result: RecipeResult) -> str:
            return push_recipe_image(recipe, result.output, registry=registry.get())

        def outcome_of(o: Outcome[RecipeResult]) -> BuildOutcome:
            error = o.error
            if error is not None and not isinstance(error, ReproError):
                raise error  # a bug: its traceback is the report
            return BuildOutcome(o.recipe.name, o.result, error, o.skipped_for)

        def report(o: Outcome[RecipeResult]) -> None:
            if on_outcome is not None:
                on_outcome(outcome_of(o))

        try:
            outcomes = schedule(
                selected,
                everything or selected,
                build_one,
                builders=slots,
                jobs=jobs,
                publish=publish,
                early=asking if asking is not None else (),
                confirm=confirm,
                discard=discard,
                on_start=start,
                on_finish=finish,
                on_outcome=report,
                cancel=cancel,
            )
            if asking is not None:  # done with the registry client before it closes
                with contextlib.suppress(Exception):
                    asking.result()
        finally:
            for future in opening.values():
                with contextlib.suppress(BaseException):
                    future.result().close()
    for future in opening.values():
        # A builder that cannot be used is one error, not one per recipe.
        error = future.exception()
        if error is not None:
            raise error
    return [outcome_of(o) for o in outcomes]


def _early_recipes(selected: Sequence[Recipe], registry: LazyRegistry) -> dict[str, dict[str, str]]:
    """The recipes that can be built without waiting for the selected recipes they
    build on: each such base is pinned in the recipe's lock to a digest that is in
    the registry already. Recipe name -> {base recipe: locked digest}."""
    from concurrent.futures import ThreadPoolExecutor

    from repro.errors import RegistryError
    from repro.lock import read_lock

    names = {r.name for r in selected}
    wanted: dict[str, dict[str, str]] = {}  # recipe -> {base: digest}, if all are pinned
    images: dict[str, str] = {}  # image@digest to ask the registry about
    for recipe in selected:
        bases = sorted(set(recipe.recipe_bases) & names)
        if not bases or recipe.rootfs is not None:
            continue
        try:
            lock = read_lock(recipe) or {}
        except ReproError:
            continue  # the build reports it
        pins: dict[str, str] = {}
        for base in bases:
            entry = (lock.get("bases") or {}).get(f"recipe:{base}") or {}
            digest, image = str(entry.get("digest", "")), str(entry.get("image", ""))
            if not digest.startswith("sha256:") or not image:
                break
            pins[base] = digest
            images[f"{base}@{digest}"] = f"{image}@{digest}"
        else:
            wanted[recipe.name] = pins
    if not wanted:
        return {}

    def present(reference: str) -> bool:
        try:
            registry.get().resolve(reference)
        except RegistryError:
            return False
        return True

    # The questions at once: they stand between the command's start and its first builds.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="repro-early") as pool:
        answers = dict(zip(images, pool.map(present, images.values()), strict=True))
    return {
        name: pins
        for name, pins in wanted.items()
        if all(answers[f"{base}@{digest}"] for base, digest in pins.items())
    }


def _open_builder(builder: str | None) -> Connection:
    from repro.buildkit import connect

    conn = connect(builder)
    try:
        conn.preflight()
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def vanished_pins_explained(recipe: Recipe) -> Iterator[None]:
    """A failed build whose locked package version is gone says so, not just "failed"."""
    from repro.errors import BuildFailed, ReproError

    try:
        yield
    except BuildFailed as exc:
        from repro.lock import read_lock, vanished_pins

        lock = read_lock(recipe)
        gone = ""
        if lock and lock.get("packages"):
            try:
                gone = vanished_pins(recipe, lock)
            except ReproError:
                gone = ""
        if gone:
            raise BuildFailed(f"{recipe.name}: {gone} ({exc})") from None
        raise
