"""A full disk under the output and under the cache: a small tmpfs the test mounts
(root only; skipped where mounting is not allowed), filled up to a few hundred KiB
before the command runs, and unmounted after.

Each fault: the command ended with one clear line (or did its work anyway, when only
a cache could not be written); no output, archive, temporary file or cache entry is
half-written; an earlier output it was to replace is intact; with space freed, a
re-run succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultlib import Work, assert_fine, check_layout, inspect, record, run, workspace

# The examples' bases in the registry (jq on debian12, greet on hello): tests/conftest.py.
pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("example_images")]

KiB = 1024


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the duration."""
    # Where the engine is required (scripts/test, CI: a privileged container), so is
    # this: a skip would hide that the disk faults never ran.
    give_up = pytest.fail if os.environ.get("REPRO_REQUIRE_ENGINE") == "1" else pytest.skip
    if os.geteuid() != 0:
        give_up("mounting a small file system needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        give_up(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(fs: Path, leave: int) -> Path:
    """Fill the file system at `fs` until `leave` bytes are free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as out:
        remaining = max(0, free - leave)
        while remaining:
            n = min(remaining, 1 << 20)
            out.write(b"\0" * n)
            remaining -= n
    return filler


def digest_of(stdout: str) -> str:
    return str(json.loads(stdout)[0]["digest"])


def built(work: Work, *extra: str) -> str:
    r = run(work, "build", "hello", "--json", "--progress", "quiet", *extra)
    assert r.returncode == 0, r.stderr
    return digest_of(r.stdout)


def test_a_full_disk_under_the_output(tmp_path: Path, registry: str) -> None:
    work = workspace(tmp_path / "w", registry)
    digest = built(work)  # the clean result, and a warm cache
    outcomes = []
    with small_fs(tmp_path / "fs", "8m") as fs:
        cases = [
            ("full disk under a new layout", "oci", fs / "new"),
            ("full disk under an archive", "oci-archive", fs / "hello.tar"),
            ("full disk under a layout to replace", "oci", fs / "old"),
        ]
        old = fs / "old"
        r = run(work, "build", "hello", "--progress", "quiet", "--output", f"oci:{old}")
        assert r.returncode == 0, r.stderr
        before = sorted(p.name for p in (old / "blobs" / "sha256").iterdir())
        for fault, kind, dest in cases:
            filler = fill(fs, 256 * KiB)  # less than the image's 1 MiB layer
            args = ("build", "hello", "--json", "--progress", "quiet", "--output", f"{kind}:{dest}")
            r = run(work, *args)
            layouts = [dest, old] if kind == "oci" else [old]
            archives = [dest] if kind == "oci-archive" else []
            half, debris = inspect(work, killed=False, layouts=layouts, archives=archives)
            if dest == old:  # the earlier output is still all there
                after = sorted(p.name for p in (old / "blobs" / "sha256").iterdir())
                half += [] if after == before else [f"{old}: changed by a failed build"]
            filler.unlink()

            def rerun(args: tuple[str, ...] = args) -> bool:
                again = run(work, *args)
                return again.returncode == 0 and digest_of(again.stdout) == digest

            def correct(r: subprocess.CompletedProcess[str] = r) -> str:
                return "" if digest_of(r.stdout) == digest else "another digest"

            outcomes.append(
                record(fault, "build", r.returncode, r.stderr, correct, (half, debris), rerun=rerun)
            )
            assert not check_layout(old)
    for o in outcomes:
        assert_fine(o, allowed=("failed cleanly",))


def test_a_full_disk_under_the_cache(tmp_path: Path, registry: str) -> None:
    work = workspace(tmp_path / "w", registry)
    digest = built(work)
    outcomes = []
    with small_fs(tmp_path / "fs", "2m") as fs:
        for fault, leave in [
            ("full disk under the cache (nothing free)", 0),
            ("full disk under the cache (64 KiB free)", 64 * KiB),
        ]:
            work.cache = fs / "cache"
            filler = fill(fs, leave)
            r = run(work, "build", "hello", "--json", "--progress", "quiet")
            state = inspect(work, killed=False, layouts=[work.path / "out" / "hello"])
            filler.unlink()

            def rerun() -> bool:
                again = run(work, "build", "hello", "--json", "--progress", "quiet")
                return again.returncode == 0 and digest_of(again.stdout) == digest

            def correct(r: subprocess.CompletedProcess[str] = r) -> str:
                return "" if digest_of(r.stdout) == digest else "another digest"

            outcomes.append(
                record(fault, "build", r.returncode, r.stderr, correct, state, rerun=rerun)
            )
            for path in sorted((fs / "cache").glob("*")):
                subprocess.run(["rm", "-rf", str(path)], check=True)
    for o in outcomes:
        assert_fine(o)


@pytest.mark.mirror
def test_a_full_disk_under_the_package_cache(tmp_path: Path, registry: str) -> None:
    """recipes/jq with an empty cache: its three packages come from the mirror into a
    cache with room for one of them."""
    vault = f"{registry}/repro-test/faults-{uuid.uuid4().hex[:10]}/vault"  # empty
    work = workspace(
        tmp_path / "w",
        registry,
        ("debian12", "jq"),
        namespace="repro",
        extra=f'vault = "{vault}"\n',
    )
    args = ("build", "jq", "--json", "--progress", "quiet")
    r = run(work, *args)
    assert r.returncode == 0, r.stderr
    digest = digest_of(r.stdout)
    with small_fs(tmp_path / "fs", "2m") as fs:
        work.cache = fs / "cache"
        filler = fill(fs, 200 * KiB)
        r = run(work, *args)
        state = inspect(work, killed=False, layouts=[work.path / "out" / "jq"])
        filler.unlink()

        def rerun() -> bool:
            again = run(work, *args)
            return again.returncode == 0 and digest_of(again.stdout) == digest

        def correct() -> str:
            return "" if digest_of(r.stdout) == digest else "another digest"

        outcome = record(
            "full disk under the package cache",
            "build",
            r.returncode,
            r.stderr,
            correct,
            state,
            rerun=rerun,
        )
    assert_fine(outcome)
