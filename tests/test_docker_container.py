"""The ``docker-container://NAME`` builder transport, against the dev engine.

repro reaches a BuildKit in a container the way buildx's docker-container driver
does: one ``buildctl dial-stdio`` exec per gRPC connection, through the engine's exec
API with a hijacked stream. What these tests run for real: the engine's exec API
(create, start with the upgrade, the multiplexed output stream), gRPC and a whole
build through it, and the errors for a missing container or a missing buildctl.

What they cannot run here: moby/buildkit's own image. Docker Hub is not reachable
from this machine and Debian 13 packages no buildkitd or buildctl (only the
docker-buildx client), so the container the test starts is the dev engine's busybox
base image with a stand-in ``buildctl`` whose ``dial-stdio`` does what the real one
does, copy stdio to a BuildKit socket, with busybox ``nc``. Busybox nc speaks TCP
only, so that BuildKit "socket" is a loopback TCP port (the container shares the
host's network) that the test bridges to the dev engine's own BuildKit (its /grpc
upgrade). The relay counts its connections, so a build that passes through it
is known to have gone through the container.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from runner import run_repro

from repro.buildkit._connect import docker_request, splice, upgrade_docker_socket
from repro.buildkit._exec import Demux

ROOT = Path(__file__).resolve().parent.parent

STAND_IN = """#!/bin/sh
# Test stand-in for moby/buildkit's buildctl: only --version and dial-stdio.
case "$1" in
  --version) echo "buildctl stand-in, dial-stdio to 127.0.0.1:{port}" ;;
  dial-stdio) exec nc 127.0.0.1 {port} ;;
  *) echo "stand-in buildctl: $1 is not supported" >&2; exit 2 ;;
esac
"""


def repro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, env=env, timeout=600)


# --- pure logic -------------------------------------------------------------------


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_demux_passes_stdout_keeps_stderr_and_waits_for_whole_frames() -> None:
    d = Demux()
    data = frame(1, b"hello ") + frame(2, b"warning\n") + frame(1, b"world")
    out = b""
    for i in range(0, len(data), 3):  # arbitrary chunking, frames split mid-header
        out += d.feed(data[i : i + 3])
    assert out == b"hello world"
    assert bytes(d.stderr) == b"warning\n"
    assert d.feed(frame(1, b"")[:5]) == b""


def test_demux_refuses_an_unknown_stream() -> None:
    with pytest.raises(ValueError, match="stream number 7"):
        Demux().feed(frame(7, b"x"))


def test_bad_container_names_are_bad_input() -> None:
    r = repro("doctor", "--builder", "docker-container://bad name!")
    assert r.returncode == 2
    assert "expected docker-container://NAME" in r.stderr or "expected docker-container://NAME" in (
        r.stdout
    )


# --- against the dev engine -------------------------------------------------------


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        pytest.skip("DOCKER_HOST is not a unix socket (scripts/dev-env up sets it)")
    return host[len("unix://") :]


def api(method: str, url: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    status, raw = docker_request(engine_socket(), method, url, timeout=120, body=data)
    text = raw.decode("utf-8", "replace").strip()
    try:
        return status, json.loads(text) if text else {}
    except ValueError:
        return status, text


class Relay:
    """127.0.0.1:PORT, each connection upgraded to /grpc on the dev engine."""

    def __init__(self, engine: str):
        self.engine = engine
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream, rest = upgrade_docker_socket(self.engine, "/grpc")
            splice(upstream, client, rest)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


def start_container(image: str, binds: list[str]) -> str:
    name = f"repro-test-bk-{uuid.uuid4().hex[:8]}"
    repo, _, digest = image.partition("@")
    status, answer = api("POST", f"/images/create?fromImage={quote(repo)}&tag={quote(digest)}")
    assert status == 200, answer
    status, answer = api(
        "POST",
        f"/containers/create?name={name}",
        {
            "Image": image,
            "Cmd": ["sleep", "3600"],
            "HostConfig": {"NetworkMode": "host", "Binds": binds},
        },
    )
    assert status == 201, answer
    status, answer = api("POST", f"/containers/{name}/start")
    assert status == 204, answer
    return name


def remove_container(name: str) -> None:
    api("DELETE", f"/containers/{name}?force=1")


@pytest.fixture
def stand_in_builder(tmp_path: Path, base_image: str) -> Iterator[tuple[str, Relay]]:
    relay = Relay(engine_socket())
    script = tmp_path / "buildctl"
    script.write_text(STAND_IN.format(port=relay.port))
    script.chmod(0o755)
    name = start_container(base_image, [f"{script}:/usr/bin/buildctl:ro"])
    try:
        yield name, relay
    finally:
        remove_container(name)
        relay.close()


@pytest.mark.engine
def test_build_through_a_container_gives_the_same_digest(
    tmp_path: Path, stand_in_builder: tuple[str, Relay]
) -> None:
    name, relay = stand_in_builder
    args = ["build", "hello", "--json", "--progress", "quiet", "--no-cache"]
    direct = repro(*args, "-o", f"oci:{tmp_path / 'direct'}")
    assert direct.returncode == 0, direct.stderr[-3000:]
    via = repro(*args, "-o", f"oci:{tmp_path / 'via'}", "--builder", f"docker-container://{name}")
    assert via.returncode == 0, via.stderr[-3000:]
    assert relay.connections >= 1  # the gRPC traffic really went through the container
    assert json.loads(via.stdout)[0]["digest"] == json.loads(direct.stdout)[0]["digest"]


@pytest.mark.engine
def test_doctor_names_the_container_builder(stand_in_builder: tuple[str, Relay]) -> None:
    name, relay = stand_in_builder
    r = repro("doctor", "--json", "--builder", f"docker-container://{name}")
    facts = json.loads(r.stdout)["facts"]
    assert facts["builder"] == f"docker-container://{name}"
    assert facts["buildkit_version"]
    assert relay.connections >= 1
    text = repro("doctor", "--builder", f"docker-container://{name}").stdout
    assert f"in container {name} on the Docker Engine" in text


@pytest.mark.engine
def test_a_missing_container_is_one_line_exit_2(tmp_path: Path) -> None:
    engine_socket()
    r = repro(
        "build", "hello", "-o", f"oci:{tmp_path / 'o'}", "--builder", "docker-container://nope"
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "no container named nope" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.engine
def test_a_container_without_buildctl_is_named(tmp_path: Path, base_image: str) -> None:
    name = start_container(base_image, [])
    try:
        r = repro(
            "build",
            "hello",
            "-o",
            f"oci:{tmp_path / 'o'}",
            "--builder",
            f"docker-container://{name}",
        )
    finally:
        remove_container(name)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"container {name} cannot run buildctl" in lines[0]
