"""The repro action's steps (scripts/ci-action, what action.yml runs) against the dev
engine, with GitHub's environment variables pointing at temporary files: the
arguments each step gives repro, the step summary and annotations verify writes,
and one-line failures with repro's exit codes.

`repro` on PATH is this checkout's (a two-line wrapper), as the install step would
put the action's own tree there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The examples' bases in the registry (jq on debian12, greet on hello): tests/conftest.py.
pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("example_images")]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ci-action"


@pytest.fixture
def runner(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "repro"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m repro "$@"\n')
    wrapper.chmod(0o755)
    summary = tmp_path / "summary.md"
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_ENV": str(tmp_path / "github_env"),
        "GITHUB_PATH": str(tmp_path / "github_path"),
        "INPUT_RECIPES_DIR": str(ROOT / "recipes"),
    }


def step(name: str, env: dict[str, str], **inputs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), name],
        cwd=ROOT,
        env={**env, **inputs},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_lock_check_and_verify_steps(tmp_path: Path, runner: dict[str, str]) -> None:
    r = step("lock-check", runner, INPUT_RECIPES="hello greet")
    assert r.returncode == 0, r.stderr
    report = tmp_path / "report"
    r = step(
        "verify",
        runner,
        INPUT_RECIPES=" hello  wordcount ",
        INPUT_ACCEPT="identical",
        INPUT_VARY="timezone locale",
        INPUT_REPORT_DIR=str(report),
        INPUT_PUBLISH="true",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hello: reproducible" in r.stdout and "wordcount: reproducible" in r.stdout
    assert "variations: timezone, locale" in r.stdout
    # publish: what verified goes to the recipes' registry, the digest unchanged (the
    # same bytes the example images already have there).
    assert "hello: published 127.0.0.1:5000/repro/hello@sha256:4f46d893" in r.stdout
    summary = Path(runner["GITHUB_STEP_SUMMARY"]).read_text()
    assert "## repro verify" in summary
    assert "| hello | identical | yes |" in summary and "| wordcount | identical | yes |" in summary


def test_a_difference_is_annotated_and_reported(tmp_path: Path, runner: dict[str, str]) -> None:
    # hello copies a context file whose mode follows the checkout's umask; without its
    # [normalise] umask setting, varying the umask makes the two builds differ.
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes" / "hello", recipes / "hello")
    shutil.copyfile(ROOT / "recipes" / "repro.toml", recipes / "repro.toml")
    toml = recipes / "hello" / "recipe.toml"
    text = toml.read_text()
    assert '[normalise]\n' in text
    toml.write_text(text.split("[normalise]\n")[0])
    report = tmp_path / "report"
    r = step(
        "verify",
        runner,
        INPUT_RECIPES="hello",
        INPUT_RECIPES_DIR=str(recipes),
        INPUT_VARY="umask",
        INPUT_REPORT_DIR=str(report),
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "::error title=repro verify hello::hello is not reproducible" in r.stdout
    assert "| hello | different | **no** |" in Path(runner["GITHUB_STEP_SUMMARY"]).read_text()
    assert {"report.html", "report.json", "summary.md"} <= {p.name for p in report.iterdir()}


def test_a_recipe_that_does_not_exist(runner: dict[str, str]) -> None:
    for name in ("lock-check", "verify"):
        r = step(name, runner, INPUT_RECIPES="nope")
        assert r.returncode == 2, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "nope" in r.stderr
        assert r.stdout.startswith("::error")


def test_an_unreachable_builder(runner: dict[str, str]) -> None:
    r = step("verify", runner, INPUT_RECIPES="hello", INPUT_BUILDER="docker-container://nope")
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "no container named nope" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert "::error::" in r.stdout


def test_an_unknown_buildkit_mode(runner: dict[str, str]) -> None:
    r = step("buildkit", runner, INPUT_BUILDKIT="magic")
    assert r.returncode == 2
    assert "expected containerd-store, container or none" in r.stderr
    assert r.stdout.startswith("::error title=repro action::")


def test_buildkit_none_reports_the_builder(runner: dict[str, str]) -> None:
    r = step("buildkit", runner, INPUT_BUILDKIT="none")
    assert r.returncode == 0, r.stderr
    assert "ok  builder:" in r.stdout


def test_a_stale_lock_is_exit_1_with_an_annotation(tmp_path: Path, runner: dict[str, str]) -> None:
    import shutil

    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes" / "hello", recipes / "hello")
    shutil.copy(ROOT / "recipes" / "repro.toml", recipes / "repro.toml")
    text = (recipes / "hello" / "recipe.toml").read_text()
    (recipes / "hello" / "recipe.toml").write_text(text.replace("1735689600", "1735689601"))
    r = step("lock-check", runner, INPUT_RECIPES="", INPUT_RECIPES_DIR=str(recipes))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "::error title=repro lock --check::stale locks: hello" in r.stdout
    assert "lock check failed: hello" in r.stderr


def test_prune_step(tmp_path: Path, runner: dict[str, str]) -> None:
    """The last step prunes repro's cache (the one actions/cache saves) to a size,
    least recently used first; a bad size is one line and exit 2."""
    import time

    env = {**runner, "REPRO_CACHE_DIR": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "x")}
    docs = tmp_path / "c" / "documents"
    docs.mkdir(parents=True)
    for name, age in (("sha256-old", 3 * 86400), ("sha256-new", 86400)):
        (docs / name).write_bytes(b"x" * 1024)
        os.utime(docs / name, (time.time() - age, time.time() - age))
    r = step("prune", env, INPUT_CACHE_MAX_SIZE="1K")
    assert r.returncode == 0, r.stderr
    assert "documents: removed 1 entries (1.0 KiB); 1 (1.0 KiB) left" in r.stdout
    assert sorted(p.name for p in docs.iterdir()) == ["sha256-new"]
    r = step("prune", env, INPUT_CACHE_MAX_SIZE="huge")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "not a size: 'huge'" in r.stderr
