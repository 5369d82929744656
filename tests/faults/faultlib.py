"""Running real `repro` commands under faults, judging how they ended, and checking
that nothing they write was left half-written.

One fault, one `Outcome`:

- ``recovered``: exit 0 and the right result (the digest of a clean run);
- ``failed cleanly``: exit 1, 2, 130 or 143 (130 when it was interrupted, 143 when
  it was terminated by SIGTERM), exactly one ``repro: error: …`` / ``repro:
  interrupted`` / ``repro: terminated`` line last on stderr, no traceback; or, for a
  SIGINT or SIGTERM that came before repro installed its handler (or after the
  default was restored at exit), death by that signal with nothing printed;
- ``killed``: SIGKILL, which no program can answer; only the state it left counts;
- ``unclear``: anything else (a traceback, a wrong exit code, a wrong result).

Then `inspect` checks what the command may have written: each lock parses and is the
old or the new content; an output directory is absent or a complete OCI layout
(``OCILayout.verify(full=True)``); no temporary file is left beside an output, a lock
or in the cache (after SIGKILL those are counted as debris, not half-written:
nothing can clean up after SIGKILL but the next run); every cache entry matches its
digest; a registry tag is absent or names an image whose blobs are all there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RECOVERED = "recovered"
FAILED_CLEANLY = "failed cleanly"
KILLED = "killed"
UNCLEAR = "unclear"


@dataclass
class Outcome:
    fault: str
    command: str
    result: str
    exit_code: int
    detail: str = ""
    half_written: list[str] = field(default_factory=list)
    debris: list[str] = field(default_factory=list)
    rerun_ok: bool | None = None


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        return outcome

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    def report(self) -> list[str]:
        half = [o for o in self.outcomes if o.half_written]
        debris = [o for o in self.outcomes if o.debris]
        reruns = [o for o in self.outcomes if o.rerun_ok is not None]
        lines = [
            f"faults injected: {len(self.outcomes)}; recovered: {self.count(RECOVERED)}; "
            f"failed cleanly: {self.count(FAILED_CLEANLY)}; killed (SIGKILL): "
            f"{self.count(KILLED)}; unclear: {self.count(UNCLEAR)}; "
            f"half-written results: {len(half)}",
            f"re-runs after a fault: {len(reruns)}, succeeded: "
            f"{sum(1 for o in reruns if o.rerun_ok)}; SIGKILL debris left for the next "
            f"run: {len(debris)}",
        ]
        for o in self.outcomes:
            line = f"  {o.command:<8} {o.fault:<44} -> {o.result} (exit {o.exit_code})"
            if o.detail:
                line += f": {o.detail[:110]}"
            lines.append(line)
            for item in o.half_written:
                lines.append(f"      HALF-WRITTEN {item}")
            for item in o.debris:
                lines.append(f"      debris {item}")
        return lines


TALLY = Tally()


@dataclass
class Work:
    """A copy of some recipes with their own registry namespace and cache."""

    path: Path
    registry: str  # host[:port]/namespace, as written in repro.toml
    cache: Path

    def env(self, **extra: str) -> dict[str, str]:
        tmp = self.path / "tmp"
        tmp.mkdir(exist_ok=True)
        return {
            **os.environ,
            "XDG_CACHE_HOME": str(self.cache),
            "TMPDIR": str(tmp),
            "PYTHONPATH": str(ROOT),
            **extra,
        }

    def lock(self, name: str) -> Path:
        return self.path / "recipes" / name / "repro.lock"


def workspace(
    tmp: Path,
    host: str,
    names: Sequence[str] = ("hello",),
    *,
    base_host: str | None = None,
    namespace: str | None = None,
    extra: str = "",
) -> Work:
    """Copies of recipes/NAME under `tmp`, publishing to `host`/repro-test/faults-XXXX.

    With `base_host`, the busybox base is named on that host (a proxy in front of the
    registry), in the Dockerfile and recipe.toml alike; the lock is then re-made."""
    recipes = tmp / "recipes"
    recipes.mkdir(parents=True)
    for name in names:
        shutil.copytree(ROOT / "recipes" / name, recipes / name)
        if base_host:
            for file in ("Dockerfile", "recipe.toml"):
                path = recipes / name / file
                path.write_text(path.read_text().replace("127.0.0.1:5000/", f"{base_host}/"))
            (recipes / name / "repro.lock").unlink()
    namespace = namespace or f"repro-test/faults-{uuid.uuid4().hex[:10]}"
    registry = f"{host}/{namespace}"
    (recipes / "repro.toml").write_text(f'registry = "{registry}"\n{extra}')
    return Work(tmp, registry, tmp / "cache")


def repro_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "repro", *args]


def run(work: Work, *args: str, env: dict[str, str] | None = None, timeout: float = 300):  # type: ignore[no-untyped-def]
    return subprocess.run(
        repro_argv(*args),
        cwd=work.path,
        env=env or work.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_killed(
    work: Work,
    args: Sequence[str],
    sig: signal.Signals,
    after: float,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str, bool]:
    """Start `repro ARGS`, send `sig` to its process group `after` seconds in (as a
    terminal's Ctrl-C does), and wait. Returns (exit code, stdout, stderr, whether the
    signal was sent before the command ended by itself)."""
    proc = subprocess.Popen(
        repro_argv(*args),
        cwd=work.path,
        env=env or work.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sent = False
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, sig)
            sent = True
        except ProcessLookupError:
            pass
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += "\n(fault suite: did not end within 120 s of the signal)"
    if sig == signal.SIGKILL and sent:
        # The group may hold helpers (buildctl, diffoscope) that outlived the kill.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out, err, sent


def judge(
    code: int,
    stderr: str,
    correct: Callable[[], str],
    *,
    interrupted: bool = False,
    killed: bool = False,
    terminated: bool = False,
) -> tuple[str, str]:
    """(result, detail) of one faulted command; `correct()` says what is wrong with
    a successful run's result ("" when it is right)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if killed and code == -signal.SIGKILL:
        return KILLED, ""
    if interrupted and code == -signal.SIGINT and not lines:
        # Ctrl-C before Python set up its handler or after it restored the default at
        # exit: the process ends by the signal itself, which a shell reports as 130.
        return FAILED_CLEANLY, "ended by SIGINT itself (start-up or exit), shell status 130"
    if terminated and code == -signal.SIGTERM and not lines:
        # Before repro's handler is installed (the interpreter starting, imports).
        return FAILED_CLEANLY, "ended by SIGTERM itself (start-up), shell status 143"
    if "Traceback" in stderr:
        return UNCLEAR, "traceback: " + last
    if code == 0:
        wrong = correct()
        return (RECOVERED, "") if not wrong else (UNCLEAR, "exit 0 but " + wrong)
    pattern = r"repro: (error: |interrupted$|terminated$)"
    errors = [line for line in lines if re.match(pattern, line)]
    if interrupted and code != 130:
        return UNCLEAR, f"interrupted but exit {code}: {last}"
    if terminated and code != 143:
        return UNCLEAR, f"terminated but exit {code}: {last}"
    if code not in (1, 2, 130, 143) or len(errors) != 1 or errors[0] != last:
        return UNCLEAR, f"exit {code}, last line {last!r} ({len(errors)} error lines)"
    return FAILED_CLEANLY, last


