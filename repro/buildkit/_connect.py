"""Finding a BuildKit and opening a gRPC channel to it.

Three kinds of endpoint:

- a standalone buildkitd on a unix socket (``unix:///run/buildkit/buildkitd.sock``);
- a buildkitd on TCP, optionally with mutual TLS (``tcp://host:1234``);
- a Docker Engine, whose embedded BuildKit is reached through ``POST /grpc`` with an
  ``Upgrade: h2c`` on the Docker socket (``docker://``, ``docker://unix:///path``, or a
  ``unix://`` path that answers the Docker API);
- a buildkitd in a container of a Docker Engine (``docker-container://NAME``), reached
  through the engine's exec API and ``buildctl dial-stdio`` (see ``_exec``).

grpcio cannot speak over a socket that is already open, so for Docker a private unix
socket is bridged: every connection grpcio opens to it is paired with a fresh upgrade
on the Docker socket (or a fresh exec) and bytes are pumped both ways.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from repro.buildkit._tempdir import private_dir, release
from repro.errors import BuilderError, InputError

DEFAULT_BUILDKITD_SOCKET = "/run/buildkit/buildkitd.sock"
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"

# buildkitd keeps gRPC's default 4 MiB receive limit; we accept more from it.
MAX_RECEIVE = 64 * 1024 * 1024
MAX_SEND = 4 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE),
    ("grpc.max_send_message_length", MAX_SEND),
    # Notice a dead daemon within seconds instead of hanging on a silent socket.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    # BuildKit's errors carry their stack in grpc-status-details-bin (often > 8 KiB):
    # without room for it the real message is lost behind "Stream removed".
    ("grpc.max_metadata_size", 1024 * 1024),
    ("grpc.absolute_max_metadata_size", 1024 * 1024),
]


@dataclass(frozen=True)
class BuilderAddress:
    """Where a BuildKit is, and how it was chosen."""

    kind: str  # "buildkitd-unix", "tcp", "docker", "docker-container"
    target: str  # socket path, host:port, or container name
    source: str  # "--builder", "BUILDKIT_HOST", "DOCKER_HOST", "default"
    tls: dict[str, str] = field(default_factory=dict)
    engine: str = ""  # docker-container: the Docker Engine's socket

    def __str__(self) -> str:
        if self.kind == "docker-container":
            return f"docker-container://{self.target}"
        if self.kind == "docker":
            return f"docker://unix://{self.target}"
        if self.kind == "tcp":
            return f"tcp://{self.target}"
        return f"unix://{self.target}"


def _unix_path(value: str) -> str:
    # unix:///abs/path -> /abs/path ; unix://rel is not meaningful for us
    rest = value[len("unix://") :]
    if not rest.startswith("/"):
        raise InputError(f"builder address {value!r}: a unix socket path must be absolute")
    return rest


def parse_address(value: str, source: str) -> BuilderAddress:
    """Parse one builder address, without contacting it."""
    value = value.strip()
    if not value:
        raise InputError(f"empty builder address from {source}")
    if value.startswith("docker-container://"):
        from repro.buildkit._exec import check_name

        name = check_name(value[len("docker-container://") :], value, source)
        return BuilderAddress("docker-container", name, source, engine=docker_engine_socket())
    if value.startswith("docker://"):
        rest = value[len("docker://") :]
        if not rest:
            return BuilderAddress("docker", DEFAULT_DOCKER_SOCKET, source)
        if rest.startswith("unix://"):
            return BuilderAddress("docker", _unix_path(rest), source)
        if rest.startswith("/"):
            return BuilderAddress("docker", rest, source)
        raise InputError(
            f"builder address {value!r} from {source}: use docker:// or docker://unix:///path"
        )
    if value.startswith("unix://"):
        path = _unix_path(value)
        kind = "docker" if speaks_docker_api(path) else "buildkitd-unix"
        return BuilderAddress(kind, path, source)
    if value.startswith("tcp://"):
        parts = urlsplit(value)
        if not parts.hostname or not parts.port:
            raise InputError(f"builder address {value!r} from {source}: expected tcp://HOST:PORT")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tls = {
            "ca": query.get("ca", os.environ.get("BUILDKIT_TLS_CA", "")),
            "cert": query.get("cert", os.environ.get("BUILDKIT_TLS_CERT", "")),
            "key": query.get("key", os.environ.get("BUILDKIT_TLS_KEY", "")),
            "server_name": query.get("server_name", ""),
        }
        tls = {k: v for k, v in tls.items() if v}
        return BuilderAddress("tcp", f"{parts.hostname}:{parts.port}", source, tls)
    raise InputError(
        f"builder address {value!r} from {source}: "
        "expected unix://, tcp://, docker:// or docker-container://"
    )


def docker_engine_socket() -> str:
    """The Docker Engine a docker-container:// builder lives on: $DOCKER_HOST, else the
    default socket."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        return _unix_path(docker_host)
    if docker_host:
        raise BuilderError(
            f"DOCKER_HOST={docker_host}: docker-container:// needs the engine on a unix socket"
        )
    return DEFAULT_DOCKER_SOCKET


