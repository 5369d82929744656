"""The cause table against real builds: every fixture in `cause_fixtures` is built
twice by `repro verify` (default variations on) and its path must be named with its
cause; verify as a careful user runs it (umask variation on by default, a report
directory for identical results too), and the HTML report as a browser shows it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runner import run_repro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cause_fixtures import FIXTURES, context_files, dockerfile  # noqa: E402

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
TOML = 'source_date_epoch = 1700000000\nnetwork = "none"\n'


def repro(*args: str) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, timeout=900)


def recipe(tmp: Path, name: str, text: str, files: dict[str, str]) -> Path:
    d = tmp / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text(text)
    (d / "recipe.toml").write_text(TOML)
    for rel, content in files.items():
        (d / rel).write_text(content)
    return d


@pytest.fixture(scope="module")
def fixture_run(
    tmp_path_factory: pytest.TempPathFactory, base_image: str
) -> tuple[dict, Path, str]:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("causes")
    d = recipe(tmp, "causes", dockerfile(base_image), context_files())
    report = tmp / "report"
    r = repro("verify", str(d), "--json", "--report-dir", str(report))
    assert r.returncode == 1, r.stderr[-3000:]
    [result] = json.loads(r.stdout)
    return result, report, r.stderr


def test_every_fixture_is_named_with_its_cause(fixture_run: tuple[dict, Path, str]) -> None:  # type: ignore[type-arg]
    result, _, _ = fixture_run
    found = {f["path"]: [c["id"] for c in f["causes"]] for f in result["findings"]}
    named = {f.path: (found.get(f.path) or ["(not found)"])[0] for f in FIXTURES}
    assert named == {f.path: f.cause for f in FIXTURES}
    assert len({f.cause for f in FIXTURES}) >= 25
    # Paths the fixtures leave behind besides their own are explained too.
    assert all("unclassified" not in ids for ids in found.values()), found


def test_report_is_self_contained(fixture_run: tuple[dict, Path, str]) -> None:  # type: ignore[type-arg]
    result, report, _ = fixture_run
    for name in ("report.html", "report.json", "summary.txt", "summary.md"):
        text = (report / name).read_text()
        assert "/tmp/repro-verify" not in text, name
        assert result["digest1"] in text and result["digest2"] in text, name
    summary = (report / "summary.txt").read_text()
    assert "build 1" in summary and "build 2" in summary
    # Fixes name the repro setting first where there is one.
    assert 'fix: recipe.toml: [normalise] umask = "022"' in summary
    assert 'fix: recipe.toml: [normalise] truncate = ["/etc/machine-id"' in summary


def test_umask_only_problem_fails_plain_verify_and_identical_gets_a_report(
    tmp_path: Path, base_image: str
) -> None:
    step = f"FROM {base_image}\nCOPY app.conf /etc/app.conf\n"
    d = recipe(tmp_path, "umaskonly", step, {"app.conf": "x=1\n"})
    r = repro("verify", str(d))
    assert r.returncode == 1, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if "/etc/app.conf:" in x)
    assert "mode 0644 -> 0664" in line and "[umask-mode]" in line
    assert "variations: umask, timezone, locale, build_path" in r.stdout
    # The same recipe with the fix the report names first is identical, and the
    # report directory is written for an identical result too.
    (d / "recipe.toml").write_text(TOML + '\n[normalise]\numask = "022"\n')
    report = tmp_path / "report"
    r = repro("verify", str(d), "--report-dir", str(report))
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    doc = json.loads((report / "report.json").read_text())
    assert doc["verify"]["verdict"] == "identical"
    assert [b["name"] for b in doc["verify"]["builds"]] == ["build 1", "build 2"]
    assert "reproducible (identical)" in (report / "summary.txt").read_text()
    # Without variations the problem does not show.
    (d / "recipe.toml").write_text(TOML)
    r = repro("verify", str(d), "--vary", "none")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "variations: none" in r.stdout


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None and os.geteuid() == 0:
        # scripts/test installs it; a direct pytest run on a fresh machine does it here.
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is needed (Debian 12's chromium package) and could not be installed")
    return exe


def test_html_report_in_a_browser(fixture_run: tuple[dict, Path, str], tmp_path: Path) -> None:  # type: ignore[type-arg]
    """What a reader sees: chromium renders the page and we read its visible text."""
    result, report, _ = fixture_run
    exe = _chromium()
    r = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=2000",
            "--dump-dom",
            (report / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    # The browser parsed it into the page we meant: title, builds, causes, paths.
    assert "<title>repro verify causes: different</title>" in dom
    assert "causes: NOT reproducible" in dom
    assert result["digest1"] in dom and result["digest2"] in dom
    assert "build 1" in dom and "build 2" in dom
    for f in FIXTURES:
        assert f.path in dom
        assert f">{f.cause}<" in dom, f.cause
    # The visible text, as innerText gives it, after rendering.
    shot = tmp_path / "shot.png"
    r = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            (report / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]
