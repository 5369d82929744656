"""Debian package closures: versions, relations, and the resolver on fixture indexes
(served on loopback, as a mirror would), plus one run against the real Debian 12 index."""

from __future__ import annotations

import functools
import hashlib
import http.server
import lzma
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from signing import GpgKey, release_text

from repro.packages import ResolveError
from repro.packages.deb import (
    DebIndex,
    compare_versions,
    parse_relations,
    resolve,
)
from repro.packages.fetch import MirrorError, fetch_packages_text, load_deb_index
from repro.packages.trust import DebTrust

# --- versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0", "1.1", -1),
        ("1.10", "1.9", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.0~~", "1.0~", -1),
        ("1.0", "1.0+b1", -1),
        ("1:0.1", "2.0", 1),
        ("2.0-1", "2.0-2", -1),
        ("2.0-10", "2.0-9", 1),
        ("1.0a", "1.0+", -1),  # letters sort before other symbols
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", -1),
        ("0:1.0", "1.0", 0),
        ("1.0-0", "1.0", 0),
        ("1.001", "1.1", 0),
        ("4:12.2.0-3", "12.2.0-14", 1),
    ],
)
def test_debian_version_order(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_relations_with_alternatives_versions_and_architectures() -> None:
    groups = parse_relations(
        "libc6 (>= 2.34), foo | bar (<< 2), baz:any, only-arm [arm64], not-arm [!arm64]",
        "amd64",
    )
    assert [[str(r) for r in g] for g in groups] == [
        ["libc6 (>= 2.34)"],
        ["foo", "bar (<< 2)"],
        ["baz"],
        ["not-arm"],
    ]


# --- fixture indexes ------------------------------------------------------------------


def stanza(name: str, version: str, **fields: str) -> str:
    body = f"Package: {name}\nVersion: {version}\nArchitecture: {fields.pop('arch', 'amd64')}\n"
    for key, value in fields.items():
        body += f"{key.replace('_', '-').title()}: {value}\n"
    digest = hashlib.sha256(f"{name}_{version}".encode()).hexdigest()
    body += f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_amd64.deb\nSize: 1234\n"
    body += f"SHA256: {digest}\n"
    return body


FIXTURE = "\n".join(
    [
        stanza("app", "1.0", depends="libfoo (>= 2.0), mail-transport-agent, editor | vim"),
        stanza("app", "1.0~beta1", depends="libfoo (>= 3.0)"),
        stanza("libfoo", "1.5"),
        stanza("libfoo", "2.1-1", pre_depends="libc6 (>= 2.36)", depends="libfoo-data"),
        stanza("libfoo-data", "2.1-1", arch="all", depends="libfoo (= 2.1-1)"),  # a cycle
        stanza("libc6", "2.36-9", essential="yes"),
        stanza("postfix", "3.7", provides="mail-transport-agent", conflicts="exim4"),
        stanza("exim4", "4.96", provides="mail-transport-agent", conflicts="postfix"),
        stanza("vim", "9.0"),
        stanza("nano", "7.2", provides="editor"),
        stanza("needs-exim", "1", depends="exim4, postfix"),
        stanza("wants-old", "1", depends="libfoo (<< 1.0)"),
        stanza("chain-top", "1", depends="chain-mid"),
        stanza("chain-mid", "1", depends="no-such-lib (>= 1)"),
        stanza("versioned-virtual", "1", depends="mail-transport-agent (>= 2)"),
        stanza("arm-only", "1", arch="arm64"),
    ]
)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    """The fixture archive's signing key (a throwaway one, tests/signing.py)."""
    key = GpgKey(tmp_path_factory.mktemp("key"), "fixture archive")
    yield key
    key.close()


@pytest.fixture(scope="module")
def trust(signer: GpgKey) -> DebTrust:
    return DebTrust((str(signer.keyring),))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, signer: GpgKey) -> Iterator[str]:
    """A Debian-style mirror on loopback: dists/test/{InRelease, main/binary-amd64/Packages.xz},
    the InRelease signed by `signer`."""
    root = tmp_path_factory.mktemp("mirror")
    d = root / "dists" / "test" / "main" / "binary-amd64"
    d.mkdir(parents=True)
    packed = lzma.compress(FIXTURE.encode())
    (d / "Packages.xz").write_bytes(packed)
    (root / "dists" / "test" / "InRelease").write_bytes(
        signer.clearsign(release_text("test", {"main/binary-amd64/Packages.xz": packed}))
    )
    bad = root / "dists" / "bad" / "main" / "binary-amd64"
    bad.mkdir(parents=True)
    (bad / "Packages.xz").write_bytes(packed)
    (root / "dists" / "bad" / "InRelease").write_bytes(
        signer.clearsign(
            f"SHA256:\n {'0' * 64} {len(packed)} main/binary-amd64/Packages.xz\n".encode()
        )
    )
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def index(
    mirror: str, trust: DebTrust, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> DebIndex:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return load_deb_index(mirror, ("test",), ("main",), "amd64", trust=trust)


def names(closure: object) -> dict[str, str]:
    return {p.name: p.version for p in closure.pins}  # type: ignore[attr-defined]


def test_index_is_fetched_checked_and_parsed(index: DebIndex) -> None:
    assert "arm-only" not in index.packages  # other architectures are left out
    assert [p.version for p in index.versions("libfoo")] == ["2.1-1", "1.5"]
    assert [p.name for p, _ in index.providers("mail-transport-agent")] == ["postfix", "exim4"]


def test_index_not_matching_release_is_refused(
    mirror: str, trust: DebTrust, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with httpx.Client() as client, pytest.raises(MirrorError, match="does not match the sha256"):
        fetch_packages_text(client, mirror, "bad", "main", "amd64", trust=trust)
    with httpx.Client() as client, pytest.raises(Exception, match="suite nope not found"):
        fetch_packages_text(client, mirror, "nope", "main", "amd64", trust=trust)


def test_closure_with_provides_alternatives_constraints_and_a_cycle(index: DebIndex) -> None:
    closure = resolve(index, ["app"])
    assert names(closure) == {
        "app": "1.0",  # newest: 1.0~beta1 sorts before 1.0
        "libfoo": "2.1-1",  # newest meeting >= 2.0 (1.5 does not)
        "libfoo-data": "2.1-1",  # libfoo <-> libfoo-data is a cycle, closed once
        "exim4": "4.96",  # mail-transport-agent is virtual: first provider by name
        "nano": "7.2",  # "editor | vim": the first alternative, via its provider
    }
    assert "libc6" not in names(closure)  # Essential: assumed present in the base
    pins = {p.name: p for p in closure.pins}
    assert pins["libfoo"].sha256 == hashlib.sha256(b"libfoo_2.1-1").hexdigest()
    assert pins["libfoo"].filename == "pool/main/l/libfoo/libfoo_2.1-1_amd64.deb"
    assert pins["libfoo"].origin == "test/main"
    assert [p.name for p in closure.sorted()] == sorted(pins)


def test_essential_can_be_included(index: DebIndex) -> None:
    got = names(resolve(index, ["libfoo"], assume_essential=False))
    assert got == {"libfoo": "2.1-1", "libfoo-data": "2.1-1", "libc6": "2.36-9"}


def test_providers_by_priority_prefers_required_as_apt_does() -> None:
    index = DebIndex("amd64")
    index.add(
        "\n".join(
            [
                stanza("base-files", "12", pre_depends="awk"),
                stanza("gawk", "5.2", provides="awk", priority="optional"),
                stanza("mawk", "1.3.4", provides="awk", priority="required"),
                stanza("original-awk", "2012", provides="awk"),  # no Priority: last
            ]
        ),
        "bookworm/main",
    )
    # By default the first provider by name (what existing locks were made with)...
    assert "gawk" in names(resolve(index, ["base-files"], assume_essential=False))
    # ...and by Priority when asked, so a base built from nothing gets apt's choice.
    got = names(
        resolve(index, ["base-files"], assume_essential=False, providers_by_priority=True)
    )
    assert "mawk" in got and "gawk" not in got and "original-awk" not in got


def test_already_chosen_provider_is_reused(index: DebIndex) -> None:
    got = names(resolve(index, ["app=1.0", "postfix"]))
    # postfix was asked for by name, so it satisfies mail-transport-agent; exim4
    # would conflict with it anyway.
    assert "exim4" not in got and got["postfix"] == "3.7"


def test_conflict_is_an_error_naming_both(index: DebIndex) -> None:
    with pytest.raises(ResolveError) as info:
        resolve(index, ["needs-exim"], label="apt:set")
    message = str(info.value)
    assert message.startswith("apt:set: ")
    assert "exim4 4.96" in message and "postfix 3.7" in message and "conflict" in message
    assert "\n" not in message


def test_unsatisfiable_version_names_the_chain(index: DebIndex) -> None:
    with pytest.raises(ResolveError) as info:
        resolve(index, ["wants-old"])
    message = str(info.value)
    assert "unsatisfiable: wants-old -> libfoo (<< 1.0)" in message
    assert "available: 2.1-1, 1.5" in message


def test_missing_dependency_names_the_chain(index: DebIndex) -> None:
    with pytest.raises(ResolveError, match=r"no package 'no-such-lib': chain-top -> chain-mid"):
        resolve(index, ["chain-top"])


def test_missing_package_suggests_close_names(index: DebIndex) -> None:
    with pytest.raises(ResolveError, match=r"did you mean libfoo"):
        resolve(index, ["libfooo"])


def test_versioned_virtual_needs_a_versioned_provide(index: DebIndex) -> None:
    with pytest.raises(ResolveError, match="mail-transport-agent"):
        resolve(index, ["versioned-virtual"])


def test_requested_version_and_relation(index: DebIndex) -> None:
    assert names(resolve(index, ["libfoo=1.5"])) == {"libfoo": "1.5"}
    assert names(resolve(index, ["libfoo (<< 2)"])) == {"libfoo": "1.5"}
    with pytest.raises(ResolveError, match="unsatisfiable"):
        resolve(index, ["libfoo=9"])


# --- the real Debian 12 index ---------------------------------------------------------


def test_real_debian_12_closure() -> None:
    """Resolve against bookworm main from the mirror this machine's apt uses."""
    from repro.config import mirror_url

    try:
        url = mirror_url("apt", suite="bookworm", components=["main"])
        index = load_deb_index(url, ("bookworm",), ("main",), "amd64")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no Debian 12 mirror reachable from this machine's apt sources: {exc}")
    assert len(index.packages) > 50_000
    closure = resolve(index, ["curl", "ca-certificates", "python3-minimal"])
    got = {p.name: p for p in closure.pins}
    for name in ("curl", "libcurl4", "openssl", "ca-certificates", "python3.11-minimal"):
        assert name in got, name
    assert all(len(p.sha256) == 64 and p.filename.startswith("pool/") for p in closure.pins)
    assert "bash" not in got and "coreutils" not in got  # Essential: in every Debian base
    assert all(p.origin == "bookworm/main" for p in closure.pins)


def test_parser_tolerates_extra_blank_lines_and_foreign_stanzas() -> None:
    index = DebIndex("amd64")
    text = (
        "\n\nPackage: a\nVersion: 1\nArchitecture: all\n\n\n\n"
        "Package: b\nVersion: 2\nArchitecture: amd64\nProvides: c (= 2)\n\n"
        "Junk: x\n\nPackage: arm\nVersion: 1\nArchitecture: arm64\n\n"
        "Package: d\nVersion: 3\nDescription: first line\n more"
    )
    assert index.add(text) == 3
    assert sorted(index.packages) == ["a", "b", "d"]
    assert [(p.name, v) for p, v in index.providers("c")] == [("b", "2")]
    assert index.packages["d"][0].get("Description") == "first line\n more"
