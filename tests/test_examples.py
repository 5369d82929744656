"""The README's example recipes, as a new user meets them: `repro build --all` builds
the Debian 12 base from pinned packages and the two applications on it; the base's
digest is the one the applications' committed locks name; the web server serves
its page and the CLI tool runs; both verify identical.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from runner import run_repro

from repro import oci
from repro.registry import Registry

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
APPS = ("web", "jq")


def repro(*args: str, cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, "--recipes-dir", str(ROOT / "recipes"), cwd=cwd, timeout=timeout)


def docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    dev = os.environ.get("REPRO_DEV_ENV", "")
    exe = Path(dev) / "root/usr/bin/docker" if dev else None
    path = str(exe) if exe and exe.exists() else shutil.which("docker")
    assert path, "no docker CLI: scripts/dev-env up installs one"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    work = tmp_path_factory.mktemp("examples")
    r = repro("build", "--all", "--json", "--progress", "quiet", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    results = {x["recipe"]: x for x in json.loads(r.stdout)}
    for x in results.values():
        x["path"] = str(work / x["output"].partition(":")[2])
    return results


def test_the_base_has_the_digest_the_committed_locks_name(built: dict[str, dict[str, str]]) -> None:
    base = built["debian12"]["digest"]
    for app in APPS:
        lock = tomllib.loads((ROOT / "recipes" / app / "repro.lock").read_text())
        assert lock["bases"]["recipe:debian12"]["digest"] == base, app
        assert built[app]["packages"]["checked"], app  # type: ignore[index]


def _push(built: dict[str, dict[str, str]], app: str) -> str:
    registry = os.environ["REPRO_REGISTRY"]
    ref = f"{registry}/repro-test/example-{app}:latest"
    with Registry() as client:
        client.push_layout(oci.OCILayout(built[app]["path"]), ref)
    return f"{ref.rsplit(':', 1)[0]}@{built[app]['digest']}"


def test_the_cli_tool_runs(built: dict[str, dict[str, str]]) -> None:
    image = _push(built, "jq")
    r = subprocess.run(
        [*_docker_cmd(), "run", "--rm", "-i", "--network", "none", image, "-c", ".a"],
        input='{"a": [1, 2, 3]}',
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[1,2,3]"
    who = docker("run", "--rm", "--entrypoint", "id", image, "-u")
    assert who.stdout.strip() == "65532", who.stderr  # runs as nonroot


def _docker_cmd() -> list[str]:
    dev = os.environ.get("REPRO_DEV_ENV", "")
    exe = Path(dev) / "root/usr/bin/docker" if dev else None
    return [str(exe) if exe and exe.exists() else (shutil.which("docker") or "docker")]


def test_the_web_server_serves_its_page(built: dict[str, dict[str, str]]) -> None:
    image = _push(built, "web")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"repro-example-web-{os.getpid()}"
    r = docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", image)
    assert r.returncode == 0, r.stderr
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    body = resp.read().decode()
                    break
            except OSError:
                time.sleep(0.3)
        assert "Hello from a reproducible image" in body, docker("logs", name).stderr
        expected = (ROOT / "recipes" / "web" / "index.html").read_text()
        assert body == expected
    finally:
        docker("rm", "-f", name)


def test_the_applications_verify_identical(
    built: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    r = repro("verify", *APPS, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    verdicts = {x["recipe"]: x["verdict"] for x in json.loads(r.stdout)}
    assert verdicts == {app: "identical" for app in APPS}
    digests = {x["recipe"]: x["digest1"] for x in json.loads(r.stdout)}
    assert digests == {app: built[app]["digest"] for app in APPS}