def find_builder(builder: str | None = None) -> BuilderAddress:
    """Choose a builder: --builder, then BUILDKIT_HOST, DOCKER_HOST, the usual sockets."""
    if builder:
        return parse_address(builder, "--builder")
    if os.environ.get("BUILDKIT_HOST"):
        return parse_address(os.environ["BUILDKIT_HOST"], "BUILDKIT_HOST")
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host:
        if docker_host.startswith("unix://"):
            return BuilderAddress("docker", _unix_path(docker_host), "DOCKER_HOST")
        if docker_host.startswith("tcp://"):
            raise BuilderError(
                f"DOCKER_HOST={docker_host}: Docker over TCP is not supported; "
                "point BUILDKIT_HOST at a buildkitd or use a unix socket"
            )
    if os.path.exists(DEFAULT_BUILDKITD_SOCKET):
        return BuilderAddress("buildkitd-unix", DEFAULT_BUILDKITD_SOCKET, "default")
    if os.path.exists(DEFAULT_DOCKER_SOCKET):
        return BuilderAddress("docker", DEFAULT_DOCKER_SOCKET, "default")
    raise BuilderError(
        "no BuildKit found: set BUILDKIT_HOST or DOCKER_HOST, pass --builder, "
        'or start the local one with: eval "$(scripts/dev-env up)"'
    )


# ---- the Docker socket ---------------------------------------------------------