# --- what may have been written ------------------------------------------------------


def _leftovers(directory: Path, stem: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(f".{stem}"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_lock(work: Work, name: str, allowed: Iterable[bytes | None]) -> list[str]:
    from repro.lockfile import Lock

    problems: list[str] = []
    path = work.lock(name)
    data = path.read_bytes() if path.exists() else None
    if data not in list(allowed):
        problems.append(f"{path}: neither the old nor the new lock")
    if data is not None:
        try:
            Lock.from_toml(tomllib.loads(data.decode()))
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
            problems.append(f"{path}: does not parse: {exc}")
    return problems


def check_layout(path: Path) -> list[str]:
    from repro import oci

    if not path.exists():
        return []
    try:
        oci.OCILayout(path).verify(full=True)
    except Exception as exc:  # noqa: BLE001
        return [f"{path}: not a complete OCI layout: {exc}"]
    return []


def check_archive(path: Path) -> list[str]:
    from repro import oci

    if not path.exists():
        return []
    try:
        with oci.open_source(f"oci-archive:{path}") as source:
            source.layout.verify(full=True)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001
        return [f"{path}: not a complete OCI archive: {exc}"]
    return []


def check_cache(cache: Path) -> tuple[list[str], list[str]]:
    """(half-written entries, temporary files) in repro's cache."""
    bad: list[str] = []
    temps: list[str] = []
    root = cache / "repro"
    if not root.exists():
        return bad, temps
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        name = path.name
        if name.startswith(".") or name.endswith(".tmp"):
            temps.append(str(path))
            continue
        if path.parent.name == "pool" and re.fullmatch(r"[0-9a-f]{64}", name):
            if _sha256_file(path) != name:
                bad.append(f"{path}: bytes do not match its name")
        elif path.parent.name == "blobs" and name.startswith("sha256-"):
            if _sha256_file(path) != name.removeprefix("sha256-"):
                bad.append(f"{path}: bytes do not match its name")
        elif name.endswith(".json"):
            try:
                json.loads(path.read_bytes())
            except ValueError:
                bad.append(f"{path}: not JSON")
    return bad, temps


def check_tag(reference: str, allowed: Iterable[str | None] | None = None) -> list[str]:
    """The tag is absent, or names a complete image (every manifest and blob there)."""
    from repro.errors import RegistryError
    from repro.registry import Registry

    with Registry() as client:
        try:
            top = client.resolve(reference)
        except RegistryError as exc:
            if "not found" in str(exc):
                return [] if allowed is None or None in allowed else [f"{reference}: gone"]
            raise
        if allowed is not None and top.digest not in allowed:
            return [f"{reference}: names {top.digest}, neither the old nor the new image"]
        repo = reference.rsplit(":", 1)[0]
        todo = [top.digest]
        while todo:
            digest = todo.pop()
            raw, _media, _ = client.get_manifest(f"{repo}@{digest}")
            doc = json.loads(raw)
            for child in doc.get("manifests", []):
                todo.append(child["digest"])
            for blob in [doc.get("config"), *doc.get("layers", [])]:
                if blob and not client.blob_exists(repo, blob["digest"]):
                    return [f"{reference}: blob {blob['digest']} is missing"]
    return []


def inspect(
    work: Work,
    *,
    killed: bool,
    locks: dict[str, Iterable[bytes | None]] | None = None,
    layouts: Sequence[Path] = (),
    archives: Sequence[Path] = (),
    tags: dict[str, Iterable[str | None] | None] | None = None,
) -> tuple[list[str], list[str]]:
    """(half-written results, debris) after one fault."""
    half: list[str] = []
    temps: list[str] = []
    for name, allowed in (locks or {}).items():
        half += check_lock(work, name, allowed)
        temps += [str(p) for p in _leftovers(work.lock(name).parent, "repro.lock")]
    for path in layouts:
        half += check_layout(path)
        temps += [str(p) for p in _leftovers(path.parent, path.name)]
    for path in archives:
        half += check_archive(path)
        temps += [str(p) for p in _leftovers(path.parent, path.name)]
    bad, cache_temps = check_cache(work.cache)
    half += bad
    temps += cache_temps
    for reference, allowed in (tags or {}).items():
        half += check_tag(reference, allowed)
    if killed:
        return half, temps
    return half + [f"left behind: {t}" for t in temps], []


def record(
    fault: str,
    command: str,
    code: int,
    stderr: str,
    correct: Callable[[], str],
    state: tuple[list[str], list[str]],
    *,
    interrupted: bool = False,
    killed: bool = False,
    terminated: bool = False,
    rerun: Callable[[], bool] | None = None,
) -> Outcome:
    """Judge one fault, check what it left, and (unless the command recovered by
    itself, which already shows that it works) re-run it without the fault."""
    result, detail = judge(
        code, stderr, correct, interrupted=interrupted, killed=killed, terminated=terminated
    )
    half, debris = state
    outcome = Outcome(fault, command, result, code, detail, half, debris)
    if rerun is not None and result != RECOVERED:
        outcome.rerun_ok = rerun()
    return TALLY.add(outcome)


def assert_fine(
    outcome: Outcome, allowed: Sequence[str] = (RECOVERED, FAILED_CLEANLY, KILLED)
) -> None:
    assert outcome.result in allowed, outcome
    assert not outcome.half_written, outcome
    assert outcome.rerun_ok in (None, True), outcome


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False
