"""The classic image store, its refusal and the action's remedy, on a real engine.

scripts/dev-env starts a second Docker Engine (same packages as the shared one, its
own socket, data root and exec root, its own bridge, no iptables rules) with
features.containerd-snapshotter false: the engine of a hosted ubuntu-24.04 runner.
`repro build` must refuse it and name the fix; `repro ci buildkit` (what the action
runs on such a runner) switches it to the containerd store and restarts it; then the
same recipe builds to the same digest as on the shared engine. The test starts and
stops its own engine and never touches the shared one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner import run_repro

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
DEV_ENV = ROOT / "scripts" / "dev-env"


def repro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, env=env, timeout=600)


@pytest.fixture
def classic_engine(tmp_path: Path) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("starting a second dockerd needs root")
    shared = os.environ.get("REPRO_DEV_ENV", "")
    if not shared:
        pytest.skip("REPRO_DEV_ENV is not set (scripts/dev-env up)")
    env = {
        **os.environ,
        # the engine packages the shared dev env already fetched
        "REPRO_CACHE": str(Path(shared).parent),
        "REPRO_DEV_ENV_CLASSIC": str(tmp_path / "classic"),
    }
    before = _interfaces()
    up = subprocess.run(
        [str(DEV_ENV), "classic", "up"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        yield {**env, **exports}
    finally:
        subprocess.run(
            [str(DEV_ENV), "classic", "down"], env=env, capture_output=True, text=True, timeout=120
        )
        # The shared engine's network is untouched: the same interfaces, same indexes
        # (dockerd started with --bridge=none would have deleted docker0).
        assert _interfaces() == before


def _interfaces() -> dict[str, str]:
    """Network interfaces and their indexes, less the veths that builds come and go with."""
    net = Path("/sys/class/net")
    return {
        p.name: (p / "ifindex").read_text().strip()
        for p in sorted(net.iterdir())
        if not p.name.startswith("veth")
    }


def test_classic_store_is_refused_then_fixed_by_the_remedy(
    tmp_path: Path, classic_engine: dict[str, str]
) -> None:
    host = classic_engine["REPRO_CLASSIC_DOCKER_HOST"]
    daemon_json = classic_engine["REPRO_CLASSIC_DAEMON_JSON"]
    builder = "docker://" + host
    assert json.loads(Path(daemon_json).read_text()) == {
        "features": {"containerd-snapshotter": False}
    }

    # Refused, with the fix named, and nothing written.
    r = repro("build", "hello", "-o", f"oci:{tmp_path / 'refused'}", "--builder", builder)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "classic image store" in lines[0]
    assert "containerd-snapshotter" in lines[0] and "docker-container://" in lines[0]
    assert not (tmp_path / "refused").exists()
    doctor = repro("doctor", "--json", "--builder", builder)
    assert doctor.returncode == 2
    store = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "image store")
    assert not store["ok"] and "containerd-snapshotter" in store["fix"]

    # The action's remedy: the same command the action runs on ubuntu-24.04, with
    # this engine's daemon.json and restart instead of /etc/docker and systemctl.
    r = repro(
        "ci",
        "buildkit",
        "--daemon-json",
        daemon_json,
        "--restart",
        f"{DEV_ENV} classic restart",
        env={**classic_engine, "DOCKER_HOST": host},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "switched to the containerd image store" in r.stdout
    assert json.loads(Path(daemon_json).read_text())["features"]["containerd-snapshotter"]
    again = repro(
        "ci",
        "buildkit",
        "--daemon-json",
        daemon_json,
        "--restart",
        "false",
        env={**classic_engine, "DOCKER_HOST": host},
    )
    assert again.returncode == 0 and "already uses the containerd image store" in again.stdout

    # The same digest as on the shared engine (containerd store from the start).
    args = ["build", "hello", "--json", "--progress", "quiet", "--no-cache"]
    fixed = repro(*args, "-o", f"oci:{tmp_path / 'fixed'}", "--builder", builder)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    shared = repro(*args, "-o", f"oci:{tmp_path / 'shared'}")
    assert shared.returncode == 0, shared.stderr[-3000:]
    a, b = json.loads(fixed.stdout)[0], json.loads(shared.stdout)[0]
    assert a["digest"] == b["digest"]
    assert a["builder"] != b["builder"]
