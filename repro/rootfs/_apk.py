"""Reading an Alpine package (``.apk``, format v2) without apk and without running it.

A v2 package is gzip streams end to end:

1. (optional) the signature: a tar segment (no end-of-archive blocks) holding one
   ``.SIGN.RSA*.<keyname>`` file, the packager's signature over stream 2;
2. the control part: a tar segment holding ``.PKGINFO`` (``key = value`` lines:
   pkgname, pkgver, arch, size, depend, provides, datahash, …) and the install
   scripts (``.pre-install``, ``.post-install``, ``.trigger``, …);
3. the data: a tar archive of the files, where each file (and symbolic link) has a
   pax header ``APK-TOOLS.checksum.SHA1`` with the hex SHA-1 of its bytes (of its
   target, for a link).

The chain of trust, the one apk itself follows when it installs from a repository:
the signed ``APKINDEX`` names each package's ``C:`` checksum, ``Q1`` + base64 of the
SHA-1 of stream 2 *as compressed*; stream 2's ``.PKGINFO`` names ``datahash``, the
hex SHA-256 of stream 3 as compressed; stream 3 holds the files. `read_apk` checks
both links (and each file's pax checksum) before anything of the package is used,
so every byte that reaches an image is tied to the signed index. The packager's own
signature (stream 1) is not needed for that and is not checked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from repro.errors import ApkFileError  # noqa: F401 - defined in errors, re-exported here
from repro.rootfs._deb import (
    FILE,
    HARDLINK,
    SPILL_IN_MEMORY,
    SYMLINK,
    ControlField,
    DebPackage,
    Entry,
    iter_entries,
)

CHUNK = 1 << 20
MAX_CONTROL = 16 << 20  # a control part larger than this is not believed
PAX_SHA1 = "APK-TOOLS.checksum.SHA1"
SCRIPTS = (
    ".pre-install",
    ".post-install",
    ".pre-upgrade",
    ".post-upgrade",
    ".pre-deinstall",
    ".post-deinstall",
    ".trigger",
)




def q1(digest: bytes) -> str:
    """apk's text form of a SHA-1: ``Q1`` + base64."""
    return "Q1" + base64.b64encode(digest).decode()


def q1_sha1(data: bytes) -> str:
    return q1(hashlib.sha1(data, usedforsecurity=False).digest())


