"""`repro publish` against `skopeo copy` of the same OCI layout, on the loopback registry.

    python bench/bench_publish.py [--size-mib 1024] [--layers 8] [--runs 3]
    python bench/bench_publish.py --quick          # 128 MiB, 2 runs: a one-minute try

Per run, a fresh image of random (incompressible) layers is written to an OCI
layout (tests/pushimages.py; gzip at level 0, so that skopeo pushes the layers as
they are instead of compressing them first, and `--preserve-digests` makes sure of
it: both tools push the same bytes, checked by digest), then pushed into two fresh
repositories of the registry at $REPRO_REGISTRY (default 127.0.0.1:5000), in
alternating order so that neither tool always meets blobs the other already stored:

- baseline: `skopeo copy oci:LAYOUT docker://REGISTRY/…` (Debian's skopeo);
- repro: `repro publish` of a recipe whose build output is that layout (the whole
  process, start-up included);
- again: `repro publish` three more times, nothing to upload, the median of the
  three (and skopeo's copy again, for reference).

Targets (issue 8): throughput >= 0.8x skopeo's; the unchanged re-publish <= 0.5 s
including start-up. Medians of the runs; the JSON line at the end has every number.
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
sys.path.insert(0, str(ROOT / "tests"))

from pushimages import random_image  # noqa: E402

MiB = 1024 * 1024


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return elapsed


def workspace(work: Path, layout: Path, registry: str, namespace: str) -> Path:
    """recipes/hello with its repository under `namespace`, and out/hello = `layout`."""
    ws = work / f"ws-{namespace.rsplit('/', 1)[-1]}"
    (ws / "recipes").mkdir(parents=True)
    shutil.copytree(ROOT / "recipes" / "hello", ws / "recipes" / "hello")
    (ws / "recipes" / "repro.toml").write_text(f'registry = "{registry}/{namespace}"\n')
    (ws / "out").mkdir()
    (ws / "out" / "hello").symlink_to(layout)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size (MiB)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.runs = 128, 2
    registry = os.environ.get("REPRO_REGISTRY", "127.0.0.1:5000")
    skopeo = shutil.which("skopeo")
    if not skopeo:
        raise SystemExit("skopeo is missing: apt-get install skopeo")
    repro = [sys.executable, "-m", "repro", "publish", "hello"]
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env_path}" if env_path else str(ROOT)
    # As installed software runs: modules compiled once (in the temp dir), not at every
    # start, which PYTHONDONTWRITEBYTECODE=1 would make repro do.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    size = args.size_mib * MiB
    layer = size // args.layers
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        work = Path(tmp)
        os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        # Compile once before anything is timed, as an installed package would be.
        warm = "import repro.cli, repro.publish, repro.registry, repro.records, httpx, httpcore"
        subprocess.run([sys.executable, "-c", warm], check=True)
        for run in range(args.runs):
            layout = work / f"image-{run}"
            made = time.perf_counter()
            top = random_image(
                layout, [layer] * args.layers, seed=int(time.time()) + run, gzip_level=0
            )
            made = time.perf_counter() - made
            tag = uuid.uuid4().hex[:8]
            base = f"repro-bench/publish-{tag}"
            ws = workspace(work, layout, registry, f"{base}-repro")
            dest = f"docker://{registry}/{base}-skopeo/hello:latest"
            digest_file = work / f"skopeo-digest-{run}"
            skopeo_cmd = [
                skopeo,
                "copy",
                "--dest-tls-verify=false",
                "--preserve-digests",
                "--digestfile",
                str(digest_file),
                f"oci:{layout}",
                dest,
            ]
            if run % 2 == 0:
                t_skopeo = timed(skopeo_cmd)
                t_repro = timed(repro, cwd=ws)
            else:
                t_repro = timed(repro, cwd=ws)
                t_skopeo = timed(skopeo_cmd)
            if digest_file.read_text().strip() != top.digest:
                raise SystemExit(f"skopeo pushed {digest_file.read_text()}, not {top.digest}")
            # Re-publishing: three times each, right after the push (the registry may
            # still be writing the gigabyte out); the median of the three.
            t_again = statistics.median(timed(repro, cwd=ws) for _ in range(3))
            t_skopeo_again = statistics.median(timed(skopeo_cmd) for _ in range(3))
            row = {
                "made_s": made,
                "skopeo_s": t_skopeo,
                "repro_s": t_repro,
                "repro_again_s": t_again,
                "skopeo_again_s": t_skopeo_again,
                "skopeo_mb_s": size / 1e6 / t_skopeo,
                "repro_mb_s": size / 1e6 / t_repro,
            }
            rows.append(row)
            print(
                f"run {run + 1}: skopeo {t_skopeo:.2f} s ({row['skopeo_mb_s']:.0f} MB/s), "
                f"repro {t_repro:.2f} s ({row['repro_mb_s']:.0f} MB/s), "
                f"again {t_again:.3f} s (skopeo again {t_skopeo_again:.3f} s)",
                flush=True,
            )
            shutil.rmtree(layout)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    ratio = med("repro_mb_s") / med("skopeo_mb_s")
    print()
    print("| case | repro | skopeo | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    print(
        f"| push {args.size_mib} MiB ({args.layers} layers) | {med('repro_s'):.2f} s "
        f"({med('repro_mb_s'):.0f} MB/s) | {med('skopeo_s'):.2f} s ({med('skopeo_mb_s'):.0f} MB/s)"
        f" | {ratio:.2f}x | >= 0.8x | {'yes' if ratio >= 0.8 else 'no'} |"
    )
    print(
        f"| re-publish unchanged | {med('repro_again_s'):.3f} s | {med('skopeo_again_s'):.3f} s "
        f"| | <= 0.5 s | {'yes' if med('repro_again_s') <= 0.5 else 'no'} |"
    )
    print(json.dumps({"size_mib": args.size_mib, "layers": args.layers, "runs": rows}))


if __name__ == "__main__":
    main()
