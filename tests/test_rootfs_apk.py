"""Reading .apk files: the checksum chain from the index's C: to every file, and the
shapes of package a root filesystem must refuse."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path

import pytest
from apks import Apk, apk_bytes, control_stream, data_stream
from debs import E
from signing import ApkKey

from repro.rootfs._apk import ApkFileError, q1, q1_sha1, read_apk, verify_apk
from repro.rootfs._deb import DebError

BUSYBOX = Apk(
    "busybox",
    "1.36.1-r2",
    depends=["so:libc.musl-x86_64.so.1"],
    provides=["cmd:busybox=1.36.1-r2"],
    entries=[
        E("bin/", kind="dir"),
        E("bin/busybox", b"\x7fELF not really busybox", mode=0o755),
        E("bin/sh", link="/bin/busybox"),
        E("etc/", kind="dir"),
        E("etc/securetty", b"console\n"),
    ],
    scripts={".post-install": b"#!/bin/busybox sh\n/bin/busybox --install -s\n"},
)


def write(tmp_path: Path, data: bytes, name: str = "p.apk") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("signed", [True, False])
def test_a_package_reads_once_its_chain_checks_out(tmp_path: Path, signed: bool) -> None:
    key = ApkKey(tmp_path / "keys") if signed else None
    built = apk_bytes(BUSYBOX, key)
    pkg = read_apk(write(tmp_path, built.data), built.checksum, "apk:busybox")
    try:
        assert (pkg.name, pkg.version, pkg.architecture) == ("busybox", "1.36.1-r2", "x86_64")
        assert [e.name for e in pkg.entries] == [
            "bin", "bin/busybox", "bin/sh", "etc", "etc/securetty",
        ]  # fmt: skip
        busybox = pkg.entries[1]
        assert busybox.mode == 0o755 and pkg.read(busybox) == b"\x7fELF not really busybox"
        assert pkg.digests["bin/busybox"] == q1_sha1(b"\x7fELF not really busybox")
        assert pkg.digests["bin/sh"] == q1_sha1(b"/bin/busybox")
        assert pkg.infos("depend") == ["so:libc.musl-x86_64.so.1"]
        assert ".post-install" in pkg.control_files
        assert pkg.file_size == len(built.data) and pkg.checksum == built.checksum
    finally:
        pkg.close()
    assert verify_apk(tmp_path / "p.apk", built.checksum)["pkgname"] == ["busybox"]


def test_a_control_part_other_than_the_index_says_is_refused(tmp_path: Path) -> None:
    built = apk_bytes(BUSYBOX)
    other = apk_bytes(Apk("busybox", "1.36.1-r2", entries=[E("bin/evil", b"x")]))
    path = write(tmp_path, other.data)
    with pytest.raises(ApkFileError, match=r"control part does not match its checksum"):
        read_apk(path, built.checksum, "apk:busybox 1.36.1-r2")


def test_a_data_part_other_than_the_datahash_is_refused(tmp_path: Path) -> None:
    built = apk_bytes(BUSYBOX)
    evil = Apk(BUSYBOX.name, BUSYBOX.version, entries=[E("bin/busybox", b"evil", mode=0o755)])
    tampered = built.control + data_stream(evil)  # the genuine control part, other data
    with pytest.raises(ApkFileError, match=r"data part does not match the datahash"):
        read_apk(write(tmp_path, tampered), built.checksum)
    with pytest.raises(ApkFileError, match=r"truncated"):
        read_apk(write(tmp_path, built.data[:-30], "cut.apk"), built.checksum)


def test_a_file_that_does_not_match_its_pax_checksum_is_refused(tmp_path: Path) -> None:
    # A packager's bug (or a hand-made package): the chain holds, the file header lies.
    info = tarfile.TarInfo("bin/x")
    info.size = 4
    info.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(b"else").hexdigest()}
    data = gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT) + b"data" + b"\0" * 1532, mtime=0)
    control = control_stream(Apk("x"), data)
    path = write(tmp_path, control + data)
    with pytest.raises(ApkFileError, match=r"/bin/x does not match its APK-TOOLS.checksum.SHA1"):
        read_apk(path, q1(hashlib.sha1(control).digest()))


def test_a_path_escaping_the_root_is_refused(tmp_path: Path) -> None:
    for name in ("/etc/passwd", "etc/../../x"):
        built = apk_bytes(Apk("evil", entries=[E(name, b"x")]))
        with pytest.raises(DebError, match=r"escapes the root"):
            read_apk(write(tmp_path, built.data), built.checksum, "apk:evil 1.0-r0")


def test_a_checksum_that_is_not_q1_is_refused(tmp_path: Path) -> None:
    built = apk_bytes(BUSYBOX)
    with pytest.raises(ApkFileError, match=r"not an apk Q1"):
        read_apk(write(tmp_path, built.data), "deadbeef")
