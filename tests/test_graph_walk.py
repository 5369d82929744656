"""graph.schedule, the scheduler of `repro build --all`: pure logic, with a build
function that records when each recipe starts and ends (see also
tests/test_graph_build.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_ci import GRAPH, make_graph

from repro.graph import levels, schedule
from repro.recipe import Recipe, find_recipes


def walk(*args: Any, **kwargs: Any) -> list[Any]:
    """The results in graph order; the first failure (in that order) raised."""
    outcomes = schedule(*args, **kwargs)
    for o in outcomes:
        if o.error is not None:
            raise o.error
    return [o.result for o in outcomes]


class Recorder:
    def __init__(self, slow: dict[str, float] | None = None, fail: str = "") -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str | None]] = []
        self.running: dict[str | None, int] = {}
        self.peak: dict[str | None, int] = {}
        self.snapshots: dict[str, dict[str, str]] = {}
        self.slow = slow or {}
        self.fail = fail

    def __call__(self, recipe: Recipe, builder: str | None, built: dict[str, str]) -> str:
        with self.lock:
            self.events.append(("start", recipe.name, builder))
            self.running[builder] = self.running.get(builder, 0) + 1
            self.peak[builder] = max(self.peak.get(builder, 0), self.running[builder])
            self.snapshots[recipe.name] = dict(built)
        time.sleep(self.slow.get(recipe.name, 0.02))
        with self.lock:
            self.running[builder] -= 1
            self.events.append(("end", recipe.name, builder))
        if recipe.name == self.fail:
            raise RuntimeError(f"{recipe.name} failed")
        return f"result:{recipe.name}"

    def index(self, kind: str, name: str) -> int:
        return next(i for i, e in enumerate(self.events) if e[:2] == (kind, name))


@pytest.fixture
def recipes(tmp_path: Path) -> list[Recipe]:
    return find_recipes(make_graph(tmp_path))


def order_of(recipes: list[Recipe]) -> list[str]:
    return [n for level in levels(recipes) for n in level]


def test_one_at_a_time_is_the_levels_order(recipes: list[Recipe]) -> None:
    rec = Recorder()
    results = walk(recipes, recipes, rec)
    assert results == [f"result:{n}" for n in order_of(recipes)]
    assert [e[1] for e in rec.events if e[0] == "start"] == order_of(recipes)
    assert rec.peak == {None: 1}


def test_dependants_start_after_their_bases_and_no_level_barrier(recipes: list[Recipe]) -> None:
    # base-c is slow; mid-1 (on base-a) must not wait for it.
    rec = Recorder(slow={"base-c": 0.5})
    results = walk(recipes, recipes, rec, jobs=4)
    assert results == [f"result:{n}" for n in order_of(recipes)]
    for name, deps in GRAPH.items():
        for dep in deps:
            assert rec.index("end", dep) < rec.index("start", name), (dep, name)
    assert rec.index("start", "mid-1") < rec.index("end", "base-c")
    assert 1 < rec.peak[None] <= 4


def test_builds_are_spread_over_builders_up_to_jobs_each(recipes: list[Recipe]) -> None:
    rec = Recorder(slow={n: 0.05 for n in GRAPH})
    walk(recipes, recipes, rec, builders=["a", "b"], jobs=2)
    assert set(rec.peak) == {"a", "b"}
    assert all(1 <= p <= 2 for p in rec.peak.values())


def test_published_bases_reach_their_dependants(recipes: list[Recipe]) -> None:
    rec = Recorder()
    published: list[str] = []

    def publish(recipe: Recipe, result: str) -> str:
        published.append(recipe.name)
        return f"sha256:{recipe.name}"

    walk(recipes, recipes, rec, publish=publish, jobs=3)
    bases = {d for deps in GRAPH.values() for d in deps}
    assert sorted(published) == sorted(bases)
    for name, deps in GRAPH.items():
        for dep in deps:
            assert rec.snapshots[name][dep] == f"sha256:{dep}"


def test_a_failure_stops_its_dependants_and_is_raised(recipes: list[Recipe]) -> None:
    rec = Recorder(fail="base-a")
    with pytest.raises(RuntimeError, match="base-a failed"):
        walk(recipes, recipes, rec, jobs=2)
    started = {e[1] for e in rec.events if e[0] == "start"}
    for name in ("mid-1", "mid-2", "top-1", "top-2", "top-4"):
        assert name not in started
    assert {"base-b", "base-c"} <= started  # the recipes independent of it still ran
    # every build that started also ended: nothing is left running
    assert len([e for e in rec.events if e[0] == "end"]) == len(started)


def test_jobs_must_be_positive(recipes: list[Recipe]) -> None:
    with pytest.raises(ValueError):
        walk(recipes, recipes, Recorder(), jobs=0)
