#!/usr/bin/env python3
"""Benchmark of `repro.normalise` against `tar --sort=name --mtime=@0 … | gzip -n`.

    .venv/bin/python bench/bench_normalise.py [--size MB] [--heavy] [--repeat N] [--json FILE]

Both run in the same process tree on the same content, so the ratios are what matter.
A generated tree (files of 4 KiB-4 MiB, half random bytes, half base64 text) is packed
the way a builder would (unsorted, current mtimes, gzip at Go's default level) into
OCI layouts, then:

- `reencode-1`: one layer of --size MB normalised (decompress, canonical tar, gzip -6)
  vs the baseline `tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf -
  DIR | gzip -n` reading the same tree from disk. Target: <= 1.5x.
- `reencode-4`: four layers of --size/4 MB each, normalised concurrently (all cores) vs
  the four baseline pipelines run one after another. Target: <= 1.5x.
- `unchanged`: normalising the normalised layout again: every layer is already
  canonical and is copied with its digest checked. Target: >= 300 MB/s.
- `rss-1gb` (--heavy): peak RSS of a child process normalising one 1 GiB layer
  (`os.wait4`). Target: <= 200 MB.

Medians of --repeat runs (default 3). Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from repro import oci  # noqa: E402
from repro.normalise import NormaliseOptions, normalise_layout  # noqa: E402

EPOCH = 1735689600
MB = 1024 * 1024


def make_tree(root: Path, size: int, seed: int) -> None:
    """Files totalling about `size` bytes: half incompressible, half base64 text."""
    rng = random.Random(seed)
    written, n = 0, 0
    while written < size:
        length = min(rng.choice([4096, 65536, 512 * 1024, 4 * MB]), size - written) or 1
        d = root / f"d{n % 37:02d}" / f"s{n % 5}"
        d.mkdir(parents=True, exist_ok=True)
        raw = rng.randbytes(length if n % 2 else (length * 3) // 4 + 1)
        data = raw if n % 2 else base64.b64encode(raw)[:length]
        (d / f"f{n:05d}.bin").write_bytes(data)
        written += len(data)
        n += 1


def builder_layer(tree: Path, out: Path) -> None:
    """A layer the way a builder writes one: unsorted walk order, real mtimes, gzip."""
    with open(out, "wb") as fh:
        tar = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-6"], stdin=tar.stdout, stdout=fh)
        assert tar.stdout is not None
        tar.stdout.close()
        if gz.wait() or tar.wait():
            raise SystemExit("tar | gzip failed")


def make_layout(path: Path, layers: list[Path], trees: list[Path]) -> None:
    layout = oci.OCILayout.create(path)
    descriptors, diff_ids = [], []
    for layer, _tree in zip(layers, trees, strict=True):
        with open(layer, "rb") as fh:
            descriptors.append(layout.write_blob_from(fh, oci.MEDIA_TYPE_OCI_LAYER_GZIP))
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        h = oci.Hasher()
        with open(layer, "rb") as fh:
            while chunk := fh.read(MB):
                h.update(d.decompress(chunk))
        diff_ids.append(h.digest())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "history": [{"created": "2026-01-01T00:00:00Z", "comment": "buildkit.dockerfile.v0"}]
        * len(layers),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_desc = layout.write_blob(oci.canonical_json(config), oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in descriptors],
    }
    layout.write_index(
        [layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)]
    )


def baseline(tree: Path) -> float:
    """Seconds for `tar --sort=name --mtime=@0 … | gzip -n` of a tree to /dev/null."""
    started = time.monotonic()
    with open(os.devnull, "wb") as null:
        tar = subprocess.Popen(
            ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
             "-C", str(tree), "-cf", "-", "."],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        gz = subprocess.Popen(["gzip", "-n"], stdin=tar.stdout, stdout=null)
        assert tar.stdout is not None
        tar.stdout.close()
        if gz.wait() or tar.wait():
            raise SystemExit("baseline failed")
    return time.monotonic() - started


def timed_normalise(src: Path, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    started = time.monotonic()
    normalise_layout(src, dest, NormaliseOptions(epoch=EPOCH))
    return time.monotonic() - started


def blob_bytes(layout: Path) -> int:
    return sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())


def peak_rss_mb(src: Path, dest: Path) -> tuple[float, float]:
    code = (
        f"import sys; sys.path.insert(0, {str(PROJECT)!r})\n"
        "from repro.normalise import NormaliseOptions, normalise_layout\n"
        f"normalise_layout({str(src)!r}, {str(dest)!r}, NormaliseOptions(epoch={EPOCH}))\n"
    )
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit("normalise child failed")
    return usage.ru_maxrss / 1024, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MB of content per case")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--heavy", action="store_true", help="also the 1 GiB RSS case")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    size = args.size * MB
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "zlib": zlib.ZLIB_RUNTIME_VERSION},
        "size_mb": args.size,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-normalise-") as tmp_name:
        tmp = Path(tmp_name)
        one = tmp / "one"
        make_tree(one, size, 1)
        quarters = [tmp / f"q{i}" for i in range(4)]
        for i, q in enumerate(quarters):
            make_tree(q, size // 4, 10 + i)
        builder_layer(one, tmp / "one.tgz")
        for q in quarters:
            builder_layer(q, tmp / f"{q.name}.tgz")
        make_layout(tmp / "src1", [tmp / "one.tgz"], [one])
        make_layout(tmp / "src4", [tmp / f"{q.name}.tgz" for q in quarters], quarters)

        def case(name: str, ours: list[float], base: list[float], **extra: Any) -> None:
            o, b = statistics.median(ours), statistics.median(base)
            results[name] = {"repro_s": round(o, 3), "baseline_s": round(b, 3),
                             "ratio": round(o / b, 3), **extra}  # fmt: skip
            print(f"{name:12} repro {o:7.2f}s  baseline {b:7.2f}s  ratio {o / b:5.2f}x", flush=True)

        ours1, base1, ours4, base4 = [], [], [], []
        for _ in range(args.repeat):
            ours1.append(timed_normalise(tmp / "src1", tmp / "out1"))
            base1.append(baseline(one))
            ours4.append(timed_normalise(tmp / "src4", tmp / "out4"))
            base4.append(sum(baseline(q) for q in quarters))
        case("reencode-1", ours1, base1)
        case("reencode-4", ours4, base4)

        kept = []
        for _ in range(args.repeat):
            kept.append(timed_normalise(tmp / "out4", tmp / "again"))
        seconds = statistics.median(kept)
        compressed = blob_bytes(tmp / "out4") / MB
        results["unchanged"] = {
            "seconds": round(seconds, 3),
            "compressed_mb_per_s": round(compressed / seconds, 1),
            "content_mb_per_s": round(args.size / seconds, 1),
        }
        print(f"unchanged    {seconds:.2f}s  {compressed / seconds:7.1f} MB/s of layer blobs"
              f"  ({args.size / seconds:.0f} MB/s of content)")  # fmt: skip

        if args.heavy:
            big = tmp / "big"
            shutil.rmtree(one)
            for q in quarters:
                shutil.rmtree(q)
            make_tree(big, 1024 * MB, 99)
            builder_layer(big, tmp / "big.tgz")
            make_layout(tmp / "srcbig", [tmp / "big.tgz"], [big])
            shutil.rmtree(big)
            rss, wall = peak_rss_mb(tmp / "srcbig", tmp / "outbig")
            results["rss-1gb"] = {"peak_rss_mb": round(rss, 1), "seconds": round(wall, 2)}
            print(f"rss-1gb      peak RSS {rss:.0f} MB  ({wall:.1f}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
