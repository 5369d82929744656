"""``docker-container://NAME``: a BuildKit inside a container, reached through the
Docker Engine's exec API, the way buildx's docker-container driver reaches it.

Every gRPC connection is one ``buildctl dial-stdio`` process started in the
container (``POST /containers/NAME/exec``, then ``POST /exec/ID/start`` upgraded to a
raw stream). dial-stdio copies its stdin to buildkitd's socket and the socket to its
stdout. The engine sends the process's output multiplexed (an 8-byte header per frame:
stream 1 stdout, 2 stderr, then the payload size, big-endian), so stdout frames are
unwrapped for grpcio and stderr is kept to explain a failure; our bytes go to the
process's stdin as they are.

grpcio connects to a private unix socket (as for ``docker://``), and each connection
it opens there is paired with a fresh exec.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from urllib.parse import quote

from repro.buildkit._connect import (
    Bridge,
    _connect_unix,
    _read_http_head,
    docker_request,
    pump,
)
from repro.errors import BuilderError, InputError

# Docker's own rule for container names.
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DIAL_CMD = ["buildctl", "dial-stdio"]
STDERR_KEPT = 4096


def check_name(name: str, value: str, source: str) -> str:
    if not NAME_RE.match(name):
        raise InputError(
            f"builder address {value!r} from {source}: expected docker-container://NAME "
            "with a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        )
    return name.lstrip("/")


def _json(path: str, method: str, url: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    status, raw = docker_request(path, method, url, body=data)
    try:
        return status, json.loads(raw) if raw.strip() else {}
    except ValueError:
        return status, {"message": raw.decode("utf-8", "replace").strip()}


def _message(answer: object) -> str:
    if isinstance(answer, dict):
        return str(answer.get("message", "")).strip()
    return ""


def inspect_container(engine: str, name: str, source: str) -> dict[str, object]:
    """The container's inspect document; a one-line error when it is missing or stopped."""
    status, answer = _json(engine, "GET", f"/containers/{quote(name, safe='')}/json")
    if status == 404:
        raise BuilderError(
            f"no container named {name} on the Docker Engine at {engine} "
            f"(docker-container://{name} from {source}); start one with a BuildKit image, "
            f"e.g. docker run -d --privileged --name {name} moby/buildkit"
        )
    if status != 200 or not isinstance(answer, dict):
        raise BuilderError(
            f"the Docker Engine at {engine} refused to inspect container {name}: "
            f"HTTP {status} {_message(answer)}".rstrip()
        )
    state = answer.get("State") or {}
    if not isinstance(state, dict) or not state.get("Running"):
        what = state.get("Status", "not running") if isinstance(state, dict) else "not running"
        raise BuilderError(
            f"container {name} on the Docker Engine at {engine} is {what}; "
            f"start it with: docker start {name}"
        )
    return answer


def create_exec(engine: str, name: str, cmd: list[str], stdin: bool) -> str:
    status, answer = _json(
        engine,
        "POST",
        f"/containers/{quote(name, safe='')}/exec",
        {
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "Cmd": cmd,
        },
    )
    if status != 201 or not isinstance(answer, dict) or not answer.get("Id"):
        raise BuilderError(
            f"the Docker Engine at {engine} refused to exec in container {name}: "
            f"HTTP {status} {_message(answer)}".rstrip()
        )
    return str(answer["Id"])


def start_exec(engine: str, exec_id: str) -> tuple[socket.socket, bytes]:
    """Start an exec with its streams hijacked; return the raw socket and early bytes."""
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    sock = _connect_unix(engine)
    head = (
        f"POST /exec/{exec_id}/start HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "Content-Type: application/json\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: tcp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        sock.sendall(head + body)
        status, _, raw_head, rest = _read_http_head(sock)
    except TimeoutError:
        sock.close()
        raise BuilderError(f"the Docker Engine at {engine} did not start exec {exec_id}") from None
    except BaseException:
        sock.close()
        raise
    # 101 when the engine honours the upgrade; older engines answer 200 and hijack.
    if status not in (101, 200):
        sock.close()
        first = raw_head.split(b"\r\n", 1)[0].decode("latin-1")
        raise BuilderError(f"the Docker Engine at {engine} refused to start an exec: {first}")
    sock.settimeout(None)
    return sock, rest


class Demux:
    """Unwraps the engine's multiplexed exec stream: stdout out, stderr kept."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stderr = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Bytes of the stream in; the stdout bytes they complete out."""
        self._buf += data
        out = bytearray()
        while len(self._buf) >= 8:
            stream = self._buf[0]
            (size,) = struct.unpack(">I", self._buf[4:8])
            if len(self._buf) < 8 + size:
                break
            payload = bytes(self._buf[8 : 8 + size])
            del self._buf[: 8 + size]
            if stream == 1:
                out += payload
            elif stream == 2:
                self.stderr += payload
                del self.stderr[:-STDERR_KEPT]
            else:
                raise ValueError(f"unexpected stream number {stream} in an exec stream")
        return bytes(out)


def run_exec(engine: str, name: str, cmd: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """Run a short command in the container; (exit code, stdout + stderr)."""
    exec_id = create_exec(engine, name, cmd, stdin=False)
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    sock = _connect_unix(engine, timeout)
    demux = Demux()
    out = bytearray()
    try:
        sock.sendall(
            (
                f"POST /exec/{exec_id}/start HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Type: application/json\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        status, _, _, rest = _read_http_head(sock)
        if status not in (101, 200):
            raise BuilderError(f"the Docker Engine at {engine} refused to start {cmd[0]}")
        data = rest
        while True:
            if data:
                out += demux.feed(data)
            data = sock.recv(65536)
            if not data:
                break
    except TimeoutError:
        raise BuilderError(f"{' '.join(cmd)} in container {name} did not finish") from None
    except ValueError as exc:
        raise BuilderError(f"garbled exec stream from the Docker Engine: {exc}") from None
    finally:
        sock.close()
    status, answer = _json(engine, "GET", f"/exec/{exec_id}/json")
    code = answer.get("ExitCode") if isinstance(answer, dict) else None
    text = (bytes(out) + bytes(demux.stderr)).decode("utf-8", "replace").strip()
    return (code if isinstance(code, int) else -1), text


def buildctl_version(engine: str, name: str) -> str:
    """``buildctl --version`` in the container; a one-line error when it has none."""
    code, text = run_exec(engine, name, ["buildctl", "--version"])
    if code != 0:
        last = text.splitlines()[-1] if text else f"exit status {code}"
        raise BuilderError(
            f"container {name} cannot run buildctl ({last[:200]}); "
            "docker-container:// needs a BuildKit image (moby/buildkit) with buildctl on PATH"
        )
    return text.splitlines()[0] if text else ""


class ExecBridge(Bridge):
    """A private unix socket whose every connection is a ``buildctl dial-stdio`` exec."""

    def __init__(self, engine: str, container: str):
        self.engine = engine
        self.container = container
        self.stderr: list[bytes] = []
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        exec_id = create_exec(self.engine, self.container, DIAL_CMD, stdin=True)
        upstream, rest = start_exec(self.engine, exec_id)
        self._conns += [client, upstream]
        demux = Demux()
        t1 = pump(client, upstream)
        t2 = pump(upstream, client, rest, demux.feed, name="repro-exec-pump")

        def closer() -> None:
            t1.join()
            t2.join()
            if demux.stderr:
                self.stderr.append(bytes(demux.stderr))
            client.close()
            upstream.close()

        threading.Thread(target=closer, name="repro-exec-close", daemon=True).start()
