"""The differential harness, for longer runs than CI's fixed seed set.

Builds seeded random cases with repro and with ``docker buildx build`` on the same engine
and compares the images (see tests/differential/ and docs/differential.md):

    bench/differential.py --kind ignore --seeds 1-200
    bench/differential.py --count 500            # seeds from a random start (printed)
    bench/differential.py --kind dockerfile --seeds 17   # recreate one case

Needs the dev environment (``eval "$(scripts/dev-env up)"``: DOCKER_HOST, BUILDKIT_HOST,
REPRO_BUILDX, REPRO_BASE_IMAGE). Each divergence is shrunk to a small reproducer and
printed with its seed; the exit status is 1 when there was one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "differential"))

import diffharness as h  # noqa: E402


def run(kinds: list[str], seeds: list[int], work: Path, minimise: bool) -> dict[str, object]:
    env = h.engine_env()
    base = h.base_tag() if "dockerfile" in kinds else ""
    counts = {k: 0 for k in kinds}
    refused = {k: 0 for k in kinds}
    failures: list[dict[str, object]] = []
    started = time.monotonic()
    for kind in kinds:
        for seed in seeds:
            if kind == "ignore":
                result = h.ignore_case(seed, work, env, minimise)
            else:
                result = h.dockerfile_case(seed, work, env, base, minimise)
            counts[kind] += 1
            if not result.comparison.buildx.ok:
                refused[kind] += 1
            if not result.agree:
                text = result.reproducer or result.comparison.explain()
                failures.append({"kind": kind, "seed": seed, "reproducer": text})
                print(f"DIVERGENCE {kind} seed {seed}\n{text}\n", flush=True)
    return {
        "contexts": counts.get("ignore", 0),
        "ignore_files": counts.get("ignore", 0),
        "dockerfiles": counts.get("dockerfile", 0),
        "refused_by_both": refused,
        "divergences": failures,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["ignore", "dockerfile", "all"], default="all")
    parser.add_argument("--seeds", help="seeds, e.g. 1-50,77")
    parser.add_argument("--count", type=int, help="this many seeds from --start")
    parser.add_argument("--start", type=int, help="first seed for --count (default: random)")
    parser.add_argument("--work", type=Path, help="keep the cases here (default: a temp dir)")
    parser.add_argument("--no-minimise", action="store_true", help="do not shrink divergences")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(argv)
    missing = [v for v in ("DOCKER_HOST", "REPRO_BUILDX") if not os.environ.get(v)]
    if missing:
        print(f"differential: {', '.join(missing)} unset: run eval \"$(scripts/dev-env up)\"",
              file=sys.stderr)
        return 2
    if args.seeds:
        seeds = list(h.seeds(args.seeds))
    else:
        start = args.start if args.start is not None else random.randrange(10**6)
        seeds = list(range(start, start + (args.count or 20)))
        print(f"differential: seeds {seeds[0]}-{seeds[-1]}", flush=True)
    kinds = ["ignore", "dockerfile"] if args.kind == "all" else [args.kind]
    work = args.work or Path(tempfile.mkdtemp(prefix="repro-differential-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        summary = run(kinds, seeds, work, not args.no_minimise)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    failures = summary["divergences"]
    assert isinstance(failures, list)
    print(
        f"differential: compared {summary['contexts']} contexts, {summary['ignore_files']} "
        f".dockerignore files, {summary['dockerfiles']} Dockerfiles against buildx in "
        f"{summary['seconds']} s; {len(failures)} divergences"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
