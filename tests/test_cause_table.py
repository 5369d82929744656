"""docs/verify.md's cause table is generated from the fixtures and is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cause_table_is_current() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cause_table.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_fixture_names_a_known_cause() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from cause_fixtures import FIXTURES

    from repro.diff._causes import ALL_CAUSES

    known = {c.id for c in ALL_CAUSES}
    assert {f.cause for f in FIXTURES} <= known
    assert len({f.cause for f in FIXTURES}) >= 25
