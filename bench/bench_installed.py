"""How long `repro lock` takes to read a base image's package database.

    python bench/bench_installed.py [--image REF] [--runs 5]

Target (issue "real distro images"): <= 0.5 s for a Debian base of about 100 MB,
cached after the first time. The baseline, in the same run, is pulling the same
layers through the same registry client into a temporary file (what any reader must
at least do), so the ratio says what reading the tar and parsing the status adds.
The default image is the Debian 12 base with updates and security that
tests/test_real_distro.py pushes to the dev registry (run that test once first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from repro.packages import installed
from repro.registry import Registry


def main() -> None:
    registry = os.environ.get("REPRO_REGISTRY", "127.0.0.1:5000")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default=f"{registry}/repro-test/debian:12-updated")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="bench-installed-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)
    image = args.image.rsplit(":", 1)[0]
    with Registry() as client:
        data, _mt, digest = client.get_manifest(args.image)
        layers = json.loads(data)["layers"]
        size = sum(layer["size"] for layer in layers)
        pull, cold, warm = [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            for layer in layers:
                with tempfile.TemporaryFile() as tmp:
                    client.get_blob(image, layer["digest"], tmp, layer["size"])
            pull.append(time.perf_counter() - t)
            shutil.rmtree(cache / "repro", ignore_errors=True)
            t = time.perf_counter()
            db = installed.from_registry(client, image, digest)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            installed.from_registry(client, image, digest)
            warm.append(time.perf_counter() - t)
    shutil.rmtree(cache, ignore_errors=True)
    assert db is not None
    p, c, w = (statistics.median(x) for x in (pull, cold, warm))
    print(f"image {args.image}: {len(layers)} layer(s), {size / 1e6:.1f} MB compressed")
    print(f"packages in the database: {len(db.packages)}")
    print(f"pull the layers (baseline): {p:.3f} s")
    print(f"read the database, cold:    {c:.3f} s  ({c / p:.2f}x the pull)")
    print(f"read the database, cached:  {w * 1000:.1f} ms")


if __name__ == "__main__":
    main()
