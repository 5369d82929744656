"""Outputs never destroy what is not theirs.

A sink (`--output oci:DIR`, `--output oci-archive:FILE`, a diff's `--report-dir`) may
replace only an earlier output of its own kind; anything else is refused with one
line and exit 2, before anything is built, and left exactly as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro import oci
from repro.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        cwd=cwd or ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


def tree(path: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = p.read_bytes() if p.is_file() else None
    return out


def fake_layout(path: Path) -> None:
    (path / "blobs" / "sha256").mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    (path / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"x")


# --- unit: what may be replaced -------------------------------------------------------


def test_absent_and_empty_targets_are_fine(tmp_path: Path) -> None:
    oci.check_output_target("oci", tmp_path / "new")
    oci.check_output_target("oci-archive", tmp_path / "new.tar")
    (tmp_path / "empty").mkdir()
    oci.check_output_target("oci", tmp_path / "empty")
    (tmp_path / "empty.tar").write_bytes(b"")
    oci.check_output_target("oci-archive", tmp_path / "empty.tar")


def test_an_earlier_layout_may_be_replaced(tmp_path: Path) -> None:
    fake_layout(tmp_path / "out")
    oci.check_output_target("oci", tmp_path / "out")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: (p.mkdir(), (p / "thesis.txt").write_text("years")), id="user-file"),
        pytest.param(lambda p: p.write_text("a file"), id="regular-file"),
        pytest.param(
            lambda p: (fake_layout(p), (p / "notes.md").write_text("mine")), id="layout-plus-file"
        ),
        pytest.param(
            lambda p: (fake_layout(p), (p / "blobs" / "sha256" / "sub").mkdir()), id="odd-blobs"
        ),
        pytest.param(lambda p: p.symlink_to(p.parent), id="symlink"),
    ],
)
def test_anything_else_is_refused_for_a_layout(tmp_path: Path, make: object) -> None:
    target = tmp_path / "out"
    make(target)  # type: ignore[operator]
    before = tree(tmp_path)
    with pytest.raises(InputError, match="--output oci:"):
        oci.check_output_target("oci", target)
    assert tree(tmp_path) == before


def test_an_archive_replaces_only_an_archive(tmp_path: Path) -> None:
    fake_layout(tmp_path / "layout")
    oci.write_oci_archive(oci.OCILayout(tmp_path / "layout"), tmp_path / "image.tar")
    oci.check_output_target("oci-archive", tmp_path / "image.tar")
    (tmp_path / "essay.txt").write_text("not a tar")
    with pytest.raises(InputError, match="not an OCI archive"):
        oci.check_output_target("oci-archive", tmp_path / "essay.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        oci.check_output_target("oci-archive", tmp_path / "d")


def test_the_current_directory_and_its_parents_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    for path in (".", "..", "/"):
        with pytest.raises(InputError, match="current directory"):
            oci.check_output_target("oci", path)


def test_replace_output_keeps_the_old_permissions(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    fake_layout(dest)
    dest.chmod(0o700)
    staged = oci.staging_dir_beside(dest, "t")
    fake_layout(staged / "x")
    oci.replace_output("oci", staged / "x", dest)
    assert dest.stat().st_mode & 0o777 == 0o700
    assert (dest / "oci-layout").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [staged.name]


def test_staging_under_an_impossible_parent_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write next to"):
        oci.staging_dir_beside(Path("/proc/repro-no-such/x"), "t")


# --- the command line, against the real engine -------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_build_refuses_to_overwrite_user_files(tmp_path: Path, kind: str) -> None:
    mydir = tmp_path / "mydir"
    mydir.mkdir()
    (mydir / "thesis.txt").write_text("four years of work")
    afile = tmp_path / "afile"
    afile.write_text("precious")
    before = tree(tmp_path)
    for target in (mydir, afile):
        r = run("build", "hello", "--output", f"{kind}:{target}", "--progress", "quiet")
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{kind}:{target}" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert tree(tmp_path) == before


@pytest.mark.engine
def test_build_refuses_the_recipes_folder_and_the_current_directory(tmp_path: Path) -> None:
    before = tree(ROOT / "recipes")
    r = run("build", "hello", "--output", "oci:recipes", "--progress", "quiet")
    assert r.returncode == 2 and "not an OCI layout" in r.stderr, r.stderr
    assert tree(ROOT / "recipes") == before
    (tmp_path / "keep.txt").write_text("x")
    r = run("build", str(ROOT / "recipes" / "hello"), "--output", "oci:.", cwd=tmp_path)
    assert r.returncode == 2 and "current directory" in r.stderr, r.stderr
    for bad in ("oci:/proc/x", "oci-archive:/proc/x"):
        r = run("build", "hello", "--output", bad, "--progress", "quiet")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.engine
@pytest.mark.parametrize("normalise", ["on", "off"])
def test_build_replaces_its_own_earlier_output(tmp_path: Path, normalise: str) -> None:
    out = tmp_path / "out"
    args = ("build", "hello", "--progress", "quiet", "--normalise", normalise)
    first = run(*args, "--output", f"oci:{out}")
    assert first.returncode == 0, first.stderr
    out.chmod(0o750)
    second = run(*args, "--output", f"oci:{out}")
    assert second.returncode == 0, second.stderr
    assert out.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    archive = tmp_path / "image.tar"
    for _ in range(2):
        r = run(*args, "--output", f"oci-archive:{archive}")
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar", "out"]


def test_diff_report_dir_at_a_file_is_one_line(tmp_path: Path) -> None:
    fake_layout(tmp_path / "a")
    (tmp_path / "report").write_text("x")
    from repro.diff._present import write_report_dir
    from repro.diff._tree import DiffReport

    report = DiffReport("a", "b", "", "", [], None)
    with pytest.raises(InputError, match="--report-dir"):
        write_report_dir(report, tmp_path / "report")
    assert (tmp_path / "report").read_text() == "x"
