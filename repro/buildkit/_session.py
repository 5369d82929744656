"""The client side of a BuildKit session.

During a build the daemon calls back into the client through a *session*: it is the
gRPC client and we are the server. The server is repro's own gRPC-over-h2 server
(`repro.buildkit._h2grpc`; not grpcio's, which is too slow for file sync), serving
one connection, which reaches the daemon one of two ways:

- Docker Engine: ``POST /session`` with ``Upgrade: h2c`` on the Docker socket; the
  upgraded socket itself is handed to the server.
- buildkitd: the ``Control.Session`` bidi stream, whose BytesMessages carry the raw
  HTTP/2 bytes of the tunnel, pumped to a private unix socket the server accepts on.

Services served (only these are advertised):

- grpc.health.v1.Health/Check: mandatory; the daemon polls it every few seconds.
- moby.filesync.v1.FileSync/DiffCopy: sends local dirs (``context``, ``dockerfile``).
- moby.filesync.v1.FileSend/DiffCopy: receives the exporter's tarball.
- containerd.services.content.v1.Content/Write, Info, Abort: receive the export
  blob by blob instead (``tar=false``; repro.buildkit._content).
- moby.filesync.v1.Auth/Credentials: registry credentials from the Docker config.
- moby.buildkit.secrets.v1.Secrets/GetSecret: ``--secret id=…,src=…`` values.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets as _secrets
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import grpc

from repro.buildkit import _content
from repro.buildkit._connect import Connection, upgrade_docker_socket
from repro.buildkit._control import Control
from repro.buildkit._h2grpc import (
    INTERNAL,
    NOT_FOUND,
    UNIMPLEMENTED,
    GrpcAbort,
    H2GrpcConnection,
    Method,
    serve_in_thread,
)
from repro.buildkit._tempdir import private_dir, release
from repro.buildkit.proto import buildkit_pb2 as pb
from repro.errors import ContextError

HEALTH = "/grpc.health.v1.Health/Check"
FILESYNC = "/moby.filesync.v1.FileSync/DiffCopy"
FILESEND = "/moby.filesync.v1.FileSend/DiffCopy"
AUTH_CREDENTIALS = "/moby.filesync.v1.Auth/Credentials"
SECRETS = "/moby.buildkit.secrets.v1.Secrets/GetSecret"

DATA_CHUNK = 512 * 1024  # well under the daemon's 4 MiB message limit
TUNNEL_CHUNK = 1024 * 1024

ExportSink = Callable[[Mapping[str, str], Iterator[bytes]], None]


def new_session_id() -> str:
    """25 base36 characters, like BuildKit's identity.NewID."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(_secrets.choice(alphabet) for _ in range(25))


