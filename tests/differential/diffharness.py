"""Build one case with repro and with ``docker buildx build`` on the same engine and
compare what comes out: exit status, the image digest, and the image's file tree
(path, type, mode, owner, content hash, link target) after applying every layer.

A case is a recipe directory: ``Dockerfile``, ``recipe.toml`` and a ``ctx/`` context
(the Dockerfile and recipe stay out of the context). repro builds it with
``repro build --normalise off`` (after ``repro lock`` when it declares a base); buildx
gets the same Dockerfile, context, epoch and network mode.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EPOCH = 1700000000


@dataclass
class Outcome:
    """What one tool made of a case."""

    ok: bool
    digest: str = ""
    tree: dict[str, tuple[object, ...]] = field(default_factory=dict)
    error: str = ""
    exit_code: int = 0


@dataclass
class Comparison:
    repro: Outcome
    buildx: Outcome
    seconds: float
    # When both refuse the input, repro must say so as bad input: exit 2 and one line
    # naming this file (e.g. ".dockerignore:") with a line number.
    refusal_names: str = ""

    @property
    def agree(self) -> bool:
        if self.repro.ok != self.buildx.ok:
            return False
        if not self.repro.ok:
            return self._refused_well()  # both refused it (the messages differ by design)
        return self.repro.tree == self.buildx.tree and self.repro.digest == self.buildx.digest

    def _refused_well(self) -> bool:
        if not self.refusal_names:
            return True
        if self.refusal_names == "step":  # a step failed: exit 1, the same picture
            ours, theirs = _picture(self.repro.error), _picture(self.buildx.error)
            return self.repro.exit_code == 1 and ours is not None and ours == theirs
        last = self.repro.error.strip().splitlines()[-1] if self.repro.error.strip() else ""
        ours = re.search(re.escape(self.refusal_names) + r":(\d+): ", last)
        if self.repro.exit_code != 2 or ours is None:
            return False
        # where buildx names the line (its "Dockerfile:N" block), repro names the same
        block = r"^" + re.escape(self.refusal_names) + r":(\d+)$"
        theirs = re.search(block, self.buildx.error, re.M)
        return theirs is None or theirs.group(1) == ours.group(1)

    def explain(self, limit: int = 20) -> str:
        failed_step = self.refusal_names == "step" and not (self.repro.ok or self.buildx.ok)
        if failed_step and not self._refused_well():
            return (
                    f"a step failed in both; repro (exit {self.repro.exit_code}) showed\n"
                    f"{_picture(self.repro.error)}\nbuildx showed\n"
                    f"{_picture(self.buildx.error)}"
                )
        r, b = self.repro, self.buildx
        if not r.ok and not b.ok and not self._refused_well():
            return f"both refused it, but repro not as bad input (exit {r.exit_code}): {r.error}"
        if r.ok != b.ok:
            failed = r if not r.ok else b
            who = "repro" if not r.ok else "buildx"
            return f"only {who} failed (exit {failed.exit_code}): {failed.error[-1500:]}"
        lines = []
        for path in sorted(set(r.tree) | set(b.tree)):
            if r.tree.get(path) != b.tree.get(path):
                lines.append(f"  {path!r}: repro {r.tree.get(path)} buildx {b.tree.get(path)}")
        if not lines and r.digest != b.digest:
            lines.append(f"  same files, digests differ: repro {r.digest} buildx {b.digest}")
        more = f"\n  … and {len(lines) - limit} more" if len(lines) > limit else ""
        return "\n".join(lines[:limit]) + more


def _picture(output: str) -> str | None:
    """The ``Dockerfile:N`` block a failed build prints (the failing lines)."""
    m = re.search(r"^Dockerfile:\d+\n-{20}\n(?:.*\n)*?-{20}$", output, re.M)
    return "\n".join(line.rstrip() for line in m.group().splitlines()) if m else None


# ----------------------------------------------------------------------------------------
# reading an OCI archive


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    algo, _, hexdigest = digest.partition(":")
    member = tar.extractfile(f"blobs/{algo}/{hexdigest}")
    if member is None:
        raise ValueError(f"{digest}: not a file in the archive")
    data = member.read()
    if hashlib.sha256(data).hexdigest() != hexdigest:
        raise ValueError(f"{digest}: the blob's bytes do not match its digest")
    return data


def image_tree(archive: Path) -> tuple[str, dict[str, tuple[object, ...]]]:
    """The manifest digest and the file tree of the single-platform image in an OCI
    archive: path -> (type, mode, uid, gid, sha256 of content | link target)."""
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        digest = index["manifests"][0]["digest"]
        manifest = json.loads(_blob(tar, digest))
        tree: dict[str, tuple[object, ...]] = {}
        for layer in manifest["layers"]:
            data = _blob(tar, layer["digest"])
            if layer["mediaType"].endswith("gzip"):
                data = gzip.decompress(data)
            _apply_layer(tree, data)
    return digest, tree


def _apply_layer(tree: dict[str, tuple[object, ...]], data: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        for m in layer:
            path = m.name.removeprefix("./").rstrip("/")
            base = path.rsplit("/", 1)[-1]
            parent = path[: len(path) - len(base)]
            if base == ".wh..wh..opq":
                for p in [p for p in tree if p.startswith(parent)]:
                    del tree[p]
                continue
            if base.startswith(".wh."):
                gone = parent + base[4:]
                for p in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                    del tree[p]
                continue
            if m.isfile():
                fh = layer.extractfile(m)
                content: object = hashlib.sha256(fh.read() if fh else b"").hexdigest()[:16]
                kind = "file"
            elif m.isdir():
                kind, content = "dir", ""
            elif m.issym():
                kind, content = "symlink", m.linkname
            elif m.islnk():
                kind, content = "hardlink", m.linkname.removeprefix("./")
            else:
                kind, content = f"type{m.type!r}", f"{m.devmajor}:{m.devminor}"
            tree[path] = (kind, oct(m.mode), m.uid, m.gid, content)


# ----------------------------------------------------------------------------------------
# running the tools


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("REPRO_DEV_ENV"):  # keep buildx's state out of ~/.docker
        env["DOCKER_CONFIG"] = os.path.join(env["REPRO_DEV_ENV"], "docker-config")
    return env


def base_tag() -> str:
    """The busybox base under its tag (as the example recipes name it)."""
    sys.path.insert(0, str(ROOT))
    from repro.recipe import load_recipe

    return load_recipe(ROOT / "recipes" / "hello").bases[0].ref


def write_recipe(directory: Path, dockerfile: bytes | str, bases: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = dockerfile.encode() if isinstance(dockerfile, str) else dockerfile
    (directory / "Dockerfile").write_bytes(data)
    (directory / "ctx").mkdir(exist_ok=True)
    toml = [
        'context = "ctx"',
        f"source_date_epoch = {EPOCH}",
        'network = "none"',
        "bases = [" + ", ".join(json.dumps(b) for b in bases) + "]",
    ]
    (directory / "recipe.toml").write_text("\n".join(toml) + "\n")
    return directory


def _repro(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=300,
    )


def build_repro(recipe: Path, out: Path, env: dict[str, str], lock: bool) -> Outcome:
    if lock:
        r = _repro(["lock", str(recipe)], env)
        if r.returncode != 0:
            return Outcome(False, error=r.stderr.strip(), exit_code=r.returncode)
    r = _repro(
        ["build", str(recipe), "--normalise", "off", "--progress", "plain",
         "--output", f"oci-archive:{out}"],
        env,
    )
    if r.returncode != 0:
        return Outcome(False, error=r.stderr.strip(), exit_code=r.returncode)
    digest, tree = image_tree(out)
    return Outcome(True, digest, tree)


def build_buildx(recipe: Path, out: Path, env: dict[str, str]) -> Outcome:
    buildx = env["REPRO_BUILDX"]
    cmd = [
        buildx, "build", "--provenance=false", "--sbom=false", "--progress=plain",
        "--network", "none", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}",
        "--output", f"type=oci,dest={out},rewrite-timestamp=true",
        "-f", str(recipe / "Dockerfile"), str(recipe / "ctx"),
    ]
    benv = dict(env)
    benv.pop("BUILDKIT_HOST", None)
    r = subprocess.run(cmd, capture_output=True, text=True, env=benv, timeout=300)
    if r.returncode != 0:
        return Outcome(False, error=r.stderr.strip(), exit_code=r.returncode)
    digest, tree = image_tree(out)
    return Outcome(True, digest, tree)


def compare(
    recipe: Path, env: dict[str, str], lock: bool = False, refusal_names: str = ""
) -> Comparison:
    started = time.monotonic()
    b = build_buildx(recipe, recipe / "buildx.tar", env)
    r = build_repro(recipe, recipe / "repro.tar", env, lock)
    return Comparison(r, b, time.monotonic() - started, refusal_names)


# ----------------------------------------------------------------------------------------
# shrinking a failure to a small reproducer


def shrink(
    items: list[str], still_fails: Callable[[list[str]], bool], budget: int = 24
) -> list[str]:
    """Drop items one at a time while the failure persists (at most ``budget`` tries)."""
    kept = list(items)
    i = 0
    while i < len(kept) and budget > 0:
        trial = kept[:i] + kept[i + 1 :]
        budget -= 1
        if trial and still_fails(trial):
            kept = trial
        else:
            i += 1
    return kept


def seeds(spec: str) -> Iterator[int]:
    """``1-5,9`` -> 1, 2, 3, 4, 5, 9."""
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        yield from range(int(lo), int(hi or lo) + 1)


# ----------------------------------------------------------------------------------------
# the two kinds of case

IGNORE_DOCKERFILE = "FROM scratch\nCOPY . /ctx/\n"


@dataclass
class CaseResult:
    kind: str
    seed: int
    comparison: Comparison
    reproducer: str = ""
    broken: str = ""  # the mistake put in on purpose: both tools must refuse the input

    @property
    def agree(self) -> bool:
        return self.comparison.agree


def ignore_case(seed: int, work: Path, env: dict[str, str], minimise: bool = True) -> CaseResult:
    """Context and .dockerignore from ``seed``; one build each with ``COPY . /ctx/``."""
    import random

    import diffgen

    rng = random.Random(seed)
    recipe = write_recipe(work / f"ignore-{seed}", IGNORE_DOCKERFILE, [])
    ctx = diffgen.make_context(rng, recipe / "ctx")
    ignore = diffgen.make_dockerignore(rng, ctx)
    # Mostly the context's .dockerignore; sometimes <Dockerfile>.dockerignore beside the
    # Dockerfile, which BuildKit prefers (a decoy .dockerignore in the context then).
    where = recipe / "ctx" / ".dockerignore"
    if rng.random() < 0.2:
        where.write_text("*\n")
        where = recipe / "Dockerfile.dockerignore"
    where.write_bytes(ignore.encode("utf-8", "surrogateescape"))
    result = CaseResult("ignore", seed, compare(recipe, env, refusal_names=where.name))
    if result.agree or not minimise:
        return result
    first = result.comparison.explain()

    def fails(lines: list[str]) -> bool:
        where.write_bytes("".join(lines).encode("utf-8", "surrogateescape"))
        return not compare(recipe, env, refusal_names=where.name).agree

    kept = shrink(ignore.splitlines(keepends=True), fails)
    where.write_bytes("".join(kept).encode("utf-8", "surrogateescape"))
    final = compare(recipe, env, refusal_names=where.name)
    differing = [p.removeprefix("ctx/") for p in set(final.repro.tree) ^ set(final.buildx.tree)]
    shown = {p: k for p, k in ctx.entries.items() if p in differing} or ctx.entries
    result.reproducer = (
        f"differential ignore case, seed {seed} (recreate: bench/differential.py "
        f"--kind ignore --seeds {seed})\n"
        f"{where.relative_to(recipe)} (shrunk): {''.join(kept)!r}\n"
        f"Dockerfile: {IGNORE_DOCKERFILE!r}\n"
        f"context entries involved:\n{diffgen.Context(shown).describe()}\n"
        f"difference:\n{_final(final, first)}"
    )
    return result


def _final(final: Comparison, first: str) -> str:
    """The shrunk case's difference; the first one when it did not recur (flaky)."""
    if final.agree:
        return f"(did not recur when rebuilt: flaky?) first seen:\n{first}"
    return final.explain()


