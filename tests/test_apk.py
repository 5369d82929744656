"""Alpine APKINDEX closures on a fixture index served on loopback like a mirror."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator

import pytest
from signing import ApkKey, apkindex_archive

from repro.packages import ResolveError
from repro.packages.apk import ApkIndex, compare_versions, load_apk_index, resolve_apk
from repro.packages.installed import InstalledPackage, parse_apk_installed
from repro.packages.trust import ApkTrust


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.36.1-r2", "1.36.1-r3", -1),
        ("1.36.1-r10", "1.36.1-r9", 1),
        ("1.2", "1.10", -1),
        ("1.0_rc1", "1.0", -1),
        ("1.0_alpha2", "1.0_beta1", -1),
        ("1.0", "1.0_p1", -1),
        ("1.0a", "1.0b", -1),
        ("1.0", "1.0.1", -1),
        ("2.0-r0", "2.0", 0),
    ],
)
def test_apk_version_order(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def entry(name: str, version: str, deps: str = "", provides: str = "", prio: int = 0) -> str:
    lines = [f"C:Q1{name}{version}=", f"P:{name}", f"V:{version}", "A:x86_64", "S:100"]
    if deps:
        lines.append(f"D:{deps}")
    if provides:
        lines.append(f"p:{provides}")
    if prio:
        lines.append(f"k:{prio}")
    return "\n".join(lines) + "\n"


INDEX = "\n".join(
    [
        entry("musl", "1.2.5-r0", provides="so:libc.musl-x86_64.so.1=1"),
        entry("busybox", "1.36.1-r2", "so:libc.musl-x86_64.so.1"),
        entry("busybox", "1.36.1-r3", "so:libc.musl-x86_64.so.1"),
        entry("busybox-binsh", "1.36.1-r3", "busybox=1.36.1-r3", "/bin/sh cmd:sh=1.36.1-r3", 100),
        entry("dash-binsh", "0.5.12-r3", "dash", "/bin/sh cmd:sh=0.5.12-r3", 60),
        entry("dash", "0.5.12-r3", "so:libc.musl-x86_64.so.1"),
        entry("app", "1.0-r0", "cmd:sh libssl>=3 !oldapp"),
        entry("libssl", "3.1.4-r0", "libcrypto=3.1.4-r0 so:libc.musl-x86_64.so.1"),
        entry("libcrypto", "3.1.4-r0", "libssl"),  # a cycle
        entry("oldapp", "0.1-r0"),
        entry("both", "1-r0", "app oldapp"),
        entry("strict", "1-r0", "busybox<1.36"),
        entry("deep", "1-r0", "mid"),
        entry("mid", "1-r0", "so:libmissing.so.2"),
    ]
)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApkIndex]:
    root = tmp_path_factory.mktemp("alpine")
    d = root / "v3.20" / "main" / "x86_64"
    d.mkdir(parents=True)
    key = ApkKey(tmp_path_factory.mktemp("keys"))  # signed the Alpine way (tests/signing.py)
    (d / "APKINDEX.tar.gz").write_bytes(key.sign_index(apkindex_archive(INDEX)))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield load_apk_index(
        f"http://127.0.0.1:{server.server_address[1]}",
        "v3.20",
        ["main"],
        "x86_64",
        trust=ApkTrust((str(key.keys_dir),)),
    )
    server.shutdown()


def got(closure: object) -> dict[str, str]:
    return {p.name: p.version for p in closure.pins}  # type: ignore[attr-defined]


def test_closure_with_provides_priority_versions_and_cycle(index: ApkIndex) -> None:
    closure = resolve_apk(index, ["app"], label="apk:main")
    assert got(closure) == {
        "app": "1.0-r0",
        "busybox": "1.36.1-r3",  # via busybox-binsh's exact dependency
        "busybox-binsh": "1.36.1-r3",  # cmd:sh: the provider with the highest priority
        "libcrypto": "3.1.4-r0",
        "libssl": "3.1.4-r0",
        "musl": "1.2.5-r0",  # so:libc… is provided
    }
    pins = {p.name: p for p in closure.pins}
    assert pins["musl"].checksum == "Q1musl1.2.5-r0=" and pins["musl"].origin == "v3.20/main"


def test_pinned_request_and_constraint(index: ApkIndex) -> None:
    assert got(resolve_apk(index, ["busybox=1.36.1-r2"]))["busybox"] == "1.36.1-r2"
    with pytest.raises(ResolveError, match=r"unsatisfiable: strict -> busybox<1.36"):
        resolve_apk(index, ["strict"])


def test_conflict(index: ApkIndex) -> None:
    with pytest.raises(ResolveError, match=r"conflict.*oldapp"):
        resolve_apk(index, ["both"])


def test_missing_dependency_names_the_chain(index: ApkIndex) -> None:
    with pytest.raises(ResolveError, match=r"no package 'so:libmissing.so.2': deep -> mid ->"):
        resolve_apk(index, ["deep"])
    with pytest.raises(ResolveError, match=r"did you mean busybox"):
        resolve_apk(index, ["busybux"])


# --- against a base's lib/apk/db/installed ------------------------------------------------

BASE_INDEX = "\n".join(
    [
        entry("musl", "1.2.5-r0", provides="so:libc.musl-x86_64.so.1=1"),
        entry("musl", "1.2.5-r1", provides="so:libc.musl-x86_64.so.1=1"),
        entry("libz", "1.3-r0", "so:libc.musl-x86_64.so.1", "so:libz.so.1=1.3"),
        entry("tool", "1.0-r0", "so:libc.musl-x86_64.so.1 so:libz.so.1"),
        entry("newtool", "1.0-r0", "musl>=1.2.5-r1"),
        entry("oldtool", "1.0-r0", "musl<1.2.5-r1"),
        entry("shapp", "1.0-r0", "cmd:sh"),
        entry("dash-binsh", "0.5-r0", "", "cmd:sh=0.5-r0", 60),
        entry("rival", "1.0-r0", "!busybox"),
        entry("hated", "1.0-r0"),
        entry("pinned-musl", "1.0-r0", "musl=1.2.5-r0"),
    ]
)


def installed_db(*stanzas: str) -> dict[str, InstalledPackage]:
    return parse_apk_installed("\n".join(stanzas))


def inst(name: str, version: str, deps: str = "", provides: str = "") -> str:
    text = f"C:Q1x=\nP:{name}\nV:{version}\nA:x86_64\n"
    text += f"D:{deps}\n" if deps else ""
    text += f"p:{provides}\n" if provides else ""
    return text + "F:etc\nR:x\nZ:Q1y=\n"


@pytest.fixture(scope="module")
def base_index() -> ApkIndex:
    index = ApkIndex()
    index.add(BASE_INDEX, "v3.20/main")
    return index


BASE = (
    inst("musl", "1.2.5-r0", provides="so:libc.musl-x86_64.so.1=1"),
    inst("busybox", "1.36.1-r2", "so:libc.musl-x86_64.so.1 !hated", "cmd:sh=1.36.1-r2"),
    inst("pinned-musl", "1.0-r0", "musl=1.2.5-r0"),
)


def test_the_base_satisfies_dependencies_and_its_provides_count(base_index: ApkIndex) -> None:
    db = installed_db(*BASE)
    closure = resolve_apk(base_index, ["tool", "shapp"], installed=db)
    assert got(closure) == {"libz": "1.3-r0", "shapp": "1.0-r0", "tool": "1.0-r0"}
    # without the base, musl and a cmd:sh provider are pinned
    alone = got(resolve_apk(base_index, ["tool", "shapp"]))
    assert alone["musl"] == "1.2.5-r1" and "dash-binsh" in alone


def test_a_dependency_the_base_does_not_satisfy_upgrades_it_and_its_dependants(
    base_index: ApkIndex,
) -> None:
    # newtool needs musl>=1.2.5-r1: musl is upgraded, and pinned-musl (in the base,
    # musl=1.2.5-r0) is left unsatisfied by that upgrade: it cannot be upgraded either.
    db = installed_db(*BASE)
    with pytest.raises(ResolveError, match=r"pinned-musl 1.0-r0 \(in the base\) needs musl=1"):
        resolve_apk(base_index, ["newtool"], installed=db)
    db = installed_db(BASE[0], BASE[1])
    closure = resolve_apk(base_index, ["newtool"], installed=db)
    assert got(closure) == {"musl": "1.2.5-r1", "newtool": "1.0-r0"}


def test_a_downgrade_of_the_base_is_an_error_naming_both_versions(base_index: ApkIndex) -> None:
    db = installed_db(inst("musl", "1.2.5-r1"))
    with pytest.raises(
        ResolveError,
        match=r"would downgrade the base: oldtool -> musl<1.2.5-r1, but the base has "
        r"musl 1.2.5-r1 and the repositories offer only 1.2.5-r0",
    ):
        resolve_apk(base_index, ["oldtool"], installed=db, label="apk:app")
    assert got(resolve_apk(base_index, ["oldtool"]))["musl"] == "1.2.5-r0"


def test_conflicts_with_the_base_are_errors(base_index: ApkIndex) -> None:
    db = installed_db(*BASE)
    with pytest.raises(ResolveError, match=r"rival 1.0-r0 conflicts with busybox 1.36.1-r2 in"):
        resolve_apk(base_index, ["rival"], installed=db)
    with pytest.raises(ResolveError, match=r"busybox 1.36.1-r2 in the base conflicts with hated"):
        resolve_apk(base_index, ["hated"], installed=db)
    alone = got(resolve_apk(base_index, ["rival", "hated"]))
    assert alone == {"hated": "1.0-r0", "rival": "1.0-r0"}
