"""Archive signatures: Debian Release files checked with gpgv against a keyring, Alpine
APKINDEX files checked with cryptography against key directories.

Fixture mirrors are directories signed with throwaway keys (tests/signing.py), answered
through an in-process httpx transport: the same requests and answers as a loopback
server, without sockets (tests/test_deb.py and tests/test_apk.py read signed fixture
mirrors over loopback). One test checks the real Debian 12 InRelease
of this machine's apt mirror against the real keyring and skips when that mirror cannot
be reached.
"""

from __future__ import annotations

import hashlib
import lzma
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from signing import ApkKey, GpgKey, apkindex_archive, release_text, signature_stream

from repro.config import load_repo_config, parse_deb822_sources, parse_sources_list
from repro.errors import KeyringError, MirrorError, RecipeError, SignatureError
from repro.packages.apk import load_apk_index, parse_apkindex_archive
from repro.packages.apksign import verify_apkindex
from repro.packages.fetch import fetch_packages_text, fetch_release, load_deb_index
from repro.packages.openpgp import check_release, check_signatures
from repro.packages.trust import (
    DEBIAN_KEYRING,
    ApkTrust,
    DebTrust,
    apk_trust,
    deb_trust,
    from_signed_by,
)
from repro.recipe import load_recipe

PACKAGES = "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\nFilename: pool/h.deb\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgKey]]:
    d = tmp_path_factory.mktemp("keys")
    made = {
        "archive": GpgKey(d, "repro archive"),
        "other": GpgKey(d, "someone else"),
        # made and used in 2020, expired at the end of that year
        "expired": GpgKey(d, "old archive", faked_time="20200101T000000", expire="1y"),
    }
    yield made
    for key in made.values():
        key.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An empty mirror directory and its URL; each test adds its suites. Nothing listens
    there: requests are answered in-process (mirror_client, in_process)."""
    root = tmp_path_factory.mktemp("mirror")
    url = "http://127.0.0.1:9"
    _ROOTS[url] = str(root)
    return root, url


_ROOTS: dict[str, str] = {}  # mirror URL -> directory


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def add_suite(root: Path, suite: str, packages: str = PACKAGES) -> tuple[Path, bytes]:
    """dists/SUITE/main/binary-amd64/Packages.xz; the suite directory and its Release."""
    d = root / "dists" / suite
    (d / "main" / "binary-amd64").mkdir(parents=True)
    packed = lzma.compress(packages.encode())
    (d / "main" / "binary-amd64" / "Packages.xz").write_bytes(packed)
    return d, release_text(suite, {"main/binary-amd64/Packages.xz": packed})


def trust_of(key: GpgKey, **kwargs: bool) -> DebTrust:
    return DebTrust((str(key.keyring),), **kwargs)  # type: ignore[arg-type]


def _transport() -> httpx.MockTransport:
    """Answers for the served directories in-process (GET: the file, or 404)."""

    def handler(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        root = Path(_ROOTS[base]).resolve()
        file = (root / request.url.path.lstrip("/")).resolve()
        if root not in file.parents or not file.is_file():
            return httpx.Response(404)
        return httpx.Response(200, content=file.read_bytes())

    return httpx.MockTransport(handler)


def mirror_client(url: str) -> httpx.Client:
    return httpx.Client(transport=_transport())


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaders that open their own client (load_deb_index, load_apk_index, the lock's
    resolver) get one answering in-process too."""
    real = httpx.Client

    def client(*args: object, **kwargs: object) -> httpx.Client:
        return real(*args, **{**kwargs, "transport": _transport()})  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "Client", client)


def fetch(url: str, suite: str, trust: DebTrust) -> str:
    with mirror_client(url) as client:
        return fetch_packages_text(client, url, suite, "main", "amd64", trust=trust)


def refused(url: str, suite: str, trust: DebTrust) -> str:
    """The one-line message a refused suite gives."""
    with pytest.raises(SignatureError) as info:
        fetch(url, suite, trust)
    message = str(info.value)
    assert "\n" not in message and "127.0.0.1" not in message
    assert info.value.exit_code == 2
    return message


# --- Debian: InRelease and Release.gpg ---------------------------------------------------------


