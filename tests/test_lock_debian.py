"""A recipe that installs locked Debian packages builds twice to the same digest.

The Debian 12 base with apt is made here with mmdebstrap from this machine's own apt
sources (SOURCE_DATE_EPOCH set), pushed once to the loopback registry and reused.
Packages are resolved from the mirror's index by `repro lock`, not from apt's lists.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from runner import run_repro

from repro import oci
from repro.registry import Registry

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
EPOCH = 1735689600
BASE_REPO = "repro-test/debian"
BASE_TAG = "12-apt"


def repro(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, timeout=timeout)


def push_rootfs(registry: str, tar_path: Path, repo: str = BASE_REPO, tag: str = BASE_TAG) -> str:
    raw = tar_path.read_bytes()
    diff_id = oci.sha256_digest(raw)
    layer = gzip.compress(raw, compresslevel=6, mtime=0)
    config = oci.canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2025-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/bash"],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    )
    manifest = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": oci.MEDIA_TYPE_OCI_CONFIG,
                "digest": oci.sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": oci.MEDIA_TYPE_OCI_LAYER_GZIP,
                    "digest": oci.sha256_digest(layer),
                    "size": len(layer),
                }
            ],
        }
    )
    target = f"{registry}/{repo}"
    with Registry() as client:
        for blob in (layer, config):
            client.push_blob(target, oci.sha256_digest(blob), len(blob), io.BytesIO(blob))
        return str(client.put_manifest(target, tag, manifest, oci.MEDIA_TYPE_OCI_MANIFEST))


def mmdebstrap_base(registry: str, tmp: Path, repo: str, tag: str, suites: tuple[str, ...]) -> str:
    """`repo:tag` in the loopback registry: pushed once (mmdebstrap --variant=apt from
    this machine's apt sources for `suites`, SOURCE_DATE_EPOCH set), then reused."""
    ref = f"{registry}/{repo}:{tag}"
    with Registry() as client:
        try:
            client.resolve(ref)
            return ref
        except Exception:  # noqa: BLE001 - not there yet: make it
            pass
    assert shutil.which("mmdebstrap"), "mmdebstrap is not installed (scripts/test installs it)"
    from repro.config import mirror_url

    sources = [f"deb {mirror_url('apt', suite=s, components=['main'])} {s} main" for s in suites]
    out = tmp / "rootfs.tar"
    r = subprocess.run(
        [
            "mmdebstrap",
            "--variant=apt",
            "--mode=root",
            "--format=tar",
            "--skip=output/dev",
            "bookworm",
            str(out),
            *sources,
        ],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, f"mmdebstrap failed: {r.stderr[-1000:]}"
    assert push_rootfs(registry, out, repo=repo, tag=tag)
    return ref


@pytest.fixture(scope="session")
def debian_base(registry: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian 12 from bookworm main alone."""
    tmp = tmp_path_factory.mktemp("debian")
    return mmdebstrap_base(registry, tmp, BASE_REPO, BASE_TAG, ("bookworm",))


def test_locked_debian_packages_build_twice_to_the_same_digest(
    tmp_path: Path, debian_base: str
) -> None:
    d = tmp_path / "debtools"
    d.mkdir()
    (d / "recipe.toml").write_text(
        f'source_date_epoch = {EPOCH}\nbases = ["{debian_base}"]\n'
        '[packages.apt.tools]\nsuite = "bookworm"\npackages = ["hello", "libpopt0"]\n'
    )
    (d / "Dockerfile").write_text(
        f"FROM {debian_base}\n"
        "ARG REPRO_APT_TOOLS\n"
        "RUN apt-get update -q \\\n"
        " && apt-get install -y -q --no-install-recommends $REPRO_APT_TOOLS \\\n"
        " && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \\\n"
        "           /var/cache/ldconfig/aux-cache /var/lib/dpkg/*-old /var/cache/debconf/*-old \\\n"
        " && echo $REPRO_APT_TOOLS > /installed\n"
    )
    r = repro("lock", str(d))
    assert r.returncode == 0, r.stderr
    lock = tomllib.loads((d / "repro.lock").read_text())
    pins = {p["name"]: p for p in lock["packages"]["apt"]["tools"]["package"]}
    assert "hello" in pins and "libpopt0" in pins
    assert all(len(p["sha256"]) == 64 and p["filename"].startswith("pool/") for p in pins.values())
    assert "://" not in (d / "repro.lock").read_text()  # no mirror host in the lock

    digests = []
    for n in (1, 2):
        r = repro(
            "build",
            str(d),
            "--no-cache",
            # BuildKit's own export: this is about the lock and the build, not about
            # repro's normalisation (tested on its own).
            "--normalise",
            "off",
            "-o",
            f"oci:{tmp_path / f'o{n}'}",
            "--json",
            "--progress",
            "plain",
        )
        if "failed to create endpoint" in r.stderr and "network bridge" in r.stderr:
            pytest.skip("the engine's bridge network is broken here (docker0 is missing)")
        assert r.returncode == 0, r.stderr[-3000:]
        digests.append(json.loads(r.stdout)[0]["digest"])
    assert digests[0] == digests[1]


def test_vanished_version_is_reported_as_such(tmp_path: Path, debian_base: str) -> None:
    d = tmp_path / "gone"
    d.mkdir()
    (d / "recipe.toml").write_text(
        f'source_date_epoch = {EPOCH}\nbases = ["{debian_base}"]\n'
        '[packages.apt.tools]\nsuite = "bookworm"\npackages = ["hello"]\n'
    )
    (d / "Dockerfile").write_text(
        f"FROM {debian_base}\nARG REPRO_APT_TOOLS\n"
        "RUN apt-get update -q && apt-get install -y -q $REPRO_APT_TOOLS\n"
    )
    assert repro("lock", str(d)).returncode == 0
    text = (d / "repro.lock").read_text()
    lock = tomllib.loads(text)
    version = next(
        p["version"] for p in lock["packages"]["apt"]["tools"]["package"] if p["name"] == "hello"
    )
    (d / "repro.lock").write_text(text.replace(f'"{version}"', '"2.10-0.gone"'))
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}", "--progress", "quiet")
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "apt:hello 2.10-0.gone is no longer in bookworm/main; run repro lock --update" in last
    assert "repro vault push" in last
