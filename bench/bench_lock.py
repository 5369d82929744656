#!/usr/bin/env python3
"""Benchmarks of `repro lock`: index parsing, closure resolution, concurrent locking.

    .venv/bin/python bench/bench_lock.py [--repeat N] [--json FILE] [--skip-registry]

- `deb-parse`: parsing the full Debian 12 `main` Packages index (about 63,000
  packages, 50 MB), fetched from the mirror this machine's apt sources name (cached
  after the first run). Target: >= 50 MB/s.
- `closure-20`: the closure of 20 common packages with the index already parsed,
  against `apt-cache depends --recurse` on the same names in the same run (needs
  `apt-get update` once). Target: no slower than apt-cache.
- `lock-20` (needs the dev-env registry, REPRO_REGISTRY): locking 20 recipes with
  distinct bases on the loopback registry, against locking one. Target: <= 2x.

Medians of --repeat runs (default 3). Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import io
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
sys.path.insert(0, str(ROOT))

NAMES = [
    "curl", "git", "python3", "vim", "openssh-client", "ca-certificates", "make", "gcc",
    "wget", "less", "rsync", "gnupg", "zstd", "xz-utils", "jq", "file", "patch",
    "procps", "iproute2", "sudo",
]  # fmt: skip


def median_time(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_debian(repeat: int) -> dict[str, object]:
    import httpx

    from repro.config import mirror_url
    from repro.packages.deb import DebIndex, resolve
    from repro.packages.fetch import fetch_packages_text

    mirror = mirror_url("apt", suite="bookworm", components=["main"])
    with httpx.Client(timeout=300) as client:
        text = fetch_packages_text(client, mirror, "bookworm", "main", "amd64")
    size_mb = len(text.encode()) / 1e6

    def parse() -> DebIndex:
        index = DebIndex("amd64")
        index.add(text, "bookworm/main")
        return index

    parse_s = median_time(parse, repeat)
    index = parse()
    index.providers("x")  # build the Provides table once, as a cached index would
    closure_s = median_time(lambda: resolve(index, NAMES), repeat)
    closure = resolve(index, NAMES)
    apt_s = None
    if shutil.which("apt-cache"):
        cmd = [
            "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
            "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *NAMES,
        ]  # fmt: skip
        apt_s = median_time(lambda: subprocess.run(cmd, capture_output=True, check=True), repeat)
    return {
        "deb-parse": {
            "mb": round(size_mb, 1),
            "seconds": round(parse_s, 3),
            "mb_per_s": round(size_mb / parse_s, 1),
            "packages": len(index.packages),
            "target": ">= 50 MB/s",
        },
        "closure-20": {
            "seconds": round(closure_s, 3),
            "packages": len(closure.pins),
            "apt_cache_seconds": round(apt_s, 3) if apt_s else None,
            "ratio": round(closure_s / apt_s, 3) if apt_s else None,
            "target": "<= 1.0x apt-cache depends --recurse",
        },
    }


def bench_lock(repeat: int, registry: str) -> dict[str, object]:
    from repro import oci
    from repro.config import RepoConfig
    from repro.lock import Resolver, lock_all
    from repro.recipe import load_recipe
    from repro.registry import Registry

    prefix = f"repro-bench/lock-{uuid.uuid4().hex[:8]}"
    refs = []
    with Registry() as client:
        for i in range(20):
            blob = f'{{"architecture":"amd64","os":"linux","n":{i}}}'.encode()
            repo = f"{registry}/{prefix}-{i}"
            client.push_blob(repo, oci.sha256_digest(blob), len(blob), io.BytesIO(blob))
            manifest = oci.canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
                    "config": {
                        "mediaType": oci.MEDIA_TYPE_OCI_CONFIG,
                        "digest": oci.sha256_digest(blob),
                        "size": len(blob),
                    },
                    "layers": [],
                }
            )
            client.put_manifest(repo, "v1", manifest, oci.MEDIA_TYPE_OCI_MANIFEST)
            refs.append(f"{repo}:v1")
    with tempfile.TemporaryDirectory() as tmp:
        recipes = []
        for i, ref in enumerate(refs):
            d = Path(tmp) / "recipes" / f"r{i:02d}"
            d.mkdir(parents=True)
            (d / "recipe.toml").write_text(f'source_date_epoch = 1\nbases = ["{ref}"]\n')
            (d / "Dockerfile").write_text(f"FROM {ref}\n")
            recipes.append(load_recipe(d))
        everything = {r.name: r for r in recipes}

        def run(selection: list) -> None:  # type: ignore[type-arg]
            for r in selection:
                r.lock_file.unlink(missing_ok=True)
            resolver = Resolver(RepoConfig(Path(tmp)))
            lock_all(selection, everything, resolver=resolver)
            resolver.client().close()

        one = median_time(lambda: run(recipes[:1]), repeat)
        twenty = median_time(lambda: run(recipes), repeat)
    return {
        "lock-20": {
            "one_seconds": round(one, 3),
            "twenty_seconds": round(twenty, 3),
            "ratio": round(twenty / one, 2),
            "target": "<= 2x",
        }
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-registry", action="store_true")
    args = parser.parse_args()
    results = bench_debian(args.repeat)
    registry = os.environ.get("REPRO_REGISTRY", "")
    if registry and not args.skip_registry:
        results.update(bench_lock(args.repeat, registry))
    for name, values in results.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))  # type: ignore[attr-defined]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