def test_good_inrelease_is_accepted(served: tuple[Path, str], keys: dict[str, GpgKey]) -> None:
    root, url = served
    d, release = add_suite(root, "good")
    (d / "InRelease").write_bytes(keys["archive"].clearsign(release))
    assert fetch(url, "good", trust_of(keys["archive"])) == PACKAGES
    # the default trust is Debian's keyring, which does not hold the test key
    with mirror_client(url) as client, pytest.raises(SignatureError, match=DEBIAN_KEYRING):
        fetch_release(client, url, "good")


def test_modified_inrelease_is_a_bad_signature(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    root, url = served
    d, release = add_suite(root, "tampered")
    signed = keys["archive"].clearsign(release)
    (d / "InRelease").write_bytes(signed.replace(b"Origin: Repro", b"Origin: Evil!"))
    assert refused(url, "tampered", trust_of(keys["archive"])) == (
        f"dists/tampered/InRelease: bad signature (key {keys['archive'].keyid})"
    )


def test_inrelease_signed_by_another_key_is_refused(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    root, url = served
    d, release = add_suite(root, "stranger")
    (d / "InRelease").write_bytes(keys["other"].clearsign(release))
    trust = trust_of(keys["archive"])
    assert refused(url, "stranger", trust) == (
        f"dists/stranger/InRelease: signed by unknown key {keys['other'].keyid} "
        f"(keyring {keys['archive'].keyring})"
    )


def test_hashes_come_from_the_signed_text_only(
    served: tuple[Path, str],
    keys: dict[str, GpgKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unsigned text around the signed part is ignored, even when it names other hashes."""
    root, url = served
    d, release = add_suite(root, "wrapped")
    evil = lzma.compress(b"Package: evil\nVersion: 1\nArchitecture: amd64\n")
    evil_hashes = release_text("wrapped", {"main/binary-amd64/Packages.xz": evil})
    signed = keys["archive"].clearsign(release)
    (d / "InRelease").write_bytes(evil_hashes + b"\n" + signed + evil_hashes)
    trust = trust_of(keys["archive"])
    assert fetch(url, "wrapped", trust) == PACKAGES  # the signed hash, the real index
    with mirror_client(url) as client:
        text = fetch_release(client, url, "wrapped", trust)
    assert text == release.decode() and hashlib.sha256(evil).hexdigest() not in text
    # and a mirror serving the index the unsigned text names is caught
    (d / "main" / "binary-amd64" / "Packages.xz").write_bytes(evil)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))  # not the good one cached
    with pytest.raises(MirrorError, match="does not match the sha256"):
        fetch(url, "wrapped", trust)


def test_two_signed_parts_are_refused(served: tuple[Path, str], keys: dict[str, GpgKey]) -> None:
    root, url = served
    d, release = add_suite(root, "twice")
    signed = keys["archive"].clearsign(release)
    (d / "InRelease").write_bytes(signed + signed)
    assert "more than one signed part" in refused(url, "twice", trust_of(keys["archive"]))


def test_release_with_detached_release_gpg(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    root, url = served
    d, release = add_suite(root, "detached")
    (d / "Release").write_bytes(release)
    trust = trust_of(keys["archive"])
    assert refused(url, "detached", trust) == (
        "dists/detached/Release: not signed (no InRelease, and no Release.gpg beside it)"
    )
    (d / "Release.gpg").write_bytes(keys["archive"].detach_sign(release))
    assert fetch(url, "detached", trust) == PACKAGES
    (d / "Release").write_bytes(release.replace(b"Origin: Repro", b"Origin: Other"))
    assert refused(url, "detached", trust) == (
        f"dists/detached/Release: bad signature (key {keys['archive'].keyid})"
    )
    (d / "Release").write_bytes(release)
    (d / "Release.gpg").write_bytes(keys["other"].detach_sign(release))
    assert f"signed by unknown key {keys['other'].keyid}" in refused(url, "detached", trust)


def test_valid_until_in_the_past_is_refused_unless_allowed(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    root, url = served
    d, _ = add_suite(root, "stale")
    packed = (d / "main" / "binary-amd64" / "Packages.xz").read_bytes()
    release = release_text(
        "stale",
        {"main/binary-amd64/Packages.xz": packed},
        Valid_Until="Sat, 01 Mar 2025 00:00:00 UTC",
    )
    (d / "InRelease").write_bytes(keys["archive"].clearsign(release))
    assert refused(url, "stale", trust_of(keys["archive"])) == (
        "dists/stale/InRelease: expired on 2025-03-01 00:00 UTC (Valid-Until): the mirror is "
        "out of date; allow_expired = true accepts it for a snapshot mirror"
    )
    assert fetch(url, "stale", trust_of(keys["archive"], allow_expired=True)) == PACKAGES


def test_valid_until_in_the_future_passes() -> None:
    text = "Suite: s\nValid-Until: Tue, 08 Dec 2099 19:40:00 UTC\n"
    check_release(text, "s", "dists/s/InRelease", DebTrust())


def test_release_of_another_suite_is_refused(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    """A good signature over some other suite's Release, served in place of this one."""
    root, url = served
    d, _ = add_suite(root, "current")
    packed = (d / "main" / "binary-amd64" / "Packages.xz").read_bytes()
    old = release_text("oldsuite", {"main/binary-amd64/Packages.xz": packed})
    (d / "InRelease").write_bytes(keys["archive"].clearsign(old))
    assert refused(url, "current", trust_of(keys["archive"])) == (
        "dists/current/InRelease: signed for oldsuite, not current"
    )


def test_expired_key_is_refused_unless_allowed(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    root, url = served
    d, release = add_suite(root, "oldkey")
    (d / "InRelease").write_bytes(keys["expired"].clearsign(release))
    trust = trust_of(keys["expired"])
    assert refused(url, "oldkey", trust) == (
        f"dists/oldkey/InRelease: signed by expired key {keys['expired'].keyid} "
        f"(keyring {keys['expired'].keyring}); allow_expired = true accepts it for a "
        "snapshot mirror"
    )
    assert fetch(url, "oldkey", trust_of(keys["expired"], allow_expired=True)) == PACKAGES


def test_unsigned_inrelease_needs_explicit_trusted(
    served: tuple[Path, str], keys: dict[str, GpgKey]
) -> None:
    root, url = served
    d, release = add_suite(root, "plain")
    (d / "InRelease").write_bytes(release)
    assert refused(url, "plain", trust_of(keys["archive"])) == (
        "dists/plain/InRelease: not a clearsigned file (no -----BEGIN PGP SIGNED MESSAGE----- line)"
    )
    assert fetch(url, "plain", DebTrust(keyrings=(), trusted=True)) == PACKAGES


def test_missing_keyring_is_one_line(served: tuple[Path, str], keys: dict[str, GpgKey]) -> None:
    root, url = served
    d, release = add_suite(root, "nokeyring")
    (d / "InRelease").write_bytes(keys["archive"].clearsign(release))
    with pytest.raises(KeyringError) as info:
        fetch(url, "nokeyring", DebTrust(("/nonexistent/archive.gpg",)))
    assert str(info.value) == "keyring /nonexistent/archive.gpg does not exist"


def test_armored_keyrings_and_inline_signed_by_keys(
    served: tuple[Path, str], keys: dict[str, GpgKey], tmp_path: Path
) -> None:
    root, url = served
    d, release = add_suite(root, "armored")
    (d / "InRelease").write_bytes(keys["archive"].clearsign(release))
    armored = keys["archive"]._gpg("--armor", "--export").decode()
    (tmp_path / "archive.asc").write_text(armored)
    assert fetch(url, "armored", DebTrust((str(tmp_path / "archive.asc"),))) == PACKAGES
    # Signed-By with the key inline, as deb822 writes it (" ." for blank lines)
    inline = "\n".join(" " + (line or ".") for line in armored.strip().splitlines())
    sources = f"Types: deb\nURIs: {url}\nSuites: armored\nComponents: main\nSigned-By:{inline}\n"
    (source,) = parse_deb822_sources(sources)
    trust = from_signed_by(source.signed_by)
    assert trust.inline and not trust.keyrings
    assert fetch(url, "armored", trust) == PACKAGES


def test_signed_by_fingerprints_choose_among_the_keyring(
    served: tuple[Path, str], keys: dict[str, GpgKey], tmp_path: Path
) -> None:
    root, url = served
    d, release = add_suite(root, "byfpr")
    (d / "InRelease").write_bytes(keys["other"].clearsign(release))
    both = tmp_path / "both.gpg"
    both.write_bytes(keys["archive"].keyring.read_bytes() + keys["other"].keyring.read_bytes())
    only_archive = from_signed_by((str(both), keys["archive"].fingerprint))
    assert refused(url, "byfpr", only_archive) == (
        f"dists/byfpr/InRelease: signed by key {keys['other'].keyid}, which Signed-By does not list"
    )
    assert fetch(url, "byfpr", from_signed_by((str(both), keys["other"].fingerprint))) == PACKAGES


# --- gpgv's status lines ----------------------------------------------------------------------

FPR = "4CB50190207B4758A3F73A796ED0E7B82643E131"
PRIMARY = "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"


def status(*sigs: tuple[str, int]) -> str:
    """Status output with one signature per (keyword, hash algorithm)."""
    out = ""
    for keyword, algo in sigs:
        out += "[GNUPG:] NEWSIG\n"
        if keyword == "NO_PUBKEY":
            out += f"[GNUPG:] ERRSIG {FPR[-16:]} 1 {algo} 01 1783765031 9 {FPR}\n"
            out += f"[GNUPG:] NO_PUBKEY {FPR[-16:]}\n"
            continue
        out += f"[GNUPG:] {keyword} {FPR[-16:]} Archive Key <a@b>\n"
        out += f"[GNUPG:] VALIDSIG {FPR} 2026-07-11 1783765031 0 4 0 1 {algo} 01 {PRIMARY}\n"
    return out


def test_status_decisions() -> None:
    path, trust = "dists/x/InRelease", DebTrust()
    assert check_signatures(status(("GOODSIG", 8)), path, trust) == FPR
    # a good signature beside one by a key the keyring lacks: accepted, as apt does
    assert check_signatures(status(("NO_PUBKEY", 8), ("GOODSIG", 10)), path, trust) == FPR
    cases = {
        (("GOODSIG", 8), ("BADSIG", 8)): f"bad signature (key {FPR[-16:]})",
        (("GOODSIG", 2),): f"signed with the weak digest SHA1 (key {FPR[-16:]})",
        (("REVKEYSIG", 8),): f"signed by revoked key {FPR[-16:]} (keyring {DEBIAN_KEYRING})",
        (("EXPSIG", 8),): f"the signature by key {FPR[-16:]} expired",
    }
    for sigs, message in cases.items():
        with pytest.raises(SignatureError) as info:
            check_signatures(status(*sigs), path, trust)
        assert str(info.value).startswith(f"{path}: {message}")
    with pytest.raises(SignatureError, match=f"{path}: no OpenPGP signature in it"):
        check_signatures("", path, trust)
    # Signed-By fingerprints: the primary key accepts its subkeys; "FPR!" only that key
    for allowed, ok in ((PRIMARY, True), (FPR + "!", True), (PRIMARY + "!", False)):
        t = DebTrust(fingerprints=(allowed,))
        if ok:
            assert check_signatures(status(("GOODSIG", 8)), path, t) == FPR
        else:
            with pytest.raises(SignatureError, match="which Signed-By does not list"):
                check_signatures(status(("GOODSIG", 8)), path, t)


# --- where the keys come from ------------------------------------------------------------------


def test_signed_by_of_apt_sources() -> None:
    (deb822,) = parse_deb822_sources(
        "Types: deb\nURIs: http://m.test/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/a.gpg, /etc/apt/keyrings/b.asc\n"
        f" {PRIMARY}\n"
    )
    assert deb822.signed_by == ("/usr/share/keyrings/a.gpg", "/etc/apt/keyrings/b.asc", PRIMARY)
    assert deb822.components == ("main",)
    (line,) = parse_sources_list(
        "deb [arch=amd64 signed-by=/usr/share/keyrings/a.gpg] http://m.test/debian bookworm main\n"
    )
    assert (line.uri, line.suites, line.signed_by) == (
        "http://m.test/debian",
        ("bookworm",),
        ("/usr/share/keyrings/a.gpg",),
    )
    trust = from_signed_by(deb822.signed_by)
    assert trust.keyrings == ("/usr/share/keyrings/a.gpg", "/etc/apt/keyrings/b.asc")
    assert trust.fingerprints == (PRIMARY,)


def make_repo(tmp_path: Path, recipe: str, repro_toml: str = "") -> Path:
    (tmp_path / ".git").mkdir(parents=True)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "archive.gpg").write_bytes(b"")
    recipes = tmp_path / "recipes"
    (recipes / "r").mkdir(parents=True)
    (recipes / "repro.toml").write_text(repro_toml)
    (recipes / "r" / "recipe.toml").write_text("source_date_epoch = 1\n" + recipe)
    (recipes / "r" / "Dockerfile").write_text("FROM scratch\n")
    return recipes


def test_keyring_precedence(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://m.test/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/from-apt.gpg\n"
    )
    set_toml = '[packages.apt.t]\nsuite = "bookworm"\npackages = ["a"]\n'
    env = {"REPRO_CONFIG": str(tmp_path / "none.toml")}

    recipes = make_repo(tmp_path / "a", set_toml)
    (s,) = load_recipe(recipes / "r").packages
    repo = load_repo_config(recipes)
    # the machine's apt source, where the mirror came from
    assert deb_trust(s, repo, env, apt).keyrings == ("/usr/share/keyrings/from-apt.gpg",)
    # a mirror from the environment: its apt source says nothing, Debian's keyring
    env_mirror = {**env, "REPRO_MIRROR_APT": "http://elsewhere.test/debian"}
    assert deb_trust(s, repo, env_mirror, apt).keyrings == (DEBIAN_KEYRING,)

    recipes = make_repo(
        tmp_path / "b", set_toml, '[signatures.apt]\nkeyring = "../keys/archive.gpg"\n'
    )
    (s,) = load_recipe(recipes / "r").packages
    repo = load_repo_config(recipes)
    repo_keyring = str((tmp_path / "b" / "keys" / "archive.gpg").resolve())
    assert deb_trust(s, repo, env, apt).keyrings == (repo_keyring,)

    recipes = make_repo(
        tmp_path / "c",
        set_toml + 'keyring = "/usr/share/keyrings/mine.gpg"\nallow_expired = true\n',
        '[signatures.apt]\nkeyring = "../keys/archive.gpg"\n',
    )
    (s,) = load_recipe(recipes / "r").packages
    trust = deb_trust(s, load_repo_config(recipes), env, apt)
    assert trust.keyrings == ("/usr/share/keyrings/mine.gpg",) and trust.allow_expired

    recipes = make_repo(tmp_path / "d", set_toml + "trusted = true\n")
    (s,) = load_recipe(recipes / "r").packages
    assert deb_trust(s, load_repo_config(recipes), env, apt).trusted


def test_key_paths_stay_inside_the_repository(tmp_path: Path) -> None:
    base = '[packages.apt.t]\nsuite = "bookworm"\npackages = ["a"]\n'
    recipes = make_repo(tmp_path / "in", base + 'keyring = "../../keys/archive.gpg"\n')
    (s,) = load_recipe(recipes / "r").packages
    assert s.keyring == str((tmp_path / "in" / "keys" / "archive.gpg").resolve())

    recipes = make_repo(tmp_path / "out", base + 'keyring = "../../../elsewhere.gpg"\n')
    with pytest.raises(RecipeError, match=r"recipe.toml:5: keyring '../../../elsewhere.gpg' "):
        load_recipe(recipes / "r")
    recipes = make_repo(tmp_path / "both", base + 'keyring = "/k.gpg"\ntrusted = true\n')
    with pytest.raises(RecipeError, match="'trusted = true' turns the signature check off"):
        load_recipe(recipes / "r")
    recipes = make_repo(tmp_path / "rt", "", '[signatures.alpine]\nkeys = "../../x"\n')
    with pytest.raises(RecipeError, match=r"repro.toml:2: \[signatures.alpine\] '../../x' "):
        load_repo_config(recipes)
    recipes = make_repo(tmp_path / "unknown", "", "[signatures.apt]\nkeyrings = 'x'\n")
    with pytest.raises(RecipeError, match="unknown key 'keyrings'"):
        load_repo_config(recipes)


def test_recipe_keyring_reaches_the_check_through_the_lock(
    served: tuple[Path, str], keys: dict[str, GpgKey], tmp_path: Path, in_process: None
) -> None:
    from repro.lock import Resolver

    root, url = served
    d, release = add_suite(root, "locked")
    (d / "InRelease").write_bytes(keys["archive"].clearsign(release))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "archive.gpg").write_bytes(keys["archive"].keyring.read_bytes())
    (tmp_path / "keys" / "other.gpg").write_bytes(keys["other"].keyring.read_bytes())
    base = '[packages.apt.t]\nsuite = "locked"\npackages = ["hello"]\nmirror = "fixture"\n'
    env = {"REPRO_MIRROR_FIXTURE": url, "REPRO_CONFIG": str(tmp_path / "none.toml")}
    for n, (keyring, ok) in enumerate((("archive.gpg", True), ("other.gpg", False))):
        recipes = make_repo(tmp_path / f"r{n}", base + f'keyring = "{tmp_path}/keys/{keyring}"\n')
        recipe = load_recipe(recipes / "r")
        resolver = Resolver(load_repo_config(recipes), environ=env)
        if ok:
            pins = resolver.resolve_packages(recipe.packages[0])["package"]
            assert [p["name"] for p in pins] == ["hello"]
        else:
            with pytest.raises(SignatureError, match="signed by unknown key"):
                resolver.resolve_packages(recipe.packages[0])


# --- the real Debian 12 archive ----------------------------------------------------------------


def test_real_debian_12_inrelease_verifies_against_the_real_keyring() -> None:
    """bookworm's InRelease from the mirror this machine's apt uses, with the keyring its
    apt source names (Signed-By), or Debian's archive keyring."""
    from repro.config import mirror_url
    from repro.recipe import PackageSet

    if not Path(DEBIAN_KEYRING).is_file():
        pytest.skip("debian-archive-keyring is not installed")
    try:
        url = mirror_url("apt", suite="bookworm", components=["main"])
        with httpx.Client(timeout=30, follow_redirects=True) as client:
            client.head(f"{url}/dists/bookworm/InRelease").raise_for_status()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no Debian 12 mirror reachable from this machine's apt sources: {exc}")
    s = PackageSet("apt", "t", ("hello",), ("bookworm",), ("main",), "amd64", "apt")
    trust = deb_trust(s)
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        text = fetch_release(client, url, "bookworm", trust)
        assert "Codename: bookworm" in text and "main/binary-amd64/Packages.xz" in text
        assert "BEGIN PGP" not in text
        stranger = DebTrust(("/usr/share/keyrings/debian-archive-bullseye-stable.gpg",))
        if Path(stranger.keyrings[0]).is_file():
            with pytest.raises(SignatureError, match="signed by unknown key"):
                fetch_release(client, url, "bookworm", stranger)


# --- Alpine -----------------------------------------------------------------------------------

INDEX = "C:Q1abc=\nP:busybox\nV:1.36.1-r3\nA:x86_64\nS:100\n"
PATH = "v3.20/main/x86_64/APKINDEX.tar.gz"


@pytest.fixture(scope="module")
def apk_key(tmp_path_factory: pytest.TempPathFactory) -> ApkKey:
    return ApkKey(tmp_path_factory.mktemp("apk-keys"))


def test_apkindex_signed_the_alpine_way_is_accepted(apk_key: ApkKey) -> None:
    index = apkindex_archive(INDEX)
    trust = ApkTrust((str(apk_key.keys_dir),))
    for digest in ("sha1", "sha256"):  # .SIGN.RSA.<key> and .SIGN.RSA256.<key>
        signed = verify_apkindex(apk_key.sign_index(index, digest), PATH, trust)
        assert signed == index and parse_apkindex_archive(signed) == INDEX


def apk_refusal(data: bytes, trust: ApkTrust) -> str:
    with pytest.raises(SignatureError) as info:
        verify_apkindex(data, PATH, trust)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_tampered_apkindex_is_refused(apk_key: ApkKey) -> None:
    signed = apk_key.sign_index(apkindex_archive(INDEX))
    tampered = signed[:-40] + bytes(b ^ 1 for b in signed[-40:-39]) + signed[-39:]
    trust = ApkTrust((str(apk_key.keys_dir),))
    assert apk_refusal(tampered, trust) == f"{PATH}: bad signature (key {apk_key.name})"
    # the index of another repository, with this one's signature
    swapped = signed[: len(signed) - len(apkindex_archive(INDEX))] + apkindex_archive(
        INDEX.replace("busybox", "evilbox")
    )
    assert apk_refusal(swapped, trust) == f"{PATH}: bad signature (key {apk_key.name})"


def test_apkindex_by_an_unknown_key_name_is_refused(apk_key: ApkKey, tmp_path: Path) -> None:
    index = apkindex_archive(INDEX)
    trust = ApkTrust((str(apk_key.keys_dir),))
    other = apk_key.sign_index(index, name="someone-else-0002.rsa.pub")
    assert apk_refusal(other, trust) == (
        f"{PATH}: signed by unknown key someone-else-0002.rsa.pub "
        f"(key directory {apk_key.keys_dir})"
    )
    # a key name that tries to leave the key directory is no key
    (tmp_path / "escape.rsa.pub").write_bytes((apk_key.keys_dir / apk_key.name).read_bytes())
    climbing = apk_key.sign_index(index, name=f"../{tmp_path.name}/escape.rsa.pub")
    assert "signed by unknown key ../" in apk_refusal(climbing, ApkTrust((str(tmp_path / "k"),)))
    assert apk_refusal(apk_key.sign_index(index), ApkTrust()) == (
        f"{PATH}: signed by unknown key {apk_key.name} (no key directory: /etc/apk/keys and "
        '/usr/share/apk/keys do not exist; set keys = "DIR")'
    )


def test_unsigned_apkindex_is_refused(apk_key: ApkKey) -> None:
    trust = ApkTrust((str(apk_key.keys_dir),))
    expected = f"{PATH}: not signed (no .SIGN.RSA signature before the index)"
    assert apk_refusal(apkindex_archive(INDEX), trust) == expected
    # a signature stream with nothing after it signs nothing
    lone = signature_stream(f".SIGN.RSA256.{apk_key.name}", apk_key.signature(b""))
    assert apk_refusal(lone, trust) == expected
    assert apk_refusal(b"not gzip", trust) == f"{PATH}: not a gzip file"
    # trusted = true, and only then, reads it unchecked
    assert verify_apkindex(apkindex_archive(INDEX), PATH, ApkTrust(trusted=True))


def test_apk_keys_configuration(apk_key: ApkKey, tmp_path: Path) -> None:
    recipes = make_repo(
        tmp_path,
        '[packages.apk.t]\nbranch = "v3.20"\npackages = ["busybox"]\nkeys = "../../keys"\n',
        '[signatures.alpine]\nkeys = "/srv/alpine-keys"\n',
    )
    (s,) = load_recipe(recipes / "r").packages
    trust = apk_trust(s, load_repo_config(recipes))
    assert trust.key_dirs[:2] == (str((tmp_path / "keys").resolve()), "/srv/alpine-keys")
    with pytest.raises(KeyringError, match="key directory /srv/alpine-keys does not exist"):
        verify_apkindex(apk_key.sign_index(apkindex_archive(INDEX)), PATH, trust)


def test_apk_index_from_a_mirror_is_checked(
    apk_key: ApkKey, served: tuple[Path, str], in_process: None
) -> None:
    root, url = served
    for repo, data in (
        ("main", apk_key.sign_index(apkindex_archive(INDEX))),
        ("community", apkindex_archive(INDEX)),
    ):
        d = root / "v3.20" / repo / "x86_64"
        d.mkdir(parents=True)
        (d / "APKINDEX.tar.gz").write_bytes(data)
    trust = ApkTrust((str(apk_key.keys_dir),))
    index = load_apk_index(url, "v3.20", ["main"], "x86_64", trust=trust)
    assert [p.version for p in index.versions("busybox")] == ["1.36.1-r3"]
    with pytest.raises(SignatureError) as info:
        load_apk_index(url, "v3.20", ["community"], "x86_64", trust=trust)
    assert str(info.value) == (
        "v3.20/community/x86_64/APKINDEX.tar.gz: not signed (no .SIGN.RSA signature "
        "before the index)"
    )


def test_load_deb_index_caches_per_trust(
    served: tuple[Path, str], keys: dict[str, GpgKey], in_process: None
) -> None:
    """An index loaded under one keyring is not handed out under another."""
    root, url = served
    d, release = add_suite(root, "cached")
    (d / "InRelease").write_bytes(keys["archive"].clearsign(release))
    load_deb_index(url, ("cached",), ("main",), "amd64", trust=trust_of(keys["archive"]))
    with pytest.raises(SignatureError, match="signed by unknown key"):
        load_deb_index(url, ("cached",), ("main",), "amd64", trust=trust_of(keys["other"]))
