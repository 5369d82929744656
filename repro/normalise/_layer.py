"""Canonical encoding of one layer: a tar stream in, a canonical compressed tar out.

The canonical form of a layer is a function of its contents and the options only:

- entries sorted by path, component by component (a directory before what it
  holds), so the order a builder walked its snapshot in does not matter;
- hard links: of the names sharing one file, the first in that order carries
  the data and the others link to it, so targets always precede their links;
- POSIX.1-2001 (pax) headers as CPython's tarfile writes them; the only pax
  records kept are extended attributes (`SCHILY.xattr.*`, sorted), plus what
  does not fit a ustar header (long names, big ids); atime, ctime, fractional
  times and other volatile records are dropped;
- mtime clamped to the epoch (never raised), numeric uid/gid kept, user and group
  names as the options say (default: none), permission bits kept, device numbers
  only on devices;
- gzip: raw deflate from zlib at a fixed level (6 by default, as `gzip -n`), in
  1 MiB blocks compressed in parallel (see `GZIP_BLOCK`), a header with mtime 0,
  no file name, OS 255, and a comment that marks the layer as already canonical
  for these options; or zstd (the `zstandard` package) at a fixed level,
  single-threaded, with no checksum and no content size.

Why the bytes are stable: zlib's deflate output is a function of the input, level,
window bits, memLevel, strategy and dictionary, which are all fixed here (the
dictionary of a block is the 32 KiB of input before it, so the thread count
never matters); it has not changed across madler zlib 1.2.x-1.3.x (CPython links
the system zlib, 1.2.13 on Debian 12; `zlib.ZLIB_RUNTIME_VERSION` is recorded
with each result, and tests/test_normalise.py pins golden digests). Tar headers
come from CPython's tarfile, whose ustar/pax writer is equally pinned by the test.
Forks with their own deflate (zlib-ng, Intel's or Cloudflare's) would give other,
equally deterministic, bytes. BuildKit's own
compressor (Go's compress/gzip or a pigz) never touches a normalised layer.

A layer whose gzip header carries the marker for the same options is already in
canonical form: it is hashed once (digest checked) and hard-linked or copied. Everything streams:
the decompressed tar is spilled to a temporary file (so entries can be sorted by
seeking), never held in memory; only the headers are.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tarfile
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from repro.errors import EnvironmentError_, InputError
from repro.normalise._rules import SHADOW_FILES, Change, ContentRules, NormaliseOptions
from repro.oci import (
    CHUNK_SIZE,
    GZIP_MAGIC,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    Descriptor,
    Hasher,
    OCILayout,
    Readable,
    link_or_copy,
    short_digest,
    uncompressed,
    zstandard_module,
)

MARKER_VERSION = 1
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
MAX_SHADOW_SIZE = 16 * 1024 * 1024
# Annotations builders put on layer descriptors that say how, not what.
VOLATILE_ANNOTATION_PREFIXES = ("buildkit/", "containerd.io/")


def marker(options: NormaliseOptions) -> bytes:
    """The gzip comment that marks a layer as canonical for `options`."""
    return (
        f"repro-normalise/{MARKER_VERSION} gzip-{options.compression_level}-b1m "
        f"{options.fingerprint()}"
    ).encode()


def gzip_header(options: NormaliseOptions) -> bytes:
    """The fixed gzip header: no name, mtime 0, OS 255, and the marker as its comment.

    The marker is a comment (FCOMMENT), not an extra field: CPython 3.11's tarfile
    cannot stream-read gzip with FEXTRA, and every gzip reader skips comments.
    """
    level = options.compression_level
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    # ID1 ID2 CM=deflate FLG=FCOMMENT MTIME=0 XFL OS=255 (unknown), then the comment.
    return (
        GZIP_MAGIC
        + bytes([8, 0x10])
        + struct.pack("<I", 0)
        + bytes([xfl, 255])
        + marker(options)
        + b"\0"
    )


def has_marker(path: Path, options: NormaliseOptions) -> bool:
    """Whether a blob starts with exactly the gzip header normalise writes for `options`."""
    expected = gzip_header(options)
    try:
        with open(path, "rb") as f:
            return f.read(len(expected)) == expected
    except OSError:
        return False


def clean_annotations(annotations: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(annotations.items())
        if not k.startswith(VOLATILE_ANNOTATION_PREFIXES)
    }


@dataclass
class LayerOutcome:
    """What happened to one layer."""

    index: int
    source: Descriptor
    descriptor: Descriptor
    diff_id: str
    action: str  # "kept" (bytes unchanged), "restored" (the base's own blob) or "rewritten"
    changes: list[Change] = field(default_factory=list)
    # Whiteout entries ("dir/.wh.name", not opaque ones) of a rewritten layer.
    whiteouts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "action": self.action,
            "from": self.source.digest,
            "to": self.descriptor.digest,
            "diff_id": self.diff_id,
        }


# --- sinks -------------------------------------------------------------------


# gzip is written in independent 1 MiB blocks, as pigz does: each block is deflated
# with the 32 KiB of input before it as its dictionary and ends on a sync flush, so
# the blocks can be compressed on every core and concatenated into one valid deflate
# stream. The bytes depend on the block size (fixed here), never on the thread count.
GZIP_BLOCK = 1024 * 1024
DEFLATE_WINDOW = 32 * 1024
_deflate_pool: ThreadPoolExecutor | None = None
_deflate_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _deflate_pool
    with _deflate_pool_lock:
        if _deflate_pool is None:
            _deflate_pool = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="deflate"
            )
        return _deflate_pool


def deflate_block(data: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    """One block of the deflate stream (raw deflate, dictionary = the preceding input)."""
    if zdict:
        c = zlib.compressobj(
            level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, zdict
        )
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
    return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _LayerSink:
    """Takes the canonical tar, hashes it (diff_id), compresses, hashes and stores it."""

    def __init__(self, out: BinaryIO, options: NormaliseOptions) -> None:
        self._out = out
        self.diff_hasher = Hasher()
        self.blob_hasher = Hasher()
        self.compression = options.compression
        self._level = options.compression_level
        self._crc = 0
        self._isize = 0
        self._buf = bytearray()
        self._dict = b""
        self._pending: deque[Future[bytes]] = deque()
        self._max_pending = 2 * (os.cpu_count() or 1)
        if options.compression == "gzip":
            self._emit(gzip_header(options))
        else:
            zstandard = zstandard_module()
            self._zstd = zstandard.ZstdCompressor(
                level=options.compression_level,
                write_checksum=False,
                write_content_size=False,
                write_dict_id=False,
                threads=0,
            ).compressobj()

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.blob_hasher.update(data)

    def _submit(self, block: bytes, last: bool) -> None:
        self._pending.append(_pool().submit(deflate_block, block, self._dict, self._level, last))
        self._dict = (self._dict + block)[-DEFLATE_WINDOW:]
        while len(self._pending) > (0 if last else self._max_pending):
            self._emit(self._pending.popleft().result())

    def write(self, data: bytes) -> None:
        self.diff_hasher.update(data)
        if self.compression != "gzip":
            self._emit(self._zstd.compress(data))
            return
        self._crc = zlib.crc32(data, self._crc)
        self._isize += len(data)
        self._buf += data
        while len(self._buf) >= GZIP_BLOCK:
            block = bytes(self._buf[:GZIP_BLOCK])
            del self._buf[:GZIP_BLOCK]
            self._submit(block, last=False)

    def close(self) -> None:
        if self.compression == "gzip":
            self._submit(bytes(self._buf), last=True)
            self._buf = bytearray()
            self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self._isize & 0xFFFFFFFF))
        else:
            self._emit(self._zstd.flush())

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()

    @property
    def media_type(self) -> str:
        return (
            MEDIA_TYPE_OCI_LAYER_GZIP if self.compression == "gzip" else MEDIA_TYPE_OCI_LAYER_ZSTD
        )


# --- reading -----------------------------------------------------------------


def _spill(reader: Readable, spill: BinaryIO, what: str) -> None:
    """Decompress a layer (gzip, zstd or none, told by `repro.oci`) into `spill`."""
    stream, raw, _ = uncompressed(reader, what)
    while chunk := stream.read(CHUNK_SIZE):
        spill.write(chunk)
    while raw.read(CHUNK_SIZE):  # trailing bytes: still part of the blob's digest
        pass


# --- the canonical tar -------------------------------------------------------


def canonical_name(name: str) -> str:
    """A tar member name without leading './' or '/', or '.' for the root itself."""
    while name.startswith("./") or name.startswith("/"):
        name = name[2:] if name.startswith("./") else name[1:]
    name = name.rstrip("/")
    return name or "."


def sort_key(name: str) -> tuple[str, ...]:
    return () if name == "." else tuple(name.split("/"))


def is_whiteout(name: str) -> bool:
    return name.rsplit("/", 1)[-1].startswith(".wh.")


def _header(
    source: tarfile.TarInfo, name: str, options: NormaliseOptions, *, size: int = 0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = source.type if source.type != tarfile.AREGTYPE else tarfile.REGTYPE
    if info.type in (tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE):
        info.type = tarfile.REGTYPE
    info.mode = source.mode & 0o7777
    info.uid = source.uid
    info.gid = source.gid
    info.uname = options.uname
    info.gname = options.gname
    info.mtime = min(int(source.mtime), options.epoch)
    info.size = size
    if source.issym():
        info.linkname = source.linkname
    if source.ischr() or source.isblk():
        info.devmajor, info.devminor = source.devmajor, source.devminor
    info.pax_headers = {
        k: v for k, v in sorted(source.pax_headers.items()) if k.startswith("SCHILY.xattr.")
    }
    return info


class _TarWriter:
    """Writes tar headers and data to a sink, the way tarfile would, without its member list."""

    def __init__(self, sink: _LayerSink) -> None:
        self.sink = sink
        self.offset = 0

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | None = None) -> None:
        buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._write(buf)
        if data is not None and info.size:
            remaining = info.size
            while remaining:
                chunk = data.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise InputError(f"unexpected end of data in entry {info.name!r}")
                self._write(chunk)
                remaining -= len(chunk)
            pad = -info.size % BLOCK
            if pad:
                self._write(b"\0" * pad)

    def _write(self, data: bytes) -> None:
        self.sink.write(data)
        self.offset += len(data)

    def finish(self) -> None:
        end = self.offset + 2 * BLOCK
        self._write(b"\0" * (2 * BLOCK + (-end % RECORD)))


class _MaskingWriter(_TarWriter):
    """A _TarWriter that clears the `umask` bits of every entry but symlinks and
    whiteouts, recording each entry it changes."""

    def __init__(
        self, sink: _LayerSink, umask: int, layer_index: int, changes: list[Change]
    ) -> None:
        super().__init__(sink)
        self.umask = umask
        self.layer_index = layer_index
        self.changes = changes

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | None = None) -> None:
        if self.umask and not info.issym() and not is_whiteout(info.name):
            masked = info.mode & ~self.umask
            if masked != info.mode:
                self.changes.append(
                    Change(
                        self.layer_index,
                        "/" + info.name,
                        f"umask {self.umask:03o}: {info.mode:04o} -> {masked:04o}",
                    )
                )
                info.mode = masked
        super().add(info, data)


def _read_members(spill: BinaryIO, what: str) -> list[tarfile.TarInfo]:
    spill.seek(0)
    last = ""
    members: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(fileobj=spill, mode="r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                members.append(member)
                last = member.name
                tar.members.clear()  # type: ignore[attr-defined]  # kept once, in `members`
    except (tarfile.TarError, EOFError, UnicodeError) as e:
        after = f" after entry {last!r}" if last else ""
        raise InputError(f"{what} is not a valid tar archive{after}: {e}") from None
    return members


def write_canonical(
    spill: BinaryIO,
    sink: _LayerSink,
    options: NormaliseOptions,
    rules: ContentRules,
    layer_index: int,
    what: str,
    whiteouts: list[str] | None = None,
) -> list[Change]:
    """Re-encode the tar in `spill` canonically into `sink`; return the rule changes.

    The names of the layer's whiteouts (not opaque ones) are added to `whiteouts`.
    """
    members = _read_members(spill, what)
    # The last entry of a name wins, as when a tar is extracted.
    by_name: dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = canonical_name(member.name)
        if ".." in name.split("/"):
            raise InputError(f"{what}: entry {member.name!r} escapes the root with '..'")
        by_name[name] = member
    del members

    def open_data(member: tarfile.TarInfo) -> IO[bytes]:
        spill.seek(member.offset_data)
        return spill

    return write_entries(
        by_name, open_data, sink, options, rules, layer_index, what, whiteouts
    )


def write_entries(
    by_name: dict[str, tarfile.TarInfo],
    open_data: Callable[[tarfile.TarInfo], IO[bytes]],
    sink: _LayerSink,
    options: NormaliseOptions,
    rules: ContentRules,
    layer_index: int,
    what: str,
    whiteouts: list[str] | None = None,
) -> list[Change]:
    """Write a layer's entries (canonical name -> header) in canonical form into `sink`.

    `open_data(member)` returns a file positioned at the start of a regular file's
    bytes. This is the one place a canonical layer tar is written: `write_canonical`
    feeds it what a builder exported, `repro.rootfs` what it unpacked from packages.
    """
    changes: list[Change] = []

    # Hard links: group every name by the regular file whose data it shares.
    root_of: dict[str, str] = {}
    for name, member in by_name.items():
        if not member.islnk():
            continue
        target = canonical_name(member.linkname)
        hops = 0
        while target in by_name and by_name[target].islnk() and hops < 64:
            target = canonical_name(by_name[target].linkname)
            hops += 1
        if target not in by_name or not by_name[target].isreg():
            raise InputError(
                f"{what}: entry {member.name!r} is a hard link to {member.linkname!r}, "
                "which is not a file earlier in the layer"
            )
        root_of[name] = target

    if whiteouts is not None:
        whiteouts.extend(
            n
            for n in by_name
            if is_whiteout(n) and not n.endswith("/.wh..wh..opq") and n != ".wh..wh..opq"
        )
    dropped: set[str] = set()
    for name in by_name:
        if name == "." or is_whiteout(name):
            continue
        rule = rules.drop.match("/" + name)
        if rule is not None:
            dropped.add(name)
            changes.append(Change(layer_index, "/" + name, f"drop {rule}"))

    groups: dict[str, list[str]] = {}
    for name, root in root_of.items():
        groups.setdefault(root, []).append(name)
    # Of the surviving names of a hard-link group, the first in canonical order
    # carries the data (with the group's file's header); the others link to it.
    holder: dict[str, str] = {}
    for root, links in groups.items():
        names = sorted((n for n in [root, *links] if n not in dropped), key=sort_key)
        for n in names:
            holder[n] = names[0]

    writer: _TarWriter = _MaskingWriter(sink, rules.umask, layer_index, changes)
    for name in sorted(by_name, key=sort_key):
        if name in dropped:
            continue
        member = by_name[name]
        if name in holder:
            root = root_of.get(name, name)
            if holder[name] == name:
                _write_file(
                    writer, open_data, by_name[root], name, options, rules, layer_index, changes
                )
            else:
                link = _header(by_name[root], name, options)
                link.type = tarfile.LNKTYPE
                link.linkname = holder[name]
                writer.add(link)
        elif member.isreg():
            _write_file(writer, open_data, member, name, options, rules, layer_index, changes)
        else:
            writer.add(_header(member, name, options))
    writer.finish()
    return changes


def _write_file(
    writer: _TarWriter,
    open_data: Callable[[tarfile.TarInfo], IO[bytes]],
    member: tarfile.TarInfo,
    name: str,
    options: NormaliseOptions,
    rules: ContentRules,
    layer_index: int,
    changes: list[Change],
) -> None:
    path = "/" + name
    if not is_whiteout(name):
        rule = rules.truncate.match(path)
        if rule is not None:
            if member.size:
                changes.append(Change(layer_index, path, f"truncate {rule}"))
            writer.add(_header(member, name, options, size=0))
            return
        if rules.shadow and path in SHADOW_FILES and member.size <= MAX_SHADOW_SIZE:
            from repro.normalise._rules import rewrite_shadow

            original = open_data(member).read(member.size)
            data = rewrite_shadow(original, rules.shadow_day)
            if data != original:
                changes.append(Change(layer_index, path, "shadow last-change day"))
            writer.add(_header(member, name, options, size=len(data)), io.BytesIO(data))
            return
    writer.add(_header(member, name, options, size=member.size), open_data(member))


# --- one layer ---------------------------------------------------------------


def _copy_verified(src: OCILayout, dest: OCILayout, layer: Descriptor) -> None:
    """Put a blob of `src` into `dest` unchanged, at digest speed.

    The source is hashed once (checked against its digest), then hard-linked, or
    copied by the kernel where a link is impossible (another file system).
    """
    with src.open_blob(layer.digest, layer.size) as reader:
        while reader.read(CHUNK_SIZE):
            pass
        reader.verify_eof()
    target = dest.blob_path(layer.digest)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(src.blob_path(layer.digest), target)
    except OSError as e:
        raise EnvironmentError_(f"cannot write {target}: {e.strerror or e}") from e


def copy_layer(
    src: OCILayout,
    dest: OCILayout,
    layer: Descriptor,
    diff_id: str,
    index: int,
    restore: Descriptor | None = None,
) -> LayerOutcome:
    """Copy a layer's bytes unchanged (checked against its digest).

    With `restore` (the base image's own descriptor of the same contents), that
    blob is used instead, and the outcome says "restored" if it differs.
    """
    source = layer
    if restore is not None:
        layer = restore
    target = dest.blob_path(layer.digest)
    if not target.exists():
        _copy_verified(src, dest, layer)
    kept = Descriptor(
        media_type=layer.media_type,
        digest=layer.digest,
        size=layer.size,
        annotations=clean_annotations(layer.annotations),
        extra=dict(layer.extra),
    )
    action = "kept" if layer.digest == source.digest else "restored"
    return LayerOutcome(index, source, kept, diff_id, action)


@contextlib.contextmanager
def layer_blob(dest: OCILayout, options: NormaliseOptions) -> Iterator[_LayerSink]:
    """A sink that writes a new layer blob into `dest`: named by its digest when the
    block ends without an error, removed otherwise. The one place a canonical layer
    becomes a blob (normalised layers and root filesystems)."""
    blob_dir = dest.path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=blob_dir, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _LayerSink(out, options)
            try:
                yield sink
                sink.close()
            except BaseException:
                sink.abort()
                raise
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest.blob_path(sink.blob_hasher.digest()))
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def normalise_layer(
    src: OCILayout,
    dest: OCILayout,
    layer: Descriptor,
    diff_id: str,
    index: int,
    options: NormaliseOptions,
    rules: ContentRules,
    *,
    keep: bool = False,
    restore: Descriptor | None = None,
) -> LayerOutcome:
    """Normalise one layer of `src` into `dest`: copy it if it is kept or already canonical."""
    if keep:
        return copy_layer(src, dest, layer, diff_id, index, restore)
    if layer.media_type == MEDIA_TYPE_OCI_LAYER_GZIP or layer.media_type.endswith("gzip"):
        blob = src.blob_path(layer.digest)
        # The marker does not cover `umask` (see NormaliseOptions.fingerprint).
        if options.compression == "gzip" and not options.umask and has_marker(blob, options):
            return copy_layer(src, dest, layer, diff_id, index)
    what = f"layer {index} ({short_digest(layer.digest)})"
    dest.path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=dest.path, prefix=".spill-") as spill:
        with src.open_blob(layer.digest, layer.size) as reader:
            _spill(reader, spill, what)
            reader.verify_eof()
        whiteouts: list[str] = []
        with layer_blob(dest, options) as sink:
            changes = write_canonical(spill, sink, options, rules, index, what, whiteouts)
        digest = sink.blob_hasher.digest()
    descriptor = Descriptor(
        media_type=sink.media_type,
        digest=digest,
        size=sink.blob_hasher.size,
        annotations=clean_annotations(layer.annotations),
        extra=dict(layer.extra),
    )
    action = "kept" if digest == layer.digest else "rewritten"
    return LayerOutcome(
        index, layer, descriptor, sink.diff_hasher.digest(), action, changes, whiteouts
    )


def layer_paths(layout: OCILayout, layer: Descriptor, what: str) -> Iterator[str]:
    """The canonical names of a layer's entries, read as a stream (headers only)."""
    with layout.open_blob(layer.digest, layer.size) as raw:
        reader, _, _ = uncompressed(raw, what)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    yield canonical_name(member.name)
        except (tarfile.TarError, EOFError) as e:
            raise InputError(f"{what} is not a valid tar archive: {e}") from None
