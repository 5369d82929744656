"""Reading a Debian binary package without dpkg and without running anything in it.

A ``.deb`` is an ``ar`` archive of three members, in this order: ``debian-binary``
(``2.0``), ``control.tar[.gz|.xz|.zst]`` (the control file, md5sums, conffiles,
maintainer scripts, triggers) and ``data.tar[.gz|.xz|.zst|.bz2]`` (the files).

`read_deb` checks the archive's shape, decompresses ``data.tar`` once into a spill
file (memory up to `SPILL_IN_MEMORY`, then a temporary file), and keeps each entry's
header and the offset of its bytes in the spill, so the merger can copy them without
holding every package in memory. Entry names are made canonical here (``./usr/bin/x``
becomes ``usr/bin/x``); an absolute name or a ``..`` component is refused, so that no
later step ever sees a path that could leave the root filesystem.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from repro.errors import (
    DebError,  # noqa: F401 - defined in errors, re-exported here
    )

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
CHUNK = 1 << 20
SPILL_IN_MEMORY = 1 << 20  # per package; larger ones go to a temporary file (page cache)

# Entry kinds, from tar types.
FILE, DIR, SYMLINK, HARDLINK, CHAR, BLOCK, FIFO = (
    "file",
    "dir",
    "symlink",
    "hardlink",
    "char",
    "block",
    "fifo",
)
_KINDS = {
    tarfile.REGTYPE: FILE,
    tarfile.AREGTYPE: FILE,
    tarfile.CONTTYPE: FILE,
    tarfile.DIRTYPE: DIR,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.LNKTYPE: HARDLINK,
    tarfile.CHRTYPE: CHAR,
    tarfile.BLKTYPE: BLOCK,
    tarfile.FIFOTYPE: FIFO,
}




@dataclass(frozen=True)
class Entry:
    """One entry of a package's data.tar: canonical name, metadata, where its bytes are."""

    name: str  # canonical: "usr/bin/x", "." for the root
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    linkname: str = ""  # symlink target as written; hard link: the canonical target name
    offset: int = 0  # of the bytes in the package's spill (files only)
    devmajor: int = 0
    devminor: int = 0


@dataclass
class ControlField:
    name: str
    value: str  # first line stripped, continuation lines as written ("\n"-joined)


@dataclass
class DebPackage:
    """A package read from its .deb: control data, control files, data entries."""

    label: str  # for messages: "libc6 2.36-9" (or the file name)
    fields: list[ControlField]
    control_files: dict[str, tuple[bytes, int]]  # "postinst" -> (bytes, mode)
    entries: list[Entry]
    spill: IO[bytes]
    _lock: Any = field(default=None, repr=False)

    def get(self, name: str, default: str = "") -> str:
        lower = name.lower()
        for f in self.fields:
            if f.name.lower() == lower:
                return f.value
        return default

    @property
    def name(self) -> str:
        return self.get("Package")

    @property
    def version(self) -> str:
        return self.get("Version")

    @property
    def architecture(self) -> str:
        return self.get("Architecture")

    @property
    def multi_arch_same(self) -> bool:
        return self.get("Multi-Arch") == "same"

    @property
    def db_name(self) -> str:
        """The name dpkg files the package under in info/: ``libc6:amd64`` for M-A: same."""
        return f"{self.name}:{self.architecture}" if self.multi_arch_same else self.name

    def read(self, entry: Entry) -> bytes:
        """The bytes of a file entry."""
        import threading

        if self._lock is None:
            self._lock = threading.Lock()
        with self._lock:
            self.spill.seek(entry.offset)
            data = self.spill.read(entry.size)
        if len(data) != entry.size:
            raise DebError(f"{self.label}: {entry.name} is truncated")
        return data

    def close(self) -> None:
        self.spill.close()


# --- ar ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    name: str
    offset: int
    size: int