def _checksum_bytes(checksum: str, label: str) -> bytes:
    if not checksum.startswith("Q1"):
        raise ApkFileError(
            f"{label}: the lock's checksum {checksum[:12]!r} is not an apk Q1 (SHA-1) checksum"
        )
    try:
        raw = base64.b64decode(checksum[2:], validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ApkFileError(f"{label}: the lock's checksum {checksum!r} is not valid")
    return raw


@dataclass
class ApkFile(DebPackage):
    """A package read from its .apk: .PKGINFO, scripts, data entries (bytes spilled)."""

    pkginfo: dict[str, list[str]] = field(default_factory=dict)
    checksum: str = ""  # Q1 of the control part: the index's C:
    file_size: int = 0  # of the .apk
    digests: dict[str, str] = field(default_factory=dict)  # entry name -> Q1 (files, links)

    def info(self, key: str) -> str:
        values = self.pkginfo.get(key) or [""]
        return values[0]

    def infos(self, key: str) -> list[str]:
        return list(self.pkginfo.get(key, []))


def parse_pkginfo(text: str) -> dict[str, list[str]]:
    """``.PKGINFO``: ``key = value`` lines (keys may repeat, as ``depend`` does)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            continue
        out.setdefault(key.strip(), []).append(value.strip())
    return out


class _Members:
    """The gzip members of a file, one after the other, decompressed as they stream."""

    def __init__(self, stream: IO[bytes], label: str) -> None:
        self.stream = stream
        self.label = label
        self.pending = b""

    def at_end(self) -> bool:
        if not self.pending:
            self.pending = self.stream.read(CHUNK)
        return not self.pending

    def next(
        self,
        sink: Callable[[bytes], object],
        hasher: Any = None,
        limit: int = 0,
        what: str = "",
    ) -> None:
        """Decompress one gzip member into `sink`; `hasher` sees its compressed bytes."""
        d = zlib.decompressobj(wbits=31)
        data = self.pending or self.stream.read(CHUNK)
        total = 0
        while True:
            if not data:
                raise ApkFileError(f"{self.label} is truncated (in the {what})")
            try:
                out = d.decompress(data)
            except zlib.error as exc:
                raise ApkFileError(f"{self.label}: the {what} is not valid gzip: {exc}") from None
            total += len(out)
            if limit and total > limit:
                raise ApkFileError(f"{self.label}: the {what} is implausibly large")
            if d.eof:
                used = len(data) - len(d.unused_data)
                if hasher is not None:
                    hasher.update(data[:used])
                sink(out)
                self.pending = d.unused_data
                return
            if hasher is not None:
                hasher.update(data)
            sink(out)
            data = self.stream.read(CHUNK)


def _tar_files(raw: bytes, label: str, what: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members of a tar segment (which may lack its end-of-archive blocks)."""
    out: list[tuple[tarfile.TarInfo, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw + b"\0" * 1024), mode="r:") as tar:
            for info in tar:
                data = b""
                if info.isreg():
                    f = tar.extractfile(info)
                    assert f is not None
                    data = f.read()
                out.append((info, data))
    except (tarfile.TarError, EOFError) as exc:
        raise ApkFileError(f"{label}: the {what} is not a valid tar archive: {exc}") from None
    return out


def _walk(
    stream: IO[bytes], checksum: str, label: str, data_sink: Callable[[bytes], object]
) -> tuple[dict[str, list[str]], dict[str, tuple[bytes, int]]]:
    """Check the whole chain (control SHA-1 = `checksum`, data SHA-256 = datahash) while
    streaming the data part into `data_sink`; the .PKGINFO and the scripts."""
    want = _checksum_bytes(checksum, label)
    members = _Members(stream, label)
    first = bytearray()
    first_hash = hashlib.sha1(usedforsecurity=False)
    members.next(first.extend, first_hash, MAX_CONTROL, "first part")
    files = _tar_files(bytes(first), label, "first part")
    if files and files[0][0].name.startswith(".SIGN."):
        control = bytearray()
        control_hash = hashlib.sha1(usedforsecurity=False)
        members.next(control.extend, control_hash, MAX_CONTROL, "control part")
        files = _tar_files(bytes(control), label, "control part")
    else:
        control_hash = first_hash  # an unsigned package starts with its control part
    if control_hash.digest() != want:
        raise ApkFileError(
            f"{label}: the control part does not match its checksum {checksum} (the signed "
            f"index's C:, as locked; it is {q1(control_hash.digest())}); nothing was used"
        )
    info: dict[str, list[str]] = {}
    scripts: dict[str, tuple[bytes, int]] = {}
    for member, data in files:
        if member.name == ".PKGINFO":
            info = parse_pkginfo(data.decode("utf-8", "replace"))
        elif member.name in SCRIPTS and member.isreg():
            scripts[member.name] = (data, member.mode & 0o7777)
    if not info:
        raise ApkFileError(f"{label}: the control part has no .PKGINFO")
    datahash = (info.get("datahash") or [""])[0].lower()
    if len(datahash) != 64:
        raise ApkFileError(f"{label}: .PKGINFO has no datahash: its files cannot be checked")
    data_hash = hashlib.sha256()
    members.next(data_sink, data_hash, 0, "data part")
    if data_hash.hexdigest() != datahash:
        raise ApkFileError(
            f"{label}: the data part does not match the datahash its checked control part "
            "names; nothing was used"
        )
    if not members.at_end():
        raise ApkFileError(f"{label}: unexpected bytes after the data part")
    return info, scripts


def verify_apk(
    path: str | os.PathLike[str], checksum: str, label: str = ""
) -> dict[str, list[str]]:
    """Check a .apk against the index's C: checksum without keeping its files; its .PKGINFO."""
    label = label or Path(path).name
    with open(path, "rb") as stream:
        info, _ = _walk(stream, checksum, label, lambda _chunk: None)
    return info


def _entries(spill: IO[bytes], label: str) -> tuple[list[Entry], dict[str, str]]:
    entries: list[Entry] = []
    digests: dict[str, str] = {}
    name = ""
    try:
        for entry, tar, info in iter_entries(spill, label, "the data part", ApkFileError):
            entries.append(entry)
            name = entry.name
            declared = info.pax_headers.get(PAX_SHA1, "").lower()
            if entry.kind == FILE:
                f = tar.extractfile(info)
                assert f is not None
                h = hashlib.sha1(usedforsecurity=False)
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                digest = h.digest()
            elif entry.kind == SYMLINK:
                digest = hashlib.sha1(entry.linkname.encode(), usedforsecurity=False).digest()
            else:
                continue
            if declared and declared != digest.hex():
                raise ApkFileError(
                    f"{label}: /{name} does not match its {PAX_SHA1} header; nothing was used"
                )
            digests[name] = q1(digest)
    except (tarfile.TarError, EOFError) as exc:  # reading a file's bytes
        raise ApkFileError(
            f"{label}: the data part is not a valid tar archive after entry {name!r}: {exc}"
        ) from None
    for entry in entries:  # a hard link has the bytes, so the checksum, of its target
        if entry.kind == HARDLINK and entry.linkname in digests:
            digests[entry.name] = digests[entry.linkname]
    return entries, digests


def read_apk(path: str | os.PathLike[str], checksum: str, label: str = "") -> ApkFile:
    """Read a .apk once its control part matches `checksum` (the locked C:) and its data
    part the control part's datahash (see the module doc); raise ApkFileError otherwise."""
    label = label or Path(path).name
    spill = tempfile.SpooledTemporaryFile(max_size=SPILL_IN_MEMORY)  # noqa: SIM115
    try:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ApkFileError(f"{label}: cannot read {path}: {exc.strerror}") from None
        with stream:
            size = os.fstat(stream.fileno()).st_size
            info, scripts = _walk(stream, checksum, label, spill.write)
        entries, digests = _entries(spill, label)  # type: ignore[arg-type]
    except BaseException:
        spill.close()
        raise
    name, version = info.get("pkgname", [""])[0], info.get("pkgver", [""])[0]
    if not name or not version:
        spill.close()
        raise ApkFileError(f"{label}: .PKGINFO lacks pkgname or pkgver")
    fields = [
        ControlField("Package", name),
        ControlField("Version", version),
        ControlField("Architecture", info.get("arch", [""])[0]),
    ]
    return ApkFile(
        label,
        fields,
        scripts,
        entries,
        spill,  # type: ignore[arg-type]
        pkginfo=info,
        checksum=checksum,
        file_size=size,
        digests=digests,
    )


__all__ = ["ApkFile", "ApkFileError", "parse_pkginfo", "q1", "q1_sha1", "read_apk", "verify_apk"]
