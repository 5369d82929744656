"""Making Alpine .apk files (format v2) and a signed APKINDEX for tests.

`apk_bytes` writes what abuild writes: a data tar whose files and links carry an
``APK-TOOLS.checksum.SHA1`` pax header, gzipped; a control tar segment (``.PKGINFO``
naming the data stream's SHA-256 as ``datahash``, then the scripts) without its
end-of-archive blocks, gzipped; optionally a signature stream before it. `stanza` is
the package's APKINDEX entry, whose ``C:`` is the SHA-1 of the control stream.
Everything is made here, from the test's own description: nothing is downloaded.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import tarfile
from dataclasses import dataclass, field

from debs import EPOCH, E
from signing import ApkKey, apkindex_archive, signature_stream


@dataclass
class Apk:
    name: str
    version: str = "1.0-r0"
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    entries: list[E] = field(default_factory=list)
    scripts: dict[str, bytes] = field(default_factory=dict)  # ".post-install" -> text
    arch: str = "x86_64"
    priority: int = 0
    extra: dict[str, str] = field(default_factory=dict)  # more .PKGINFO lines
    pax_sha1: bool = True


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], *, end: bool) -> bytes:
    raw = b""
    for info, data in members:
        raw += info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
        if data:
            raw += data + b"\0" * (-len(data) % 512)
    return raw + (b"\0" * 1024 if end else b"")


def data_stream(pkg: Apk) -> bytes:
    members = []
    for e in pkg.entries:
        info = e.info()
        hashed = e.data if info.isreg() else e.link.encode() if info.issym() else None
        if pkg.pax_sha1 and hashed is not None:
            info.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(hashed).hexdigest()}
        members.append((info, e.data if info.isreg() else b""))
    return gzip.compress(_tar(members, end=True), mtime=0)


def control_stream(pkg: Apk, data: bytes) -> bytes:
    size = sum(len(e.data) for e in pkg.entries)
    lines = [
        f"pkgname = {pkg.name}",
        f"pkgver = {pkg.version}",
        f"pkgdesc = {pkg.name}, a test package",
        "url = https://example.invalid/",
        f"builddate = {EPOCH - 86400}",
        f"size = {size}",
        f"arch = {pkg.arch}",
        f"origin = {pkg.name}",
        "license = MIT",
        *[f"depend = {d}" for d in pkg.depends],
        *[f"provides = {p}" for p in pkg.provides],
        *([f"provider_priority = {pkg.priority}"] if pkg.priority else []),
        *[f"{k} = {v}" for k, v in pkg.extra.items()],
        f"datahash = {hashlib.sha256(data).hexdigest()}",
    ]
    members = []
    for name, text in [(".PKGINFO", ("\n".join(lines) + "\n").encode()), *pkg.scripts.items()]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(text), EPOCH - 86400
        info.mode = 0o755 if name != ".PKGINFO" else 0o644
        members.append((info, text))
    return gzip.compress(_tar(members, end=False), mtime=0)


@dataclass
class Built:
    data: bytes  # the .apk
    control: bytes  # its control stream
    checksum: str  # Q1 of the control stream


def apk_bytes(pkg: Apk, key: ApkKey | None = None) -> Built:
    data = data_stream(pkg)
    control = control_stream(pkg, data)
    checksum = "Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode()
    head = b""
    if key is not None:
        head = signature_stream(f".SIGN.RSA.{key.name}", key.signature(control, "sha1"))
    return Built(head + control + data, control, checksum)


def stanza(pkg: Apk, built: Built) -> str:
    lines = [
        f"C:{built.checksum}",
        f"P:{pkg.name}",
        f"V:{pkg.version}",
        f"A:{pkg.arch}",
        f"S:{len(built.data)}",
        f"I:{sum(len(e.data) for e in pkg.entries)}",
        f"T:{pkg.name}, a test package",
        "U:https://example.invalid/",
        "L:MIT",
        f"o:{pkg.name}",
        f"t:{EPOCH - 86400}",
    ]
    if pkg.priority:
        lines.append(f"k:{pkg.priority}")
    if pkg.depends:
        lines.append("D:" + " ".join(pkg.depends))
    if pkg.provides:
        lines.append("p:" + " ".join(pkg.provides))
    return "\n".join(lines) + "\n"


def signed_index(stanzas: list[str], key: ApkKey) -> bytes:
    return key.sign_index(apkindex_archive("\n".join(stanzas)))

