"""The daily loop of the generated workflow, run locally against the real registry
and engine: an upstream tag moves, `repro ci update` commits each recipe's change
list as its own commit (the base first, then the recipe built on it, whose lock moves
to the base's rebuilt image), verify passes, and the graph builds in order."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from runner import run_repro
from test_lock_engine import image_file, make_recipe, push_image, read_lock

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def repro(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT), **GIT_ENV}, timeout=900)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_daily_update_commits_per_recipe_and_moves_dependants(
    tmp_path: Path, registry: str
) -> None:
    name = f"repro-test/daily-{uuid.uuid4().hex[:10]}"
    v1, _ = push_image(registry, f"{name}/upstream:stable", {"marker": b"one"})
    steady, _ = push_image(registry, f"{name}/steady:1", {"marker": b"steady"})
    upstream = f"{registry}/{name}/upstream:stable"
    repo = tmp_path / "repo"
    recipes = repo / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "repro.toml").write_text(f'registry = "{registry}/{name}"\n')
    # COPY without --chmod: modes follow the checkout's umask, which verify varies.
    toml = 'source_date_epoch = 1\nnetwork = "none"\nbases = ["{}"]\n[normalise]\numask = "022"\n'
    make_recipe(
        recipes, "base", toml.format(upstream), f"FROM {upstream}\nCOPY b /b\n", {"b": "b\n"}
    )
    child = make_recipe(
        recipes, "child", toml.format("recipe:base"), "FROM recipe:base\nCOPY c /c\n", {"c": "c\n"}
    )
    other_ref = f"{registry}/{name}/steady:1"
    make_recipe(recipes, "other", toml.format(other_ref), f"FROM {other_ref}\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "recipes")

    # First run: every lock is created, each in its own commit, the base pushed first.
    r = repro("ci", "update", cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    subjects = git(repo, "log", "--format=%s").splitlines()
    assert subjects == [
        "[child] repro.lock created",
        "[other] repro.lock created",
        "[base] repro.lock created",
        "recipes",
    ]
    assert git(repo, "status", "--porcelain").strip() == ""
    first_base = read_lock(child)["bases"]["recipe:base"]["digest"]

    # Nothing moved: no commit.
    r = repro("ci", "update", cwd=repo)
    assert r.returncode == 0 and "all locks are current" in r.stdout, r.stdout + r.stderr
    assert len(git(repo, "log", "--format=%s").splitlines()) == 4

    # The upstream tag moves: the base's lock, then the child's, each its own commit.
    v2, _ = push_image(registry, f"{name}/upstream:stable", {"marker": b"two"})
    r = repro("ci", "update", cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    log = git(repo, "log", "--format=%H %s", "-3").splitlines()
    (child_sha, child_subject), (base_sha, base_subject) = (x.split(" ", 1) for x in log[:2])
    assert base_subject == f"[base] base:{upstream} {v1[:19]}… -> {v2[:19]}…"
    assert child_subject.startswith(f"[child] base:recipe:base {first_base[:19]}… -> ")
    assert log[2].endswith("[child] repro.lock created")
    for sha, path in (
        (base_sha, "recipes/base/repro.lock"),
        (child_sha, "recipes/child/repro.lock"),
    ):
        assert git(repo, "show", "--name-only", "--format=", sha).split() == [path]
    body = git(repo, "log", "-1", "--format=%b", base_sha).strip()
    assert body == f"base:{upstream} {v1[:19]}… -> {v2[:19]}…"
    assert read_lock(recipes / "other")["bases"][other_ref]["digest"] == steady
    new_base = read_lock(child)["bases"]["recipe:base"]["digest"]
    assert new_base != first_base

    # Verify passes on the updated graph, and it builds in graph order.
    r = repro("lock", "--check", cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr
    r = repro("verify", "--all", "--json", cwd=repo)
    verdicts = {
        x["recipe"]: (x["verdict"], x["digest1"], x["digest2"]) for x in json.loads(r.stdout)
    }
    bad = [
        {k: x.get(k) for k in ("recipe", "verdict", "digest1", "digest2", "platforms", "findings")}
        for x in json.loads(r.stdout)
        if x["verdict"] != "identical"
    ]
    assert r.returncode == 0, (verdicts, bad, r.stderr[-3000:])
    assert {x["recipe"] for x in json.loads(r.stdout)} == {"base", "child", "other"}
    r = repro("build", "--all", "--json", "--progress", "quiet", cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [x["recipe"] for x in json.loads(r.stdout)]
    assert results.index("base") < results.index("child")
    assert next(x for x in json.loads(r.stdout) if x["recipe"] == "base")["digest"] == new_base
    assert image_file(repo / "out" / "child", "marker") == b"two"
