"""`repro build --all --jobs N` against the real engine and registry: a small graph
built several recipes at a time gives the same digests as one at a time, bases
before their dependants, each recipe's progress in one block (a log group on
GitHub Actions)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from runner import run_repro
from test_lock_engine import image_file, make_recipe, push_image

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.engine


def repro(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT), **(env or {})}, timeout=900)


def test_jobs_build_the_same_digests_with_grouped_progress(tmp_path: Path, registry: str) -> None:
    name = f"repro-test/jobs-{uuid.uuid4().hex[:10]}"
    push_image(registry, f"{name}/root:v1", {"marker": b"root"})
    root = f"{registry}/{name}/root:v1"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "repro.toml").write_text(f'registry = "{registry}/{name}"\n')
    toml = 'source_date_epoch = 1\nnetwork = "none"\nbases = ["{}"]\n'
    for base in ("b1", "b2"):
        make_recipe(recipes, base, toml.format(root), f"FROM {root}\nCOPY f /f\n", {"f": base})
    for child, base in (("c1", "b1"), ("c2", "b1"), ("c3", "b2")):
        make_recipe(
            recipes,
            child,
            toml.format(f"recipe:{base}"),
            f"FROM recipe:{base}\nCOPY c /c\n",
            {"c": f"{child}\n"},
        )
    # Locks: the bases first, then (after build --all pushed them) the children.
    assert repro("lock", "b1", "b2", "--recipes-dir", str(recipes)).returncode == 0
    repro("build", "--all", "--recipes-dir", str(recipes), "--progress", "quiet", cwd=tmp_path)
    r = repro("lock", "--recipes-dir", str(recipes))
    assert r.returncode == 0, r.stderr

    one = repro(
        "build", "--all", "--recipes-dir", str(recipes), "--json", "--no-cache",
        "--progress", "quiet", "-o", "oci:unused", cwd=tmp_path,
    )  # fmt: skip
    assert one.returncode == 2 and "--output names one image" in one.stderr
    one = repro(
        "build", "--all", "--recipes-dir", str(recipes), "--json", "--no-cache",
        "--progress", "quiet", cwd=tmp_path,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    many = repro(
        "build", "--all", "--recipes-dir", str(recipes), "--json", "--no-cache",
        "--progress", "plain", "--jobs", "3", cwd=tmp_path,
        env={"GITHUB_ACTIONS": "true"},
    )  # fmt: skip
    assert many.returncode == 0, many.stderr[-3000:]
    digests_one = {x["recipe"]: x["digest"] for x in json.loads(one.stdout)}
    digests_many = {x["recipe"]: x["digest"] for x in json.loads(many.stdout)}
    assert digests_many == digests_one
    assert list(digests_many) == ["b1", "b2", "c1", "c2", "c3"]
    for recipe in digests_many:
        assert many.stderr.count(f"::group::repro build {recipe}\n") == 1
    assert many.stderr.count("::endgroup::") == 5
    # Each group holds its own build's progress, not another's.
    groups = many.stderr.split("::group::")[1:]
    for g in groups:
        title, body = g.split("\n", 1)
        assert "::endgroup::" in body
        assert body.split("::endgroup::")[0].strip(), title
    assert image_file(tmp_path / "out" / "c3", "c") == b"c3\n"


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    r = repro("build", "hello", "--jobs", "0", "-o", f"oci:{tmp_path / 'o'}")
    assert r.returncode == 2
    assert r.stderr.strip() == "repro: error: --jobs must be at least 1"
    assert not (tmp_path / "o").exists()
