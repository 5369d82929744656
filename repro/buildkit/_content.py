"""The client's content store, which BuildKit's OCI exporter writes into (``tar=false``).

With ``tar=true`` (BuildKit's default) the exporter sends one tarball holding every
blob of the image, base layers included: for an application on a 50 MB base, the
base goes over the session on every build although the client has it already. With
``tar=false`` the exporter copies the image into a content store the session serves
(containerd's ``containerd.services.content.v1.Content``, store ID ``export``), blob
by blob, and opens each write by saying which digest it is about to send. A blob
the store has is refused with ALREADY_EXISTS and not sent.

`ExportStore` is that store for one build: blobs land in an OCI layout's
``blobs/sha256`` (staged beside the build's output), each checked against its digest
and size before it is kept. A blob it lacks may be taken from elsewhere (`take`:
repro's blob shelf, repro.oci.take_shelved), checked the same way; only a blob in
place counts as had. The index is written by the caller from the exporter's
response (`write_index`), as the tarball's would have been.

Write is a bidi stream; each request is answered (containerd's proxy writer waits
for every answer). The first request names the ref and, when known, the expected
digest and size; then STAT, WRITE (data at the current offset) and COMMIT. Only
sha256 blobs are taken.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from repro.buildkit._h2grpc import NOT_FOUND, GrpcAbort
from repro.buildkit.proto import buildkit_pb2 as pb

WRITE = "/containerd.services.content.v1.Content/Write"
INFO = "/containerd.services.content.v1.Content/Info"
ABORT = "/containerd.services.content.v1.Content/Abort"
METHODS = (WRITE, INFO, ABORT)

STORE_ID_HEADER = "buildkit-attachable-store-id"
STORE_ID = "export"

# gRPC codes the containerd client maps to its error kinds.
INVALID_ARGUMENT = 3
ALREADY_EXISTS = 6
FAILED_PRECONDITION = 9
OUT_OF_RANGE = 11
UNAVAILABLE = 14

_HEX = frozenset("0123456789abcdef")

# (digest, size, where to put it) -> whether a checked copy is now there
Take = Callable[[str, int, Path], bool]


def _hex(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or len(hex_part) != 64 or not set(hex_part) <= _HEX:
        raise GrpcAbort(INVALID_ARGUMENT, f"unsupported digest {digest!r}")
    return hex_part


class ExportStore:
    """One build's export, received blob by blob into ``layout/blobs/sha256``."""

    def __init__(self, layout: Path, take: Take | None = None) -> None:
        self.layout = layout
        self.blobs = layout / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest = layout.parent / (layout.name + ".ingest")
        self.ingest.mkdir(exist_ok=True)
        self.take = take
        self._lock = threading.Lock()
        self._active: set[str] = set()
        # What this export cost: blobs and bytes received, and those not sent
        # because they were here or taken from elsewhere.
        self.received = [0, 0]
        self.skipped = [0, 0]
        # Why writing failed on this side (a full disk): BuildKit only says that the
        # export failed, so the build reports this instead.
        self.failure: OSError | None = None

    # -- what the store has --------------------------------------------------------

    def has(self, digest: str, size: int) -> bool:
        """Whether the blob is in the layout, taking a checked copy from `take` if not."""
        path = self.blobs / _hex(digest)
        try:
            if size <= 0 or path.stat().st_size == size:
                return True
        except FileNotFoundError:
            pass
        if self.take is None or size <= 0 or not self.take(digest, size, path):
            return False
        with self._lock:
            self.skipped[0] += 1
            self.skipped[1] += size
        return True

    # -- the service ---------------------------------------------------------------

    def _check_store(self, md: Mapping[str, list[str]]) -> None:
        store = (md.get(STORE_ID_HEADER) or [""])[0]
        if store != STORE_ID:
            raise GrpcAbort(NOT_FOUND, f"unknown store {store!r}")

    def info(self, request: bytes, md: Mapping[str, list[str]]) -> bytes:
        self._check_store(md)
        digest = pb.ContentInfoRequest.FromString(request).digest
        try:
            size = (self.blobs / _hex(digest)).stat().st_size
        except FileNotFoundError:
            raise GrpcAbort(NOT_FOUND, f"content digest {digest}: not found") from None
        info = pb.ContentInfo(digest=digest, size=size)
        return pb.ContentInfoResponse(info=info).SerializeToString()

    def abort(self, request: bytes, md: Mapping[str, list[str]]) -> bytes:
        self._check_store(md)
        ref = pb.ContentAbortRequest.FromString(request).ref
        with self._lock:
            busy = ref in self._active
        if not busy:
            self._ingest_path(ref).unlink(missing_ok=True)
        return b""  # google.protobuf.Empty

    def _ingest_path(self, ref: str) -> Path:
        return self.ingest / hashlib.sha256(ref.encode()).hexdigest()

    def write(
        self, messages: Iterator[bytes], md: Mapping[str, list[str]], send: Callable[[bytes], None]
    ) -> None:
        self._check_store(md)
        requests = (pb.WriteContentRequest.FromString(m) for m in messages)
        req = next(requests, None)
        if req is None:
            return
        ref = req.ref
        if not ref:
            raise GrpcAbort(INVALID_ARGUMENT, "first message must have a reference")
        with self._lock:
            if ref in self._active:
                raise GrpcAbort(UNAVAILABLE, f"ref {ref} locked")
            self._active.add(ref)
        try:
            self._write(ref, req, requests, send)
        finally:
            with self._lock:
                self._active.discard(ref)

    def _write(
        self,
        ref: str,
        req: pb.WriteContentRequest,
        requests: Iterator[pb.WriteContentRequest],
        send: Callable[[bytes], None],
    ) -> None:
        total, expected = req.total, req.expected
        tmp = self._ingest_path(ref)
        hasher = hashlib.sha256()
        offset = 0
        fh = None
        try:
            while True:
                if req.expected:
                    expected = req.expected
                    if self.has(expected, req.total or total):
                        raise GrpcAbort(ALREADY_EXISTS, f"blob {expected} exists")
                if req.total > 0:
                    total = req.total
                resp = pb.WriteContentResponse(action=req.action, offset=offset)
                if req.action == pb.WRITE_STAT:
                    resp.total = total
                else:
                    if req.offset > 0 and req.offset != offset:
                        raise GrpcAbort(
                            OUT_OF_RANGE,
                            f"write @{req.offset} is not at offset {offset}",
                        )
                    if fh is None or (req.offset == 0 and offset > 0):
                        if fh is not None:
                            fh.close()
                        fh = open(tmp, "wb")  # noqa: SIM115 - closed in finally
                        hasher, offset = hashlib.sha256(), 0
                    if req.data:
                        if total > 0 and offset + len(req.data) > total:
                            raise GrpcAbort(
                                OUT_OF_RANGE, f"write past the blob's end ({total} bytes)"
                            )
                        fh.write(req.data)
                        hasher.update(req.data)
                        offset += len(req.data)
                    resp.offset = offset
                    if req.action == pb.WRITE_COMMIT:
                        fh.close()
                        fh = None
                        self._commit(tmp, "sha256:" + hasher.hexdigest(), offset, total, expected)
                resp.digest = "sha256:" + hasher.hexdigest()
                send(resp.SerializeToString())
                if req.action == pb.WRITE_COMMIT:
                    return
                nxt = next(requests, None)
                if nxt is None:
                    return
                req = nxt
        except OSError as e:
            self.failure = self.failure or e
            raise
        finally:
            if fh is not None:
                fh.close()
            tmp.unlink(missing_ok=True)

    def _commit(self, tmp: Path, digest: str, size: int, total: int, expected: str) -> None:
        if total > 0 and size != total:
            raise GrpcAbort(FAILED_PRECONDITION, f"unexpected commit size {size}, expected {total}")
        if expected and digest != expected:
            raise GrpcAbort(
                FAILED_PRECONDITION, f"unexpected commit digest {digest}, expected {expected}"
            )
        os.replace(tmp, self.blobs / _hex(digest))
        with self._lock:
            self.received[0] += 1
            self.received[1] += size
