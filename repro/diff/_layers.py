"""Layers as tables of paths, streamed, and the pairing of two images' layers.

A layer tar is read once, in stream mode, to build a table: for every entry its
type, mode, owner, mtime, size, link target, xattrs, position and, for regular
files, the sha256 of its content. Only metadata stays in memory; content is hashed
as it streams past. A second pass (``extract_paths``) writes just the paths whose
content differs into a temporary directory for diffoscope, never trusting a name
from the tar: targets are built from sanitised components under a directory repro
created, files are opened O_EXCL|O_NOFOLLOW, and symlinks are never materialised.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tarfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from repro.diff._causes import (
    CONTENT,
    LINK,
    MODE,
    MTIME,
    OWNER,
    TYPE,
    XATTRS,
)
from repro.errors import InputError
from repro.oci import uncompressed

CHUNK = 1024 * 1024
HEAD_SIZE = 64 * 1024  # bytes of each side kept for classifying a content change
# While two compressed layers are streamed side by side, each file up to KEEP_FILE
# bytes is held (KeepWindow) until the other side has hashed the same path: equal,
# it is dropped; different, it is kept (up to KEEP_PINNED bytes per side), so the
# differing files need no second decompression of the layer.
KEEP_FILE = 4 * 1024 * 1024
KEEP_WINDOW = 16 * 1024 * 1024
KEEP_PINNED = 16 * 1024 * 1024

_TYPE_NAMES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char-device",
    tarfile.BLKTYPE: "block-device",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile or huge layer from exhausting the machine."""

    max_layer_bytes: int = 64 * 1024**3  # uncompressed bytes read from one layer
    max_entries: int = 2_000_000  # entries in one layer's table
    max_file_bytes: int = 64 * 1024**2  # one file handed to diffoscope
    max_extract_bytes: int = 512 * 1024**2  # all files handed to diffoscope, per layer pair
    max_files: int = 200  # files handed to diffoscope, per layer pair
    # A compressed layer may unpack to at most this many times its size (above a
    # floor of 1 GiB): a small gzip bomb is refused after seconds, not minutes. Real
    # layers stay far below it; only files of zeros come close (deflate tops out
    # near 1032x). --max-layer-size raises it with the absolute bound.
    max_ratio: int = 256
    ratio_floor: int = 1024**3


@dataclass(frozen=True)
class Entry:
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    mtime: float
    size: int
    linkname: str
    xattrs: tuple[tuple[str, str], ...]
    sha256: str | None
    index: int
    devices: tuple[int, int] = (0, 0)
    offset: int = -1  # where the data starts in the uncompressed tar (regular files)

    def describe(self) -> str:
        parts = [self.type, f"{self.mode:04o}", f"{self.uid}:{self.gid}", f"{self.size}B"]
        if self.linkname:
            parts.append(f"-> {self.linkname}")
        return " ".join(parts)


@dataclass
class LayerTable:
    entries: dict[str, Entry] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)  # names with "..", or absolute
    bytes_read: int = 0
    compressed: bool = False
    kept: dict[str, bytes] = field(default_factory=dict)  # differing files, from KeepWindow


def normalise_name(name: str) -> tuple[str, bool]:
    """The path a tar entry names, without "./" or "/" prefixes; and whether it is unsafe."""
    unsafe = name.startswith("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        unsafe = True
    return "/".join(parts), unsafe


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, str], ...]:
    items = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            items.append((key[len("SCHILY.xattr.") :], value))
    return tuple(sorted(items))


