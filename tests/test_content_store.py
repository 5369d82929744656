"""The export's content store (``tar=false``) and the blob shelf.

The store is driven over the session server's unix socket by a grpcio client that
plays BuildKit's part as containerd's proxy writer does: one Write stream per blob,
STAT with the ref, size and digest, STAT again, WRITEs at the current offset, then
COMMIT, each request waiting for its answer. The engine tests
(tests/test_build_engine.py) cover it against the real BuildKit.
"""

from __future__ import annotations

import hashlib
import os
import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from repro import oci
from repro.buildkit._content import ABORT, INFO, WRITE, ExportStore
from repro.buildkit._session import HEALTH, SessionServer
from repro.buildkit.proto import buildkit_pb2 as pb

STORE = [("buildkit-attachable-store-id", "export")]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Writer:
    """One Write stream, request by request (containerd's remoteWriter)."""

    def __init__(self, channel: grpc.Channel, metadata: list[tuple[str, str]] = STORE) -> None:
        self.outbox: queue.Queue[pb.WriteContentRequest | None] = queue.Queue()

        def requests() -> Iterator[pb.WriteContentRequest]:
            while (r := self.outbox.get()) is not None:
                yield r

        self.call = channel.stream_stream(
            WRITE,
            request_serializer=pb.WriteContentRequest.SerializeToString,
            response_deserializer=pb.WriteContentResponse.FromString,
        )(requests(), metadata=metadata, timeout=10)

    def send(self, **fields: object) -> pb.WriteContentResponse:
        self.outbox.put(pb.WriteContentRequest(**fields))  # type: ignore[arg-type]
        return next(self.call)

    def close(self) -> None:
        self.outbox.put(None)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ExportStore, grpc.Channel, list[tuple[str, int]]]]:
    taken: list[tuple[str, int]] = []
    shelf: dict[str, bytes] = {}

    def take(digest: str, size: int, dest: Path) -> bool:
        taken.append((digest, size))
        data = shelf.get(digest)
        if data is None:
            return False
        dest.write_bytes(data)
        return True

    store = ExportStore(tmp_path / "layout", take)
    store.shelf = shelf  # type: ignore[attr-defined]  # for the tests to fill
    server = SessionServer({}, content_store=store)
    channel = grpc.insecure_channel("unix:" + server.path)
    try:
        yield store, channel, taken
    finally:
        channel.close()
        server.close()


def write_blob(channel: grpc.Channel, data: bytes, chunk: int = 1 << 20) -> str:
    digest = digest_of(data)
    w = Writer(channel)
    ref = f"layer-{digest}"
    first = w.send(action=pb.WRITE_STAT, ref=ref, total=len(data), expected=digest)
    assert (first.action, first.offset, first.total) == (pb.WRITE_STAT, 0, len(data))
    assert w.send(action=pb.WRITE_STAT).offset == 0
    offset = 0
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        resp = w.send(action=pb.WRITE_WRITE, offset=offset, data=part)
        offset += len(part)
        assert resp.offset == offset
    done = w.send(action=pb.WRITE_COMMIT, total=len(data), offset=offset, expected=digest)
    assert (done.action, done.offset, done.digest) == (pb.WRITE_COMMIT, len(data), digest)
    w.close()
    return digest


def test_blobs_are_written_checked_and_counted(served, tmp_path: Path) -> None:
    store, channel, _ = served
    data = os.urandom(2_500_000)  # several WRITEs
    digest = write_blob(channel, data)
    small = write_blob(channel, b'{"schemaVersion":2}')
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    assert (blobs / digest[7:]).read_bytes() == data
    assert (blobs / small[7:]).read_bytes() == b'{"schemaVersion":2}'
    assert store.received == [2, len(data) + 19]
    assert store.skipped == [0, 0]
    assert list(store.ingest.iterdir()) == []  # nothing half-written left


