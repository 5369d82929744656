"""Making .deb files for tests: well-formed ones, and ones a root filesystem must refuse.

`make_deb` writes the ar archive itself (debian-binary, control.tar.*, data.tar.*), so a
test can put anything in it: absolute names, '..', device nodes, link loops.
"""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 1735689600


@dataclass
class E:
    """One data.tar entry: E("usr/bin/x", b"data"), E("usr/", kind="dir"), E("a", link="b")."""

    name: str
    data: bytes = b""
    kind: str = ""  # "file" (default with data), "dir", "symlink", "hardlink", "char", "fifo"
    mode: int = 0
    link: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = EPOCH - 86400

    def info(self) -> tarfile.TarInfo:
        kind = self.kind or ("symlink" if self.link else "file")
        info = tarfile.TarInfo(self.name)
        info.mtime = self.mtime
        info.uid, info.gid = self.uid, self.gid
        info.uname = info.gname = "root"
        types = {
            "file": tarfile.REGTYPE,
            "dir": tarfile.DIRTYPE,
            "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE,
            "char": tarfile.CHRTYPE,
            "fifo": tarfile.FIFOTYPE,
        }
        info.type = types[kind]
        info.mode = self.mode or (0o755 if kind == "dir" else 0o777 if kind == "symlink" else 0o644)
        if kind in ("symlink", "hardlink"):
            info.linkname = self.link
        if kind == "file":
            info.size = len(self.data)
        if kind == "char":
            info.devmajor, info.devminor = 1, 3
        return info


@dataclass
class Pkg:
    name: str
    version: str = "1.0-1"
    arch: str = "amd64"
    entries: list[E] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, bytes] = field(default_factory=dict)  # "postinst": b"#!/bin/sh\n..."
    compression: str = "xz"  # xz, gz, zst, none

    def control(self) -> bytes:
        lines = [f"Package: {self.name}", f"Version: {self.version}", f"Architecture: {self.arch}"]
        lines += [f"{k}: {v}" for k, v in self.fields.items()]
        if not any(k == "Description" for k in self.fields):
            lines.append(f"Description: test package {self.name}\n a package made by tests")
        return ("\n".join(lines) + "\n").encode()


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _compress(data: bytes, how: str) -> tuple[bytes, str]:
    if how == "xz":
        return lzma.compress(data), ".xz"
    if how == "gz":
        return gzip.compress(data, mtime=0), ".gz"
    if how == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data), ".zst"
    return data, ""


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def deb_bytes(pkg: Pkg) -> bytes:
    md5 = []
    data_entries = []
    import hashlib

    for e in pkg.entries:
        info = e.info()
        data_entries.append((info, e.data))
        if info.isreg():
            md5.append(f"{hashlib.md5(e.data).hexdigest()}  {e.name.lstrip('./')}\n")
    control_entries = [(_info("./control", 0o644), pkg.control())]
    if md5:
        control_entries.append((_info("./md5sums", 0o644), "".join(md5).encode()))
    for name, body in pkg.scripts.items():
        mode = 0o755 if name in ("preinst", "postinst", "prerm", "postrm", "config") else 0o644
        control_entries.append((_info(f"./{name}", mode), body))
    for info, body in control_entries:
        info.size = len(body)
    control, c_ext = _compress(_tar(control_entries), pkg.compression)
    data, d_ext = _compress(_tar(data_entries), pkg.compression)
    return (
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar" + c_ext, control)
        + _ar_member("data.tar" + d_ext, data)
    )


def _info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = EPOCH - 86400
    return info


def make_deb(directory: Path, pkg: Pkg) -> Path:
    path = directory / f"{pkg.name}_{pkg.version}_{pkg.arch}.deb"
    path.write_bytes(deb_bytes(pkg))
    return path


def dirs(*names: str) -> list[E]:
    return [E(n if n.endswith("/") else n + "/", kind="dir") for n in names]
