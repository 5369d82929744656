#!/usr/bin/env python3
"""Whole-graph builds: ``repro build --all`` against ``docker buildx bake`` of the same
Dockerfiles, and ``repro verify --all`` against one ``repro build --all``.

    .venv/bin/python bench/bench_graph.py [--quick] [--repeat N] [--jobs N]
                                          [--json FILE] [--markdown FILE]

The graph (tests/graphs.py) has 12 tiny busybox recipes in 3 levels of 4: each
level-1 recipe builds on $REPRO_BASE_IMAGE (under a tag), each later one on a recipe
of the level before (``FROM recipe:NAME``). Every recipe runs one small RUN step and
copies one file. It is locked once, untimed (a level at a time, as `repro lock` needs
the images of the level before in the registry).

Cases, all in the same run on the same BuildKit (the dev-env Docker Engine):

- ``graph-build``: ``repro build --all --no-cache`` (normalised OCI layouts; the
  recipes others build on pushed to the registry, where their dependants' locks pin
  them) against ``buildx bake --no-cache`` of a bake file with one target per recipe,
  dependants reaching their base through ``contexts = {"recipe:NAME" = "target:NAME"}``,
  each target writing an OCI archive with ``rewrite-timestamp=true`` and
  ``SOURCE_DATE_EPOCH``, every RUN step with ``--network=none`` (in the Dockerfiles,
  for both tools), no provenance or SBOM (the same options
  repro sends). Target: repro <= 0.8x bake.
- ``graph-verify``: ``repro verify --all`` (two independent builds of every recipe and
  a comparison) against one ``repro build --all --no-cache``, right after that build
  and in the same directory, as CI runs them: verify's first build of each recipe is
  the image the build wrote to out/ from the same inputs (repro.inputs), or comes
  from the cache the build filled; its second builds are from scratch. Target:
  <= 1.3x.
- ``graph-verify-fresh``: ``repro verify --all --no-cache`` (both builds of every
  recipe from scratch) against the same build (``--no-fresh`` skips it).

Each timed run starts on a quiet machine (bench_build's ``settle``). The two tools
alternate their order between repetitions; medians are reported, and
the median of the per-repetition ratios beside them (steadier when the machine's load
drifts, as it does on a shared 2-core box). Timings are never asserted: the exit status
is non-zero only when a build fails. ``--quick`` (a 2+2+2 graph, one repetition) is
the smoke run. Single-recipe overhead against ``docker buildx build`` is
bench/bench_build.py's ``build`` case.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(PROJECT / "tests"))

from bench_build import (  # noqa: E402
    BuildFailure,
    Case,
    Tools,
    header_line,
    load_env,
    machine_info,
    markdown_table,
    run_measured,
    text_table,
    wait_engine,
)
from graphs import EPOCH, graph_names, make_graph, tagged_base  # noqa: E402


def bake_file(root: Path, parents: dict[str, str | None], dest: Path) -> dict[str, Any]:
    """A bake definition (JSON) building every recipe as repro would."""
    targets: dict[str, Any] = {}
    for name, parent in parents.items():
        target: dict[str, Any] = {
            "context": str(root / name),
            "dockerfile": "Dockerfile",
            "args": {"NAME": name, "SOURCE_DATE_EPOCH": str(EPOCH)},
            "output": [f"type=oci,dest={dest / name}.tar,rewrite-timestamp=true"],
            "attest": [],
        }
        if parent:
            target["contexts"] = {f"recipe:{parent}": f"target:{parent}"}
        targets[name] = target
    return {"group": {"default": {"targets": list(parents)}}, "target": targets}


class GraphBench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], tmp: Path):
        self.args = args
        self.env = env
        self.tmp = tmp
        self.tools = Tools(env, tmp)
        self.shape = (2, 2, 2) if args.quick else (4, 4, 4)
        self.root = tmp / "recipes"
        registry = os.environ.get("REPRO_REGISTRY") or env["REPRO_BASE_IMAGE"].split("/")[0]
        self.publish_to = f"{registry}/repro-bench/graph-{uuid.uuid4().hex[:8]}"
        self.parents: dict[str, str | None] = {}
        self.built: Path | None = None  # the last `repro build --all`'s directory

    def log(self, msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    def repro(self, *args: str, cwd: Path) -> Any:
        run = run_measured([self.tools.repro, *args], self.tools.repro_env, cwd=cwd)
        if run.rc != 0:
            tail = "\n".join(run.stderr.strip().splitlines()[-15:])
            raise BuildFailure(f"repro {' '.join(args)} failed (exit {run.rc}):\n{tail}")
        return run

    def setup(self) -> None:
        base = tagged_base(self.env["REPRO_BASE_IMAGE"])
        self.parents = make_graph(self.root, self.publish_to, base, self.shape)
        work = self.tmp / "setup"
        work.mkdir()
        for depth, names in enumerate(graph_names(self.shape)):
            if depth:
                run = run_measured(
                    [self.tools.repro, "build", "--all", "--recipes-dir", str(self.root),
                     "--progress", "quiet"],
                    self.tools.repro_env, cwd=work,
                )  # fmt: skip
                if run.rc not in (0, 2) or (run.rc == 2 and "no repro.lock" not in run.stderr):
                    raise BuildFailure(f"setup build failed:\n{run.stderr[-2000:]}")
            self.repro("lock", *names, "--recipes-dir", str(self.root), cwd=work)
        shutil.rmtree(work)

    def build_all(self, i: int) -> tuple[float, dict[str, str]]:
        work = self.tmp / f"repro-{i}"
        work.mkdir()
        argv = ["build", "--all", "--no-cache", "--recipes-dir", str(self.root)]
        argv += ["--json", "--progress", "quiet"]
        if self.args.jobs:
            argv += ["--jobs", str(self.args.jobs)]
        run = self.repro(*argv, cwd=work)
        digests = {x["recipe"]: x["digest"] for x in json.loads(run.stdout)}
        if self.built is not None:
            shutil.rmtree(self.built)
        self.built = work  # verify runs here next, beside the images (then removes it)
        return run.seconds, digests

    def bake(self, i: int) -> float:
        dest = self.tmp / f"bake-{i}"
        dest.mkdir()
        definition = self.tmp / "bake.json"
        definition.write_text(json.dumps(bake_file(self.root, self.parents, dest), indent=2))
        argv = [self.tools.buildx, "bake", "-f", str(definition), "--no-cache"]
        argv += ["--provenance=false", "--sbom=false", "--progress=quiet"]
        run = run_measured(argv, self.tools.buildx_env, cwd=self.tmp)
        if run.rc != 0:
            tail = "\n".join(run.stderr.strip().splitlines()[-15:])
            raise BuildFailure(f"buildx bake failed (exit {run.rc}):\n{tail}")
        made = sorted(p.stem for p in dest.glob("*.tar"))
        if made != sorted(self.parents):
            raise BuildFailure(f"buildx bake wrote {made}, expected {sorted(self.parents)}")
        shutil.rmtree(dest)
        return run.seconds

    def verify_all(self, i: int, fresh: bool = False) -> tuple[float, int]:
        """Seconds, and how many first builds were the images the build wrote."""
        # Where the build before wrote its images (out/), as in CI's checkout.
        assert self.built is not None
        work = self.built
        argv = [self.tools.repro, "verify", "--all", "--recipes-dir", str(self.root), "--json"]
        if fresh:
            argv.append("--no-cache")
        if self.args.verify_jobs:
            argv += ["--jobs", str(self.args.verify_jobs)]
        run = run_measured(argv, self.tools.repro_env, cwd=work)
        if run.rc not in (0, 1):
            tail = "\n".join(run.stderr.strip().splitlines()[-15:])
            raise BuildFailure(f"repro verify --all failed (exit {run.rc}):\n{tail}")
        results = json.loads(run.stdout)
        bad = [
            f"{r['recipe']}: {r['verdict']} "
            + ", ".join(f"{f['path']} ({f.get('kind', '')})" for f in r.get("findings", [])[:3])
            for r in results
            if r.get("verdict") != "identical"
        ]
        if bad:
            raise BuildFailure("repro verify: not identical: " + "; ".join(bad))
        return run.seconds, sum(1 for r in results if r["builds"][0].get("reused"))

    def run(self) -> list[Case]:
        n = sum(self.shape)
        graph = Case(
            "graph-build",
            f"build --all --no-cache of {n} recipes in {len(self.shape)} levels"
            + (f" (--jobs {self.args.jobs})" if self.args.jobs else ""),
            "s", "buildx bake", "<= 0.8x buildx bake", "ratio", 0.8,
        )  # fmt: skip
        verify = Case(
            "graph-verify",
            f"verify --all of the same {n} recipes",
            "s", "repro build --all", "<= 1.3x one build --all", "ratio", 1.3,
        )  # fmt: skip
        fresh = Case(
            "graph-verify-fresh",
            f"verify --all --no-cache of the same {n} recipes (both builds from scratch)",
            "s", "repro build --all", "<= 1.3x one build --all", "ratio", 1.3,
        )  # fmt: skip
        digests: list[dict[str, str]] = []
        for i in range(self.args.repeat):
            order = ("repro", "bake") if i % 2 == 0 else ("bake", "repro")
            sample: dict[str, Any] = {"order": list(order), "loadavg": os.getloadavg()[0]}
            for tool in order:
                wait_engine(self.env)
                if tool == "repro":
                    seconds, found = self.build_all(i)
                    graph.repro.append(seconds)
                    verify.baseline.append(seconds)
                    fresh.baseline.append(seconds)
                    digests.append(found)
                else:
                    seconds = self.bake(i)
                    graph.baseline.append(seconds)
                sample[tool] = round(seconds, 3)
                self.log(f"graph-build #{i + 1} {tool}: {seconds:.2f} s")
            graph.samples.append(sample)
            if self.args.verify:
                seconds, reused = self.verify_all(i)
                verify.repro.append(seconds)
                verify.samples.append({"verify": round(seconds, 3), "reused": reused})
                self.log(f"graph-verify #{i + 1}: {seconds:.2f} s ({reused} built images taken)")
                if self.args.fresh:
                    seconds, _ = self.verify_all(i, fresh=True)
                    fresh.repro.append(seconds)
                    fresh.samples.append({"verify --no-cache": round(seconds, 3)})
                    self.log(f"graph-verify-fresh #{i + 1}: {seconds:.2f} s")
        if any(d != digests[0] for d in digests):
            graph.notes.append("repro's digests differed between repetitions")
        else:
            graph.notes.append(f"the same {len(digests[0])} digests in every repetition")
        if not self.args.verify:
            return [graph]
        return [graph, verify, fresh] if self.args.fresh else [graph, verify]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a 2+2+2 graph, one repetition")
    p.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    p.add_argument("--jobs", type=int, default=None, help="repro build --jobs (default: repro's)")
    p.add_argument(
        "--verify-jobs", type=int, default=None, help="repro verify --jobs (default: repro's)"
    )
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip verify")
    p.add_argument(
        "--no-fresh",
        dest="fresh",
        action="store_false",
        help="skip verify --no-cache (both builds of each recipe from scratch)",
    )
    p.add_argument("--json", type=Path, help="write all results and samples as JSON")
    p.add_argument("--markdown", type=Path, help="write a markdown table")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.heavy = False
    args.repro_arg = []
    args.cases = {"graph"}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = load_env()
    wait_engine(env)
    info = machine_info(env)
    info["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["loadavg"] = os.getloadavg()[0]
    started = time.monotonic()
    failed = False
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="repro-bench-graph-") as tmpdir:
        bench = GraphBench(args, env, Path(tmpdir))
        try:
            bench.log(f"setting up and locking a {'+'.join(map(str, bench.shape))} graph")
            bench.setup()
            cases = bench.run()
        except BuildFailure as exc:
            print(f"bench: {exc}", file=sys.stderr)
            failed = True
    header = header_line(info, args)
    print(text_table(cases, header))
    elapsed = time.monotonic() - started
    print(f"\n(bench took {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"header": header, "machine": info, "repeat": args.repeat, "quick": args.quick,
                 "elapsed_seconds": round(elapsed, 1), "cases": [c.to_json() for c in cases],
                 "failed": failed},
                indent=2,
            )
        )  # fmt: skip
    if args.markdown:
        args.markdown.write_text(markdown_table(cases, header))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