def test_a_blob_at_hand_is_refused_as_already_there(served, tmp_path: Path) -> None:
    store, channel, taken = served
    data = os.urandom(100_000)
    digest = write_blob(channel, data)
    # Had already: the first STAT is answered ALREADY_EXISTS, which BuildKit skips.
    w = Writer(channel)
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_STAT, ref="again", total=len(data), expected=digest)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Taken from the shelf: the same, and the blob is in the layout.
    shelved = os.urandom(70_000)
    store.shelf[digest_of(shelved)] = shelved
    w = Writer(channel)
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_STAT, ref="base", total=len(shelved), expected=digest_of(shelved))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    blob = tmp_path / "layout" / "blobs" / "sha256" / digest_of(shelved)[7:]
    assert blob.read_bytes() == shelved
    assert store.skipped == [1, 70_000]
    assert (digest_of(shelved), 70_000) in taken


def test_wrong_bytes_are_not_kept(served, tmp_path: Path) -> None:
    store, channel, _ = served
    claimed = digest_of(b"what was promised")
    w = Writer(channel)
    w.send(action=pb.WRITE_STAT, ref="bad", total=5, expected=claimed)
    w.send(action=pb.WRITE_WRITE, offset=0, data=b"other")
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_COMMIT, total=5, offset=5, expected=claimed)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unexpected commit digest" in err.value.details()
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []
    assert list(store.ingest.iterdir()) == []


def test_short_blob_and_bad_offsets_are_refused(served) -> None:
    _, channel, _ = served
    data = b"0123456789"
    w = Writer(channel)
    w.send(action=pb.WRITE_STAT, ref="short", total=10, expected=digest_of(data))
    w.send(action=pb.WRITE_WRITE, offset=0, data=data[:4])
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_COMMIT, total=10, offset=4, expected=digest_of(data))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    w = Writer(channel)
    w.send(action=pb.WRITE_STAT, ref="gap", total=10, expected=digest_of(data))
    w.send(action=pb.WRITE_WRITE, offset=0, data=data[:4])
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_WRITE, offset=6, data=data[6:])
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    w = Writer(channel)
    w.send(action=pb.WRITE_STAT, ref="long", total=4, expected=digest_of(data))
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_WRITE, offset=0, data=data)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_a_write_from_offset_zero_starts_over(served, tmp_path: Path) -> None:
    _, channel, _ = served
    data = b"the right bytes"
    w = Writer(channel)
    w.send(action=pb.WRITE_STAT, ref="retry", total=len(data), expected=digest_of(data))
    w.send(action=pb.WRITE_WRITE, offset=0, data=b"the wrong")
    assert w.send(action=pb.WRITE_WRITE, offset=0, data=data).offset == len(data)
    done = w.send(
        action=pb.WRITE_COMMIT, total=len(data), offset=len(data), expected=digest_of(data)
    )
    assert done.digest == digest_of(data)
    assert (tmp_path / "layout" / "blobs" / "sha256" / digest_of(data)[7:]).read_bytes() == data


