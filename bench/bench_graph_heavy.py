#!/usr/bin/env python3
"""Whole-graph builds: ``repro build --all`` against ``docker buildx bake``.

    .venv/bin/python bench/bench_graph_heavy.py [--repeat N] [--jobs J] [--no-verify]
                                          [--json FILE]

A generated graph of 12 busybox recipes in 3 levels (3 roots, 5 on them, 4 on
those), each with one base and a RUN step that writes 40 files of 32 KiB
(the same bytes on every build). Both tools
drive the same BuildKit (the dev-env Docker Engine) in the same run, ``--no-cache``:

- ``repro build --all --no-cache --jobs J``: locks pinned, bases pushed to the
  loopback registry for their dependants, layers normalised, OCI layouts written;
- ``docker-buildx bake --no-cache`` of the same Dockerfiles (the FROM line names a
  bake ``target:`` context instead of ``recipe:NAME``) with the options repro uses:
  ``SOURCE_DATE_EPOCH``, no provenance or SBOM, ``--network none``, an OCI tar per
  target with ``rewrite-timestamp=true``.

Each timed run starts on a quiet machine (bench_build's ``settle``). Target: repro
<= 0.8x bake. Also ``repro verify --all`` against one ``repro build --all`` (target
<= 1.3x). The tools alternate which goes first;
medians and their ratios are printed. Timings are never asserted; the exit status
is 1 only when a command fails.
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

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "bench"))

from bench_build import load_env, settle  # noqa: E402

GRAPH = {
    "r1": None,
    "r2": None,
    "r3": None,
    "m1": "r1",
    "m2": "r1",
    "m3": "r2",
    "m4": "r3",
    "m5": "r3",
    "t1": "m1",
    "t2": "m3",
    "t3": "m4",
    "t4": "m5",
}
# Deterministic content: a rebuilt base must keep its digest, which its dependants'
# locks name.
RUN = (
    'RUN mkdir -p /d && for i in $(seq 1 40); do yes "{name} $i" | head -c 32768 '
    "> /d/{name}-$i; done"
)
EPOCH = 1700000000


def base_tag(env: dict[str, str]) -> str:
    """The busybox base by tag (the example recipes' own), from the hello recipe."""
    import tomllib

    data = tomllib.loads((PROJECT / "recipes" / "hello" / "recipe.toml").read_text())
    return str(data["bases"][0])


def make_graph(root: Path, env: dict[str, str], registry: str) -> Path:
    recipes = root / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "repro.toml").write_text(f'registry = "{registry}"\n')
    base = base_tag(env)
    for name, parent in GRAPH.items():
        d = recipes / name
        d.mkdir()
        bases = [f"recipe:{parent}"] if parent else [base]
        (d / "recipe.toml").write_text(
            f'source_date_epoch = {EPOCH}\nnetwork = "none"\nbases = {json.dumps(bases)}\n'
        )
        (d / "Dockerfile").write_text(f"FROM {bases[0]}\n{RUN.format(name=name)}\n")
        (d / "Dockerfile.bake").write_text(
            f"FROM {'parent' if parent else base}\n{RUN.format(name=name)}\n"
        )
    return recipes


def bake_file(recipes: Path, out: Path) -> Path:
    targets = {}
    for name, parent in GRAPH.items():
        t = {
            "context": str(recipes / name),
            "dockerfile": "Dockerfile.bake",
            "args": {"SOURCE_DATE_EPOCH": str(EPOCH)},
            "no-cache": True,
            "network": "none",
            "attest": ["type=provenance,disabled=true", "type=sbom,disabled=true"],
            "output": [f"type=oci,dest={out / name}.tar,rewrite-timestamp=true"],
        }
        if parent:
            t["contexts"] = {"parent": f"target:{parent}"}
        targets[name] = t
    path = recipes.parent / "docker-bake.json"
    group = {"default": {"targets": list(GRAPH)}}
    path.write_text(json.dumps({"group": group, "target": targets}))
    return path


def run(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    settle()  # the engine's clean-up after the run before is not timed in this one
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(argv[:4])}… failed ({r.returncode}): {r.stderr[-2000:]}")
    return seconds


def repro_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "repro", *args]


def prepare(recipes: Path, env: dict[str, str]) -> None:
    """Locks for the whole graph: roots, then each level after its bases are pushed."""
    for _ in range(4):
        subprocess.run(
            repro_cmd("lock", "--recipes-dir", str(recipes)),
            env=env, cwd=recipes.parent, capture_output=True, text=True,
        )  # fmt: skip
        r = subprocess.run(
            repro_cmd("build", "--all", "--recipes-dir", str(recipes), "--progress", "quiet"),
            env=env, cwd=recipes.parent, capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode == 0:
            return
    sys.exit(f"bench: could not lock and build the graph: {r.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    env = {**os.environ, **load_env(), "PYTHONPATH": str(PROJECT)}
    where = os.environ.get("REPRO_REGISTRY", "127.0.0.1:5000")
    registry = f"{where}/repro-bench/graph-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="repro-bench-graph-") as tmp:
        root = Path(tmp)
        recipes = make_graph(root, env, registry)
        prepare(recipes, env)
        bake_out = root / "bake-out"
        bake = bake_file(recipes, bake_out)
        benv = {k: v for k, v in env.items() if k != "BUILDKIT_HOST"}
        benv["DOCKER_CONFIG"] = str(root / "docker-config")
        (root / "docker-config").mkdir()
        times: dict[str, list[float]] = {"repro": [], "bake": [], "verify": []}
        build = repro_cmd(
            "build", "--all", "--no-cache", "--recipes-dir", str(recipes),
            "--progress", "quiet", "--jobs", str(args.jobs),
        )  # fmt: skip
        bake_cmd = [env["REPRO_BUILDX"], "bake", "-f", str(bake), "--progress", "quiet"]
        for i in range(args.repeat):
            order = [("repro", build, env), ("bake", bake_cmd, benv)]
            for tool, cmd, e in order if i % 2 == 0 else reversed(order):
                shutil.rmtree(bake_out, ignore_errors=True)
                bake_out.mkdir()
                times[tool].append(run(cmd, e, root))
                print(f"bench: {tool} run {i + 1}: {times[tool][-1]:.1f} s", file=sys.stderr)
            if not args.no_verify:
                verify = repro_cmd("verify", "--all", "--recipes-dir", str(recipes))
                times["verify"].append(run(verify, env, root))
                print(f"bench: verify run {i + 1}: {times['verify'][-1]:.1f} s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    result = {
        "repeat": args.repeat,
        "jobs": args.jobs,
        "median_seconds": med,
        "repro_over_bake": med["repro"] / med["bake"],
        "verify_over_build": med["verify"] / med["repro"] if "verify" in med else None,
        "runs": times,
    }
    print(f"repro build --all --jobs {args.jobs}: {med['repro']:.1f} s")
    print(f"buildx bake:                 {med['bake']:.1f} s")
    print(f"ratio repro/bake: {result['repro_over_bake']:.2f}x (target <= 0.8x)")
    if result["verify_over_build"] is not None:
        print(f"repro verify --all: {med['verify']:.1f} s")
        print(f"ratio verify/build: {result['verify_over_build']:.2f}x (target <= 1.3x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