def ar_members(stream: IO[bytes], label: str) -> list[_Member]:
    """The members of an ar archive, in order; DebError if it is not one or is cut short."""
    if stream.read(len(AR_MAGIC)) != AR_MAGIC:
        raise DebError(f"{label} is not a .deb package (not an ar archive)")
    stream.seek(0, os.SEEK_END)
    total = stream.tell()
    position = len(AR_MAGIC)
    members: list[_Member] = []
    while position < total:
        stream.seek(position)
        header = stream.read(AR_HEADER)
        if len(header) < AR_HEADER or header[58:60] != b"`\n":
            raise DebError(f"{label} is not a valid .deb package: corrupt ar header")
        name = header[0:16].decode("ascii", "replace").strip()
        if name.endswith("/") and name != "/":
            name = name[:-1]
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"{label}: ar member {name!r} has an invalid size") from None
        offset = position + AR_HEADER
        if size < 0 or offset + size > total:
            raise DebError(f"{label} is truncated (ar member {name!r})")
        members.append(_Member(name, offset, size))
        position = offset + size + (size & 1)
    return members


def _member_chunks(stream: IO[bytes], member: _Member) -> Iterator[bytes]:
    stream.seek(member.offset)
    left = member.size
    while left:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def _decompressor(suffix: str, label: str, name: str) -> Callable[[bytes], bytes] | None:
    """A function feeding compressed chunks and returning output, or None (plain tar)."""
    if suffix == "":
        return None
    if suffix == ".xz":
        return lzma.LZMADecompressor().decompress
    if suffix == ".gz":
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress
    if suffix == ".bz2":
        return bz2.BZ2Decompressor().decompress
    if suffix == ".zst":
        from repro.oci import zstandard_module

        return zstandard_module().ZstdDecompressor().decompressobj().decompress  # type: ignore[no-any-return]
    raise DebError(f"{label}: {name} uses an unknown compression")


