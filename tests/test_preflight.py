"""Builders that cannot make reproducible OCI images are refused before building.

A small fake of the Docker API on a unix socket answers /_ping, /version and /info
the way an old engine, or one with the classic image store, would.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from repro.buildkit import Connection, parse_address
from repro.errors import BuilderError


def fake_docker(path: Path, version: str, driver_status: list[list[str]]) -> socket.socket:
    answers = {
        "/_ping": b"OK",
        "/version": json.dumps({"Version": version, "ApiVersion": "1.41"}).encode(),
        "/info": json.dumps({"Driver": "overlay2", "DriverStatus": driver_status}).encode(),
    }
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                url = data.split(b" ")[1].decode() if data else ""
                body = answers.get(url, b"")
                status = b"200 OK" if url in answers else b"404 Not Found"
                conn.sendall(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_old_engine_is_refused_with_the_version_needed(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    listener = fake_docker(sock, "25.0.3", [["driver-type", "io.containerd.snapshotter.v1"]])
    try:
        address = parse_address(f"unix://{sock}", "test")
        assert address.kind == "docker"
        conn = Connection(address)
        with pytest.raises(BuilderError, match=r"25\.0\.3.*older than v0\.13.*Engine 26"):
            conn.preflight()
        conn.close()
    finally:
        listener.close()


def test_classic_image_store_is_refused_with_the_fix(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    listener = fake_docker(sock, "26.1.5", [["Backing Filesystem", "extfs"]])
    try:
        conn = Connection(parse_address(f"docker://unix://{sock}", "test"))
        with pytest.raises(BuilderError, match="classic image store.*containerd-snapshotter"):
            conn.preflight()
        conn.close()
    finally:
        listener.close()


def test_good_engine_passes(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    listener = fake_docker(sock, "26.1.5", [["driver-type", "io.containerd.snapshotter.v1"]])
    try:
        conn = Connection(parse_address(f"docker://unix://{sock}", "test"))
        conn.preflight()
        assert conn.engine_version == "Docker Engine 26.1.5"
        conn.close()
    finally:
        listener.close()


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["build", "--help"], ["verify", "--help"]]
)
def test_help_and_version_import_no_heavy_module(args: list[str]) -> None:
    """--version and --help stay fast: no gRPC, HTTP client or diffoscope imported."""
    import subprocess
    import sys

    code = (
        "import sys, runpy\n"
        f"sys.argv = ['repro', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('repro', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'httpx', 'diffoscope', 'h2', 'google'))\n"
        "print(','.join(heavy), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1:] in ([], [""]), r.stderr


@pytest.mark.parametrize(
    ("kind", "engine", "buildkit", "store", "workers", "failed"),
    [
        ("docker", "26.1.5", "v0.13.2", True, 1, []),
        ("docker", "26.1.5+dfsg1", "v0.0.0+unknown", True, 1, []),
        ("docker", "", "", True, 0, []),  # an engine that says nothing is not refused
        ("docker", "25.0.3", "", True, 0, ["rewrite-timestamp"]),
        ("docker", "26.1.5", "", False, 0, ["image store"]),
        ("buildkitd-unix", "", "v0.12.5", None, 1, ["rewrite-timestamp"]),
        ("buildkitd-unix", "", "v0.0.0+unknown", None, 1, []),
        ("buildkitd-unix", "", "v0.13.0", None, 0, ["workers"]),
        ("docker-container", "", "v0.23.2", None, 1, []),
    ],
)
def test_one_set_of_rules_for_doctor_and_preflight(
    kind: str, engine: str, buildkit: str, store: bool | None, workers: int, failed: list[str]
) -> None:
    """doctor shows judge()'s findings; preflight refuses with the first failed one."""
    from repro.buildkit import Assessment, judge_builder
    from repro.buildkit._assess import refuse_if_unusable
    from repro.buildkit._control import WorkerInfo

    found = Assessment(
        "addr",
        kind,
        engine_version=engine,
        buildkit_version=buildkit,
        containerd_store=store,
        workers=[WorkerInfo(f"w{i}", {}, ["linux/amd64"], buildkit) for i in range(workers)],
        container="c" if kind == "docker-container" else "",
    )
    findings = judge_builder(found)
    assert [f.name for f in findings if not f.ok] == failed
    if failed:
        first = next(f for f in findings if not f.ok)
        with pytest.raises(BuilderError) as e:
            refuse_if_unusable(found)
        assert e.value.message.startswith(first.detail)
    else:
        refuse_if_unusable(found)