def dockerfile_case(
    seed: int, work: Path, env: dict[str, str], base: str, minimise: bool = True
) -> CaseResult:
    """A Dockerfile from ``seed`` on the busybox base (declared and locked, so repro
    renders a pinned copy) and scratch; a tiny context."""
    import random

    import diffgen

    rng = random.Random(seed)
    case = diffgen.make_dockerfile(rng, base)
    recipe = write_recipe(work / f"dockerfile-{seed}", case.text(), [base])
    refusal = "step" if case.broken == diffgen.FAILING_RUN else "Dockerfile" if case.broken else ""
    (recipe / "ctx" / "f.txt").write_text("context file\n")
    (recipe / "ctx" / "g.log").write_text("log\n")
    # repro builds a rendered (pinned) copy of the Dockerfile: the ignore file beside it
    # must come along, and the context's must still apply when there is none.
    if rng.random() < 0.4:
        (recipe / "Dockerfile.dockerignore").write_text("*.log\n")
    if rng.random() < 0.4:
        (recipe / "ctx" / ".dockerignore").write_text("f.txt\n")
    result = CaseResult("dockerfile", seed, compare(recipe, env, True, refusal), broken=case.broken)
    if case.broken and result.comparison.buildx.ok:
        result.comparison.buildx = Outcome(False, error=f"expected a refusal: {case.broken}")
    if result.agree or not minimise:
        return result
    first = result.comparison.explain()
    # stages, global ARGs and directives stay: without them the case fails otherwise
    indices = [
        str(i)
        for i, block in enumerate(case.blocks)
        if not block[0].startswith(("FROM ", "ARG BASE", "# "))
    ]
    fixed = [str(i) for i in range(len(case.blocks)) if str(i) not in indices]

    def chosen(kept: list[str]) -> list[list[str]]:
        return [case.blocks[int(i)] for i in sorted(kept + fixed, key=int)]

    def fails(kept: list[str]) -> bool:
        text = case.text(chosen(kept))
        (recipe / "Dockerfile").write_bytes(text.encode())
        return not compare(recipe, env, True, refusal).agree

    kept = shrink(indices, fails)
    text = case.text(chosen(kept))
    (recipe / "Dockerfile").write_bytes(text.encode())
    final = compare(recipe, env, True, refusal)
    result.reproducer = (
        f"differential Dockerfile case, seed {seed} (recreate: bench/differential.py "
        f"--kind dockerfile --seeds {seed})\n"
        f"Dockerfile (shrunk{', broken: ' + case.broken if case.broken else ''}): {text!r}\n"
        f"recipe.toml: bases = [{base!r}]\n"
        f"difference:\n{_final(final, first)}"
    )
    return result