class TarReader:
    """A minimal streaming tar reader: headers parsed by tarfile, data never copied.

    tarfile's stream mode copies every chunk several times (about 100 MB/s here);
    this reads data with readinto into one buffer and hands out memoryviews, so a
    layer streams at the speed of sha256. It understands ustar, pax (x/g) and GNU
    long names; GNU sparse files are read as their stored bytes.
    """

    def __init__(self, stream: IO[bytes], label: str) -> None:
        self.stream = stream
        self.label = label
        self.offset = 0  # position in the uncompressed tar
        self._remaining = 0  # data bytes of the current member not yet read
        self._padding = 0
        self._buffer = bytearray(CHUNK)
        self._global_pax: dict[str, str] = {}
        self.compressed = False

    def _read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.stream.read(n - len(out))
            if not chunk:
                raise InputError(f"{self.label} is not a readable layer tar: unexpected end")
            out += chunk
        self.offset += n
        return bytes(out)

    def chunks(self) -> Iterator[memoryview]:
        """The current member's data, in chunks valid until the next one is read."""
        view = memoryview(self._buffer)
        while self._remaining:
            want = min(self._remaining, CHUNK)
            got = self.stream.readinto(view[:want])  # type: ignore[attr-defined]
            if not got:
                raise InputError(f"{self.label} is not a readable layer tar: unexpected end")
            self._remaining -= got
            self.offset += got
            yield view[:got]

    def _skip_rest(self) -> None:
        for _ in self.chunks():
            pass
        if self._padding:
            self._read_exact(self._padding)
            self._padding = 0

    def _data(self, size: int) -> bytes:
        if size > 64 * 1024 * 1024:
            raise InputError(f"{self.label}: an extended header of {size} bytes")
        data = self._read_exact(size)
        pad = -size % 512
        if pad:
            self._read_exact(pad)
        return data

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        while True:
            self._skip_rest()
            header = self.stream.read(512)
            if not header:
                return  # no end-of-archive blocks: tolerated, as tar itself does
            if len(header) < 512:
                header += self._read_exact(512 - len(header))
                self.offset -= 512 - len(header)
            self.offset += 512
            if header == b"\0" * 512:
                return
            try:
                info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            except tarfile.HeaderError as e:
                raise InputError(f"{self.label} is not a readable layer tar: {e}") from None
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
                records = _parse_pax(self._data(info.size), self.label)
                (self._global_pax if info.type == tarfile.XGLTYPE else pax).update(records)
                continue
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = self._data(info.size).rstrip(b"\0").decode("utf-8", "surrogateescape")
                continue
            if info.type == tarfile.GNUTYPE_LONGLINK:
                long_link = self._data(info.size).rstrip(b"\0").decode("utf-8", "surrogateescape")
                continue
            headers = {**self._global_pax, **pax}
            if long_name is not None:
                info.name = long_name
            if long_link is not None:
                info.linkname = long_link
            _apply_pax(info, headers)
            info.pax_headers = headers
            info.offset_data = self.offset
            has_data = info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) or (
                info.type not in tarfile.SUPPORTED_TYPES
            )
            self._remaining = info.size if has_data else 0
            self._padding = -self._remaining % 512
            pax, long_name, long_link = {}, None, None
            yield info


