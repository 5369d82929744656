"""Reading .deb files: every compression, what dpkg-deb writes, and what must be refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from debs import E, Pkg, deb_bytes, dirs, make_deb

from repro.errors import InputError
from repro.rootfs._deb import DIR, FILE, HARDLINK, SYMLINK, DebError, parse_control, read_deb


def sample(compression: str) -> Pkg:
    return Pkg(
        "sample",
        "2:1.5-3+b1",
        fields={
            "Multi-Arch": "same",
            "Depends": "libc6 (>= 2.36)",
            "Description": "a sample\n It has a long description,\n .\n over lines.",
        },
        entries=[
            *dirs("./", "./usr", "./usr/bin", "./usr/share", "./usr/share/doc"),
            E("./usr/bin/tool", b"#!/bin/sh\necho tool\n", mode=0o4755, uid=0, gid=42),
            E("./usr/bin/alias", link="tool"),
            E("./usr/bin/hard", kind="hardlink", link="./usr/bin/tool"),
            E("./usr/share/doc/readme", b"x" * 70000),
        ],
        scripts={"postinst": b"#!/bin/sh\nexit 0\n", "triggers": b"interest-noawait /x\n"},
        compression=compression,
    )


@pytest.mark.parametrize("compression", ["xz", "gz", "zst", "none"])
def test_reads_control_scripts_and_entries_in_every_compression(
    tmp_path: Path, compression: str
) -> None:
    package = read_deb(make_deb(tmp_path, sample(compression)), "sample")
    try:
        assert (package.name, package.version, package.architecture) == (
            "sample",
            "2:1.5-3+b1",
            "amd64",
        )
        assert package.db_name == "sample:amd64"  # Multi-Arch: same
        assert package.get("description").endswith("\n .\n over lines.")
        assert package.control_files["postinst"] == (b"#!/bin/sh\nexit 0\n", 0o755)
        assert "md5sums" in package.control_files
        by_name = {e.name: e for e in package.entries}
        assert [e.name for e in package.entries][:3] == [".", "usr", "usr/bin"]
        tool = by_name["usr/bin/tool"]
        assert (tool.kind, tool.mode, tool.gid) == (FILE, 0o4755, 42)
        assert package.read(tool) == b"#!/bin/sh\necho tool\n"
        assert package.read(by_name["usr/share/doc/readme"]) == b"x" * 70000
        assert (by_name["usr/bin/alias"].kind, by_name["usr/bin/alias"].linkname) == (
            SYMLINK,
            "tool",
        )
        assert (by_name["usr/bin/hard"].kind, by_name["usr/bin/hard"].linkname) == (
            HARDLINK,
            "usr/bin/tool",
        )
        assert by_name["usr"].kind == DIR
    finally:
        package.close()


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_reads_what_dpkg_deb_builds(tmp_path: Path, compression: str) -> None:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: built\nVersion: 3.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: built by dpkg-deb\n"
    )
    (root / "DEBIAN" / "postinst").write_text("#!/bin/sh\nexit 0\n")
    (root / "DEBIAN" / "postinst").chmod(0o755)
    (root / "usr" / "lib" / "built").mkdir(parents=True)
    (root / "usr" / "lib" / "built" / "data").write_bytes(bytes(range(256)) * 100)
    (root / "usr" / "lib" / "built" / "link").symlink_to("data")
    out = tmp_path / "built.deb"
    r = subprocess.run(
        ["dpkg-deb", f"-Z{compression}", "--root-owner-group", "--build", str(root), str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(out)], capture_output=True, check=True
    ).stdout
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        expected = [m.name for m in tar.getmembers()]
    package = read_deb(out)
    try:
        assert package.name == "built" and package.control_files["postinst"][1] == 0o755
        names = [e.name for e in package.entries]
        assert names == [n.removeprefix("./").rstrip("/") or "." for n in expected]
        data = next(e for e in package.entries if e.name == "usr/lib/built/data")
        assert package.read(data) == bytes(range(256)) * 100
    finally:
        package.close()


def test_control_paragraph_keeps_continuations() -> None:
    fields = parse_control("Package: a\nDescription: short\n long\n .\n more\nDepends: b\n")
    assert [(f.name, f.value) for f in fields] == [
        ("Package", "a"),
        ("Description", "short\n long\n .\n more"),
        ("Depends", "b"),
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/passwd", "absolute path"),
        ("./usr/../../etc/passwd", "escapes the root with '..'"),
        ("../outside", "escapes the root with '..'"),
    ],
)
def test_a_path_leaving_the_root_is_refused(tmp_path: Path, name: str, message: str) -> None:
    bad = Pkg("evil", entries=[*dirs("./"), E(name, b"root::0:0::/:/bin/sh\n")])
    with pytest.raises(DebError, match=message) as info:
        read_deb(make_deb(tmp_path, bad), "apt:evil 1.0-1")
    assert str(info.value).startswith("apt:evil 1.0-1: ")
    assert isinstance(info.value, InputError)  # exit code 2


def test_not_a_deb_and_truncated_debs_are_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(DebError, match="not a .deb package"):
        read_deb(junk)
    whole = deb_bytes(sample("xz"))
    cut = tmp_path / "cut.deb"
    cut.write_bytes(whole[: len(whole) - 200])
    with pytest.raises(DebError, match="truncated|cannot be decompressed|not a valid tar"):
        read_deb(cut)
    empty = tmp_path / "empty.deb"
    empty.write_bytes(b"!<arch>\n")
    with pytest.raises(DebError, match="no debian-binary"):
        read_deb(empty)


def test_a_deb_without_data_is_an_error(tmp_path: Path) -> None:
    whole = deb_bytes(sample("gz"))
    # rename the third member so that there is no data.tar.*
    broken = whole.replace(b"data.tar.gz     ", b"dada.tar.gz     ", 1)
    path = tmp_path / "nodata.deb"
    path.write_bytes(broken)
    with pytest.raises(DebError, match=r"it has no data\.tar"):
        read_deb(path)
