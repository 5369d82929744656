"""The differential harness's fixed seed set (CI): random contexts with .dockerignore
files, and random Dockerfiles, each built by repro and by buildx on the same engine and
compared (file trees and digests). A divergence fails with its seed and a shrunk
reproducer; the run prints how many cases were compared.

Longer runs: bench/differential.py --count N (docs/differential.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import diffharness as h
import pytest

# The CI seed set: one context and one .dockerignore per seed, one Dockerfile per seed
# (1-15, and seeds whose Dockerfile is broken in the ways 1-15 miss: a failing RUN,
# ONBUILD FROM, an unknown instruction).
IGNORE_SEEDS = range(1, 41)
DOCKERFILE_SEEDS = [*range(1, 16), 31, 46, 70, 55, 64]


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


@pytest.mark.engine
@pytest.mark.slow
def test_ignore_files_against_buildx(
    tmp_path: Path, buildx: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = h.engine_env()
    started = time.monotonic()
    failures, refused = [], 0
    for seed in IGNORE_SEEDS:
        result = h.ignore_case(seed, tmp_path, env)
        refused += not result.comparison.buildx.ok
        if not result.agree:
            failures.append(result.reproducer)
    _report(
        capsys,
        f"differential: compared {len(IGNORE_SEEDS)} contexts with {len(IGNORE_SEEDS)} "
        f".dockerignore files against buildx ({refused} refused by both) in "
        f"{time.monotonic() - started:.0f} s; {len(failures)} divergences",
    )
    assert not failures, "\n\n".join(failures)
    assert refused < len(IGNORE_SEEDS) // 2  # the cases mostly build: they test matching


@pytest.mark.engine
@pytest.mark.slow
def test_dockerfiles_against_buildx(
    tmp_path: Path, buildx: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = h.engine_env()
    base = h.base_tag()
    started = time.monotonic()
    failures, refused, broken = [], 0, 0
    for seed in DOCKERFILE_SEEDS:
        result = h.dockerfile_case(seed, tmp_path, env, base)
        refused += not result.comparison.buildx.ok
        broken += bool(result.broken)
        if not result.agree:
            failures.append(result.reproducer)
    _report(
        capsys,
        f"differential: compared {len(DOCKERFILE_SEEDS)} Dockerfiles against buildx "
        f"({broken} broken on purpose: refused, or a step failed, in both, repro naming "
        f"the same line) in "
        f"{time.monotonic() - started:.0f} s; {len(failures)} divergences",
    )
    assert not failures, "\n\n".join(failures)
    assert refused == broken  # what is not broken on purpose builds
    assert 0 < broken <= len(DOCKERFILE_SEEDS) // 2


def test_generators_are_deterministic(tmp_path: Path) -> None:
    import random

    import diffgen

    a = diffgen.make_context(random.Random(7), tmp_path / "a")
    b = diffgen.make_context(random.Random(7), tmp_path / "b")
    assert a.entries == b.entries
    assert diffgen.make_dockerignore(random.Random(3), a) == diffgen.make_dockerignore(
        random.Random(3), b
    )
    d1 = diffgen.make_dockerfile(random.Random(5), "x.test/b:1").text()
    assert d1 == diffgen.make_dockerfile(random.Random(5), "x.test/b:1").text()


def test_generators_cover_the_grammar(tmp_path: Path) -> None:
    """Over the CI seeds the generators produce every feature the harness claims."""
    import random

    import diffgen

    ignores, dockerfiles, kinds = [], [], set()
    for seed in IGNORE_SEEDS:
        rng = random.Random(seed)
        ctx = diffgen.make_context(rng, tmp_path / f"c{seed}")
        ignores.append(diffgen.make_dockerignore(rng, ctx))
        kinds.update(k.split()[0] for k in ctx.entries.values())
    for seed in DOCKERFILE_SEEDS:
        dockerfiles.append(diffgen.make_dockerfile(random.Random(seed), "x.test/b:1").text())
    assert kinds >= {"file", "dir", "symlink", "hardlink", "fifo", "socket"}
    joined = "\n".join(ignores)
    for needle in ("*", "?", "[", "[^", "**", "\\", "!", "#", "|", "{", "}", "\r\n", "\ufeff"):
        assert needle in joined, needle
    assert any(line.startswith("/") for text in ignores for line in text.splitlines())
    both = "\n".join(dockerfiles)
    for needle in ("# escape=`", "\r\n", "\ufeff", "<<EOF", "${UNSET:-", "${SETV:+", "--from=0",
                   "--mount=from=", "ONBUILD", "# a comment inside", "COPY --from=x.test/b:1",
                   "from=x.test/b:1,target="):
        assert needle in both, needle
