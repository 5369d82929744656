"""`repro build --all` as a concurrent graph: the scheduler's rules (unit tests with a
fake build), and real builds of a fixture graph against the dev engine and registry:
the same digests at --jobs 1 and --jobs 4, a failure stopping only its dependants,
and Ctrl-C leaving nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from graphs import graph_names, lock_graph, make_graph, tagged_base
from runner import run_repro

from repro.graph import schedule
from repro.recipe import Recipe, find_recipes

ROOT = Path(__file__).resolve().parent.parent


def repro(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


# --- the scheduler, with a fake build ------------------------------------------------


def _recipes(tmp_path: Path, shape: tuple[int, ...]) -> list[Recipe]:
    make_graph(tmp_path / "recipes", "127.0.0.1:1/x", "example.invalid/base:1", shape)
    return find_recipes(tmp_path / "recipes")


class FakeBuilds:
    """Records when each build runs; each takes `seconds` unless told to fail."""

    def __init__(self, seconds: float = 0.15, fail: tuple[str, ...] = ()):
        self.seconds = seconds
        self.fail = fail
        self.lock = threading.Lock()
        self.running: dict[str | None, int] = {}
        self.peak: dict[str | None, int] = {}
        self.spans: dict[str, tuple[float, float]] = {}
        self.given: dict[str, dict[str, str]] = {}

    def __call__(self, recipe: Recipe, builder: str | None, built: dict[str, str]) -> str:
        with self.lock:
            self.running[builder] = self.running.get(builder, 0) + 1
            self.peak[builder] = max(self.peak.get(builder, 0), self.running[builder])
            self.given[recipe.name] = built
        start = time.monotonic()
        time.sleep(self.seconds)
        with self.lock:
            self.running[builder] -= 1
            self.spans[recipe.name] = (start, time.monotonic())
        if recipe.name in self.fail:
            raise RuntimeError(f"{recipe.name} failed")
        return f"image-{recipe.name}"


def test_schedule_runs_up_to_jobs_at_once_and_dependants_after_their_base(
    tmp_path: Path,
) -> None:
    recipes = _recipes(tmp_path, (5, 2, 1))
    fake = FakeBuilds()
    pushed: list[str] = []
    outcomes = schedule(
        recipes,
        recipes,
        fake,
        jobs=3,
        publish=lambda r, result: pushed.append(r.name) or f"sha256:{r.name}",
    )
    assert [o.recipe.name for o in outcomes] == [n for lv in graph_names((5, 2, 1)) for n in lv]
    assert all(o.ok and o.result == f"image-{o.recipe.name}" for o in outcomes)
    assert fake.peak[None] == 3  # five independent recipes, three at a time
    by = {r.name: r for r in recipes}
    for name, (start, _) in fake.spans.items():
        for base in by[name].recipe_bases:
            assert fake.spans[base][1] <= start, (name, base)
            assert fake.given[name][base] == f"sha256:{base}"
    # Only recipes that others build on are pushed: l1a, l1b (level 2), l2a (level 3).
    assert sorted(pushed) == ["l1a", "l1b", "l2a"]
    # l2a starts when l1a is done, without waiting for the rest of level 1.
    assert fake.spans["l2a"][0] < max(end for _, end in fake.spans.values() if end)


def test_schedule_spreads_over_builders(tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, (6,))
    fake = FakeBuilds()
    outcomes = schedule(recipes, recipes, fake, builders=["one", "two"], jobs=2)
    assert all(o.ok for o in outcomes)
    assert fake.peak == {"one": 2, "two": 2}


def test_a_failure_stops_its_dependants_only(tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, (3, 3, 3))  # l1x <- l2x <- l3x for x in a, b, c
    fake = FakeBuilds(seconds=0.02, fail=("l1b",))
    seen: list[str] = []
    outcomes = schedule(
        recipes,
        recipes,
        fake,
        jobs=2,
        publish=lambda r, _: "d",
        on_outcome=lambda o: seen.append(o.recipe.name),
    )
    state = {o.recipe.name: o for o in outcomes}
    assert isinstance(state["l1b"].error, RuntimeError)
    assert state["l2b"].skipped_for == "l1b" and state["l3b"].skipped_for == "l1b"
    assert "l2b" not in fake.spans and "l3b" not in fake.spans
    assert all(state[n].ok for n in ("l1a", "l1c", "l2a", "l2c", "l3a", "l3c"))
    assert seen == [o.recipe.name for o in outcomes]  # reported in graph order


def test_an_interrupt_cancels_running_builds_and_waits_for_them(tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, (4, 1))
    cancel = threading.Event()
    stopped: list[str] = []
    started: list[str] = []

    def build(recipe: Recipe, builder: str | None, built: dict[str, str]) -> str:
        assert cancel.wait(10), "never cancelled"
        time.sleep(0.1)  # cleaning up takes a moment; schedule must wait for it
        stopped.append(recipe.name)
        raise RuntimeError("cancelled")

    def on_start(recipe: Recipe, builder: str | None) -> None:
        started.append(recipe.name)
        if len(started) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        schedule(recipes, recipes, build, jobs=4, on_start=on_start, cancel=cancel)
    assert cancel.is_set()
    assert sorted(stopped) == ["l1a", "l1b"]  # the two started before the interrupt


# --- real builds ---------------------------------------------------------------------

SHAPE = (2, 2, 1)  # l1a l1b <- l2a l2b <- l3a


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = os.environ.get("REPRO_BASE_IMAGE", "")
    if not base:
        pytest.skip("REPRO_BASE_IMAGE is not set (scripts/dev-env up pushes the base image)")
    work = tmp_path_factory.mktemp("graph")
    root = work / "recipes"
    publish_to = f"{os.environ['REPRO_REGISTRY']}/repro-test/graph-{uuid.uuid4().hex[:10]}"
    make_graph(root, publish_to, tagged_base(base), SHAPE, fail_arg=["l1b"])
    lock_graph(root, SHAPE, repro, work)
    return root


def _build_all(graph: Path, cwd: Path, *extra: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    cwd.mkdir()
    return repro("build", "--all", "--recipes-dir", str(graph), *extra, cwd=cwd, env=env)


@pytest.mark.engine
def test_concurrent_build_all_gives_the_sequential_digests(graph: Path, tmp_path: Path) -> None:
    one = _build_all(graph, tmp_path / "one", "--jobs", "1", "--json", "--progress", "quiet")
    assert one.returncode == 0, one.stderr[-3000:]
    many = _build_all(
        graph, tmp_path / "many", "--jobs", "4", "--progress", "plain", "--no-cache",
        env={"GITHUB_ACTIONS": "true"},
    )  # fmt: skip
    assert many.returncode == 0, many.stderr[-3000:]
    sequential = {x["recipe"]: x["digest"] for x in json.loads(one.stdout)}
    names = [n for level in graph_names(SHAPE) for n in level]
    assert list(sequential) == names
    # Text lines in graph order, the same digests as one build at a time.
    lines = many.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == names
    for line in lines:
        name, rest = line.split(": ", 1)
        digest, output = rest.split()[:2]
        assert digest == sequential[name] and output == f"oci:out/{name}"
        assert (tmp_path / "many" / "out" / name / "index.json").is_file()
    # One log group per recipe on GitHub Actions.
    for name in names:
        assert many.stderr.count(f"::group::repro build {name}\n") == 1
    assert many.stderr.count("::endgroup::") == len(names)


@pytest.mark.engine
def test_a_failed_recipe_stops_its_dependants_not_the_others(graph: Path, tmp_path: Path) -> None:
    r = _build_all(graph, tmp_path / "w", "--build-arg", "FAIL=1", "--progress", "quiet")
    assert r.returncode == 1, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("repro: error: ")]
    # l1b fails (its RUN checks FAIL); l2b builds on it; l1a <- l2a <- l3a go on.
    assert len(errors) == 2, r.stderr[-3000:]
    assert errors[0].startswith("repro: error: ") and "l1b" in errors[0], errors
    assert errors[1] == "repro: error: l2b: not built: its base recipe:l1b failed"
    built = [line.split(":")[0] for line in r.stdout.splitlines()]
    assert built == ["l1a", "l2a", "l3a"]
    out = tmp_path / "w" / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(built)


@pytest.mark.engine
def test_ctrl_c_cancels_every_build_and_leaves_nothing(tmp_path: Path) -> None:
    base = os.environ.get("REPRO_BASE_IMAGE", "")
    if not base:
        pytest.skip("REPRO_BASE_IMAGE is not set")
    root = tmp_path / "recipes"
    token = uuid.uuid4().hex[:8]  # new RUN steps: nothing cached
    publish_to = f"{os.environ['REPRO_REGISTRY']}/repro-test/sigint-{token}"
    make_graph(root, publish_to, tagged_base(base), (3,), sleep=300)
    for d in root.iterdir():
        if d.is_dir():
            (d / "note").write_text(token)
    assert repro("lock", "--recipes-dir", str(root), cwd=tmp_path).returncode == 0
    work = tmp_path / "w"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "build", "--all", "--recipes-dir", str(root),
         "--jobs", "3", "--progress", "plain"],
        cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Wait until the three builds run their `sleep` on BuildKit (or the build ended).
    deadline = time.monotonic() + 120
    staged = []
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list((work / "out").glob(".*")) if (work / "out").is_dir() else []
        if len(staged) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    # The 300 s sleeps are cancelled on BuildKit, not waited for.
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "repro: interrupted"
    assert stdout == ""
    left = list((work / "out").iterdir()) if (work / "out").exists() else []
    assert left == [], left


def test_early_recipes_start_at_once_and_are_confirmed_after_their_bases(
    tmp_path: Path,
) -> None:
    recipes = _recipes(tmp_path, (2, 2, 1))  # l1a <- l2a <- l3a, l1b <- l2b
    # All five builds must be running at once to get past the barrier.
    barrier = threading.Barrier(5, timeout=30)

    def build(recipe: Recipe, builder: str | None, built: dict[str, str]) -> str:
        barrier.wait()
        if recipe.name == "l1b":
            raise RuntimeError("l1b failed")
        return f"image-{recipe.name}"

    confirmed: dict[str, dict[str, str]] = {}
    discarded: list[str] = []
    pushed: list[str] = []

    def confirm(recipe: Recipe, result: str, built: dict[str, str]) -> str:
        confirmed[recipe.name] = built
        if recipe.name == "l3a":
            raise RuntimeError("l3a: base recipe:l2a was rebuilt as another image")
        return result + "-confirmed"

    outcomes = schedule(
        recipes,
        recipes,
        build,
        jobs=8,
        early={"l2a", "l2b", "l3a"},
        confirm=confirm,
        discard=lambda r, _: discarded.append(r.name),
        publish=lambda r, result: pushed.append(r.name) or f"sha256:{r.name}",
    )
    state = {o.recipe.name: o for o in outcomes}
    assert isinstance(state["l1b"].error, RuntimeError)
    assert state["l2a"].ok and state["l2a"].result == "image-l2a-confirmed"
    assert confirmed["l2a"] == {"l1a": "sha256:l1a"}  # confirmed once l1a was pushed
    assert confirmed["l3a"] == {"l1a": "sha256:l1a", "l2a": "sha256:l2a"}
    assert isinstance(state["l3a"].error, RuntimeError)
    # l2b was built, but its base failed: its result is thrown away, the recipe skipped.
    assert discarded == ["l2b"] and state["l2b"].skipped_for == "l1b"
    assert "l2b" not in confirmed
    # An early recipe is pushed only once confirmed.
    assert sorted(pushed) == ["l1a", "l2a"]


def test_early_answered_later_roots_start_first(tmp_path: Path) -> None:
    """`early` as a future (the registry question): the recipes with no bases start
    before it is answered; those it names then start without waiting, and a named
    recipe whose bases are done by the time it starts is built as usual."""
    from concurrent.futures import Future

    recipes = _recipes(tmp_path, (2, 2, 1))  # l1a <- l2a <- l3a, l1b <- l2b
    answer: Future[set[str]] = Future()
    started: list[str] = []
    snapshots: dict[str, dict[str, str]] = {}
    l1b_may_end = threading.Event()

    def build(recipe: Recipe, builder: str | None, built: dict[str, str]) -> str:
        started.append(recipe.name)
        snapshots[recipe.name] = dict(built)
        if recipe.name == "l1a":
            # l1a is done before the answer comes, so l2a starts as usual after it.
            threading.Timer(0.3, answer.set_result, [{"l2a", "l2b", "l3a"}]).start()
        if recipe.name == "l1b":
            assert l1b_may_end.wait(10)
        if recipe.name == "l2b":
            l1b_may_end.set()  # started early: its base is still building
        return f"image-{recipe.name}"

    confirmed: list[str] = []

    def confirm(recipe: Recipe, result: str, built: dict[str, str]) -> str:
        confirmed.append(recipe.name)
        return result

    outcomes = schedule(
        recipes,
        recipes,
        build,
        jobs=8,
        early=answer,
        confirm=confirm,
        publish=lambda r, result: f"sha256:{r.name}",
    )
    assert all(o.ok for o in outcomes), [(o.recipe.name, o.error) for o in outcomes]
    assert started[:2] == ["l1a", "l1b"] or started[:2] == ["l1b", "l1a"]
    assert snapshots["l2a"] == {"l1a": "sha256:l1a"}  # built as usual, given its base
    assert "l1b" not in snapshots["l2b"]  # early: its base l1b not yet there
    assert "l2b" in confirmed and "l2a" not in confirmed


def test_a_failed_early_question_means_waiting_for_bases(tmp_path: Path) -> None:
    from concurrent.futures import Future

    recipes = _recipes(tmp_path, (1, 1))  # l1a <- l2a
    answer: Future[set[str]] = Future()
    answer.set_exception(RuntimeError("registry went away"))
    snapshots: dict[str, dict[str, str]] = {}

    def build(recipe: Recipe, builder: str | None, built: dict[str, str]) -> str:
        snapshots[recipe.name] = dict(built)
        return recipe.name

    outcomes = schedule(
        recipes, recipes, build, jobs=8, early=answer, publish=lambda r, _: f"sha256:{r.name}"
    )
    assert [o.result for o in outcomes] == ["l1a", "l2a"]
    assert snapshots["l2a"] == {"l1a": "sha256:l1a"}
