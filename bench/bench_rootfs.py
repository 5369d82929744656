#!/usr/bin/env python3
"""Benchmark: ``repro build`` of a [rootfs] base against mmdebstrap on the same packages.

    .venv/bin/python bench/bench_rootfs.py [--recipe debian12] [--repeat 5] [--json FILE]

Both sides start from the same local .debs, the ones the recipe's lock pins, taken
from repro's package cache (fetched first if missing; never timed):

- ``repro``: ``repro build RECIPE -o oci:DIR --progress quiet``, the whole command
  (interpreter start, lock check, reading every .deb, the tree, the effects, the dpkg
  database, the gzip layer, the OCI layout), with a warm package cache;
- ``mmdebstrap``: ``mmdebstrap --variant=custom --include=<the same packages>
  --mode=root --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --skip=output/dev bookworm OUT.tar "deb [trusted=yes] copy://REPO bookworm main"``,
  where REPO is a local repository of exactly those .debs (tests/aptrepo.py), with
  SOURCE_DATE_EPOCH set. It runs apt (update and download from the local copy),
  dpkg with every maintainer script, and writes an uncompressed tar: less work at
  the end than repro's compressed OCI image.

The two commands alternate which goes first; each is run once unmeasured, then
``--repeat`` times. Reported: the median wall time of each and their ratio (repro /
mmdebstrap; the target is <= 1.0), plus the median of the per-run ratios, steadier
when the machine's load changes. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of the command's own process; raises if it fails."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise SystemExit(f"bench: {argv[0]} failed with status {proc.returncode}")
    return seconds, usage.ru_maxrss


def prepare(recipe_name: str, work: Path) -> int:
    """The local repository of the lock's .debs (fetched into repro's cache if missing)."""
    from aptrepo import make_repo

    from repro.recipe import load_recipe

    recipe = load_recipe(PROJECT / "recipes" / recipe_name)
    lock = tomllib.loads(recipe.lock_file.read_text())
    repo = make_repo(recipe, lock, work / "repo")
    info = {"names": repo.names, "suite": repo.suite, "source": repo.source()}
    (work / "repo.json").write_text(json.dumps(info))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="debian12")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.recipe, args.prepare)
    if not shutil.which("mmdebstrap") or not HOOK.is_dir():
        raise SystemExit("bench: mmdebstrap (with its merged-usr hook) is not installed")
    if os.geteuid() != 0:
        raise SystemExit("bench: mmdebstrap --mode=root needs root")

    recipe_dir = PROJECT / "recipes" / args.recipe
    epoch = str(tomllib.loads((recipe_dir / "repro.lock").read_text())["source_date_epoch"])
    work = Path(tempfile.mkdtemp(prefix="bench-rootfs-"))
    try:
        # In a child process: the bench itself stays small, since a process it starts
        # inherits its peak RSS into the ru_maxrss that wait4 reports.
        subprocess.run(
            [sys.executable, __file__, "--recipe", args.recipe, "--prepare", str(work)],
            check=True,
        )
        repo = json.loads((work / "repo.json").read_text())
        env = {**os.environ, "PYTHONPATH": str(PROJECT), "SOURCE_DATE_EPOCH": epoch}
        tools = {
            "repro": lambda n: [
                sys.executable, "-m", "repro", "build", str(recipe_dir),
                "-o", f"oci:{work / f'repro-{n}'}", "--progress", "quiet",
            ],
            "mmdebstrap": lambda n: [
                "mmdebstrap", "--quiet", "--variant=custom",
                f"--include={','.join(repo['names'])}",
                "--mode=root", "--format=tar", f"--hook-dir={HOOK}", "--skip=output/dev",
                repo["suite"], str(work / f"mmdebstrap-{n}.tar"), repo["source"],
            ],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in tools}
        rss: dict[str, list[int]] = {name: [] for name in tools}
        for n in range(args.repeat + 1):
            order = list(tools) if n % 2 == 0 else list(reversed(tools))
            for name in order:
                seconds, peak = timed(tools[name](n), env, work)
                label = "warm-up" if n == 0 else f"run {n}"
                print(f"{label:8} {name:10} {seconds:7.2f} s", file=sys.stderr)
                if n:
                    times[name].append(seconds)
                    rss[name].append(peak)
                for leftover in work.glob(f"{name}-{n}*"):
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        median = {name: statistics.median(t) for name, t in times.items()}
        ratio = median["repro"] / median["mmdebstrap"]
        per_run = statistics.median(
            r / m for r, m in zip(times["repro"], times["mmdebstrap"], strict=True)
        )
        result = {
            "recipe": args.recipe,
            "packages": len(repo["names"]),
            "repeat": args.repeat,
            "median_seconds": median,
            "ratio": round(ratio, 3),
            "median_of_ratios": round(per_run, 3),
            "times": times,
            "repro_peak_rss_kib": statistics.median(rss["repro"]),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load": os.getloadavg(),
            },
        }
        print(
            f"{args.recipe} ({len(repo['names'])} packages): repro {median['repro']:.2f} s, "
            f"mmdebstrap {median['mmdebstrap']:.2f} s, ratio {ratio:.2f}x "
            f"(median of per-run ratios {per_run:.2f}x; target <= 1.0x)"
        )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
