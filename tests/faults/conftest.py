"""The fault suite's tally and its summary at the end of the run.

Every test here injects faults into a real ``repro`` command (tests/faults/faultlib.py)
and records each outcome in one session-wide `Tally`. The terminal summary (what CI's
log shows) lists the faults injected, how many the command recovered from, how many
ended with one clear line, and how many left a half-written lock, layout, archive,
cache entry or tag (must be zero).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: registryproxy

from faultlib import TALLY  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.outcomes:
        return
    terminalreporter.section("fault suite")
    for line in TALLY.report():
        terminalreporter.write_line(line)
