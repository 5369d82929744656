"""repro diff on two images of one ~1 GiB layer that differ in one file (slow).

The size comes from REPRO_DIFF_BIG_MIB (default 1024). The images are the ones
bench/bench_verify.py generates: 512 KiB files of seeded random bytes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> object:
    spec = importlib.util.spec_from_file_location(
        "bench_verify", ROOT / "bench" / "bench_verify.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_file_in_a_big_layer_is_found_with_diffoscope_view(tmp_path: Path) -> None:
    bench = _bench()
    mib = int(os.environ.get("REPRO_DIFF_BIG_MIB", "1024"))
    files = mib * 2
    changed = files // 2
    bench.make_big_image(tmp_path / "a", files, 512 * 1024, None)  # type: ignore[attr-defined]
    bench.make_big_image(tmp_path / "b", files, 512 * 1024, changed)  # type: ignore[attr-defined]
    r = subprocess.run(
        [sys.executable, "-m", "repro", "diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    path = f"/data/d{changed // 100:03d}/file{changed:05d}.bin"
    assert [f["path"] for f in doc["findings"]] == [path]
    text = json.dumps(doc["tree"])
    assert "CHANGED" in text  # diffoscope's hexdump shows the changed bytes
