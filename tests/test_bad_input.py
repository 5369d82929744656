"""Bad input as a new user writes it: one line naming the file (and line where there is
one), exit 2, no traceback, nothing written. Each case: files of a recipe, the
expected exit code, and what the last line of stderr must contain.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from runner import run_repro

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    pytest.param(
        {"Dockerfile": ""},
        2,
        "recipes/x/Dockerfile: the Dockerfile is empty",
        id="empty-dockerfile",
    ),
    pytest.param(
        {"Dockerfile": "# only a comment\n\n"},
        2,
        "the Dockerfile is empty",
        id="comment-only-dockerfile",
    ),
    pytest.param(
        {"Dockerfile": "FROM scratch\nCOPY <<EOF /x\nhello\n"},
        2,
        "recipes/x/Dockerfile:2: unterminated heredoc",
        id="unterminated-heredoc",
    ),
    pytest.param(
        {"recipe.toml": "source_date_epoch = 99999999999999\n"},
        2,
        "recipes/x/recipe.toml:1: source_date_epoch 99999999999999 is after the year 9999",
        id="epoch-out-of-range",
    ),
    pytest.param(
        {"Dockerfile": b"FROM scratch\n\xff\xfeCOPY x /\n"},
        2,
        "recipes/x/Dockerfile:2: not UTF-8 text",
        id="binary-dockerfile",
    ),
    pytest.param(
        {"Dockerfile": "FROM scratch\nARG A=${B\n"},
        2,
        'recipes/x/Dockerfile:2: failed to process "${B": unsupported modifier',
        id="bad-substitution",
    ),
    pytest.param(
        {"Dockerfile": "FROM scratch\nCOPY . /\n", ".dockerignore": "ok\n[a-]\n"},
        2,
        "recipes/x/.dockerignore:2: invalid pattern '[a-]': syntax error in pattern",
        id="dockerignore-bad-pattern",
    ),
    pytest.param(
        {"recipe.toml": 'source_date_epoch = 1\nbases = ["a:1"\n'},
        2,
        "recipes/x/recipe.toml:2: invalid TOML: Unclosed array",
        id="toml-error-at-the-end",
    ),
]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT)}, timeout=300)


@pytest.mark.engine
@pytest.mark.parametrize(("files", "code", "says"), CASES)
def test_bad_input_is_one_line(
    tmp_path: Path, files: dict[str, str | bytes], code: int, says: str
) -> None:
    recipe = tmp_path / "recipes" / "x"
    recipe.mkdir(parents=True)
    merged: dict[str, str | bytes] = {
        "recipe.toml": "source_date_epoch = 1\n",
        "Dockerfile": "FROM scratch\n",
        **files,
    }
    for name, content in merged.items():
        if isinstance(content, bytes):
            (recipe / name).write_bytes(content)
        else:
            (recipe / name).write_text(content)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = run(tmp_path, "build", "x", "--progress", "quiet")
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("repro: error: ") and says in last, r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.engine
def test_from_scratch_alone_builds_and_verifies(tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "x"
    recipe.mkdir(parents=True)
    (recipe / "recipe.toml").write_text("source_date_epoch = 1\n")
    (recipe / "Dockerfile").write_text("FROM scratch\n")
    r = run(tmp_path, "build", "x", "--progress", "quiet")
    assert r.returncode == 0, r.stderr
    r = run(tmp_path, "verify", "x")
    assert r.returncode == 0 and "identical" in r.stdout, r.stdout + r.stderr
