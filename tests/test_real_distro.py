"""Pins that bind on a real Debian 12 base: one with bookworm-updates and -security.

The base is made the way most users get theirs: `mmdebstrap --variant=apt` with the
machine's apt sources for bookworm, bookworm-updates and bookworm-security, so it
carries packages newer than bookworm itself. Locks resolved against the suite alone
failed to install on it (apt refused downgrades of zlib1g/libzstd1, and perl's
exact perl-base). Here four recipes that install curl, git, openssh-server and
python3 the documented way lock, build and verify identical; a base with a newer
Essential package than the suites offer is a chain error at lock time; and a
Dockerfile that installs Recommends, or never uses its set's build arg, fails the
build naming the packages.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest
from runner import run_repro
from test_lock_debian import EPOCH

from repro import oci
from repro.registry import Registry

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
REPO = "repro-test/debian"
TAG = "12-updated"
SUITES = ("bookworm", "bookworm-updates", "bookworm-security")

PATTERN = (
    "ARG REPRO_APT_TOOLS\n"
    "RUN apt-get update -q \\\n"
    " && apt-get install -y -q --no-install-recommends $REPRO_APT_TOOLS \\\n"
    " && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \\\n"
    "           /var/cache/ldconfig/aux-cache /var/lib/dpkg/*-old /var/cache/debconf/*-old"
    "{extra}\n"
)


def repro(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, timeout=timeout)


def make(tmp_path: Path, name: str, base: str, toml_extra: str, dockerfile: str) -> Path:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(
        f'source_date_epoch = {EPOCH}\nbases = ["{base}"]\n' + toml_extra
    )
    (d / "Dockerfile").write_text(f"FROM {base}\n" + dockerfile)
    return d


def apt_set(packages: list[str], release: str = "bookworm") -> str:
    return f'[packages.apt.tools]\nrelease = "{release}"\npackages = {json.dumps(packages)}\n'


def test_curl_git_ssh_python_lock_build_and_verify_identical(
    tmp_path: Path, updated_base: str
) -> None:
    dirs = []
    # openssh-server's postinst makes host keys (random, and named after the build
    # host): as real sshd images do, the recipe removes them for the first start to
    # make. `repro verify` names both causes when it does not.
    no_keys = " /etc/ssh/ssh_host_*"
    for name, pkgs, extra in (
        ("curl", ["curl", "ca-certificates"], ""),
        ("git", ["git"], ""),
        ("sshd", ["openssh-server"], no_keys),
        ("python", ["python3"], ""),
    ):
        d = make(
            tmp_path / "recipes", name, updated_base, apt_set(pkgs), PATTERN.format(extra=extra)
        )
        dirs.append(d)
    r = repro("lock", *map(str, dirs))
    assert r.returncode == 0, r.stderr[-3000:]
    for d in dirs:
        lock = tomllib.loads((d / "repro.lock").read_text())
        entry = lock["packages"]["apt"]["tools"]
        assert entry["suites"] == [s for s in SUITES]  # the machine configures all three
        assert entry["base"] == updated_base and entry["base_db"].startswith("sha256:")
        pins = {p["name"] for p in entry["package"]}
        # What the base has is not pinned again (apt is in the base).
        assert "apt" not in pins and "libc6" not in pins
    r = repro("verify", *map(str, dirs), "--json", timeout=2400)
    results = json.loads(r.stdout) if r.stdout.strip() else []
    summary = [(x.get("recipe"), x.get("verdict"), x.get("causes")) for x in results]
    assert r.returncode == 0, (summary, r.stderr[-3000:])
    assert [x["verdict"] for x in results] == ["identical"] * 4, summary


def test_a_base_with_a_newer_essential_package_is_a_chain_error_at_lock_time(
    tmp_path: Path, updated_base: str, registry: str
) -> None:
    # A base one step ahead of the archive: its perl-base is newer than any suite has
    # (as a base built from bookworm-security is, for a lock made from bookworm alone).
    # perl itself is not in it, so git's closure needs perl, which needs the suite's
    # exact perl-base.
    bumped = _bump_package(
        registry,
        updated_base,
        "perl-base",
        "+deb12u99",
        drop=("perl", "libperl5.36", "perl-modules-5.36"),
    )
    d = make(tmp_path, "gitold", bumped, apt_set(["git"]), PATTERN.format(extra=""))
    r = repro("lock", str(d))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "would downgrade the base" in line and "perl-base" in line, line
    assert "+deb12u99" in line, line
    assert not (d / "repro.lock").exists()


def test_recommends_and_an_unused_set_fail_the_build_naming_packages(
    tmp_path: Path, updated_base: str
) -> None:
    recommends = make(
        tmp_path,
        "rec",
        updated_base,
        apt_set(["curl"]),
        "ARG REPRO_APT_TOOLS\nRUN apt-get update -q && apt-get install -y -q $REPRO_APT_TOOLS\n",
    )
    unused = make(
        tmp_path, "unused", updated_base, apt_set(["hello"]), "RUN echo no packages > /x\n"
    )
    assert repro("lock", str(recommends), str(unused)).returncode == 0
    out = tmp_path / "out"
    r = repro("build", str(recommends), "-o", f"oci:{out}", "--progress", "quiet")
    assert r.returncode == 1, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "installed package(s) the lock does not pin" in last, last
    assert "ca-certificates" in last and "--no-install-recommends" in last, last
    assert not out.exists()  # nothing written
    # The same Dockerfile passes once the set asks for Recommends in its lock.
    (recommends / "recipe.toml").write_text(
        (recommends / "recipe.toml").read_text() + "recommends = true\n"
    )
    assert repro("lock", str(recommends)).returncode == 0
    r = repro("build", str(recommends), "-o", f"oci:{out}", "--progress", "quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.rmtree(out)
    r = repro("build", str(unused), "-o", f"oci:{out}", "--progress", "quiet")
    assert r.returncode == 1, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "package set apt.tools" in last and "hello" in last, last
    assert "ARG REPRO_APT_TOOLS" in last, last
    r = repro(
        "build",
        str(unused),
        "-o",
        f"oci:{out}",
        "--allow-unpinned",
        "--json",
        "--progress",
        "quiet",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    packages = json.loads(r.stdout)[0]["packages"]
    assert packages["checked"] and "apt.tools" in packages["not_installed"]


def _bump_package(
    registry: str, base: str, name: str, suffix: str, drop: tuple[str, ...] = ()
) -> str:
    """Push a copy of `base` with one more layer whose dpkg status gives `name` a
    higher version (and has no `drop` packages), and return its reference."""
    from repro.packages.installed import DPKG_STATUS

    with Registry() as client:
        data, _mt, digest = client.get_manifest(base)
        manifest = json.loads(data)
        image = base.rsplit(":", 1)[0]
        config_buf = io.BytesIO()
        client.get_blob(image, manifest["config"]["digest"], config_buf)
        config = json.loads(config_buf.getvalue())
        layer_buf = io.BytesIO()
        client.get_blob(image, manifest["layers"][-1]["digest"], layer_buf)
        import gzip

        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_buf.getvalue()))) as tar:
            member = tar.extractfile(f"./{DPKG_STATUS}") or tar.extractfile(DPKG_STATUS)
            assert member is not None
            status = member.read().decode()
        stanzas = status.split("\n\n")
        for i, stanza in enumerate(stanzas):
            if stanza.startswith(f"Package: {name}\n"):
                lines = [
                    line + suffix if line.startswith("Version: ") else line
                    for line in stanza.split("\n")
                ]
                stanzas[i] = "\n".join(lines)
        stanzas = [x for x in stanzas if not any(x.startswith(f"Package: {d}\n") for d in drop)]
        new_status = "\n\n".join(stanzas).encode()
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo(DPKG_STATUS)
            info.size, info.mtime = len(new_status), EPOCH
            tar.addfile(info, io.BytesIO(new_status))
        layer = gzip.compress(raw.getvalue(), mtime=0)
        config["rootfs"]["diff_ids"].append(oci.sha256_digest(raw.getvalue()))
        config_bytes = oci.canonical_json(config)
        manifest["config"] = {
            "mediaType": oci.MEDIA_TYPE_OCI_CONFIG,
            "digest": oci.sha256_digest(config_bytes),
            "size": len(config_bytes),
        }
        manifest["layers"].append(
            {
                "mediaType": oci.MEDIA_TYPE_OCI_LAYER_GZIP,
                "digest": oci.sha256_digest(layer),
                "size": len(layer),
            }
        )
        repo = f"{registry}/{REPO}"
        for blob in (layer, config_bytes):
            client.push_blob(repo, oci.sha256_digest(blob), len(blob), io.BytesIO(blob))
        tag = f"{TAG}-{name}-bumped"
        client.put_manifest(repo, tag, oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)
        assert digest
        return f"{repo}:{tag}"


def test_a_base_without_a_package_database_is_one_line_unless_assumed(
    tmp_path: Path, base_image: str
) -> None:
    tag = base_image.split("@")[0] + ":db-test"
    from repro.registry import Registry

    with Registry() as client:
        data, media_type, _ = client.get_manifest(base_image)
        client.put_manifest(tag.rsplit(":", 1)[0], "db-test", data, media_type)
    d = make(tmp_path, "nodb", tag, apt_set(["hello"]), "RUN true\n")
    r = repro("lock", str(d))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no dpkg package database" in lines[0], r.stderr
    assert "assume_installed" in lines[0]
    (d / "recipe.toml").write_text(
        (d / "recipe.toml").read_text() + 'assume_installed = ["libc6"]\n'
    )
    r = repro("lock", str(d))
    assert r.returncode == 0, r.stderr
    lock = tomllib.loads((d / "repro.lock").read_text())
    assert [p["name"] for p in lock["packages"]["apt"]["tools"]["package"]] == ["hello"]
