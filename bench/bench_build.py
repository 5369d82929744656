#!/usr/bin/env python3
"""Benchmarks of ``repro build`` against ``docker buildx build`` on the same BuildKit.

    .venv/bin/python bench/bench_build.py [--quick] [--heavy] [--repeat N]
                                          [--json FILE] [--markdown FILE]

Both tools drive the same BuildKit (the dev-env Docker Engine) in the same run, so the
numbers that matter are the ratios repro / buildx, not the absolute times. Cases:

- ``build-cold`` / ``build-warm``: a generated two-stage busybox recipe (200 files of
  64 KiB random bytes packed with tar + gzip -n, then unpacked in a second stage),
  ``--no-cache`` (cold) and fully cached (warm, after one unmeasured build). Target:
  repro <= 1.05x buildx (issue 10; it was 1.10x before). Each pair is checked to be
  the same image: repro's (normalised, BuildKit asked for no rewrite-timestamp) is
  buildx's export (``rewrite-timestamp=true``) normalised by repro's normaliser,
  untimed; with ``--repro-arg '--normalise off'`` the two exports are compared.
- ``big-base-cold`` / ``big-base-warm``: an application's files (``COPY``, 2 MB) on a
  base image with one 64 MB layer (random bytes, pushed to the dev registry first),
  ``--no-cache`` and cached. Every export holds the base's layer: buildx receives it
  in its tarball each time, repro takes it from its blob shelf after its first build
  (repro.oci._shelf) and receives only the new layer. Target: <= 1.05x buildx.
- ``context``: sending a context of 10,000 small files plus one 200 MB file to a
  Dockerfile whose only work is bind-mounting it; a fresh context directory (``cp -al``)
  per run, so neither tool can reuse an earlier transfer. Target: <= 1.5x buildx.
- ``rss-1gb`` (``--heavy``): peak RSS of the repro process itself while sending a 1 GiB
  context file and receiving a ~1 GiB OCI archive (``FROM scratch`` + ``COPY``), with
  buildx's for comparison, and both wall times. Target: <= 150 MB.
- ``startup``: ``repro --version`` and ``repro --help`` wall time, with
  ``python -c pass`` on the same interpreter for context. Target: <= 0.3 s.

Each measured command runs as the direct child of a small measuring interpreter (no
shell): wall time is taken around it and peak RSS comes from ``os.wait4`` of that very
process (see ``_MEASURE`` for why not from this process). Before each timed run the
bench waits (up to 20 s) for the machine's CPUs to be under 10% busy (``settle``): the
engine's clean-up after the run before otherwise lands in the next one, whichever
tool it is. Tools alternate their order between repetitions; medians are reported.
Timings are never asserted: the exit status is non-zero only when a build fails.
``--quick`` (one repetition, a 2,000-file + 20 MB context, no heavy case) is CI's
smoke run. ``--repro-arg '--normalise off'`` passes
extra arguments to every ``repro build``, to take a feature out of the comparison.

The environment comes from ``scripts/dev-env env`` when BUILDKIT_HOST / DOCKER_HOST /
REPRO_BASE_IMAGE / REPRO_BUILDX are not already set. Build-cache records that the
large-context cases leave in BuildKit (hundreds of MB each) are pruned by id afterwards
(``--keep-cache`` keeps them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
EPOCH = 1700000000
MiB = 1024 * 1024
ENGINE_WAIT = 180.0  # seconds to wait for an engine that a colleague restarts


class BuildFailure(Exception):
    """A build (not a target) failed: the bench exits non-zero."""


# ------------------------------------------------------------------ environment


def _dev_env_exports() -> dict[str, str]:
    script = PROJECT / "scripts" / "dev-env"
    if not script.exists():
        return {}
    try:
        out = subprocess.run(
            [str(script), "env"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, str] = {}
    for line in out.splitlines():
        if not line.startswith("export ") or "=" not in line:
            continue
        name, _, value = line[len("export ") :].partition("=")
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("'\\''", "'")
        found[name] = value
    return found


NEEDED = ("DOCKER_HOST", "REPRO_BASE_IMAGE", "REPRO_BUILDX")


def load_env(wait: float = ENGINE_WAIT) -> dict[str, str]:
    """The dev-env variables, from the environment or ``scripts/dev-env env``."""
    env = {k: os.environ.get(k, "") for k in (*NEEDED, "BUILDKIT_HOST", "REPRO_DEV_ENV")}
    deadline = time.monotonic() + wait
    while True:
        if all(env.get(k) for k in NEEDED):
            break
        exported = _dev_env_exports()
        for k, v in exported.items():
            if not env.get(k):
                env[k] = v
        if all(env.get(k) for k in NEEDED) or time.monotonic() > deadline:
            break
        missing = [k for k in NEEDED if not env.get(k)]
        print(f"bench: waiting for {', '.join(missing)} (dev-env busy?)", file=sys.stderr)
        time.sleep(5)
    missing = [k for k in NEEDED if not env.get(k)]
    if missing:
        sys.exit(f'bench: {", ".join(missing)} not set; run: eval "$(scripts/dev-env up)"')
    if not env["DOCKER_HOST"].startswith("unix://"):
        sys.exit(f"bench: DOCKER_HOST={env['DOCKER_HOST']}: a unix socket is needed")
    if not env.get("BUILDKIT_HOST"):
        env["BUILDKIT_HOST"] = "docker://" + env["DOCKER_HOST"]
    return env


def refresh_base_image(env: dict[str, str]) -> None:
    """Pick up a reworked base image (dev-env may change it between cases)."""
    if os.environ.get("REPRO_BASE_IMAGE"):
        return  # given explicitly: keep it
    new = _dev_env_exports().get("REPRO_BASE_IMAGE", "")
    if new and new != env["REPRO_BASE_IMAGE"]:
        print(f"bench: base image is now {new}", file=sys.stderr)
        env["REPRO_BASE_IMAGE"] = new


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_api(env: dict[str, str], method: str, path: str, timeout: float = 30.0) -> Any:
    conn = _UnixHTTPConnection(env["DOCKER_HOST"][len("unix://") :], timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status >= 300:
            raise OSError(f"{method} {path}: HTTP {resp.status} {body[:200]!r}")
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(body)
        return body.decode("utf-8", "replace")
    finally:
        conn.close()


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)


def settle(
    limit: float = 0.10, window: float = 0.25, hold: float = 2.0, wait: float = 30.0
) -> float:
    """Wait (at most `wait` s) until the machine's CPUs have stayed under `limit` busy
    for `hold` s in a row (measured in `window`-s slices): the engine finishes cleaning
    up after the build before, whichever tool ran last, before the next timed run.
    One quiet slice is not enough: the engine's clean-up starts late. Measured after a
    `buildx bake` of bench_graph's graph: 0.5-1.5 s quiet, then 3-4 s of dockerd and
    containerd work (1.3 CPU-s), which a 0.3-s check let fall inside the next run.
    Returns the seconds waited."""
    started = time.monotonic()
    quiet = 0.0
    while time.monotonic() - started < wait and quiet < hold:
        try:
            a = _cpu_busy()
            time.sleep(window)
            b = _cpu_busy()
        except (OSError, ValueError):
            return 0.0
        if (b[0] - a[0]) <= limit * max(1, b[1] - a[1]):
            quiet += window
        else:
            quiet = 0.0
    return time.monotonic() - started


def wait_engine(env: dict[str, str], wait: float = ENGINE_WAIT) -> None:
    """The engine answers, and the machine is quiet (`settle`), before a timed run."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            if docker_api(env, "GET", "/_ping", timeout=5) == "OK":
                settle()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BuildFailure(f"the engine at {env['DOCKER_HOST']} does not answer /_ping")
        if not said:
            print("bench: engine not answering; waiting for it", file=sys.stderr)
            said = True
        time.sleep(2)


