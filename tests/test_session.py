"""The session server, driven from a gRPC client playing the daemon's part.

These exercise the real grpcio server on its unix socket with the daemon's method
paths and wire messages: health, the fsutil DiffCopy exchange, the export
receiver, credentials and secrets. The engine tests cover the same code against
the real BuildKit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest

from repro.buildkit._session import (
    AUTH_CREDENTIALS,
    FILESEND,
    FILESYNC,
    HEALTH,
    SECRETS,
    SessionServer,
)
from repro.buildkit.proto import buildkit_pb2 as pb


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b.txt").write_bytes(b"bee")
    (root / "a.txt").write_bytes(b"x" * 1_500_000)  # several DATA chunks
    (root / "ignored.log").write_text("no")
    (root / "Dockerfile").write_text("FROM scratch\n")
    os.symlink("a.txt", root / "link")
    return root


def _channel(server: SessionServer) -> grpc.Channel:
    return grpc.insecure_channel("unix:" + server.path)


def _diffcopy(channel: grpc.Channel, md: list[tuple[str, str]], want: set[str]) -> dict[str, bytes]:
    """Play the daemon: read STATs, REQ the files in `want`, collect DATA, send FIN."""
    import queue

    outbox: queue.Queue[pb.Packet | None] = queue.Queue()

    def requests() -> Iterator[pb.Packet]:
        while (p := outbox.get()) is not None:
            yield p

    call = channel.stream_stream(
        FILESYNC,
        request_serializer=pb.Packet.SerializeToString,
        response_deserializer=pb.Packet.FromString,
    )(requests(), metadata=md)
    stats: list[pb.Stat] = []
    data: dict[int, bytearray] = {}
    pending: set[int] = set()
    walk_done = False
    for p in call:
        if p.type == pb.PACKET_STAT:
            if not p.HasField("stat"):
                walk_done = True
                if not pending:
                    outbox.put(pb.Packet(type=pb.PACKET_FIN))
                continue
            stats.append(p.stat)
            if p.stat.path in want:
                idx = len(stats) - 1
                pending.add(idx)
                data[idx] = bytearray()
                outbox.put(pb.Packet(type=pb.PACKET_REQ, id=idx))
        elif p.type == pb.PACKET_DATA:
            if p.data:
                data[p.id] += p.data
            else:
                pending.discard(p.id)
                if walk_done and not pending:
                    outbox.put(pb.Packet(type=pb.PACKET_FIN))
        elif p.type == pb.PACKET_FIN:
            outbox.put(None)
        elif p.type == pb.PACKET_ERR:
            raise AssertionError(p.data)
    result = {s.path: b"" for s in stats}
    for idx, content in data.items():
        result[stats[idx].path] = bytes(content)
    result["__modes__"] = repr({s.path: s.mode for s in stats}).encode()
    return result


def test_health_is_serving(tmp_path: Path) -> None:
    server = SessionServer({"context": tmp_path})
    try:
        with _channel(server) as ch:
            resp = ch.unary_unary(
                HEALTH,
                request_serializer=pb.HealthCheckRequest.SerializeToString,
                response_deserializer=pb.HealthCheckResponse.FromString,
            )(pb.HealthCheckRequest(), timeout=5)
        assert resp.status == pb.HealthCheckResponse.SERVING
        assert resp.SerializeToString() == b"\x08\x01"
        assert server.methods() == [HEALTH, FILESYNC]
    finally:
        server.close()


def test_diffcopy_sends_the_tree_in_order_with_requested_data(tree: Path) -> None:
    server = SessionServer({"context": tree})
    try:
        with _channel(server) as ch:
            got = _diffcopy(
                ch,
                [("dir-name", "context"), ("exclude-patterns", "*.log")],
                want={"a.txt", "a/b.txt"},
            )
    finally:
        server.close()
    paths = [p for p in got if p != "__modes__"]
    assert paths == ["Dockerfile", "a", "a/b.txt", "a.txt", "link"]
    assert got["a.txt"] == b"x" * 1_500_000
    assert got["a/b.txt"] == b"bee"
    modes = eval(got["__modes__"])  # noqa: S307 - our own repr
    assert modes["a"] & (1 << 31)  # Go's os.ModeDir
    assert modes["link"] & (1 << 27)  # os.ModeSymlink
    assert modes["a.txt"] & 0o777 == os.stat(tree / "a.txt").st_mode & 0o777


def test_diffcopy_followpaths_for_the_dockerfile_dir(tree: Path) -> None:
    server = SessionServer({"dockerfile": tree})
    try:
        with _channel(server) as ch:
            got = _diffcopy(
                ch,
                [
                    ("dir-name", "dockerfile"),
                    ("followpaths", "Dockerfile"),
                    ("followpaths", "Dockerfile.dockerignore"),
                    ("followpaths", "dockerfile"),
                ],
                want={"Dockerfile"},
            )
    finally:
        server.close()
    assert [p for p in got if p != "__modes__"] == ["Dockerfile"]
    assert got["Dockerfile"] == b"FROM scratch\n"


def test_unknown_dir_is_refused(tree: Path) -> None:
    server = SessionServer({"context": tree})
    try:
        with _channel(server) as ch, pytest.raises(grpc.RpcError) as info:
            _diffcopy(ch, [("dir-name", "other")], want=set())
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.close()


def test_filesend_streams_chunks_to_the_sink(tmp_path: Path) -> None:
    received: list[bytes] = []
    seen_md: dict[str, str] = {}

    def sink(md: Mapping[str, str], chunks: Iterator[bytes]) -> None:
        seen_md.update(md)
        received.extend(chunks)

    server = SessionServer({}, export_sink=sink)
    try:
        assert FILESEND in server.methods()
        with _channel(server) as ch:
            call = ch.stream_stream(
                FILESEND,
                request_serializer=pb.BytesMessage.SerializeToString,
                response_deserializer=pb.BytesMessage.FromString,
            )
            chunks = [os.urandom(3 << 20) for _ in range(3)]
            out = list(
                call(
                    iter(pb.BytesMessage(data=c) for c in chunks),
                    metadata=[("exporter-md-containerimage.digest", "sha256:abc")],
                )
            )
        assert out == []
        assert b"".join(received) == b"".join(chunks)
        assert seen_md["exporter-md-containerimage.digest"] == "sha256:abc"
    finally:
        server.close()


def test_credentials_and_secrets(tmp_path: Path) -> None:
    asked: list[str] = []

    def creds(host: str) -> tuple[str, str] | None:
        asked.append(host)
        return ("user", "pass") if host == "reg.example:5000" else None

    server = SessionServer({}, secrets={"tok": lambda: b"value"}, credentials=creds)
    try:
        assert AUTH_CREDENTIALS in server.methods() and SECRETS in server.methods()
        with _channel(server) as ch:
            cred = ch.unary_unary(
                AUTH_CREDENTIALS,
                request_serializer=pb.CredentialsRequest.SerializeToString,
                response_deserializer=pb.CredentialsResponse.FromString,
            )
            assert cred(pb.CredentialsRequest(host="reg.example:5000")).secret == "pass"
            anon = cred(pb.CredentialsRequest(host="other"))
            assert (anon.username, anon.secret) == ("", "")
            get = ch.unary_unary(
                SECRETS,
                request_serializer=pb.GetSecretRequest.SerializeToString,
                response_deserializer=pb.GetSecretResponse.FromString,
            )
            assert get(pb.GetSecretRequest(id="tok")).data == b"value"
            with pytest.raises(grpc.RpcError) as info:
                get(pb.GetSecretRequest(id="nope"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert asked == ["reg.example:5000", "other"]
    finally:
        server.close()