def _parse_pax(data: bytes, label: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InputError(f"{label}: a malformed pax header") from None
        if length <= 0 or pos + length > len(data):
            raise InputError(f"{label}: a malformed pax header")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _apply_pax(info: tarfile.TarInfo, headers: dict[str, str]) -> None:
    if "path" in headers:
        info.name = headers["path"]
    if "linkpath" in headers:
        info.linkname = headers["linkpath"]
    for key, attr in (("size", "size"), ("uid", "uid"), ("gid", "gid")):
        if key in headers:
            try:
                setattr(info, attr, int(headers[key]))
            except ValueError:
                pass
    if "mtime" in headers:
        try:
            info.mtime = float(headers["mtime"])  # type: ignore[assignment]
        except ValueError:
            pass


@contextmanager
def open_tar(stream: IO[bytes], label: str) -> Iterator[TarReader]:
    """Read a layer as a tar; at the end, the rest of the blob, so its digest is checked."""
    try:
        source, raw, compression = uncompressed(stream, label)
        reader = TarReader(source, label)
        reader.compressed = compression != "none"
        yield reader
        while raw.read(CHUNK):
            pass
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{label} is not a readable layer tar: {e}") from None
    except InputError as e:
        if e.message.startswith(label):
            raise
        raise InputError(f"{label}: {e.message}") from None
    except Exception as e:  # zlib.error, zstandard.ZstdError
        if type(e).__module__ in ("zlib", "zstd", "zstandard", "gzip"):
            raise InputError(f"{label} is not a readable layer tar: {e}") from None
        raise


class KeepWindow:
    """What two layer tables, streamed at the same time, tell each other: each file's
    hash as it goes past, and its bytes until the other side has seen the same path.

    A side's bytes wait in a window of KEEP_WINDOW bytes (oldest dropped first).
    When both sides have hashed a path, equal bytes are dropped and different ones
    pinned in their table's `kept` (up to KEEP_PINNED bytes per side). The bytes are
    those of the digest-checked stream, so using them trusts nothing new.
    """

    def __init__(self, tables: tuple[LayerTable, LayerTable]) -> None:
        self.tables = tables
        self._lock = threading.Lock()
        self._hashes: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self._waiting: tuple[dict[str, bytes], dict[str, bytes]] = ({}, {})
        self._waiting_bytes = [0, 0]
        self._pinned_bytes = [0, 0]

    def _pin(self, side: int, path: str, data: bytes) -> None:
        if self._pinned_bytes[side] + len(data) <= KEEP_PINNED:
            self.tables[side].kept[path] = data
            self._pinned_bytes[side] += len(data)

    def offer(self, side: int, path: str, digest: str, data: bytes | None) -> None:
        other = 1 - side
        with self._lock:
            # A path repeated in a layer: the later entry wins, so bytes kept for an
            # earlier one must not stand in for it.
            stale = self.tables[side].kept.pop(path, None)
            if stale is not None:
                self._pinned_bytes[side] -= len(stale)
            self._hashes[side][path] = digest
            theirs = self._hashes[other].get(path)
            if theirs is not None:
                waiting = self._waiting[other].pop(path, None)
                if waiting is not None:
                    self._waiting_bytes[other] -= len(waiting)
                if theirs != digest:
                    if data is not None:
                        self._pin(side, path, data)
                    if waiting is not None:
                        self._pin(other, path, waiting)
                return
            if data is None:
                return
            queue = self._waiting[side]
            if path in queue:  # a repeated path: the later entry wins
                self._waiting_bytes[side] -= len(queue.pop(path))
            queue[path] = data
            self._waiting_bytes[side] += len(data)
            while self._waiting_bytes[side] > KEEP_WINDOW and queue:
                oldest = next(iter(queue))
                self._waiting_bytes[side] -= len(queue.pop(oldest))


def read_table(
    stream: IO[bytes],
    label: str,
    limits: Limits,
    compressed_size: int | None = None,
    *,
    table: LayerTable | None = None,
    window: KeepWindow | None = None,
    side: int = 0,
) -> LayerTable:
    """Stream a layer once and build its table of paths (into `table` if given;
    with `window`, tell the other side's table what went past, see KeepWindow)."""
    table = table if table is not None else LayerTable()
    bound = limits.max_layer_bytes
    if compressed_size:
        bound = min(bound, max(limits.ratio_floor, limits.max_ratio * compressed_size))
    with open_tar(stream, label) as tar:
        for index, member in enumerate(tar):
            if index >= limits.max_entries:
                raise InputError(f"{label} has more than {limits.max_entries} entries")
            path, unsafe = normalise_name(member.name)
            if unsafe:
                table.unsafe.append(member.name)
            digest = None
            if member.isreg():
                table.bytes_read += member.size
                if table.bytes_read > bound:
                    why = (
                        f"more than {limits.max_ratio} times its compressed size"
                        if bound < limits.max_layer_bytes
                        else f"more than {limits.max_layer_bytes} bytes"
                    )
                    raise InputError(
                        f"{label} unpacks to {why} (raise --max-layer-size to compare it)"
                    )
                h = hashlib.sha256()
                keep = window is not None and tar.compressed and member.size <= KEEP_FILE
                data = bytearray() if keep else None
                for chunk in tar.chunks():
                    h.update(chunk)
                    if data is not None:
                        data += chunk
                digest = h.hexdigest()
                if window is not None:
                    window.offer(side, path, digest, bytes(data) if data is not None else None)
            entry = Entry(
                path=path,
                type=_TYPE_NAMES.get(member.type, "other"),
                mode=member.mode,
                uid=member.uid,
                gid=member.gid,
                mtime=float(member.mtime),
                size=member.size if member.isreg() else 0,
                linkname=member.linkname if (member.issym() or member.islnk()) else "",
                xattrs=_xattrs(member),
                sha256=digest,
                index=index,
                devices=(member.devmajor, member.devminor) if member.isdev() else (0, 0),
                offset=member.offset_data if member.isreg() else -1,
            )
            if path in table.entries:
                table.duplicates.append(path)
                table.order.remove(path)
            table.entries[path] = entry
            table.order.append(path)
        table.compressed = tar.compressed
    return table


@dataclass
class PathDelta:
    path: str
    changes: list[str]
    entry1: Entry | None
    entry2: Entry | None


def compare_entries(e1: Entry, e2: Entry) -> list[str]:
    changes = []
    if e1.type != e2.type:
        changes.append(TYPE)
    if e1.sha256 != e2.sha256 or e1.size != e2.size or e1.devices != e2.devices:
        changes.append(CONTENT)
    if e1.mode != e2.mode:
        changes.append(MODE)
    if (e1.uid, e1.gid) != (e2.uid, e2.gid):
        changes.append(OWNER)
    if e1.mtime != e2.mtime:
        changes.append(MTIME)
    if e1.linkname != e2.linkname:
        changes.append(LINK)
    if e1.xattrs != e2.xattrs:
        changes.append(XATTRS)
    return changes


def compare_tables(t1: LayerTable, t2: LayerTable) -> tuple[list[PathDelta], list[str]]:
    """Per-path differences, in layer order; and the common paths whose order differs."""
    deltas: list[PathDelta] = []
    for path in t1.order:
        e1 = t1.entries[path]
        e2 = t2.entries.get(path)
        if e2 is None:
            deltas.append(PathDelta(path, ["removed"], e1, None))
            continue
        changes = compare_entries(e1, e2)
        if changes:
            deltas.append(PathDelta(path, changes, e1, e2))
    for path in t2.order:
        if path not in t1.entries:
            deltas.append(PathDelta(path, ["added"], None, t2.entries[path]))
    common1 = [p for p in t1.order if p in t2.entries]
    common2 = [p for p in t2.order if p in t1.entries]
    moved: list[str] = []
    if common1 != common2:
        matcher = difflib.SequenceMatcher(None, common1, common2, autojunk=False)
        in_place = {common1[b.a + k] for b in matcher.get_matching_blocks() for k in range(b.size)}
        moved = [p for p in common1 if p not in in_place]
    return deltas, moved


def pair_layers(ids1: Sequence[str], ids2: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """Pair two images' layers: by position when the counts match, else by diffID.

    With different counts, runs of equal diffIDs anchor the pairing; layers between
    anchors pair up by position, and what is left over was added or removed.
    """
    if len(ids1) == len(ids2):
        return [(i, i) for i in range(len(ids1))]
    pairs: list[tuple[int | None, int | None]] = []
    matcher = difflib.SequenceMatcher(None, list(ids1), list(ids2), autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs.extend((i1 + k, j1 + k) for k in range(i2 - i1))
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            a = i1 + k if i1 + k < i2 else None
            b = j1 + k if j1 + k < j2 else None
            pairs.append((a, b))
    return pairs


# --- extraction of the files diffoscope compares ------------------------------


def safe_target(root: Path, path: str, fallback: str) -> Path:
    """Where a tar path lands under root: only plain components, else a flat fallback name."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or path.startswith("/") or any("\0" in p for p in parts):
        return root / "_unsafe" / fallback
    return root.joinpath(*parts)


@dataclass
class Extracted:
    path: str
    file: Path | None  # None when over a bound
    head: bytes
    size: int
    skipped: str = ""


def _writer(
    root: Path, root_real: str, path: str, fallback: str, label: str
) -> tuple[IO[bytes], Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    target = safe_target(root, path, fallback)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        parent_real = os.path.realpath(target.parent)
        if parent_real != root_real and not parent_real.startswith(root_real + os.sep):
            raise InputError(f"{label}: refusing to extract {path!r} outside {root}")
        fd = os.open(target, flags, 0o600)
    except OSError:
        # Valid in a layer, impossible on this file system as a path: a component
        # longer than NAME_MAX, a file where a later layer has a directory, a name
        # already taken. The bytes go to a flat name; reports keep the layer's path.
        target = root / "_unsafe" / fallback
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, flags, 0o600)
    return os.fdopen(fd, "wb"), target


def _bound(count: int, size: int, total: int, limits: Limits) -> str:
    if count >= limits.max_files:
        return f"more than {limits.max_files} differing files"
    if size > limits.max_file_bytes:
        return f"larger than {limits.max_file_bytes} bytes"
    if total + size > limits.max_extract_bytes:
        return f"over the {limits.max_extract_bytes}-byte extraction bound"
    return ""


def extract_paths(
    stream: IO[bytes],
    label: str,
    wanted: set[str],
    root: Path,
    limits: Limits,
) -> dict[str, Extracted]:
    """Write the wanted regular files of a layer under `root` (a fresh directory)."""
    out: dict[str, Extracted] = {}
    total = 0
    root_real = os.path.realpath(root)
    with open_tar(stream, label) as tar:
        for index, member in enumerate(tar):
            path, _ = normalise_name(member.name)
            if path not in wanted or not member.isreg():
                continue
            over = _bound(len(out), member.size, total, limits)
            head = bytearray()
            if over:
                for chunk in tar.chunks():
                    if len(head) < HEAD_SIZE:
                        head += chunk[: HEAD_SIZE - len(head)]
                out[path] = Extracted(path, None, bytes(head), member.size, over)
                continue
            f, target = _writer(root, root_real, path, str(index), label)
            with f:
                for chunk in tar.chunks():
                    if len(head) < HEAD_SIZE:
                        head += chunk[: HEAD_SIZE - len(head)]
                    f.write(chunk)
            total += member.size
            out[path] = Extracted(path, target, bytes(head), member.size)
    return out


def extract_kept(
    table: LayerTable, label: str, wanted: set[str], root: Path, limits: Limits
) -> dict[str, Extracted]:
    """Like extract_paths, from the files the table kept while its (digest-checked)
    stream went past: no second pass over the layer."""
    out: dict[str, Extracted] = {}
    total = 0
    root_real = os.path.realpath(root)
    for path in sorted(wanted, key=lambda p: table.entries[p].index):
        data = table.kept[path]
        entry = table.entries[path]
        over = _bound(len(out), len(data), total, limits)
        if over:
            out[path] = Extracted(path, None, data[:HEAD_SIZE], len(data), over)
            continue
        f, target = _writer(root, root_real, path, str(entry.index), label)
        with f:
            f.write(data)
        total += len(data)
        out[path] = Extracted(path, target, data[:HEAD_SIZE], len(data))
    return out


def extract_at_offsets(
    blob: Path,
    label: str,
    entries: Sequence[Entry],
    root: Path,
    limits: Limits,
) -> dict[str, Extracted]:
    """Like extract_paths for an uncompressed layer on disk: seek to each file's data.

    Each file read this way is checked against the sha256 the table recorded when
    the whole blob was streamed and digest-checked, so seeking trusts nothing new.
    """
    out: dict[str, Extracted] = {}
    total = 0
    root_real = os.path.realpath(root)
    try:
        f = open(blob, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise InputError(f"cannot read {label}: {e.strerror}") from e
    with f:
        for entry in sorted(entries, key=lambda e: e.offset):
            over = _bound(len(out), entry.size, total, limits)
            f.seek(entry.offset)
            if over:
                out[entry.path] = Extracted(
                    entry.path, None, f.read(min(HEAD_SIZE, entry.size)), entry.size, over
                )
                continue
            h = hashlib.sha256()
            head = b""
            left = entry.size
            w, target = _writer(root, root_real, entry.path, str(entry.index), label)
            with w:
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        raise InputError(f"{label} is shorter than its table says")
                    if len(head) < HEAD_SIZE:
                        head += chunk[: HEAD_SIZE - len(head)]
                    h.update(chunk)
                    w.write(chunk)
                    left -= len(chunk)
            if h.hexdigest() != entry.sha256:
                raise InputError(f"{label} changed while it was being compared")
            total += entry.size
            out[entry.path] = Extracted(entry.path, target, head, entry.size)
    return out
