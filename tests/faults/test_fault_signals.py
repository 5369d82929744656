"""SIGINT, SIGKILL and SIGTERM at seeded random moments of `repro lock`, `build`,
`verify` and `publish` on recipes/hello (busybox), in a registry namespace of its own.

Each command runs once cleanly first (its result, and how long it takes); then, for
each kill point, the signal goes to the command's process group (as Ctrl-C does)
somewhere between start-up and that duration. After SIGINT the command has exited 130
with one line, after SIGTERM 143 (or finished first, with the clean result); after any
signal no lock, layout, temporary file or tag is half-written; then a clean re-run
succeeds.
Seed: REPRO_FAULT_SEED (default 10); the points are printed in the suite's summary.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from faultlib import Work, assert_fine, check_tag, inspect, record, run, run_killed, workspace

pytestmark = pytest.mark.engine

SEED = int(os.environ.get("REPRO_FAULT_SEED", "10"))
# (command, kill points): SIGINT, SIGKILL and SIGTERM in turn, starting with SIGINT.
POINTS = {"lock": 4, "build": 3, "verify": 3, "publish": 4}


def kill_points(command: str, duration: float) -> list[tuple[signal.Signals, float]]:
    rng = random.Random(f"{SEED}:{command}")
    sigs = [signal.SIGINT, signal.SIGKILL, signal.SIGTERM]
    # Within the command's clean run time: the commands got fast (`lock` and `publish`
    # of hello take 0.2-0.3 s), and a point past the end tests nothing.
    return [
        (sigs[i % 3], round(rng.uniform(0.1, max(0.15, 0.9 * duration)), 2))
        for i in range(POINTS[command])
    ]


def timed(work: Work, *args: str) -> tuple[float, str]:
    start = time.monotonic()
    r = run(work, *args)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - start, r.stdout


def temp_files(work: Work) -> list[str]:
    tmp = work.path / "tmp"
    return [str(p) for p in tmp.iterdir()] if tmp.exists() else []


def attack(
    work: Work,
    command: str,
    args: tuple[str, ...],
    duration: float,
    prepare: Callable[[], None],
    state: Callable[[bool], tuple[list[str], list[str]]],
    correct: Callable[[str], str],
    rerun: Callable[[], bool],
) -> None:
    outcomes = []
    for sig, after in kill_points(command, duration):
        prepare()
        code, out, err, sent = run_killed(work, args, sig, after)
        killed = sig == signal.SIGKILL and sent
        half, debris = state(killed)
        if not killed:  # a temporary directory left by a command that could clean up
            half += [f"left behind: {t}" for t in temp_files(work)]
        else:
            debris += temp_files(work)
        fault = f"{sig.name} at {after:.2f} s" + ("" if sent else " (after it ended)")
        outcome = record(
            fault,
            command,
            code,
            err,
            lambda out=out: correct(out),
            (half, debris),
            interrupted=sig == signal.SIGINT and sent,
            killed=killed,
            terminated=sig == signal.SIGTERM and sent,
            rerun=rerun,
        )
        outcomes.append(outcome)
        if killed:
            # The re-run sweeps what SIGKILL left beside outputs and locks; what it
            # left in TMPDIR (sockets, scratch) is the system's to clean, and must
            # not count against the next kill point. That includes plain files:
            # Python's tempfile probes TMPDIR with a bare-named file (created, then
            # unlinked) that a SIGKILL in between leaves there.
            after_rerun, _ = state(False)
            outcome.half_written += [f"after the re-run: {x}" for x in after_rerun]
            for path in map(Path, temp_files(work)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    for o in outcomes:
        assert_fine(o)


def test_signals_during_lock(tmp_path: Path, registry: str) -> None:
    work = workspace(tmp_path / "w", registry)
    lock = work.lock("hello")
    old = lock.read_bytes()
    # A changed epoch makes the lock stale: `repro lock` rewrites it.
    toml = work.path / "recipes/hello/recipe.toml"
    toml.write_text(toml.read_text().replace("= 1735689600", "= 1735689601"))
    duration, _ = timed(work, "lock", "hello")
    new = lock.read_bytes()
    assert new != old

    def prepare() -> None:
        lock.write_bytes(old)

    def rerun() -> bool:
        return run(work, "lock", "hello").returncode == 0 and lock.read_bytes() == new

    attack(
        work,
        "lock",
        ("lock", "hello"),
        duration,
        prepare,
        lambda killed: inspect(work, killed=killed, locks={"hello": [old, new]}),
        lambda _out: "" if lock.read_bytes() == new else "another lock",
        rerun,
    )


def test_signals_during_build(tmp_path: Path, registry: str) -> None:
    work = workspace(tmp_path / "w", registry)
    args = ("build", "hello", "--json", "--progress", "quiet")
    duration, out = timed(work, *args)
    digest = json.loads(out)[0]["digest"]
    layout = work.path / "out" / "hello"

    def rerun() -> bool:
        again = run(work, *args)
        return again.returncode == 0 and json.loads(again.stdout)[0]["digest"] == digest

    attack(
        work,
        "build",
        args,
        duration,
        lambda: None,  # an earlier output is there to be replaced
        lambda killed: inspect(work, killed=killed, layouts=[layout]),
        lambda out: "" if json.loads(out)[0]["digest"] == digest else "another digest",
        rerun,
    )


def test_signals_during_verify(tmp_path: Path, registry: str) -> None:
    work = workspace(tmp_path / "w", registry)
    duration, _ = timed(work, "verify", "hello")

    attack(
        work,
        "verify",
        ("verify", "hello"),
        duration,
        lambda: None,
        lambda killed: inspect(work, killed=killed),
        lambda _out: "",  # exit 0 is the verdict "identical"
        lambda: run(work, "verify", "hello").returncode == 0,
    )


def test_signals_during_publish(tmp_path: Path, registry: str) -> None:
    work = workspace(tmp_path / "w", registry)
    built = run(work, "build", "hello", "--json", "--progress", "quiet")
    assert built.returncode == 0, built.stderr
    digest = json.loads(built.stdout)[0]["digest"]
    duration, _ = timed(work, "publish", "hello")
    tag: list[str] = []

    def prepare() -> None:
        # A namespace of its own for each kill point: the publish starts from nothing.
        namespace = f"repro-test/faults-{uuid.uuid4().hex[:10]}"
        (work.path / "recipes/repro.toml").write_text(f'registry = "{registry}/{namespace}"\n')
        tag[:] = [f"{registry}/{namespace}/hello:latest"]

    def rerun() -> bool:
        return run(work, "publish", "hello").returncode == 0 and not check_tag(tag[0], [digest])

    attack(
        work,
        "publish",
        ("publish", "hello", "--json"),
        duration,
        prepare,
        lambda killed: inspect(work, killed=killed, tags={tag[0]: [None, digest]}),
        lambda out: "" if json.loads(out)[0]["digest"] == digest else "another digest",
        rerun,
    )