def machine_info(env: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": "",
        "mem_gib": 0.0,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    try:
        v = docker_api(env, "GET", "/version")
        info["engine"] = v.get("Version", "?")
        info["engine_api"] = v.get("ApiVersion", "?")
        info["engine_components"] = {
            c.get("Name", "?"): c.get("Version", "?") for c in v.get("Components") or []
        }
    except (OSError, ValueError, AttributeError) as exc:
        info["engine"] = f"unknown ({exc})"
    try:
        out = subprocess.run(
            [env["REPRO_BUILDX"], "version"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        info["buildx"] = out[1] if len(out) > 1 else "?"
    except (OSError, subprocess.TimeoutExpired):
        info["buildx"] = "?"
    try:
        out = subprocess.run(
            [str(repro_exe()), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        info["repro"] = out[-1] if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        info["repro"] = "?"
    info["git"] = git_revision()
    return info


def git_revision() -> str:
    """The checkout's commit, +dirty when tracked files differ (the code measured)."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return rev + ("+dirty" if rev and dirty else "")


def repro_exe() -> Path:
    here = Path(sys.executable).with_name("repro")
    return here if here.exists() else PROJECT / ".venv" / "bin" / "repro"


# ------------------------------------------------------------------ running


@dataclass
class Run:
    seconds: float
    maxrss_mib: float
    rc: int
    stdout: str
    stderr: str
    extra: dict[str, Any] = field(default_factory=dict)


# Peak RSS has to come from a small parent: Linux charges a child, at exec, with the
# high-water RSS of the address space it was forked (or vforked) from, so
# ru_maxrss of a process spawned by this (data-generating) bench would report the
# bench's own peak. This helper, a fresh small interpreter, spawns the command and
# reports wall time and ru_maxrss of that one process; its own peak is the floor.
_MEASURE = r"""
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
seconds = time.perf_counter() - t0
p.returncode = os.waitstatus_to_exitcode(status)
floor = 0
with open("/proc/self/status") as fh:
    for line in fh:
        if line.startswith("VmHWM:"):
            floor = int(line.split()[1])
with open(sys.argv[1], "w") as fh:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "rc": p.returncode,
               "floor_kib": floor}, fh)
"""


def run_measured(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run argv as a direct child of a small helper: wall time and its own peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".json") as res,
    ):
        helper = [sys.executable, "-I", "-S", "-c", _MEASURE, res.name, *argv]
        rc = subprocess.call(helper, env=env, cwd=cwd, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        try:
            m = json.load(res)
        except ValueError:
            return Run(0.0, 0.0, rc or 1, stdout, f"measuring helper failed: {stderr}")
        return Run(
            seconds=m["seconds"],
            maxrss_mib=m["maxrss_kib"] / 1024,  # KiB on Linux
            rc=m["rc"],
            stdout=stdout,
            stderr=stderr,
            extra={"rss_floor_mib": round(m["floor_kib"] / 1024, 1)},
        )


class Tools:
    """The two command lines under comparison, with their environments."""

    def __init__(
        self,
        env: dict[str, str],
        tmp: Path,
        bytecode_cache: bool = True,
        repro_extra: list[str] | None = None,
    ):
        self.env = env
        self.repro_extra = list(repro_extra or [])
        base_env = {k: v for k, v in os.environ.items() if k not in ("BUILDKIT_HOST",)}
        # buildx standalone: its own throwaway config dir (no ~/.docker state, refs
        # recorded there vanish with the temp dir); the engine through DOCKER_HOST.
        self.docker_config = tmp / "docker-config"
        self.docker_config.mkdir()
        (self.docker_config / "config.json").write_text("{}\n")
        self.buildx_env = dict(base_env)
        self.buildx_env.update(
            DOCKER_HOST=env["DOCKER_HOST"],
            DOCKER_CONFIG=str(self.docker_config),
            BUILDX_NO_DEFAULT_ATTESTATIONS="1",
        )
        self.repro_env = dict(base_env)
        self.repro_env.update(
            BUILDKIT_HOST=env["BUILDKIT_HOST"],
            DOCKER_HOST=env["DOCKER_HOST"],
            DOCKER_CONFIG=str(self.docker_config),
        )
        if bytecode_cache:
            # As installed software runs: modules compiled once, not at every start
            # (PYTHONDONTWRITEBYTECODE=1 would recompile repro's own modules each
            # time). The cache lives in the temp dir; the project tree is untouched.
            self.repro_env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.repro_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        self.bytecode_cache = bytecode_cache
        self.repro = str(repro_exe())
        # Whether `repro build` normalises here (the default; `--normalise off` not given).
        pairs = {" ".join(p) for p in zip(self.repro_extra, self.repro_extra[1:], strict=False)}
        self.normalises = not ({"--normalise off"} & pairs or "--normalise=off" in self.repro_extra)
        self.buildx = env["REPRO_BUILDX"]

    def repro_argv(self, recipe: Path, dest: Path, no_cache: bool) -> list[str]:
        argv = [self.repro, "build", str(recipe), "-o", f"oci-archive:{dest}"]
        argv += ["--json", "--progress", "quiet"]
        if no_cache:
            argv.append("--no-cache")
        return argv + self.repro_extra

    def buildx_argv(
        self, recipe: Path, dest: Path, no_cache: bool, network: str = "none"
    ) -> list[str]:
        argv = [self.buildx, "build"]
        if no_cache:
            argv.append("--no-cache")
        argv += [
            "--provenance=false",
            "--sbom=false",
            "--progress=quiet",
            "--build-arg",
            f"SOURCE_DATE_EPOCH={EPOCH}",
            "--output",
            f"type=oci,dest={dest},rewrite-timestamp=true",
            "--metadata-file",
            f"{dest}.metadata.json",
            "-f",
            str(recipe / "Dockerfile"),
        ]
        if network != "default":
            argv += ["--network", network]
        argv.append(str(recipe))
        return argv

    def build(
        self, tool: str, recipe: Path, dest: Path, no_cache: bool, network: str = "none"
    ) -> Run:
        """One measured build; retried once if the engine went away meanwhile."""
        for attempt in (1, 2):
            wait_engine(self.env)
            if tool == "repro":
                run = run_measured(self.repro_argv(recipe, dest, no_cache), self.repro_env)
            else:
                run = run_measured(
                    self.buildx_argv(recipe, dest, no_cache, network), self.buildx_env
                )
            if run.rc == 0 and dest.exists():
                run.extra.update(_digests(tool, run, dest))
                if attempt == 2:
                    run.extra["retried"] = True
                return run
            engine_ok = _engine_answers(self.env)
            if attempt == 1 and not engine_ok:
                print(f"bench: {tool} failed while the engine was away; retrying", file=sys.stderr)
                continue
            tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-15:])
            raise BuildFailure(f"{tool} build of {recipe} failed (exit {run.rc}):\n{tail}")
        raise AssertionError("unreachable")


def _engine_answers(env: dict[str, str]) -> bool:
    try:
        return bool(docker_api(env, "GET", "/_ping", timeout=5) == "OK")
    except OSError:
        return False


def _digests(tool: str, run: Run, dest: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tool == "repro":
        with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
            res = json.loads(run.stdout)[0]
            out["digest"] = res["digest"]
            out["internal_seconds"] = res["seconds"]
            # newer repro normalises the export; raw_digest is BuildKit's own
            if res.get("raw_digest"):
                out["raw_digest"] = res["raw_digest"]
            norm = res.get("normalised") or {}
            if isinstance(norm, dict) and "seconds" in norm:
                out["normalise_seconds"] = norm["seconds"]
            exporter = res.get("exporter") or {}
            out["rewrite_timestamp"] = exporter.get("rewrite-timestamp") == "true"
    else:
        meta = Path(f"{dest}.metadata.json")
        with contextlib.suppress(OSError, ValueError):
            out["digest"] = json.loads(meta.read_text()).get("containerimage.digest", "")
        meta.unlink(missing_ok=True)
    return out


_NORMALISE = """
import sys
from pathlib import Path
from repro.build import normalise_output
from repro.lockfile import read_lock
from repro.oci import Output, extract_oci_archive
from repro.recipe import load_recipe
recipe, archive, work = load_recipe(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
raw = extract_oci_archive(archive, work / "raw")
out = Output.parse(f"oci:{work / 'normalised'}")
print(normalise_output(recipe, raw.path, out, recipe.source_date_epoch, read_lock(recipe)).digest)
"""


def normalised_digest(recipe: Path, archive: Path) -> str:
    """buildx's export of `recipe`, normalised by repro's normaliser (its cache off)."""
    with tempfile.TemporaryDirectory(dir=archive.parent) as work:
        run = subprocess.run(
            [sys.executable, "-c", _NORMALISE, str(recipe), str(archive), work],
            capture_output=True, text=True, timeout=1800,
            env={**os.environ, "REPRO_NORMALISE_CACHE": "off", "PYTHONPATH": str(PROJECT)},
        )  # fmt: skip
    if run.returncode != 0:
        return f"(normalising failed: {run.stderr.strip()[-300:]})"
    return run.stdout.strip()


def index_digest(archive: Path) -> str:
    """The manifest digest named by an OCI archive's index.json (small archives only)."""
    with tarfile.open(archive) as tar:
        fh = tar.extractfile("index.json")
        if fh is None:
            return ""
        manifests = json.load(fh).get("manifests") or []
        return str(manifests[0].get("digest", "")) if manifests else ""


def alternate(i: int) -> tuple[str, str]:
    return ("repro", "buildx") if i % 2 == 0 else ("buildx", "repro")


# ------------------------------------------------------------------ data


def write_random(path: Path, size: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, 16 * MiB)
            fh.write(rng.randbytes(n))
            left -= n


def write_recipe(directory: Path, dockerfile: str, network: str = "none") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    toml = f"source_date_epoch = {EPOCH}\n"
    if network != "default":
        toml += f'network = "{network}"\n'
    (directory / "recipe.toml").write_text(toml)


def fresh_copy(src: Path, dest: Path) -> None:
    """A hard-linked copy under a new path: same bytes, a new BuildKit shared key."""
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)


# ------------------------------------------------------------------ results


@dataclass
class Case:
    name: str
    description: str
    unit: str  # "s" or "MiB"
    baseline_name: str
    target: str  # human text
    target_kind: str  # "ratio" or "absolute" or ""
    target_value: float | None
    repro: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def repro_median(self) -> float | None:
        return statistics.median(self.repro) if self.repro else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        r, b = self.repro_median, self.baseline_median
        return r / b if r is not None and b else None

    @property
    def paired_ratio(self) -> float | None:
        """Median of per-repetition ratios: steadier than medians when load drifts."""
        pairs = [r / b for r, b in zip(self.repro, self.baseline, strict=False) if b]
        return statistics.median(pairs) if pairs and self.target_kind == "ratio" else None

    @property
    def met(self) -> bool | None:
        if self.error or self.target_value is None:
            return None
        if self.target_kind == "ratio":
            return None if self.ratio is None else self.ratio <= self.target_value
        if self.target_kind == "absolute":
            r = self.repro_median
            return None if r is None else r <= self.target_value
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "description": self.description,
            "unit": self.unit,
            "repro_median": _round(self.repro_median),
            "baseline": self.baseline_name,
            "baseline_median": _round(self.baseline_median),
            "ratio": _round(self.ratio),
            "paired_ratio": _round(self.paired_ratio),
            "target": self.target,
            "met": self.met,
            "repro_samples": [_round(x) for x in self.repro],
            "baseline_samples": [_round(x) for x in self.baseline],
            "samples": self.samples,
            "notes": self.notes,
            "error": self.error,
        }


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def fmt_value(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "MiB":
        return f"{x:.0f} MiB"
    return f"{x:.3f} s" if x < 10 else f"{x:.2f} s"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_met(case: Case) -> str:
    if case.error:
        return "FAILED"
    return {True: "yes", False: "no", None: "-"}[case.met]


def rows(cases: list[Case]) -> list[list[str]]:
    return [
        [
            c.name,
            fmt_value(c.repro_median, c.unit),
            f"{fmt_value(c.baseline_median, c.unit)} ({c.baseline_name})",
            fmt_ratio(c.ratio),
            c.target,
            fmt_met(c),
        ]
        for c in cases
    ]


HEADERS = ["case", "repro (median)", "baseline (median)", "ratio", "target", "met"]


def header_line(info: dict[str, Any], args: argparse.Namespace) -> str:
    comps = info.get("engine_components") or {}
    containerd = comps.get("containerd")
    engine = f"Docker Engine {info.get('engine', '?')} (embedded BuildKit"
    engine += f", containerd {containerd})" if containerd else ")"
    mode = "quick" if args.quick else "full"
    extra = f" with {' '.join(args.repro_arg)}" if args.repro_arg else ""
    if not info.get("bytecode_cache", True):
        mode += ", no bytecode cache"
    return (
        f"{engine}, buildx {info.get('buildx', '?')}, repro {info.get('repro', '?')}"
        f"{' (' + info['git'] + ')' if info.get('git') else ''}{extra}, "
        f"Python {info['python']}; {info['nproc']} CPUs ({info['cpu'] or '?'}), "
        f"{info['mem_gib']} GiB RAM, Linux {info['kernel']}; "
        f"median of {args.repeat} ({mode}), load avg {info['loadavg']:.1f} at start, "
        f"{info['date']}"
    )


def text_table(cases: list[Case], header: str) -> str:
    table = [HEADERS, *rows(cases)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    lines = [header, ""]
    for n, r in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for c in cases:
        if c.paired_ratio is not None and len(c.repro) > 1:
            lines.append(f"  {c.name}: median of per-run ratios {c.paired_ratio:.2f}x")
        for note in c.notes:
            lines.append(f"  {c.name}: {note}")
        if c.error:
            lines.append(f"  {c.name}: FAILED: {c.error}")
    return "\n".join(lines)


def markdown_table(cases: list[Case], header: str) -> str:
    lines = [f"_{header}_", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
    for r in rows(cases):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |")
    notes = [f"- `{c.name}`: {n}" for c in cases for n in c.notes]
    notes += [f"- `{c.name}`: **failed**: {c.error.splitlines()[0]}" for c in cases if c.error]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ cache cleanup


class CacheJanitor:
    """Prunes, by id, the big build-cache records the large-context cases create.

    Only records that did not exist when the bench started and are not in use are
    candidates; of those, local-source snapshots whose size matches the bench's own
    context (``size_range``) and records whose description carries the bench's
    marker are removed. Other users' caches are left alone.
    """

    MARKER = "repro-bench"

    def __init__(self, env: dict[str, str], enabled: bool):
        self.env = env
        self.enabled = enabled
        self.before = self._ids() if enabled else set()
        self.freed = 0
        self.pruned: list[dict[str, Any]] = []

    def _records(self) -> list[dict[str, Any]]:
        try:
            df = docker_api(self.env, "GET", "/system/df?type=build-cache", timeout=120)
        except (OSError, ValueError):
            return []
        return list(df.get("BuildCache") or []) if isinstance(df, dict) else []

    def _ids(self) -> set[str]:
        return {r["ID"] for r in self._records() if "ID" in r}

    def prune(self, size_range: tuple[int, int] | None = None) -> None:
        if not self.enabled:
            return
        for rec in self._records():
            if rec.get("ID") in self.before or rec.get("InUse"):
                continue
            desc = str(rec.get("Description", ""))
            size = int(rec.get("Size", 0) or 0)
            ours_local = (
                size_range is not None
                and rec.get("Type") == "source.local"
                and desc == "local source for context"
                and size_range[0] <= size <= size_range[1]
            )
            if not (ours_local or self.MARKER in desc):
                continue
            q = urllib.parse.quote(json.dumps({"id": [rec["ID"]]}))
            try:
                res = docker_api(self.env, "POST", f"/build/prune?filters={q}", timeout=300)
            except (OSError, ValueError):
                continue
            self.freed += int(res.get("SpaceReclaimed", 0)) if isinstance(res, dict) else 0
            self.pruned.append(
                {"id": rec["ID"], "type": rec.get("Type"), "size": size, "description": desc}
            )


def context_size_range(root: Path) -> tuple[int, int]:
    """Bounds for the size BuildKit records for a copy of this context."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            total += max(st.st_size, st.st_blocks * 512)
    return int(total * 0.9), int(total * 1.3) + 64 * MiB


# ------------------------------------------------------------------ cases


BIG_BASE_DOCKERFILE = """\
# repro-bench: an application's files on a big base
FROM {base}
COPY app/ /app/
"""

BUILD_DOCKERFILE = """\
# repro-bench: two stages, a pack and an unpack
FROM {base} AS pack
COPY files/ /src/
RUN cd /src && tar -cf /packed.tar . && gzip -n -6 /packed.tar \\
 && sha256sum /packed.tar.gz > /packed.sha256

FROM {base}
COPY --from=pack /packed.tar.gz /packed.sha256 /data/
RUN mkdir /unpacked && gzip -dc /data/packed.tar.gz | tar -xf - -C /unpacked \\
 && du -s /unpacked > /data/size
"""

CONTEXT_DOCKERFILE = """\
# repro-bench: the only work is reading the whole context
FROM {base}
RUN --mount=type=bind,target=/c true
"""

RSS_DOCKERFILE = """\
# repro-bench: a 1 GiB file in, a ~1 GiB layer out
FROM scratch
COPY big.bin /repro-bench-big.bin
"""


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], tmp: Path):
        self.args = args
        self.env = env
        self.tmp = tmp
        self.tools = Tools(
            env,
            tmp,
            bytecode_cache=not args.no_bytecode_cache,
            repro_extra=[a for arg in args.repro_arg for a in shlex.split(arg)],
        )
        self.out = tmp / "out"
        self.out.mkdir()
        self.janitor = CacheJanitor(env, enabled=not args.keep_cache)
        self.failed = False

    def log(self, msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    def measure_pair(
        self,
        case: Case,
        reps: int,
        recipe_for: Callable[[str, int], contextlib.AbstractContextManager[Path]],
        no_cache: bool,
        metric: str = "seconds",
        after_run: Callable[[], None] | None = None,
    ) -> None:
        """reps x (repro, buildx) in alternating order; recipe_for yields the recipe dir."""
        for i in range(reps):
            sample: dict[str, Any] = {"order": list(alternate(i)), "loadavg": os.getloadavg()[0]}
            for tool in alternate(i):
                dest = self.out / f"{tool}.tar"
                with recipe_for(tool, i) as recipe:
                    run = self.tools.build(tool, recipe, dest, no_cache)
                    sample[tool] = {
                        "seconds": round(run.seconds, 4),
                        "maxrss_mib": round(run.maxrss_mib, 1),
                        **run.extra,
                    }
                    # Not timed: what buildx exported, normalised as repro would (while
                    # its recipe directory still exists), for same_digest_note.
                    if (
                        tool == "buildx"
                        and self.tools.normalises
                        and dest.stat().st_size < 512 * MiB
                    ):
                        sample[tool]["normalised_digest"] = normalised_digest(recipe, dest)
                if dest.stat().st_size < 512 * MiB:
                    with contextlib.suppress(OSError, KeyError, tarfile.TarError, ValueError):
                        sample[tool]["index_digest"] = index_digest(dest)
                sample[tool]["archive_bytes"] = dest.stat().st_size
                dest.unlink()
                value = run.seconds if metric == "seconds" else run.maxrss_mib
                (case.repro if tool == "repro" else case.baseline).append(value)
                self.log(
                    f"{case.name} #{i + 1} {tool}: {run.seconds:.3f} s, "
                    f"peak RSS {run.maxrss_mib:.0f} MiB"
                )
                if after_run:
                    after_run()
            case.samples.append(sample)

    def same_digest_note(self, case: Case) -> None:
        """Both tools should make the same image: a check of fairness.

        repro's raw export (`--normalise off`, or its `raw_digest` when BuildKit was asked
        for rewrite-timestamp) against buildx's export; a normalised build whose times
        repro clamped itself against buildx's export normalised by repro's normaliser.
        """
        pairs = []
        for s in case.samples:
            if "repro" not in s or "buildx" not in s:
                continue
            ours, theirs = s["repro"], s["buildx"]
            if ours.get("raw_digest") and not ours.get("rewrite_timestamp", True):
                pairs.append((ours.get("digest"), theirs.get("normalised_digest"), "normalised"))
            else:
                raw = ours.get("raw_digest") or ours.get("digest")
                pairs.append((raw, theirs.get("digest"), "raw"))
        differ = [(a, b, k) for a, b, k in pairs if not a or a != b]
        if differ:
            a, b, kind = differ[0]
            case.notes.append(
                f"the images differ between the tools in {len(differ)} of {len(pairs)} runs "
                f"({kind}: repro {a}, buildx {b})"
            )
        elif pairs and all(k == "normalised" for _, _, k in pairs):
            case.notes.append(
                "same image in every run: repro's digest is buildx's export normalised "
                "(repro asks BuildKit for no rewrite-timestamp; it clamps times itself)"
            )

    def overhead_note(self, case: Case, samples: list[dict[str, Any]] | None = None) -> None:
        runs = [s.get("repro", {}) for s in (case.samples if samples is None else samples)]
        inner = [r["internal_seconds"] for r in runs if "internal_seconds" in r]
        if not inner or not case.repro:
            return
        over = statistics.median(case.repro) - statistics.median(inner)
        norm = [r["normalise_seconds"] for r in runs if "normalise_seconds" in r]
        text = (
            f"repro reports {statistics.median(inner):.3f} s in the BuildKit build; the other "
            f"{over:.3f} s of its wall time are start, imports, argument parsing, connecting"
        )
        if norm:
            text += f", normalising the export ({statistics.median(norm):.3f} s)"
        case.notes.append(text + " and exit")

    def warm_up(self) -> None:
        """One tiny unmeasured build per tool: bytecode compiled, engine connection warm."""
        recipe = self.tmp / "warmup" / "bench-warmup"
        write_recipe(recipe, "FROM scratch\nCOPY hello.txt /\n")
        (recipe / "hello.txt").write_text("hello\n")
        for tool in ("repro", "buildx"):
            dest = self.out / f"{tool}.tar"
            self.tools.build(tool, recipe, dest, no_cache=True)
            dest.unlink()
        shutil.rmtree(recipe.parent, ignore_errors=True)

    # -- build-cold / build-warm ----------------------------------------------------

    def case_build(self) -> list[Case]:
        refresh_base_image(self.env)
        recipe = self.tmp / "build" / "bench-build"
        rng = random.Random(1)
        write_recipe(recipe, BUILD_DOCKERFILE.format(base=self.env["REPRO_BASE_IMAGE"]))
        for n in range(200):
            write_random(recipe / "files" / f"f{n:03d}.bin", 64 * 1024, rng)

        cold = Case(
            "build-cold",
            "two-stage busybox recipe, 200 x 64 KiB files, --no-cache",
            "s",
            "buildx",
            "<= 1.05x buildx",
            "ratio",
            1.05,
        )
        warm = Case(
            "build-warm",
            "the same recipe, everything cached (after one unmeasured build each)",
            "s",
            "buildx",
            "<= 1.05x buildx",
            "ratio",
            1.05,
        )
        for case, no_cache in ((cold, True), (warm, False)):
            # one unmeasured build each first: base image pulled, context sent once,
            # page cache warm (and, for build-warm, the build cache filled; --quick
            # relies on the cold builds having filled it)
            self.compare_builds(case, recipe, no_cache, prime=no_cache or not self.args.quick)
        return [cold, warm]

    def compare_builds(self, case: Case, recipe: Path, no_cache: bool, prime: bool = True) -> None:
        """Measure both tools building `recipe` (after one unmeasured build each, if
        `prime`), with the same-image and overhead notes; a failure goes in `case`."""

        @contextlib.contextmanager
        def same(tool: str, i: int) -> Iterator[Path]:
            yield recipe

        try:
            for tool in ("repro", "buildx") if prime else ():
                dest = self.out / f"{tool}.tar"
                self.tools.build(tool, recipe, dest, no_cache=no_cache)
                dest.unlink()
            self.measure_pair(case, self.args.repeat, same, no_cache)
            self.same_digest_note(case)
            self.overhead_note(case)
        except BuildFailure as exc:
            case.error = str(exc)
            self.failed = True

    # -- big-base-cold / big-base-warm --------------------------------------------------

    def case_big_base(self) -> list[Case]:
        if str(PROJECT / "tests") not in sys.path:
            sys.path.insert(0, str(PROJECT / "tests"))
        from pushimages import random_image

        from repro import oci
        from repro.registry import Registry

        size = (16 if self.args.quick else 64) * 1000 * 1000
        registry = os.environ.get("REPRO_REGISTRY") or self.env["REPRO_BASE_IMAGE"].split("/")[0]
        top = random_image(self.tmp / "big-base", [size], seed=int(time.time()), gzip_level=0)
        repo = f"{registry}/repro-bench/big-base-{uuid.uuid4().hex[:8]}"
        with Registry() as client:
            client.push_layout(oci.OCILayout(self.tmp / "big-base"), f"{repo}:latest")
        shutil.rmtree(self.tmp / "big-base")
        recipe = self.tmp / "big" / "bench-big-base"
        write_recipe(recipe, BIG_BASE_DOCKERFILE.format(base=f"{repo}@{top.digest}"))
        rng = random.Random(3)
        for n in range(2):
            write_random(recipe / "app" / f"part{n}.bin", 1000 * 1000, rng)

        mb = size // 1000 // 1000
        cases = []
        for name, no_cache in (("big-base-cold", True), ("big-base-warm", False)):
            case = Case(
                name,
                f"COPY of 2 MB onto a base with a {mb} MB layer, "
                + ("--no-cache" if no_cache else "cached"),
                "s", "buildx", "<= 1.05x buildx", "ratio", 1.05,
            )  # fmt: skip
            self.compare_builds(case, recipe, no_cache)  # primed: base pulled, shelf filled
            cases.append(case)
        return cases

    # -- context ----------------------------------------------------------------------

    def case_context(self) -> Case:
        refresh_base_image(self.env)
        nfiles, big_mb = (2000, 20) if self.args.quick else (10000, 200)
        name = "context-20mb" if self.args.quick else "context-200mb"
        case = Case(
            name,
            f"context of {nfiles:,} small files + one {big_mb} MB file, bind-mounted by "
            "one RUN; fresh context dir per run, --no-cache",
            "s",
            "buildx",
            "<= 1.5x buildx",
            "ratio",
            1.5,
        )
        src = self.tmp / "context" / "src"
        rng = random.Random(2)
        write_recipe(src, CONTEXT_DOCKERFILE.format(base=self.env["REPRO_BASE_IMAGE"]))
        for n in range(nfiles):
            size = rng.randrange(256, 4096)
            write_random(src / "small" / f"d{n // 100:03d}" / f"f{n:05d}.txt", size, rng)
        write_random(src / "big.bin", big_mb * 1000 * 1000, rng)
        sizes = context_size_range(src)

        @contextlib.contextmanager
        def fresh(tool: str, i: int) -> Iterator[Path]:
            d = self.tmp / "context" / f"ctx-{tool}-{i}"
            fresh_copy(src, d)
            try:
                yield d
            finally:
                shutil.rmtree(d, ignore_errors=True)

        try:
            # one unmeasured build each: the base image is resolved and pulled once
            # (--quick: the build case has done that already)
            with fresh("warmup", 0) as d:
                for tool in ("repro", "buildx"):
                    if self.args.quick and "build" in self.args.cases:
                        break
                    self.tools.build(tool, d, self.out / f"{tool}.tar", no_cache=True)
                    (self.out / f"{tool}.tar").unlink()
            self.measure_pair(
                case,
                self.args.repeat,
                fresh,
                no_cache=True,
                after_run=lambda: self.janitor.prune(sizes),
            )
            self.same_digest_note(case)
            self.overhead_note(case)
        except BuildFailure as exc:
            case.error = str(exc)
            self.failed = True
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)
            self.janitor.prune(sizes)
        return case

    # -- rss-1gb ----------------------------------------------------------------------

    def case_rss(self) -> list[Case]:
        size = 1024 * MiB
        rss = Case(
            "rss-1gb",
            "peak RSS: 1 GiB context file in, ~1 GiB OCI archive out (FROM scratch + COPY)",
            "MiB",
            "buildx",
            "<= 150 MB",
            "absolute",
            150 * 1000 * 1000 / MiB,
        )
        timing = Case(
            "rss-1gb-time",
            "wall time of the same builds",
            "s",
            "buildx",
            "-",
            "",
            None,
        )
        src = self.tmp / "rss" / "src"
        write_recipe(src, RSS_DOCKERFILE)
        write_random(src / "big.bin", size, random.Random(3))
        sizes = context_size_range(src)

        @contextlib.contextmanager
        def fresh(tool: str, i: int) -> Iterator[Path]:
            d = self.tmp / "rss" / f"rss-{tool}-{i}"
            fresh_copy(src, d)
            try:
                yield d
            finally:
                shutil.rmtree(d, ignore_errors=True)

        reps = max(1, min(self.args.repeat, self.args.heavy_repeat))
        try:
            self.measure_pair(
                rss,
                reps,
                fresh,
                no_cache=True,
                metric="maxrss",
                after_run=lambda: self.janitor.prune(sizes),
            )
            for s in rss.samples:
                timing.repro.append(s["repro"]["seconds"])
                timing.baseline.append(s["buildx"]["seconds"])
            mb = [s["repro"]["maxrss_mib"] * MiB / 1e6 for s in rss.samples]
            rss.notes.append(
                f"repro peak RSS {max(mb):.0f} MB at most (target is in MB = 10^6 bytes)"
            )
            archive = [s["repro"]["archive_bytes"] for s in rss.samples]
            rss.notes.append(f"OCI archive received: {archive[0] / 1e9:.2f} GB")
            self.overhead_note(timing, rss.samples)
        except BuildFailure as exc:
            rss.error = str(exc)
            self.failed = True
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)
            self.janitor.prune(sizes)
        return [rss, timing]

    # -- startup ----------------------------------------------------------------------

    def case_startup(self) -> list[Case]:
        reps = 3 if self.args.quick else self.args.startup_repeat
        py = sys.executable
        env = dict(self.tools.repro_env)
        commands = {
            "version": [self.tools.repro, "--version"],
            "help": [self.tools.repro, "--help"],
            "python": [py, "-c", "pass"],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for argv in commands.values():  # warm the page cache, unmeasured
            run_measured(argv, env)
        for _ in range(reps):
            for key, argv in commands.items():
                run = run_measured(argv, env)
                if run.rc != 0:
                    raise BuildFailure(f"{' '.join(argv)} exited {run.rc}: {run.stderr[-500:]}")
                times[key].append(run.seconds)
        cases = []
        for key in ("version", "help"):
            case = Case(
                f"startup --{key}",
                f"repro --{key}, median of {reps}",
                "s",
                "python -c pass",
                "<= 0.3 s",
                "absolute",
                0.3,
            )
            case.repro = times[key]
            case.baseline = times["python"]
            cases.append(case)
        return cases


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_build.py",
        description="repro build vs docker buildx build on the same BuildKit.",
    )
    p.add_argument("--quick", action="store_true", help="CI smoke run: 1 repetition, small")
    p.add_argument("--heavy", action="store_true", help="also the 1 GiB peak-RSS case")
    p.add_argument("--repeat", type=int, default=None, help="repetitions per case (default 5)")
    p.add_argument(
        "--heavy-repeat", type=int, default=2, help="repetitions of the 1 GiB case (default 2)"
    )
    p.add_argument(
        "--startup-repeat", type=int, default=10, help="repetitions of startup (default 10)"
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated subset of: build, big-base, context, rss, startup",
    )
    p.add_argument("--json", type=Path, help="write all results and samples as JSON")
    p.add_argument("--markdown", type=Path, help="write a markdown table for the README")
    p.add_argument(
        "--repro-arg",
        action="append",
        default=[],
        metavar="ARGS",
        help="extra arguments for every `repro build` (e.g. '--normalise off'); repeatable",
    )
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run repro with the environment's bytecode settings as they are "
        "(default: a private PYTHONPYCACHEPREFIX, as an installed tool would have)",
    )
    p.add_argument(
        "--keep-cache",
        action="store_true",
        help="do not prune the big build-cache records the bench created",
    )
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {"build", "big-base", "context", "rss", "startup"}
    if unknown:
        p.error(f"--only: unknown case {sorted(unknown)[0]!r}")
    default = {"build", "big-base", "context", "startup"}
    args.cases = only or default | ({"rss"} if args.heavy else set())
    if args.quick:
        args.cases.discard("rss")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = load_env()
    wait_engine(env)
    info = machine_info(env)
    info["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["loadavg"] = os.getloadavg()[0]
    info["bytecode_cache"] = not args.no_bytecode_cache
    started = time.monotonic()
    cases: list[Case] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmpdir:
        bench = Bench(args, env, Path(tmpdir))
        try:
            if args.cases - {"startup"}:
                bench.log("warm-up build")
                try:
                    bench.warm_up()
                except BuildFailure as exc:
                    print(f"bench: warm-up build failed: {exc}", file=sys.stderr)
                    failed = True
            if "startup" in args.cases:
                bench.log("startup")
                try:
                    cases += bench.case_startup()
                except BuildFailure as exc:
                    print(f"bench: startup failed: {exc}", file=sys.stderr)
                    failed = True
            if "build" in args.cases:
                bench.log("build-cold / build-warm")
                cases += bench.case_build()
            if "big-base" in args.cases:
                bench.log("big-base-cold / big-base-warm")
                cases += bench.case_big_base()
            if "context" in args.cases:
                bench.log("context")
                cases.append(bench.case_context())
            if "rss" in args.cases:
                bench.log("rss-1gb")
                cases += bench.case_rss()
        finally:
            bench.janitor.prune()  # records carrying the bench's marker
        failed = failed or bench.failed
        freed = bench.janitor.freed
        pruned = bench.janitor.pruned
    header = header_line(info, args)
    print(text_table(cases, header))
    elapsed = time.monotonic() - started
    print(f"\n(bench took {elapsed:.0f} s; pruned {freed / 1e6:.0f} MB of its build cache)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "header": header,
                    "machine": info,
                    "repeat": args.repeat,
                    "quick": args.quick,
                    "elapsed_seconds": round(elapsed, 1),
                    "cases": [c.to_json() for c in cases],
                    "failed": failed,
                    "pruned_cache_records": pruned,
                },
                indent=2,
            )
            + "\n"
        )
    if args.markdown:
        args.markdown.write_text(markdown_table(cases, header))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