def _decompress_into(
    stream: IO[bytes], member: _Member, suffix: str, out: IO[bytes], label: str
) -> None:
    feed = _decompressor(suffix, label, member.name)
    try:
        for chunk in _member_chunks(stream, member):
            out.write(feed(chunk) if feed else chunk)
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as exc:
        raise DebError(f"{label}: {member.name} cannot be decompressed: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError has no common base with the above
        if type(exc).__name__ == "ZstdError":
            raise DebError(f"{label}: {member.name} cannot be decompressed: {exc}") from None
        raise


_SUFFIXES = ("", ".gz", ".xz", ".zst", ".bz2")


def _pick(members: list[_Member], stem: str, label: str) -> tuple[_Member, str]:
    for m in members:
        for suffix in _SUFFIXES:
            if m.name == stem + suffix:
                return m, suffix
    raise DebError(f"{label} is not a valid .deb package: it has no {stem}.*")


# --- names -------------------------------------------------------------------------


def canonical_path(raw: str, label: str) -> str:
    """``./usr/bin/x`` -> ``usr/bin/x``; ``./`` -> ``.``. Absolute names and ``..``
    components are refused: they would put a file outside the root."""
    if raw.startswith("/"):
        raise DebError(f"{label}: entry {raw!r} is an absolute path (it escapes the root)")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DebError(f"{label}: entry {raw!r} escapes the root with '..'")
    return "/".join(parts) or "."


# --- control -------------------------------------------------------------------------


def parse_control(text: str, label: str = "") -> list[ControlField]:
    """The fields of one control paragraph, in order, continuation lines kept as written."""
    fields: list[ControlField] = []
    for line in text.split("\n"):
        if not line.strip():
            if fields:
                break  # one paragraph only
            continue
        if line[:1] in (" ", "\t"):
            if not fields:
                raise DebError(f"{label}: control file starts with a continuation line")
            fields[-1].value += "\n" + line.rstrip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name:
            raise DebError(f"{label}: control file has a malformed line {line[:60]!r}")
        fields.append(ControlField(name, value.strip()))
    return fields


def _read_control(
    stream: IO[bytes], member: _Member, suffix: str, label: str
) -> tuple[list[ControlField], dict[str, tuple[bytes, int]]]:
    with tempfile.SpooledTemporaryFile(max_size=SPILL_IN_MEMORY) as spill:
        _decompress_into(stream, member, suffix, spill, label)  # type: ignore[arg-type]
        spill.seek(0)
        files: dict[str, tuple[bytes, int]] = {}
        try:
            with tarfile.open(fileobj=spill, mode="r:") as tar:  # type: ignore[call-overload]
                for info in tar:
                    name = canonical_path(info.name, label)
                    if info.isdir() and name == ".":
                        continue
                    if not info.isreg() or "/" in name:
                        raise DebError(
                            f"{label}: control.tar has an unexpected entry {info.name!r}"
                        )
                    source = tar.extractfile(info)
                    assert source is not None
                    files[name] = (source.read(), info.mode & 0o7777)
        except (tarfile.TarError, EOFError) as exc:
            raise DebError(f"{label}: control.tar is not a valid tar archive: {exc}") from None
    if "control" not in files:
        raise DebError(f"{label}: control.tar has no control file")
    control = files.pop("control")[0].decode("utf-8", "replace")
    fields = parse_control(control, label)
    return fields, files


# --- data ----------------------------------------------------------------------------


def iter_entries(
    spill: IO[bytes], label: str, what: str, error: type[DebError] = DebError
) -> Iterator[tuple[Entry, tarfile.TarFile, tarfile.TarInfo]]:
    """The entries of a package's data tar (spilled), checked, in order: each as our
    Entry and as tarfile has it (to read its bytes). One reader for .deb and .apk;
    `error` is the package kind's error class, `what` names the tar in messages."""
    spill.seek(0)
    last = ""
    try:
        with tarfile.open(fileobj=spill, mode="r:") as tar:  # type: ignore[call-overload]
            while True:
                info = tar.next()
                if info is None:
                    break
                tar.members.clear()  # type: ignore[attr-defined]
                last = info.name
                kind = _KINDS.get(info.type)
                if kind is None:
                    raise error(
                        f"{label}: entry {info.name!r} has an unsupported tar type {info.type!r}"
                    )
                name = canonical_path(info.name, label)
                linkname = info.linkname
                if kind == HARDLINK:
                    linkname = canonical_path(info.linkname, label)
                entry = Entry(
                    name=name,
                    kind=kind,
                    mode=info.mode & 0o7777,
                    uid=info.uid,
                    gid=info.gid,
                    mtime=int(info.mtime),
                    size=info.size if kind == FILE else 0,
                    linkname=linkname,
                    offset=info.offset_data if kind == FILE else 0,
                    devmajor=info.devmajor if kind in (CHAR, BLOCK) else 0,
                    devminor=info.devminor if kind in (CHAR, BLOCK) else 0,
                )
                yield entry, tar, info
    except (tarfile.TarError, EOFError, UnicodeError) as exc:
        after = f" after entry {last!r}" if last else ""
        raise error(f"{label}: {what} is not a valid tar archive{after}: {exc}") from None


def _read_entries(spill: IO[bytes], label: str) -> list[Entry]:
    return [entry for entry, _tar, _info in iter_entries(spill, label, "data.tar")]


def read_deb(path: str | os.PathLike[str], label: str = "") -> DebPackage:
    """Read a .deb: its control paragraph and files, and its data entries (bytes spilled)."""
    label = label or Path(path).name
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DebError(f"{label}: cannot read {path}: {exc.strerror}") from None
    spill: IO[bytes] | None = None
    try:
        with stream:
            members = ar_members(stream, label)
            if not members or members[0].name != "debian-binary":
                raise DebError(f"{label} is not a valid .deb package: no debian-binary first")
            stream.seek(members[0].offset)
            version = stream.read(min(members[0].size, 16))
            if not version.startswith(b"2."):
                raise DebError(f"{label}: unsupported .deb format {version.strip()!r}")
            control_member, control_suffix = _pick(members, "control.tar", label)
            data_member, data_suffix = _pick(members, "data.tar", label)
            fields, control_files = _read_control(stream, control_member, control_suffix, label)
            spill = tempfile.SpooledTemporaryFile(max_size=SPILL_IN_MEMORY)  # noqa: SIM115
            _decompress_into(stream, data_member, data_suffix, spill, label)  # type: ignore[arg-type]
        entries = _read_entries(spill, label)  # type: ignore[arg-type]
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    package = DebPackage(label, fields, control_files, entries, spill)  # type: ignore[arg-type]
    missing = [f for f in ("Package", "Version", "Architecture") if not package.get(f)]
    if missing:
        package.close()
        raise DebError(f"{label}: control file lacks {', '.join(missing)}")
    return package


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