def _decode_metadata(md: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Multi-valued metadata with ``<key>-encoded`` values query-unescaped.

    BuildKit encodes every value of a key with Go's url.QueryEscape when one of them is
    not ASCII, which writes a space as ``+``: so ``+`` decodes to a space here (as Go's
    QueryUnescape does), and a literal ``+`` arrives as ``%2B``. Bytes that are not
    UTF-8 (a .dockerignore may hold them) come back as surrogate escapes, as file names do.
    """
    raw = {k: list(v) for k, v in md.items()}
    for key in list(raw):
        if key.endswith("-encoded"):
            base = key[: -len("-encoded")]
            if base in raw:
                raw[base] = [unquote_plus(v, errors="surrogateescape") for v in raw[base]]
    return raw


class FileSyncError(Exception):
    pass


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _raw_stat_packet(stat: pb.Stat, path: bytes, linkname: bytes) -> bytes:
    """A STAT packet whose path and link name are bytes that are not UTF-8.

    File names on Linux are bytes; buildx's fsutil sends them as they are in the string
    fields (Go does not check), and BuildKit stores them so. Python's protobuf refuses
    such strings, so the two fields (1 and 7 of Stat, both length-delimited) are
    appended to the serialized message by hand; the rest is encoded as usual.
    """
    body = stat.SerializeToString()
    for number, value in ((1, path), (7, linkname)):
        if value:
            body += _varint(number << 3 | 2) + _varint(len(value)) + value
    packet = pb.Packet(type=pb.PACKET_STAT).SerializeToString()
    return packet + _varint(2 << 3 | 2) + _varint(len(body)) + body


def stat_is_socket(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISSOCK(st.st_mode)


def stat_is_device(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISCHR(st.st_mode) or _stat.S_ISBLK(st.st_mode)


def diffcopy_send(
    root: Path, requests: Iterator[pb.Packet], md: Mapping[str, list[str]]
) -> Iterator[pb.Packet | bytes]:
    """Send one local dir with the fsutil protocol (we send, the daemon receives)."""
    from repro.buildkit._walk import fsutil_stat_mode, walk

    reqs: queue.Queue[int | None | str] = queue.Queue()

    def read_requests() -> None:
        try:
            for p in requests:
                if p.type == pb.PACKET_REQ:
                    reqs.put(p.id)
                elif p.type == pb.PACKET_FIN:
                    break
                elif p.type == pb.PACKET_ERR:
                    reqs.put(p.data.decode("utf-8", "replace") or "error from the daemon")
                    return
        except grpc.RpcError:
            pass
        reqs.put(None)

    threading.Thread(target=read_requests, name="repro-filesync-req", daemon=True).start()

    files: dict[int, Path | None] = {}  # None: send the file with no content

    def serve(file_id: int) -> Iterator[pb.Packet]:
        if file_id not in files:
            raise FileSyncError(f"daemon asked for unknown file id {file_id}")
        path = files[file_id]
        if path is None:
            yield pb.Packet(type=pb.PACKET_DATA, id=file_id)
            return
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(DATA_CHUNK)
                if not chunk:
                    break
                yield pb.Packet(type=pb.PACKET_DATA, id=file_id, data=chunk)
        yield pb.Packet(type=pb.PACKET_DATA, id=file_id)

    def pending() -> Iterator[pb.Packet]:
        while True:
            try:
                item = reqs.get_nowait()
            except queue.Empty:
                return
            if item is None or isinstance(item, str):
                reqs.put(item)  # seen again by the final loop
                return
            yield from serve(item)

    entries = walk(
        root,
        include_patterns=md.get("include-patterns", []),
        exclude_patterns=md.get("exclude-patterns", []),
        followpaths=md.get("followpaths", []),
    )
    for index, entry in enumerate(entries):
        st = entry.st
        # a hard link to a path sent earlier in this walk carries no data
        linkname = entry.linkname or entry.hardlink
        raw_names = not (_is_utf8(entry.path) and _is_utf8(linkname))
        stat = pb.Stat(
            path="" if raw_names else entry.path,
            mode=fsutil_stat_mode(st),
            mod_time=st.st_mtime_ns,
            linkname="" if raw_names else linkname,
        )
        if entry.is_symlink:
            stat.size = len(os.fsencode(entry.linkname))
        elif entry.is_file and not entry.hardlink:
            stat.size = st.st_size
            files[index] = None if entry.empty_content else root / entry.path
        elif stat_is_socket(st) and not entry.hardlink:
            # fsutil clears the socket bit, so the daemon takes it for an empty regular
            # file and asks for its content; fsutil's sender cannot open it and sends none
            stat.size = 0
            files[index] = None
        elif not entry.is_dir and not entry.hardlink and stat_is_device(st):
            stat.devmajor = os.major(st.st_rdev)
            stat.devminor = os.minor(st.st_rdev)
        if raw_names:
            yield _raw_stat_packet(stat, os.fsencode(entry.path), os.fsencode(linkname))
        else:
            yield pb.Packet(type=pb.PACKET_STAT, stat=stat)
        yield from pending()
    yield pb.Packet(type=pb.PACKET_STAT)  # end of the walk

    while True:
        item = reqs.get()
        if item is None:
            break
        if isinstance(item, str):
            raise FileSyncError(item)
        yield from serve(item)
    yield pb.Packet(type=pb.PACKET_FIN)


class SessionServer:
    """Serves one session's callbacks (see the module docstring) over HTTP/2.

    Connections come either from a private unix socket (``path``: the Control.Session
    tunnel and tests) or from a socket handed over with ``serve_socket`` (Docker's
    upgraded ``/session`` connection, served directly without copying bytes).
    """

    def __init__(
        self,
        local_dirs: Mapping[str, Path],
        export_sink: ExportSink | None = None,
        secrets: Mapping[str, Callable[[], bytes]] | None = None,
        credentials: Callable[[str], tuple[str, str] | None] | None = None,
        content_store: _content.ExportStore | None = None,
    ):
        self.local_dirs = dict(local_dirs)
        self.export_sink = export_sink
        self.content_store = content_store
        self.secrets = dict(secrets or {})
        self.credentials = credentials
        self.errors: list[str] = []
        self.input_errors: list[ContextError] = []  # bad input the walk met
        self._connections: list[H2GrpcConnection] = []
        self._dir = private_dir("repro-session-")
        self.path = os.path.join(self._dir, "session.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(4)
        self._methods = {
            HEALTH: Method(unary=self._health),
            FILESYNC: Method(streaming=self._filesync),
            FILESEND: Method(streaming=self._filesend),
            AUTH_CREDENTIALS: Method(unary=self._credentials),
            SECRETS: Method(unary=self._get_secret),
        }
        if content_store is not None:
            self._methods[_content.WRITE] = Method(streaming=content_store.write)
            self._methods[_content.INFO] = Method(unary=content_store.info)
            self._methods[_content.ABORT] = Method(unary=content_store.abort)
        threading.Thread(target=self._accept, name="repro-session-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.serve_socket(conn)

    def serve_socket(self, sock: socket.socket, initial: bytes = b"") -> None:
        """Serve gRPC on an already connected socket, in a background thread."""
        connection = H2GrpcConnection(sock, self._methods, initial, on_error=self.errors.append)
        self._connections.append(connection)
        serve_in_thread(connection)

    # -- what is advertised --------------------------------------------------------

    def methods(self) -> list[str]:
        names = [HEALTH]
        if self.local_dirs:
            names.append(FILESYNC)
        if self.export_sink is not None:
            names.append(FILESEND)
        if self.content_store is not None:
            names.extend(_content.METHODS)
        if self.credentials is not None:
            names.append(AUTH_CREDENTIALS)
        if self.secrets:
            names.append(SECRETS)
        return names

    # -- handlers ---------------------------------------------------------------------

    def _health(self, request: bytes, md: Mapping[str, list[str]]) -> bytes:
        return pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVING).SerializeToString()

    def _filesync(
        self, messages: Iterator[bytes], md: Mapping[str, list[str]], send: Callable[[bytes], None]
    ) -> None:
        md = _decode_metadata(md)
        name = (md.get("dir-name") or [""])[0]
        root = self.local_dirs.get(name)
        if root is None:
            raise GrpcAbort(NOT_FOUND, f"no access allowed to dir {name!r}")
        requests = (pb.Packet.FromString(m) for m in messages)
        try:
            for packet in diffcopy_send(root, requests, md):
                send(packet if isinstance(packet, bytes) else packet.SerializeToString())
        except (OSError, FileSyncError) as exc:
            self.errors.append(f"sending {name}: {exc}")
            send(pb.Packet(type=pb.PACKET_ERR, data=str(exc).encode()).SerializeToString())
        except ContextError as exc:
            # bad input met by the walk (a pattern Go's regexp refuses, an unreadable
            # dir): the daemon is told as fsutil tells it, and the build reports this
            # error itself, whatever the daemon makes of it (it may only say "cancelled")
            self.input_errors.append(exc)
            raise

    def _filesend(
        self, messages: Iterator[bytes], md: Mapping[str, list[str]], send: Callable[[bytes], None]
    ) -> None:
        if self.export_sink is None:
            raise GrpcAbort(UNIMPLEMENTED, "this session receives no export")
        first = {k: v[0] for k, v in md.items() if v}
        try:
            self.export_sink(first, (pb.BytesMessage.FromString(m).data for m in messages))
        except Exception as exc:  # reported back to the daemon and to the build
            self.errors.append(f"receiving the export: {exc}")
            raise GrpcAbort(INTERNAL, str(exc)) from None

    def _credentials(self, request: bytes, md: Mapping[str, list[str]]) -> bytes:
        host = pb.CredentialsRequest.FromString(request).host
        creds = self.credentials(host) if self.credentials else None
        if not creds:
            return pb.CredentialsResponse().SerializeToString()
        return pb.CredentialsResponse(username=creds[0], secret=creds[1]).SerializeToString()

    def _get_secret(self, request: bytes, md: Mapping[str, list[str]]) -> bytes:
        secret_id = pb.GetSecretRequest.FromString(request).id
        source = self.secrets.get(secret_id)
        if source is None:
            raise GrpcAbort(NOT_FOUND, f"secret {secret_id} not found")
        try:
            return pb.GetSecretResponse(data=source()).SerializeToString()
        except OSError as exc:
            raise GrpcAbort(NOT_FOUND, f"secret {secret_id}: {exc.strerror}") from None

    def close(self) -> None:
        try:
            self._listener.close()
        except OSError:
            pass
        for connection in self._connections:
            connection.close()
        release(self._dir)


class Session:
    """A session attached to a daemon. Use as a context manager."""

    def __init__(
        self,
        conn: Connection,
        server: SessionServer,
        *,
        name: str = "repro",
        shared_key: str = "",
    ):
        self.id = new_session_id()
        self.conn = conn
        self.server = server
        self._sockets: list[socket.socket] = []
        self._call: Any = None
        headers = [
            ("X-Docker-Expose-Session-Uuid", self.id),
            ("X-Docker-Expose-Session-Name", name),
            ("X-Docker-Expose-Session-Sharedkey", shared_key or self.id),
        ]
        headers += [("X-Docker-Expose-Session-Grpc-Method", m) for m in server.methods()]
        # Docker serves sessions on /session (what buildx uses); Control.Session over
        # /grpc works there too, and REPRO_SESSION_TRANSPORT=grpc forces it (tests).
        if conn.is_docker and os.environ.get("REPRO_SESSION_TRANSPORT") != "grpc":
            self._attach_docker(headers)
        else:
            self._attach_grpc([(k.lower(), v) for k, v in headers])

    def _local(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.server.path)
        self._sockets.append(s)
        return s

    def _attach_docker(self, headers: list[tuple[str, str]]) -> None:
        upstream, rest = upgrade_docker_socket(self.conn.address.target, "/session", headers)
        self._sockets.append(upstream)
        self.server.serve_socket(upstream, rest)

    def _attach_grpc(self, metadata: list[tuple[str, str]]) -> None:
        local = self._local()

        def outgoing() -> Iterator[pb.BytesMessage]:
            while True:
                try:
                    data = local.recv(TUNNEL_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                yield pb.BytesMessage(data=data)

        self._call = Control(self.conn.channel, self.conn.address).session(outgoing(), metadata)

        def incoming() -> None:
            try:
                for msg in self._call:
                    local.sendall(msg.data)
            except (grpc.RpcError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    local.shutdown(socket.SHUT_WR)

        threading.Thread(target=incoming, name="repro-session-in", daemon=True).start()

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.server.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
