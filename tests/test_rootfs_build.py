"""``repro lock`` and ``repro build`` of [rootfs] recipes against a loopback mirror of
test packages: same digest twice, the outputs, and every bad input ending in exit 2,
one line, nothing half-written."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import lzma
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from debs import EPOCH, E, Pkg, deb_bytes, dirs
from runner import run_repro
from signing import GpgKey, release_text

from repro import oci

ROOT = Path(__file__).resolve().parent.parent

UNIVERSE = [
    Pkg(
        "core",
        "1.0",
        fields={"Essential": "yes", "Priority": "required", "Depends": "libcore (>= 1)"},
        entries=[
            *dirs("./", "./bin", "./etc", "./usr", "./usr/share", "./usr/share/doc/core"),
            E("./tmp/", kind="dir", mode=0o1777),
            E("./bin/core", b"#!/bin/sh\necho core\n", mode=0o755),
            E("./etc/core.conf", b"core=1\n"),
            E("./usr/share/doc/core/copyright", b"public domain\n"),
        ],
        scripts={"conffiles": b"/etc/core.conf\n"},
    ),
    Pkg(
        "libcore",
        "1.1",
        fields={"Multi-Arch": "same", "Priority": "optional"},
        entries=[
            *dirs("./", "./lib", "./lib/x86_64-linux-gnu"),
            E("./lib/x86_64-linux-gnu/libcore.so.1", b"\x7fELF core"),
        ],
    ),
    Pkg(
        "tool",
        "2.0",
        fields={"Depends": "core"},
        entries=[*dirs("./", "./usr", "./usr/bin"), E("./usr/bin/tool", b"tool", mode=0o755)],
    ),
    Pkg("usr-is-merged", "37", fields={"Priority": "optional"}, entries=[*dirs("./")]),
    Pkg(
        "clash",
        "1.0",
        entries=[
            *dirs("./", "./usr", "./usr/bin"),
            E("./usr/bin/core", b"#!/bin/sh\necho clash\n"),
        ],
    ),
    Pkg(
        "escape",
        "1.0",
        entries=[
            *dirs("./", "./usr", "./usr/share"),
            E("./usr/share/out", link="../../../../.."),
            E("./usr/share/out/etc/evil", b"x"),
        ],
    ),
    Pkg(
        "scripted",
        "1.0",
        entries=[*dirs("./", "./etc")],
        scripts={"postinst": b"#!/bin/sh\necho configured > /etc/scripted\n"},
    ),
]


def _packages_file(root: Path) -> bytes:
    stanzas = []
    for pkg in UNIVERSE:
        data = deb_bytes(pkg)
        rel = f"pool/main/{pkg.name[0]}/{pkg.name}/{pkg.name}_{pkg.version}_amd64.deb"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        fields = "".join(f"{k}: {v}\n" for k, v in pkg.fields.items())
        stanzas.append(
            f"Package: {pkg.name}\nVersion: {pkg.version}\nArchitecture: amd64\n{fields}"
            f"Filename: {rel}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    return "\n".join(stanzas).encode()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


_KEYRING: list[str] = []  # the fixture mirror's keyring, set by `mirror`


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mirror")
    index = root / "dists" / "test" / "main" / "binary-amd64"
    index.mkdir(parents=True)
    packed = lzma.compress(_packages_file(root))
    (index / "Packages.xz").write_bytes(packed)
    # Signed by a throwaway key that the recipes name as their keyring (tests/signing.py).
    key = GpgKey(tmp_path_factory.mktemp("key"), "rootfs fixture")
    _KEYRING[:] = [str(key.keyring)]
    (root / "dists" / "test" / "InRelease").write_bytes(
        key.clearsign(release_text("test", {"main/binary-amd64/Packages.xz": packed}))
    )
    key.close()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def recipe(tmp_path: Path, packages: list[str], rootfs: str = "", name: str = "mini") -> Path:
    d = tmp_path / "recipes" / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(
        f"source_date_epoch = {EPOCH}\n"
        f'[rootfs]\npackages = "base"\ncmd = ["/bin/core"]\n{rootfs}\n'
        f'[packages.apt.base]\nsuite = "test"\npackages = {json.dumps(packages)}\n'
        f"keyring = {json.dumps(_KEYRING[0])}\n"
        '[labels]\n"org.example.kind" = "test"\n'
    )
    return d


def repro(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REPRO_MIRROR_APT": url,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    return run_repro(*args, cwd=tmp_path, env=env, timeout=300)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("repro: error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


def layer_members(layout: Path) -> dict[str, tarfile.TarInfo]:
    image = oci.load_image(oci.OCILayout(layout))
    (layer,) = image.layers
    with tarfile.open(oci.OCILayout(layout).blob_path(layer.digest)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def read_member(layout: Path, name: str) -> bytes:
    image = oci.load_image(oci.OCILayout(layout))
    with tarfile.open(oci.OCILayout(layout).blob_path(image.layers[0].digest)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_lock_and_build_twice_to_the_same_digest(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["tool"])
    r = repro(tmp_path, url, "lock", str(d))
    assert r.returncode == 0, r.stderr
    lock = (d / "repro.lock").read_text()
    assert "://" not in lock and "127.0.0.1" not in lock
    names = [line.split('"')[1] for line in lock.splitlines() if line.startswith("name = ")]
    assert names == ["core", "libcore", "tool", "usr-is-merged"]  # Essential core explicit

    digests = []
    for out in ("oci:o1", "oci:o2", "oci-archive:o3.tar"):
        r = repro(tmp_path, url, "build", str(d), "-o", out, "--json")
        assert r.returncode == 0, r.stderr
        digests.append(json.loads(r.stdout)[0]["digest"])
    assert digests[0] == digests[1] == digests[2]
    layout = oci.OCILayout(tmp_path / "o1")
    layout.verify(full=True)
    image = oci.load_image(layout)
    assert image.descriptor.digest == digests[0]
    config = image.config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["created"] == "2025-01-01T00:00:00Z"
    assert config["config"]["Cmd"] == ["/bin/core"]
    assert config["config"]["Env"][0].startswith("PATH=/usr/local/sbin:")
    assert config["config"]["Labels"] == {"org.example.kind": "test"}
    assert len(image.layers) == 1 and len(config["history"]) == 1

    members = layer_members(tmp_path / "o1")
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["usr/bin/core"].mode == 0o755
    assert members["usr/lib/x86_64-linux-gnu/libcore.so.1"].isfile()
    assert members["tmp"].mode == 0o1777
    assert all(m.mtime <= EPOCH for m in members.values())
    status = read_member(tmp_path / "o1", "var/lib/dpkg/status").decode()
    assert status.count("Status: install ok installed") == 4
    assert b"nonroot:" in read_member(tmp_path / "o1", "etc/passwd")
    # the same image, as an archive
    archive = tmp_path / "o3"
    oci.extract_oci_archive(tmp_path / "o3.tar", archive)
    assert oci.OCILayout(archive).top_descriptor().digest == digests[0]


def test_an_unchanged_rootfs_is_not_unpacked_again(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    """A rootfs recipe has no BuildKit cache: `repro build` leaves the image that the
    same inputs made at the same output as it is ('unchanged'), unless --no-cache;
    another output, or an image damaged since, is built."""
    url, _ = mirror
    d = recipe(tmp_path, ["tool"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0

    def build(*args: str) -> tuple[str, str]:
        r = repro(tmp_path, url, "build", str(d), "--progress", "quiet", *args)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip(), r.stderr

    first, _ = build("-o", "oci:o1")
    digest = first.split()[1]
    index = tmp_path / "o1" / "index.json"
    before = index.stat().st_mtime_ns
    again, _ = build("-o", "oci:o1")
    assert again.endswith("(unchanged)") and again.split()[1] == digest, again
    assert index.stat().st_mtime_ns == before, "nothing was written"
    forced, _ = build("-o", "oci:o1", "--no-cache")
    assert not forced.endswith("(unchanged)") and forced.split()[1] == digest
    elsewhere, _ = build("-o", "oci:o2")
    assert not elsewhere.endswith("(unchanged)") and elsewhere.split()[1] == digest
    # damage the layer blob: the next build notices and builds it again
    image = oci.load_image(oci.OCILayout(tmp_path / "o2"))
    blob = oci.OCILayout(tmp_path / "o2").blob_path(image.layers[0].digest)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    rebuilt, warnings = build("-o", "oci:o2")
    assert not rebuilt.endswith("(unchanged)") and rebuilt.split()[1] == digest
    assert "no longer holds the image built there" in warnings, warnings
    oci.OCILayout(tmp_path / "o2").verify(full=True)


def test_a_conflict_fails_naming_both_unless_preferred(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["tool", "clash"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    r = repro(tmp_path, url, "build", str(d), "-o", "oci:out")
    line = one_line_error(r)
    assert "/usr/bin/core is shipped by both clash and core" in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []

    text = (d / "recipe.toml").read_text().replace("[rootfs]\n", '[rootfs]\nprefer = ["clash"]\n')
    (d / "recipe.toml").write_text(text)
    r = repro(tmp_path, url, "build", str(d), "-o", "oci:out")  # prefer leaves the lock current
    assert r.returncode == 0, r.stderr
    assert b"echo clash" in read_member(tmp_path / "out", "usr/bin/core")


def test_a_package_that_does_not_match_its_checksum_is_not_used(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, root = mirror
    d = recipe(tmp_path, ["tool"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    served = root / "pool/main/t/tool/tool_2.0_amd64.deb"
    original = served.read_bytes()
    served.write_bytes(original[:-4] + b"EVIL")  # same size, other bytes
    try:
        r = repro(tmp_path, url, "build", str(d), "-o", "oci:out")
    finally:
        served.write_bytes(original)
    line = one_line_error(r)
    assert "apt:tool 2.0" in line and "do not match the locked sha256" in line
    assert not (tmp_path / "out").exists()
    pool = tmp_path / "cache" / "repro" / "packages" / "pool"
    for cached in pool.iterdir():  # nothing wrong or partial in the cache
        assert cached.name == hashlib.sha256(cached.read_bytes()).hexdigest()


def test_a_mirror_that_is_down_names_the_path_not_the_host(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["tool"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = repro(tmp_path, dead, "build", str(d), "-o", "oci:out")
    line = one_line_error(r)
    assert "mirror unreachable" in line and "/pool/main/" in line
    assert "127.0.0.1" not in line
    assert not (tmp_path / "out").exists()


def test_a_link_out_of_the_root_is_refused(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["escape"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    line = one_line_error(repro(tmp_path, url, "build", str(d), "-o", "oci:out"))
    assert "/usr/share/out -> ../../../../.. escapes the root" in line
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_not_an_earlier_output_is_not_replaced(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["tool"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    line = one_line_error(repro(tmp_path, url, "build", str(d), "-o", f"oci:{mine}"))
    assert "is not an OCI layout that repro wrote" in line
    assert (mine / "notes.txt").read_text() == "precious"


def test_a_stale_lock_is_refused(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["tool"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    text = (d / "recipe.toml").read_text().replace("[rootfs]\n", '[rootfs]\nvariant = "custom"\n')
    (d / "recipe.toml").write_text(text)
    line = one_line_error(repro(tmp_path, url, "build", str(d), "-o", "oci:out"))
    assert "repro.lock is stale" in line


def test_scripts_repro_does_not_know_are_reported(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, _ = mirror
    d = recipe(tmp_path, ["scripted"])
    assert repro(tmp_path, url, "lock", str(d)).returncode == 0
    r = repro(tmp_path, url, "build", str(d), "-o", "oci:out")
    assert r.returncode == 0, r.stderr
    assert "repro: warning: mini: scripted: maintainer scripts not run" in r.stderr
    assert "scripted" in read_member(tmp_path / "out", "var/lib/dpkg/status").decode()