def test_other_stores_digests_and_refs(served) -> None:
    _, channel, _ = served
    w = Writer(channel, metadata=[("buildkit-attachable-store-id", "local:/elsewhere")])
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_STAT, ref="x", total=1, expected=digest_of(b"x"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    w = Writer(channel)
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_STAT, ref="x", total=1, expected="sha512:" + "0" * 128)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    w = Writer(channel)
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_STAT, total=1, expected=digest_of(b"x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_info_and_abort(served) -> None:
    _, channel, _ = served
    digest = write_blob(channel, b"hello")
    info = channel.unary_unary(
        INFO,
        request_serializer=pb.ContentInfoRequest.SerializeToString,
        response_deserializer=pb.ContentInfoResponse.FromString,
    )
    assert info(pb.ContentInfoRequest(digest=digest), metadata=STORE, timeout=5).info.size == 5
    with pytest.raises(grpc.RpcError) as err:
        info(pb.ContentInfoRequest(digest=digest_of(b"no")), metadata=STORE, timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    abort = channel.unary_unary(ABORT, request_serializer=pb.ContentAbortRequest.SerializeToString)
    abort(pb.ContentAbortRequest(ref="nothing"), metadata=STORE, timeout=5)


def test_a_full_disk_is_reported_as_this_sides_failure(served) -> None:
    store, channel, _ = served
    store.ingest.rmdir()
    store.ingest.write_text("not a directory")  # every ingest file fails to open
    w = Writer(channel)
    w.send(action=pb.WRITE_STAT, ref="x", total=1, expected=digest_of(b"x"))
    with pytest.raises(grpc.RpcError) as err:
        w.send(action=pb.WRITE_WRITE, offset=0, data=b"x")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert isinstance(store.failure, OSError)


def test_advertised_only_with_a_store(tmp_path: Path) -> None:
    plain = SessionServer({})
    stored = SessionServer({}, content_store=ExportStore(tmp_path / "l"))
    try:
        assert plain.methods() == [HEALTH]
        assert stored.methods() == [HEALTH, WRITE, INFO, ABORT]
    finally:
        plain.close()
        stored.close()


# --- the shelf -----------------------------------------------------------------------


@pytest.fixture
def shelf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "blobs" / "sha256"


def test_shelved_layers_are_taken_checked(shelf_home: Path, tmp_path: Path) -> None:
    layout = oci.OCILayout.create(tmp_path / "image")
    big = layout.write_blob(os.urandom(oci.SHELF_MIN_SIZE), oci.MEDIA_TYPE_OCI_LAYER_GZIP)
    small = layout.write_blob(b"tiny layer", oci.MEDIA_TYPE_OCI_LAYER_GZIP)
    oci.shelve(layout, [big, small])
    assert sorted(p.name for p in shelf_home.iterdir()) == [big.digest[7:]]
    assert os.path.samefile(shelf_home / big.digest[7:], layout.blob_path(big.digest))

    dest = tmp_path / "taken"
    assert oci.take_shelved(big.digest, big.size, dest)
    assert dest.read_bytes() == layout.blob_path(big.digest).read_bytes()
    assert not oci.take_shelved(small.digest, small.size, tmp_path / "small")
    assert not oci.take_shelved(big.digest, big.size + 1, tmp_path / "wrong-size")
    assert not (tmp_path / "small").exists() and not (tmp_path / "wrong-size").exists()


def test_a_changed_shelf_file_is_dropped_not_used(shelf_home: Path, tmp_path: Path) -> None:
    shelf_home.mkdir(parents=True)
    data = os.urandom(oci.SHELF_MIN_SIZE)
    digest = digest_of(data)
    (shelf_home / digest[7:]).write_bytes(b"\0" * len(data))  # same size, other bytes
    assert not oci.take_shelved(digest, len(data), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert not (shelf_home / digest[7:]).exists()


# --- the layout the stored export makes ----------------------------------------------


def _response(descriptor: oci.Descriptor) -> dict[str, str]:
    import base64
    import json

    encoded = base64.b64encode(json.dumps(descriptor.to_json()).encode()).decode()
    return {"containerimage.descriptor": encoded, "containerimage.digest": descriptor.digest}


def test_the_stored_export_becomes_a_complete_layout(tmp_path: Path) -> None:
    from repro.buildkit._build import _ExportWriter, exported_descriptor
    from repro.errors import BuilderError

    source = oci.OCILayout.create(tmp_path / "source")
    layer = source.write_blob(b"layer bytes", oci.MEDIA_TYPE_OCI_LAYER)
    config = source.write_blob(b'{"architecture":"amd64","os":"linux"}', oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }
    top = source.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)

    out = oci.Output.parse(f"oci:{tmp_path / 'out'}")
    writer = _ExportWriter(out, store=True)
    assert writer.store is not None
    for blob in (top, config):  # the layer never arrived
        os.link(source.blob_path(blob.digest), writer.store.blobs / blob.digest[7:])
    with pytest.raises(BuilderError, match="incomplete"):
        writer.finish_store(exported_descriptor(_response(top)))
    with pytest.raises(BuilderError, match="named no image"):
        writer.finish_store(exported_descriptor({"containerimage.digest": top.digest}))

    os.link(source.blob_path(layer.digest), writer.store.blobs / layer.digest[7:])
    writer.finish_store(exported_descriptor(_response(top)))
    writer.commit()
    made = oci.OCILayout(tmp_path / "out")
    assert [d.digest for d in made.index_manifests()] == [top.digest]
    made.verify(full=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "source"]  # no staging left
