"""Fixture build graphs of tiny busybox recipes (for tests and bench/bench_graph.py).

A graph has levels: recipes of the first level build on the base image, each recipe of
a later level on one recipe of the level before (``FROM recipe:NAME``). Locking such a
graph takes one round per level, since `repro lock` pins a ``recipe:`` base to the
image `repro build --all` pushed for it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

EPOCH = 1735689600


def graph_names(shape: Sequence[int]) -> list[list[str]]:
    """Recipe names per level: shape (4, 4, 4) gives l1a..l1d, l2a..l2d, l3a..l3d."""
    return [[f"l{n}{chr(ord('a') + i)}" for i in range(k)] for n, k in enumerate(shape, 1)]


def dockerfile(base: str, name: str, fail_arg: bool = False, sleep: int = 0) -> str:
    lines = [f"FROM {base}", "ARG NAME"]
    if fail_arg:
        lines += ["ARG FAIL=0", 'RUN --network=none test "$FAIL" != 1']
    if sleep:
        lines.append(f"RUN --network=none sleep {sleep}")
    # --network=none in the Dockerfile itself: `buildx bake` (bench/bench_graph.py)
    # builds the same files, and its bake files cannot say it before buildx 0.14.
    lines += [
        'RUN --network=none echo "$NAME" > /name-$NAME'
        ' && seq 1 500 | sed "s/^/$NAME /" > /lines-$NAME',
        # --chmod: without it the file's mode follows the checkout's umask, which
        # `repro verify` varies (and would rightly call the images different).
        "COPY --chmod=644 note /note-" + name,
    ]
    return "\n".join(lines) + "\n"


def make_graph(
    root: Path,
    publish_to: str,
    base_image: str,
    shape: Sequence[int],
    *,
    fail_arg: Sequence[str] = (),
    sleep: int = 0,
) -> dict[str, str | None]:
    """Write recipes under `root` (with a repro.toml publishing to `publish_to`);
    returns recipe name -> its base recipe (None for the first level)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "repro.toml").write_text(f'registry = "{publish_to}"\n')
    levels = graph_names(shape)
    parents: dict[str, str | None] = {}
    for depth, names in enumerate(levels):
        for i, name in enumerate(names):
            parent = levels[depth - 1][i % len(levels[depth - 1])] if depth else None
            base = f"recipe:{parent}" if parent else base_image
            d = root / name
            d.mkdir()
            (d / "recipe.toml").write_text(
                f'source_date_epoch = {EPOCH}\nnetwork = "none"\nbases = ["{base}"]\n'
                f'[args]\nNAME = "{name}"\n'
            )
            (d / "Dockerfile").write_text(dockerfile(base, name, name in fail_arg, sleep))
            (d / "note").write_text(f"{name}\n")
            parents[name] = parent
    return parents


def tagged_base(base_image: str, tag: str = "repro-graph") -> str:
    """`base_image` (``host/repo@sha256:…``, as $REPRO_BASE_IMAGE) under a tag in its
    own repository: a recipe's bases name tags, and its lock holds the digest."""
    from repro.registry import Registry

    name = base_image.split("@", 1)[0]
    with Registry() as client:
        data, media_type, _ = client.get_manifest(base_image)
        client.put_manifest(name, tag, data, media_type)
    return f"{name}:{tag}"


Run = Callable[..., subprocess.CompletedProcess[str]]


def lock_graph(root: Path, shape: Sequence[int], repro: Run, cwd: Path) -> None:
    """Lock every recipe, one level at a time: a level is locked once `build --all`
    has pushed the images it builds on (the later levels, unlocked, fail meanwhile)."""
    levels = graph_names(shape)
    for depth, names in enumerate(levels):
        if depth:
            r = repro("build", "--all", "--recipes-dir", str(root), "--progress", "quiet", cwd=cwd)
            assert r.returncode == 0 or "no repro.lock" in r.stderr, r.stderr[-2000:]
        r = repro("lock", *names, "--recipes-dir", str(root), cwd=cwd)
        assert r.returncode == 0, r.stderr[-2000:]
