#!/usr/bin/env python3
"""Before/after: the same operations timed on two revisions of repro, in one run.

    .venv/bin/python bench/bench_revisions.py [--before REV] [--size MB] [--repeat N]
                                              [--no-build] [--json FILE]

For restructurings that must not slow anything down. REV (default: the commit before
the `repro/oci` package, 8452f61) is checked out into a temporary git worktree; each
case runs in a fresh process with PYTHONPATH set to one revision or the other,
alternating before/after so that load on the machine falls on both alike:

Each timed run gets an empty layer cache (`REPRO_CACHE_DIR`), so the work is timed.

- `normalise`: `normalise_layout` of a generated image (one gzip layer of --size MB,
  unsorted, current mtimes, half random bytes and half text).
- `diff`: `repro diff` of that image against a copy with one file changed.
- `build` (needs the dev engine; --no-build skips it): `repro build hello --no-cache`.

One warm-up run of each side first (bytecode compiled, file caches filled), then
medians of --repeat runs; ratio = after / before (1.00 is no change). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "8452f61"


def make_image(path: Path, size_mb: int, changed: bool) -> None:
    """An OCI layout with one gzip layer of files; `changed` alters one file."""
    sys.path.insert(0, str(ROOT))
    from repro import oci

    rng = random.Random(7)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        total, i = 0, 0
        while total < size_mb * 1024 * 1024:
            size = rng.randint(4096, 4 * 1024 * 1024)
            data = (
                rng.randbytes(size) if i % 2 else (rng.randbytes(size // 2).hex()[:size]).encode()
            )
            if changed and i == 3:
                data = data[:-1] + b"!"
            info = tarfile.TarInfo(f"data/{rng.randint(0, 1 << 30):08x}-{i}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
            total += size
            i += 1
    tar_bytes = raw.getvalue()
    layout = oci.OCILayout.create(path)
    layer = layout.write_blob(gzip.compress(tar_bytes, 6), oci.MEDIA_TYPE_OCI_LAYER_GZIP)
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2025-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2025-01-01T00:00:00Z", "created_by": "bench"}],
    }
    config_d = layout.write_blob(oci.canonical_json(config), oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config_d.to_json(),
        "layers": [layer.to_json()],
    }
    layout.write_index(
        [layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)]
    )


NORMALISE = """
import sys, time
from repro.normalise import NormaliseOptions, normalise_layout
t = time.perf_counter()
normalise_layout(sys.argv[1], sys.argv[2], NormaliseOptions(epoch=1735689600))
print(time.perf_counter() - t)
"""


def timed(code_dir: Path, argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        argv, env={**env, "PYTHONPATH": str(code_dir)}, capture_output=True, text=True, cwd=ROOT
    )
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[:4])} failed: {out.stderr[-800:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the revision to compare with")
    parser.add_argument("--size", type=int, default=128, help="MB of layer content")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-build", action="store_true", help="skip the engine case")
    parser.add_argument("--cases", default="normalise,diff,build", help="which cases to run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = dict(os.environ)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="repro-bench-rev-") as tmp_name:
        tmp = Path(tmp_name)
        before = tmp / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(before), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            make_image(tmp / "a", args.size, changed=False)
            make_image(tmp / "b", args.size, changed=True)
            py = sys.executable
            cases = {
                "normalise": lambda out: [py, "-c", NORMALISE, str(tmp / "a"), str(out)],
                "diff": lambda out: [
                    py,
                    "-m",
                    "repro",
                    "diff",
                    f"oci:{tmp / 'a'}",
                    f"oci:{tmp / 'b'}",
                ],
            }
            if not args.no_build:
                cases["build"] = lambda out: [
                    py,
                    "-m",
                    "repro",
                    "build",
                    "hello",
                    "--no-cache",
                    "--progress",
                    "quiet",
                    "--output",
                    f"oci:{out}",
                ]
            wanted = args.cases.split(",")
            for name, argv in [(n, c) for n, c in cases.items() if n in wanted]:
                samples: dict[str, list[float]] = {"before": [], "after": []}
                for _side, code in (("before", before), ("after", ROOT)):  # warm-up:
                    timed(code, argv(tmp / "warm"), env)  # bytecode compiled, caches filled
                    shutil.rmtree(tmp / "warm", ignore_errors=True)
                for i in range(args.repeat):
                    for side, code in (("before", before), ("after", ROOT)):
                        out = tmp / f"out-{name}-{side}-{i}"
                        # A fresh layer cache each run: the work is timed, not a lookup.
                        cache = tmp / f"cache-{name}-{side}-{i}"
                        run_env = {**env, "REPRO_CACHE_DIR": str(cache)}
                        samples[side].append(timed(code, argv(out), run_env))
                        shutil.rmtree(out, ignore_errors=True)
                        shutil.rmtree(cache, ignore_errors=True)
                results[name] = samples
                b, a = statistics.median(samples["before"]), statistics.median(samples["after"])
                print(f"{name:10} before {b:6.2f} s   after {a:6.2f} s   ratio {a / b:.2f}")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True
            )
    if args.json:
        args.json.write_text(json.dumps({"before": args.before, "results": results}, indent=2))


if __name__ == "__main__":
    main()
