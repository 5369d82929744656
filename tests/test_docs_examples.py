"""The `repro …` commands the README and docs/ show are real: every one parses with
the CLI as it is (the subcommand exists, every option is accepted), and those that
need no engine run and exit 0 here. Synopsis lines (with `[…]`) and printed output
are left out."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from repro.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Commands that need neither BuildKit nor a registry nor the network.
RUNNABLE = {("graph",), ("--help",)}


def _examples() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.finditer(r"```\w*\n(.*?)```", text, re.S):
            for line in block.group(1).splitlines():
                line = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
                if not re.match(r"repro( |$)", line):
                    continue
                words = shlex.split(line, comments=True)
                if any("…" in w or w.startswith("[") for w in words):
                    continue  # a synopsis, not a command
                found.append((f"{doc.name}: {line}", words[1:]))
    return found


EXAMPLES = _examples()


def test_the_docs_show_commands() -> None:
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize(("where", "args"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_each_example_parses(where: str, args: list[str]) -> None:
    # typer vendors click; its objects are used through their public methods only.
    command: Any = typer.main.get_command(app)
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"{where}: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    if rest == ["--help"]:
        return
    try:
        command.make_context("repro", rest)
    except Exception as e:  # click's UsageError and its subclasses
        if "UsageError" not in [c.__name__ for c in type(e).__mro__]:
            raise
        pytest.fail(f"{where}: {e.format_message()}")


@pytest.mark.parametrize("args", sorted(RUNNABLE))
def test_examples_that_need_no_engine_run(args: tuple[str, ...]) -> None:
    shown = [a for _, a in EXAMPLES]
    if args != ("--help",):
        assert list(args) in shown, f"repro {' '.join(args)} is no longer in the docs"
    result = subprocess.run(
        [sys.executable, "-m", "repro", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
