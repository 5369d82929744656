"""Alpine end to end, on a fixture repository the test makes, signs and serves on loopback:
``repro lock`` of an apk [rootfs] recipe (signature and package checksums checked),
``repro build`` twice to one digest, apk's database in the image, bad input refused
(exit 2, one line, nothing written), and an apk set resolved against the built image as
a base (the base's packages not pinned again, an upgrade, a refused downgrade)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from apks import Apk, apk_bytes, signed_index, stanza
from debs import EPOCH, E
from runner import run_repro
from signing import ApkKey, apkindex_archive

from repro import oci

ROOT = Path(__file__).resolve().parent.parent
BRANCH, REPO, ARCH = "v3.20", "main", "x86_64"
FAKE_BUSYBOX = b"\x7fELF a toy busybox: it does not run\n"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/sbin/nologin\n"
APPLETS = "/bin/ls\n/bin/cat\n/bin/sh\n/usr/bin/env\n/sbin/nologin\n"


def universe(busybox: bytes) -> list[Apk]:
    so = "so:libc.musl-x86_64.so.1"
    return [
        *[
            Apk(
                "musl",
                version,
                provides=[f"{so}=1"],
                entries=[
                    E("lib/", kind="dir"),
                    E("lib/ld-musl-x86_64.so.1", f"musl {version}".encode(), mode=0o755),
                    E("lib/libc.musl-x86_64.so.1", link="ld-musl-x86_64.so.1"),
                ],
            )
            for version in ("1.2.4-r0", "1.2.5-r0", "1.2.5-r1")
        ],
        Apk(
            "alpine-baselayout-data",
            "3.6.5-r0",
            entries=[
                E("etc/", kind="dir"),
                E("etc/passwd", PASSWD),
                E("etc/group", b"root:x:0:root\nnobody:x:65534:\n"),
                E("etc/shadow", b"root:*::0:::::\n", mode=0o640, gid=42),
                E("root/", kind="dir", mode=0o700),
            ],
        ),
        Apk(
            "busybox",
            "1.36.1-r2",
            depends=[so],
            provides=["cmd:busybox=1.36.1-r2"],
            entries=[
                E("bin/", kind="dir"),
                E("bin/busybox", busybox, mode=0o755),
                E("etc/", kind="dir"),
                E("etc/busybox-paths.d/", kind="dir"),
                E("etc/busybox-paths.d/busybox", APPLETS.encode()),
            ],
            scripts={".post-install": b"#!/bin/busybox sh\n/bin/busybox --install -s\n"},
            extra={"triggers": "/bin /usr/bin /sbin /usr/sbin"},
        ),
        Apk(
            "busybox-binsh",
            "1.36.1-r2",
            depends=["busybox=1.36.1-r2"],
            provides=["/bin/sh", "cmd:sh=1.36.1-r2"],
            priority=100,
            entries=[E("bin/", kind="dir"), E("bin/sh", link="/bin/busybox")],
        ),
        Apk("alpine-base", "3.20.3-r0", depends=["alpine-baselayout-data", "busybox-binsh"]),
        Apk("newtool", "1.0-r0", depends=["musl>=1.2.5-r1"], entries=[E("usr/bin/newtool", b"n")]),
        Apk("oldtool", "1.0-r0", depends=["musl<1.2.5-r0"], entries=[E("usr/bin/oldtool", b"o")]),
        Apk("shtool", "1.0-r0", depends=["cmd:sh", so], entries=[E("usr/bin/shtool", b"s")]),
        Apk("absolute", "1.0-r0", entries=[E("/etc/evil", b"x")]),
        Apk("escape", "1.0-r0", entries=[E("usr/share/out", link="../../../../..")]),
    ]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def publish(root: Path, key: ApkKey, pkgs: list[Apk], branch: str = BRANCH) -> dict[str, bytes]:
    """Write the packages and their signed index under root/branch/main/x86_64."""
    d = root / branch / REPO / ARCH
    d.mkdir(parents=True, exist_ok=True)
    stanzas, files = [], {}
    for pkg in pkgs:
        built = apk_bytes(pkg, key)
        name = f"{pkg.name}-{pkg.version}.apk"
        (d / name).write_bytes(built.data)
        files[name] = built.data
        stanzas.append(stanza(pkg, built))
    (d / "APKINDEX.tar.gz").write_bytes(signed_index(stanzas, key))
    return files


@functools.cache
def _serve(root: str) -> str:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=root)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, ApkKey]]:
    root = tmp_path_factory.mktemp("alpine")
    key = ApkKey(tmp_path_factory.mktemp("keys"))
    publish(root, key, universe(FAKE_BUSYBOX))
    # v3.19: the same index unsigned; v3.18: signed by a key the recipe does not trust
    other = ApkKey(tmp_path_factory.mktemp("other-keys"), name=key.name)
    publish(root, other, universe(FAKE_BUSYBOX), "v3.18")
    unsigned = root / "v3.19" / REPO / ARCH
    unsigned.mkdir(parents=True)
    stanzas = [stanza(p, apk_bytes(p)) for p in universe(FAKE_BUSYBOX)]
    (unsigned / "APKINDEX.tar.gz").write_bytes(apkindex_archive("\n".join(stanzas)))
    yield _serve(str(root)), root, key


def recipe(
    tmp_path: Path, key: ApkKey, packages: list[str], name: str = "alpine", branch: str = BRANCH
) -> Path:
    keys = tmp_path / "keys"
    if not keys.exists():
        shutil.copytree(key.keys_dir, keys)
    d = tmp_path / "recipes" / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(
        f"source_date_epoch = {EPOCH}\n"
        '[rootfs]\npackages = "base"\n'
        f'[packages.apk.base]\nbranch = "{branch}"\npackages = {json.dumps(packages)}\n'
        'keys = "../../keys"\n'
    )
    return d


def repro(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REPRO_MIRROR_ALPINE": url,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    return run_repro(*args, cwd=tmp_path, env=env, timeout=300)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("repro: error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


def layer(layout: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    image = oci.load_image(oci.OCILayout(layout))
    (blob,) = image.layers
    out = {}
    with tarfile.open(oci.OCILayout(layout).blob_path(blob.digest)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name.rstrip("/")] = (m, f.read() if f else b"")
    return out


def pins(d: Path) -> list[dict[str, object]]:
    lock = tomllib.loads((d / "repro.lock").read_text())
    return list(lock["packages"]["apk"]["base"]["package"])


def test_lock_and_build_twice_to_the_same_digest(
    tmp_path: Path, mirror: tuple[str, Path, ApkKey]
) -> None:
    url, root, key = mirror
    d = recipe(tmp_path, key, ["alpine-base", "musl=1.2.5-r0"])
    r = repro(tmp_path, url, "lock", str(d))
    assert r.returncode == 0, r.stderr
    text = (d / "repro.lock").read_text()
    assert "://" not in text and "127.0.0.1" not in text
    locked = pins(d)
    versions = {str(p["name"]): str(p["version"]) for p in locked}
    assert versions == {
        "alpine-base": "3.20.3-r0",
        "alpine-baselayout-data": "3.6.5-r0",
        "busybox": "1.36.1-r2",
        "busybox-binsh": "1.36.1-r2",
        "musl": "1.2.5-r0",
    }
    served = root / BRANCH / REPO / ARCH
    for p in locked:  # sha256 and size of the checked file, and the index's C:
        data = (served / f"{p['name']}-{p['version']}.apk").read_bytes()
        assert p["sha256"] == hashlib.sha256(data).hexdigest() and p["size"] == len(data)
        assert str(p["checksum"]).startswith("Q1") and p["origin"] == f"{BRANCH}/{REPO}"

    digests = []
    for out in ("oci:o1", "oci:o2", "oci-archive:o3.tar"):
        r = repro(tmp_path, url, "build", str(d), "-o", out, "--json")
        assert r.returncode == 0, r.stderr
        digests.append(json.loads(r.stdout)[0]["digest"])
    assert digests[0] == digests[1] == digests[2]
    assert "busybox: install scripts not run" not in r.stderr  # its effect is reproduced
    oci.OCILayout(tmp_path / "o1").verify(full=True)
    config = oci.load_image(oci.OCILayout(tmp_path / "o1")).config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")

    files = layer(tmp_path / "o1")
    assert files["bin/busybox"][1] == FAKE_BUSYBOX and files["bin/busybox"][0].mode == 0o755
    for applet in ("bin/ls", "bin/cat", "usr/bin/env", "sbin/nologin"):
        assert files[applet][0].issym() and files[applet][0].linkname == "/bin/busybox"
    assert files["bin/sh"][0].linkname == "/bin/busybox"  # busybox-binsh's, kept
    assert files["lib/libc.musl-x86_64.so.1"][0].linkname == "ld-musl-x86_64.so.1"
    assert not files["bin"][0].issym()  # Alpine does not merge /usr
    assert files["tmp"][0].mode == 0o1777
    assert files["etc/apk/world"][1] == b"alpine-base\nmusl=1.2.5-r0\n"
    assert files["etc/apk/arch"][1] == b"x86_64\n"
    assert "etc/apk/repositories" not in files  # no mirror host in the image
    assert b"nonroot:x:65532" in files["etc/passwd"][1]
    assert files["etc/passwd"][1].startswith(b"root:x:0:0:root:/root:/bin/sh\nnobody")
    assert all(m.mtime <= EPOCH for m, _ in files.values())

    from repro.packages.installed import parse_apk_installed
    from repro.rootfs._apk import q1_sha1

    db_text = files["lib/apk/db/installed"][1].decode()
    db = parse_apk_installed(db_text)
    assert {n: p.version for n, p in db.items()} == versions
    assert {n: str(p["checksum"]) for n, p in zip(versions, locked, strict=True)} == {
        n: stanza_field(db_text, n, "C") for n in versions
    }
    busybox = block(db_text, "busybox")
    assert f"F:bin\nR:busybox\na:0:0:755\nZ:{q1_sha1(FAKE_BUSYBOX)}\n" in busybox
    binsh = block(db_text, "busybox-binsh")
    assert f"R:sh\na:0:0:777\nZ:{q1_sha1(b'/bin/busybox')}\n" in binsh
    assert "p:/bin/sh cmd:sh=1.36.1-r2\n" in binsh and "k:100\n" in binsh
    assert "F:root\nM:0:0:700\n" in block(db_text, "alpine-baselayout-data")
    with tarfile.open(fileobj=io.BytesIO(files["lib/apk/db/scripts.tar"][1])) as scripts:
        assert [m.name for m in scripts.getmembers()] == [
            f"busybox-1.36.1-r2.{stanza_field(db_text, 'busybox', 'C')}.post-install"
        ]


def block(db_text: str, name: str) -> str:
    """The stanza of package `name`, each line ending in a newline."""
    for text in db_text.split("\n\n"):
        if f"\nP:{name}\n" in f"\n{text}\n":
            return text.strip("\n") + "\n"
    raise AssertionError(f"{name} not in the db")


def stanza_field(db_text: str, name: str, letter: str) -> str:
    return next(x[2:] for x in block(db_text, name).splitlines() if x.startswith(f"{letter}:"))


@pytest.mark.parametrize(
    ("branch", "fragment"),
    [
        ("v3.19", "v3.19/main/x86_64/APKINDEX.tar.gz: not signed"),
        ("v3.18", "v3.18/main/x86_64/APKINDEX.tar.gz: bad signature (key repro-test-0001"),
    ],
)
def test_an_unsigned_or_wrongly_signed_index_is_refused(
    tmp_path: Path, mirror: tuple[str, Path, ApkKey], branch: str, fragment: str
) -> None:
    url, _, key = mirror
    d = recipe(tmp_path, key, ["alpine-base"], branch=branch)
    line = one_line_error(repro(tmp_path, url, "lock", str(d)))
    assert fragment in line and "127.0.0.1" not in line
    assert not (d / "repro.lock").exists()


def test_a_tampered_package_is_refused_at_lock_and_at_build(
    tmp_path: Path, mirror: tuple[str, Path, ApkKey]
) -> None:
    url, root, key = mirror
    served = root / BRANCH / REPO / ARCH / "busybox-1.36.1-r2.apk"
    original = served.read_bytes()
    evil = Apk("busybox", "1.36.1-r2", entries=[E("bin/busybox", b"evil", mode=0o755)])
    tampered = apk_bytes(evil, key).data  # signed by the packager, not in the index
    assert len(tampered) < len(original)
    served.write_bytes(tampered + b"\0" * (len(original) - len(tampered)))  # the index's size
    try:
        d = recipe(tmp_path, key, ["alpine-base"])
        line = one_line_error(repro(tmp_path, url, "lock", str(d)))
        assert "busybox 1.36.1-r2: the control part does not match its checksum" in line
        assert not (d / "repro.lock").exists()
    finally:
        served.write_bytes(original)
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0

    # At build time, from a fresh cache: the mirror's file changes after locking.
    shutil.rmtree(tmp_path / "cache")
    served.write_bytes(original[:-4] + b"EVIL")
    try:
        line = one_line_error(repro(tmp_path, url, "build", str(d), "-o", "oci:out"))
    finally:
        served.write_bytes(original)
    assert "apk:busybox 1.36.1-r2" in line and "do not match the locked sha256" in line
    assert not (tmp_path / "out").exists()

    # A lock whose C: is not the file's: the build checks the chain again, unpacks nothing.
    lock = (d / "repro.lock").read_text()
    wrong = lock.replace(
        f'checksum = "{[p for p in pins(d) if p["name"] == "busybox"][0]["checksum"]}"',
        f'checksum = "{[p for p in pins(d) if p["name"] == "musl"][0]["checksum"]}"',
    )
    assert wrong != lock
    (d / "repro.lock").write_text(wrong)
    line = one_line_error(repro(tmp_path, url, "build", str(d), "-o", "oci:out"))
    assert "apk:busybox 1.36.1-r2: the control part does not match its checksum" in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize(
    ("package", "fragment"),
    [
        ("absolute", "apk:absolute 1.0-r0: entry '/etc/evil' is an absolute path"),
        ("escape", "/usr/share/out -> ../../../../.. escapes the root"),
    ],
)
def test_a_path_escaping_the_root_is_refused(
    tmp_path: Path, mirror: tuple[str, Path, ApkKey], package: str, fragment: str
) -> None:
    url, _, key = mirror
    d = recipe(tmp_path, key, [package])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    line = one_line_error(repro(tmp_path, url, "build", str(d), "-o", "oci:out"))
    assert fragment in line
    assert not (tmp_path / "out").exists()


def test_an_apk_set_resolves_against_the_built_image(
    tmp_path: Path, mirror: tuple[str, Path, ApkKey]
) -> None:
    """The resolver's view of the built image (its db read from the layout), as repro
    lock has it from a registry (test_apk_e2e_engine below does that part)."""
    from repro.packages import ResolveError
    from repro.packages.apk import load_apk_index, resolve_apk
    from repro.packages.installed import from_layout
    from repro.packages.trust import ApkTrust

    url, _, key = mirror
    d = recipe(tmp_path, key, ["alpine-base", "musl=1.2.5-r0"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    r = repro(tmp_path, url, "build", str(d), "-o", "oci:base")
    assert r.returncode == 0, r.stderr
    layout = oci.OCILayout(tmp_path / "base")
    db = from_layout(layout, oci.load_image(layout).layers)
    assert db is not None and db.kind == "apk" and db.packages["musl"].version == "1.2.5-r0"
    index = load_apk_index(url, BRANCH, [REPO], ARCH, trust=ApkTrust((str(key.keys_dir),)))

    def got(names: list[str]) -> dict[str, str]:
        closure = resolve_apk(index, names, installed=db.packages, label="apk:app")
        return {p.name: p.version for p in closure.pins}

    assert got(["shtool"]) == {"shtool": "1.0-r0"}  # cmd:sh and so:libc from the base
    assert got(["newtool"]) == {"musl": "1.2.5-r1", "newtool": "1.0-r0"}  # an upgrade
    with pytest.raises(ResolveError, match=r"would downgrade the base: oldtool -> musl<1.2.5-r0"):
        got(["oldtool"])


@pytest.mark.engine
def test_an_application_locks_against_the_pushed_base_and_the_base_runs(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, registry: str, base_image: str
) -> None:
    """With the engine and registry: the base is pushed (repro build --all), an
    application's apk set is locked against it through the registry, and the image runs
    when its busybox is a real one (the dev environment's static busybox, taken from its
    base image; the toy packages around it are still the test's own)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    real = subprocess.run(
        [docker, "run", "--rm", "--network", "none", base_image, "cat", "/bin/busybox"],
        capture_output=True,
        timeout=300,
    )
    if real.returncode != 0 or not real.stdout.startswith(b"\x7fELF"):
        pytest.skip(f"no static busybox to put in the test's package: {real.stderr[-200:]!r}")
    root = tmp_path_factory.mktemp("alpine-real")
    key = ApkKey(tmp_path_factory.mktemp("keys-real"))
    publish(root, key, universe(real.stdout))
    url = _serve(str(root))
    recipe(tmp_path, key, ["alpine-base", "musl=1.2.5-r0"])
    (tmp_path / "recipes" / "repro.toml").write_text(f'registry = "{registry}/repro-test-apk"\n')
    app = tmp_path / "recipes" / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM recipe:alpine\n")
    (app / "recipe.toml").write_text(
        f'source_date_epoch = {EPOCH}\nbases = ["recipe:alpine"]\n'
        f'[packages.apk.tools]\nbranch = "{BRANCH}"\npackages = ["shtool", "newtool"]\n'
        'keys = "../../keys"\n'
    )
    assert repro(tmp_path, url, "lock", "alpine").returncode == 0
    r = repro(tmp_path, url, "build", "--all", "--progress", "plain", "--json")
    assert r.returncode == 2 and "app: no repro.lock: run repro lock" in r.stderr, r.stderr
    r = repro(tmp_path, url, "lock", "app")
    assert r.returncode == 0, r.stderr
    lock = tomllib.loads((app / "repro.lock").read_text())
    tools = lock["packages"]["apk"]["tools"]
    assert {p["name"]: p["version"] for p in tools["package"]} == {
        "musl": "1.2.5-r1",  # upgraded: newtool needs musl>=1.2.5-r1, the base has -r0
        "newtool": "1.0-r0",
        "shtool": "1.0-r0",  # its cmd:sh and so:libc come from the base: not pinned again
    }
    base_entry = lock["bases"]["recipe:alpine"]
    assert tools["base"] == "recipe:alpine"
    assert tools["base_manifest"] in base_entry["platforms"].values()
    assert tools["base_db"].startswith("sha256:")

    (app / "recipe.toml").write_text(
        (app / "recipe.toml").read_text().replace('"shtool", "newtool"', '"oldtool"')
    )
    line = one_line_error(repro(tmp_path, url, "lock", "app"))
    assert "would downgrade the base: oldtool -> musl<1.2.5-r0, but the base has musl" in line

    archive = tmp_path / "alpine.tar"
    oci.write_oci_archive(oci.OCILayout(tmp_path / "out" / "alpine"), archive)
    loaded = subprocess.run([docker, "load", "-i", str(archive)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    image = loaded.stdout.strip().rsplit(" ", 1)[-1]
    run = subprocess.run(
        [docker, "run", "--rm", "--network", "none", image, "/bin/sh", "-c",
         "cat /etc/apk/world; ls -l /bin/ls | sed 's/.* -> //'; id -un; ls /lib/apk/db"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "alpine-base",
        "musl=1.2.5-r0",
        "/bin/busybox",
        "root",
        "installed",
        "scripts.tar",
        "triggers",
    ]


def test_vault_obtain_fetches_an_apk_pin_from_its_mirror(
    tmp_path: Path, mirror: tuple[str, Path, ApkKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vault's obtain() (cache, mirror, vault) knows the apk mirror layout, and
    checks the file against the locked sha256 as for .debs."""
    from repro.errors import DigestMismatch
    from repro.vault import Source, obtain

    url, root, key = mirror
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = (root / BRANCH / REPO / ARCH / "musl-1.2.5-r0.apk").read_bytes()
    pin = {
        "name": "musl",
        "version": "1.2.5-r0",
        "filename": "musl-1.2.5-r0.apk",
        "origin": f"{BRANCH}/{REPO}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    source = Source("apk", {"": url}, architecture=ARCH)
    path = obtain(pin, source)
    assert path.read_bytes() == data and path.name == pin["sha256"]
    wrong = {**pin, "sha256": hashlib.sha256(b"other").hexdigest()}
    with pytest.raises(DigestMismatch, match=r"apk:musl 1.2.5-r0: downloaded bytes do not match"):
        obtain(wrong, source)
