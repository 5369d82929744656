"""Resolving against what the base image already has, and reading its package database.

The resolver cases mirror what apt does on a base with newer packages than the suite
(a Debian 12 base made with bookworm-updates and bookworm-security): the base's
packages satisfy dependencies at their own versions, an upgrade drags along the
base's packages that need the same version, and a downgrade is refused at lock time
with the chain and both versions.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import pytest

from repro.packages import ResolveError
from repro.packages.deb import DebIndex, resolve
from repro.packages.installed import (
    InstalledDb,
    InstalledPackage,
    NoPackageDatabase,
    parse_apk_installed,
    parse_dpkg_status,
    read_layers,
)


def stanza(name: str, version: str, **fields: str) -> str:
    lines = [f"Package: {name}", f"Version: {version}", "Architecture: amd64"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in fields.items()]
    lines += [f"Filename: pool/{name}_{version}.deb", "Size: 1", f"SHA256: {'0' * 64}"]
    return "\n".join(lines) + "\n\n"


def index(*stanzas: str) -> DebIndex:
    idx = DebIndex("amd64")
    idx.add("".join(stanzas), "bookworm/main")
    return idx


def db(*pkgs: InstalledPackage) -> dict[str, InstalledPackage]:
    return {p.name: p for p in pkgs}


def names(closure: object) -> dict[str, str]:
    return {p.name: p.version for p in closure.pins}  # type: ignore[attr-defined]


PERL_SUITE = index(
    stanza("git", "1:2.39.5-0+deb12u1", Depends="perl, libc6"),
    stanza("perl", "5.36.0-7+deb12u1", Depends="perl-base (= 5.36.0-7+deb12u1)"),
    stanza("perl-base", "5.36.0-7+deb12u1", Essential="yes"),
    stanza("libc6", "2.36-9+deb12u7"),
)


def test_the_base_satisfies_dependencies_and_is_not_pinned_again() -> None:
    base = db(
        InstalledPackage("libc6", "2.36-9+deb12u7", "amd64"),
        InstalledPackage("perl-base", "5.36.0-7+deb12u1", "amd64", essential=True),
    )
    closure = resolve(PERL_SUITE, ["git"], installed=base)
    assert names(closure) == {"git": "1:2.39.5-0+deb12u1", "perl": "5.36.0-7+deb12u1"}


def test_a_newer_essential_package_in_the_base_is_a_chain_error_not_a_downgrade() -> None:
    base = db(
        InstalledPackage("libc6", "2.36-9+deb12u7", "amd64"),
        InstalledPackage("perl-base", "5.36.0-7+deb12u4", "amd64", essential=True),
    )
    with pytest.raises(ResolveError) as err:
        resolve(PERL_SUITE, ["git"], installed=base, label="apt:tools")
    message = str(err.value)
    assert message.startswith("apt:tools: would downgrade the base: git -> perl -> perl-base")
    assert "5.36.0-7+deb12u4" in message and "5.36.0-7+deb12u1" in message
    # Without the base's database, the old behaviour assumed Essential packages
    # present at any version and locked something that cannot be installed.
    assert "perl-base" not in names(resolve(PERL_SUITE, ["git"]))


def test_an_upgrade_drags_along_the_base_packages_that_need_the_same_version() -> None:
    suite = index(
        stanza("zlib1g", "1:1.2.13.dfsg-1"),
        stanza("zlib1g", "1:1.2.13.dfsg-2"),
        stanza("libz-extra", "1:1.2.13.dfsg-1", Depends="zlib1g (= 1:1.2.13.dfsg-1)"),
        stanza("libz-extra", "1:1.2.13.dfsg-2", Depends="zlib1g (= 1:1.2.13.dfsg-2)"),
        stanza("tool", "1.0", Depends="zlib1g (>= 1:1.2.13.dfsg-2)"),
    )
    base = db(
        InstalledPackage("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
        InstalledPackage(
            "libz-extra", "1:1.2.13.dfsg-1", "amd64", depends="zlib1g (= 1:1.2.13.dfsg-1)"
        ),
    )
    closure = resolve(suite, ["tool"], installed=base)
    assert names(closure) == {
        "tool": "1.0",
        "zlib1g": "1:1.2.13.dfsg-2",
        "libz-extra": "1:1.2.13.dfsg-2",
    }


def test_what_the_base_provides_counts() -> None:
    suite = index(stanza("app", "1", Depends="mail-transport-agent"), stanza("exim4", "4"))
    base = db(InstalledPackage("postfix", "3.7", "amd64", provides="mail-transport-agent"))
    assert names(resolve(suite, ["app"], installed=base)) == {"app": "1"}


def test_a_base_package_that_breaks_the_new_one_is_an_error() -> None:
    suite = index(stanza("newlib", "2.0"))
    base = db(InstalledPackage("old", "1.0", "amd64", breaks="newlib (<< 3)"))
    with pytest.raises(ResolveError, match="old 1.0 in the base breaks newlib 2.0"):
        resolve(suite, ["newlib"], installed=base)


def test_an_installed_package_at_the_requested_version_is_not_pinned() -> None:
    suite = index(stanza("curl", "7.88.1-10+deb12u8"))
    base = db(InstalledPackage("curl", "7.88.1-10+deb12u8", "amd64"))
    assert names(resolve(suite, ["curl"], installed=base)) == {}


# --- the database itself ------------------------------------------------------------------

STATUS = (
    "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\n"
    "Version: 2.36-9+deb12u7\nDepends: libgcc-s1\nDescription: GNU C Library\n"
    " a continuation line\n\n"
    "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n"
    "Package: perl-base\nEssential: yes\nStatus: install ok installed\n"
    "Architecture: amd64\nVersion: 5.36.0-7+deb12u4\nProvides: perlapi-5.36.0\n"
)


def test_dpkg_status_keeps_only_installed_packages() -> None:
    pkgs = parse_dpkg_status(STATUS)
    assert sorted(pkgs) == ["libc6", "perl-base"]
    assert pkgs["perl-base"].essential and pkgs["perl-base"].provides == "perlapi-5.36.0"
    with pytest.raises(NoPackageDatabase, match="corrupt"):
        parse_dpkg_status("Package: x\nthis line has no field\n")


def test_apk_installed_db() -> None:
    text = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\np:/bin/sh\n"
    pkgs = parse_apk_installed(text)
    assert pkgs["musl"].version == "1.2.5-r0" and pkgs["busybox"].provides == "/bin/sh"


def layer(files: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def opener(data: bytes) -> object:
    @contextmanager
    def open_it() -> Iterator[IO[bytes]]:
        yield io.BytesIO(data)

    return open_it


def read(*layers: bytes) -> InstalledDb | None:
    return read_layers([(f"sha256:{i:064x}", opener(b)) for i, b in enumerate(layers)])  # type: ignore[misc]


def test_the_topmost_status_wins_and_names_its_layer() -> None:
    bottom = layer({"var/lib/dpkg/status": STATUS.encode()})
    top = layer({"./var/lib/dpkg/status": b"Package: only\nVersion: 1\nArchitecture: all\n"})
    found = read(bottom, top)
    assert found is not None and sorted(found.packages) == ["only"]
    assert found.layer == f"sha256:{1:064x}"
    assert read(bottom, layer({"etc/hostname": b"x"})).layer == f"sha256:{0:064x}"  # type: ignore[union-attr]


def test_whiteouts_hide_the_database() -> None:
    bottom = layer({"var/lib/dpkg/status": STATUS.encode()})
    assert read(bottom, layer({"var/lib/dpkg/.wh.status": b""})) is None
    assert read(bottom, layer({"var/lib/.wh..wh..opq": b""})) is None
    assert read(bottom, layer({"var/.wh.lib": b""})) is None


def test_distroless_status_d_and_no_database() -> None:
    found = read(layer({"var/lib/dpkg/status.d/base": b"Package: base-files\nVersion: 12.4\n"}))
    assert found is not None and found.kind == "dpkg" and "base-files" in found.packages
    assert read(layer({"bin/busybox": b"\x7fELF"})) is None
    apk = read(layer({"lib/apk/db/installed": b"P:musl\nV:1.2.5-r0\n"}))
    assert apk is not None and apk.kind == "apk"


def test_a_layer_that_is_not_a_tar_is_one_line() -> None:
    with pytest.raises(Exception, match="not a readable layer tar"):
        read(gzip.compress(b"garbage" * 100))


def test_recommends_are_followed_only_when_asked_and_only_when_possible() -> None:
    suite = index(
        stanza("curl", "7.88", Depends="libcurl4", Recommends="ca-certificates, missing-pkg"),
        stanza("libcurl4", "7.88"),
        stanza("ca-certificates", "2023", Depends="openssl"),
        stanza("openssl", "3.0"),
    )
    assert names(resolve(suite, ["curl"])) == {"curl": "7.88", "libcurl4": "7.88"}
    with_rec = names(resolve(suite, ["curl"], recommends=True))
    assert with_rec == {
        "curl": "7.88",
        "libcurl4": "7.88",
        "ca-certificates": "2023",
        "openssl": "3.0",
    }
