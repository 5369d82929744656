"""Running the `repro` command in a subprocess, as a user would: the one place that
spells it out for the tests (each module keeps its own small `repro()` with its
defaults: where it runs, how long it may take)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_repro(
    *args: str,
    cwd: Path | str = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`python -m repro ARGS` in `cwd`, with this process's environment and `env`
    over it, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
