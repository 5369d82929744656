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