def _connect_unix(path: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise BuilderError(f"builder socket {path} does not exist") from None
    except OSError as exc:
        sock.close()
        raise BuilderError(f"cannot connect to builder socket {path}: {exc.strerror}") from None
    return sock


def _read_http_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bytes]:
    """Read an HTTP/1.1 response head. Returns (status, headers, raw head, bytes after)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BuilderError("the Docker daemon closed the connection before answering")
        buf += chunk
        if len(buf) > 1 << 20:
            raise BuilderError("the Docker daemon sent an oversized HTTP header")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise BuilderError(f"unexpected answer from the Docker daemon: {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, head, rest


def docker_request(
    path: str, method: str, url: str, timeout: float = 10.0, body: bytes | None = None
) -> tuple[int, bytes]:
    """A small HTTP/1.1 request on the Docker socket (/_ping, /version, /info, exec);
    a body is sent as JSON."""
    sock = _connect_unix(path, timeout)
    head = f"{method} {url} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    try:
        sock.sendall((head + "\r\n").encode() + (body or b""))
        status, headers, _, rest = _read_http_head(sock)
        answer = rest
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        if headers.get("transfer-encoding", "").lower() == "chunked":
            answer = _dechunk(answer)
        return status, answer
    except TimeoutError:
        raise BuilderError(f"the Docker daemon at {path} did not answer {url}") from None
    finally:
        sock.close()


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def speaks_docker_api(path: str) -> bool:
    try:
        status, body = docker_request(path, "GET", "/_ping", timeout=2.0)
    except BuilderError:
        return False
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"


def upgrade_docker_socket(
    path: str, url: str, headers: list[tuple[str, str]] | None = None
) -> tuple[socket.socket, bytes]:
    """POST url with Upgrade: h2c on the Docker socket; return the upgraded socket.

    Also returns any bytes the daemon sent right after the 101 (they belong to the
    upgraded protocol and must be forwarded first).
    """
    sock = _connect_unix(path)
    lines = [
        f"POST {url} HTTP/1.1",
        "Host: localhost",
        "Connection: Upgrade",
        "Upgrade: h2c",
        "Content-Length: 0",
    ]
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, _, head, rest = _read_http_head(sock)
    except TimeoutError:
        sock.close()
        raise BuilderError(f"the Docker daemon at {path} did not answer POST {url}") from None
    except BaseException:
        sock.close()
        raise
    if status != 101:
        sock.close()
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        raise BuilderError(f"the Docker daemon refused POST {url}: {first}")
    sock.settimeout(None)
    return sock, rest


def pump(
    a: socket.socket,
    b: socket.socket,
    first: bytes = b"",
    transform: Callable[[bytes], bytes] | None = None,
    name: str = "repro-pump",
) -> threading.Thread:
    """Copy bytes a -> b in a daemon thread until EOF, then half-close b. `first` goes
    before what a sends; `transform` (which may raise ValueError to stop) rewrites
    each piece on the way."""

    def run() -> None:
        try:
            data = first
            while True:
                out = transform(data) if transform is not None and data else data
                if out:
                    b.sendall(out)
                data = a.recv(1 << 20)
                if not data:
                    break
        except (OSError, ValueError):
            pass
        finally:
            for s, how in ((b, socket.SHUT_WR), (a, socket.SHUT_RD)):
                with contextlib.suppress(OSError):
                    s.shutdown(how)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def splice(a: socket.socket, b: socket.socket, a_first: bytes = b"") -> None:
    """Pump both ways between two sockets; close both when both directions end."""
    t1 = pump(a, b, a_first)
    t2 = pump(b, a)

    def closer() -> None:
        t1.join()
        t2.join()
        a.close()
        b.close()

    threading.Thread(target=closer, name="repro-splice", daemon=True).start()


class Bridge:
    """A private unix socket whose every connection is paired with a fresh upstream
    stream (opened by ``_serve``); grpcio connects to ``path``."""

    def __init__(self) -> None:
        self._dir = private_dir("repro-grpc-")
        self.path = os.path.join(self._dir, "grpc.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._closed = False
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="repro-bridge", daemon=True)
        self._thread.start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                self._serve(client)
            except (BuilderError, OSError):
                client.close()
                continue

    def close(self) -> None:
        # Wake the accepting thread first (shutdown makes a blocked accept() fail on
        # Linux) and wait for it: closing the listener under a thread that is about
        # to call accept() frees the descriptor number for the next socket anyone
        # opens, and that thread then accepts that socket's connections.
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._listener.close()
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        release(self._dir)


class DockerGrpcBridge(Bridge):
    """A private unix socket whose every connection is upgraded to /grpc on Docker."""

    def __init__(self, docker_socket: str):
        self.docker_socket = docker_socket
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        upstream, rest = upgrade_docker_socket(self.docker_socket, "/grpc")
        self._conns += [client, upstream]
        splice(upstream, client, rest)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read TLS {what} {path}: {exc.strerror}") from None


class Connection:
    """An open gRPC channel to a BuildKit, plus what is needed to run sessions on it."""

    def __init__(self, address: BuilderAddress):
        import grpc

        self.address = address
        self._bridge: Bridge | None = None
        self._checked = False
        self.engine_version = ""  # known after preflight(), for results and provenance
        # What the BuildKit itself reports (Info), after preflight(): decides the
        # exporter options it is sent (repro.buildkit._exporter).
        self.buildkit_version = ""
        options = list(CHANNEL_OPTIONS)
        if address.kind == "docker":
            if not os.path.exists(address.target):
                raise BuilderError(
                    f"Docker socket {address.target} does not exist (from {address.source}); "
                    'start the local engine with: eval "$(scripts/dev-env up)"'
                )
            if not speaks_docker_api(address.target):
                raise BuilderError(
                    f"nothing answers the Docker API at {address.target} (from {address.source})"
                )
            self._bridge = DockerGrpcBridge(address.target)
            options.append(("grpc.default_authority", "localhost"))
            self.channel = grpc.insecure_channel("unix:" + self._bridge.path, options=options)
        elif address.kind == "docker-container":
            from repro.buildkit._exec import ExecBridge, inspect_container

            engine = address.engine
            if not os.path.exists(engine):
                raise BuilderError(
                    f"Docker socket {engine} does not exist "
                    f"({address} from {address.source}; the engine comes from DOCKER_HOST)"
                )
            if not speaks_docker_api(engine):
                raise BuilderError(
                    f"nothing answers the Docker API at {engine} ({address} from {address.source})"
                )
            inspect_container(engine, address.target, address.source)
            self._bridge = ExecBridge(engine, address.target)
            options.append(("grpc.default_authority", "localhost"))
            self.channel = grpc.insecure_channel("unix:" + self._bridge.path, options=options)
        elif address.kind == "buildkitd-unix":
            if not os.path.exists(address.target):
                raise BuilderError(
                    f"BuildKit socket {address.target} does not exist (from {address.source})"
                )
            options.append(("grpc.default_authority", "localhost"))
            self.channel = grpc.insecure_channel("unix:" + address.target, options=options)
        elif address.tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(address.tls["ca"], "CA") if "ca" in address.tls else None,
                private_key=_read(address.tls["key"], "key") if "key" in address.tls else None,
                certificate_chain=(
                    _read(address.tls["cert"], "certificate") if "cert" in address.tls else None
                ),
            )
            if "server_name" in address.tls:
                options.append(("grpc.ssl_target_name_override", address.tls["server_name"]))
            self.channel = grpc.secure_channel(address.target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address.target, options=options)

    def preflight(self) -> None:
        """Refuse early, with the fix, a builder that cannot make reproducible OCI images:
        the rules of `repro.buildkit._assess`, the same that `repro doctor` shows."""
        if self._checked:
            return
        from repro.buildkit._assess import gather, refuse_if_unusable

        found = gather(self)
        refuse_if_unusable(found)
        if self.is_docker:
            self.engine_version = (
                f"Docker Engine {found.engine_version}" if found.engine_version else ""
            )
        else:
            self.engine_version = (
                f"BuildKit {found.buildkit_version}" if found.buildkit_version else ""
            )
        self.buildkit_version = found.buildkit_version
        self._checked = True

    @property
    def is_docker(self) -> bool:
        return self.address.kind == "docker"

    def close(self) -> None:
        self.channel.close()
        if self._bridge:
            self._bridge.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
