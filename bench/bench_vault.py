"""`repro vault push` against `skopeo copy` of the same files, on the loopback registry.

    python bench/bench_vault.py [--packages "python3 git openssh-server ..."] [--runs 3]

Locks a package set (against the Debian 12 base with updates and security that
tests/test_real_distro.py pushes), fetches its packages into the local cache, then,
per run, into a fresh vault namespace:

- baseline: an OCI layout holding the same files as layers of one manifest, pushed
  with `skopeo copy oci:DIR docker://…` (Debian's skopeo);
- repro: `repro vault push` of the recipe;
- again: a second `repro vault push` (nothing to upload; target <= 1 s).

Targets (issue "real distro images"): throughput >= 0.8x skopeo's; second push <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "python3 git openssh-server curl ca-certificates build-essential vim-tiny less"


def repro(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "repro", *args], cwd=cwd, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"repro {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r


def main() -> None:
    registry = os.environ.get("REPRO_REGISTRY", "127.0.0.1:5000")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", default=DEFAULT)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("skopeo"):
        raise SystemExit("skopeo is not installed (apt-get install skopeo)")
    work = Path(tempfile.mkdtemp(prefix="bench-vault-"))
    base = f"{registry}/repro-test/debian:12-updated"
    recipe = work / "recipes" / "big"
    recipe.mkdir(parents=True)
    (recipe / "recipe.toml").write_text(
        f'source_date_epoch = 1735689600\nbases = ["{base}"]\n[packages.apt.big]\n'
        f'release = "bookworm"\npackages = {json.dumps(args.packages.split())}\n'
    )
    (recipe / "Dockerfile").write_text(f"FROM {base}\n")
    recipes = work / "recipes"
    (recipes / "repro.toml").write_text(f'registry = "{registry}/bench"\n')
    repro("lock", "--recipes-dir", str(recipes), "big")
    lock = (recipe / "repro.lock").read_text()
    import tomllib

    pins = tomllib.loads(lock)["packages"]["apt"]["big"]["package"]
    # Fill the cache (and time nothing of it): one push to a throwaway vault.
    (recipes / "repro.toml").write_text(
        f'registry = "{registry}/bench"\nvault = "{registry}/bench-warm-{uuid.uuid4().hex[:6]}"\n'
    )
    repro("vault", "push", "--recipes-dir", str(recipes), "big")
    from repro import oci
    from repro.packages.download import cached_path

    layout = oci.OCILayout.create(work / "layout")
    layers = []
    total = 0
    for pin in pins:
        path = cached_path(pin["sha256"])
        desc = layout.write_blob(path.read_bytes(), "application/octet-stream")
        layers.append(desc.to_json())
        total += desc.size
    config = layout.write_blob(b"{}", "application/vnd.oci.empty.v1+json")
    manifest = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
            "config": config.to_json(),
            "layers": layers,
        }
    )
    layout.write_index([layout.write_blob(manifest, oci.MEDIA_TYPE_OCI_MANIFEST)])
    print(f"{len(pins)} packages, {total / 1e6:.1f} MB")
    skopeo_t, repro_t, again_t = [], [], []
    for _ in range(args.runs):
        ns = uuid.uuid4().hex[:8]
        t = time.perf_counter()
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{work / 'layout'}",
                f"docker://{registry}/bench-skopeo-{ns}:v",
            ],
            check=True,
        )
        skopeo_t.append(time.perf_counter() - t)
        (recipes / "repro.toml").write_text(
            f'registry = "{registry}/bench"\nvault = "{registry}/bench-vault-{ns}"\n'
        )
        t = time.perf_counter()
        repro("vault", "push", "--recipes-dir", str(recipes), "big")
        repro_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = repro("vault", "push", "--recipes-dir", str(recipes), "big", "--json")
        again_t.append(time.perf_counter() - t)
        assert json.loads(out.stdout)[0]["uploaded"] == 0
    s, r, a = (statistics.median(x) for x in (skopeo_t, repro_t, again_t))
    print(f"skopeo copy (baseline): {s:.2f} s  {total / 1e6 / s:.0f} MB/s")
    print(f"repro vault push:       {r:.2f} s  {total / 1e6 / r:.0f} MB/s  ({s / r:.2f}x skopeo)")
    print(f"second push:            {a:.2f} s (nothing uploaded)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
