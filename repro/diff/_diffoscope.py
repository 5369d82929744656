"""Running diffoscope on the extracted files of one layer pair, and reading its JSON.

diffoscope runs once per layer pair, on two directories holding only the files
whose content differs (mirrored at their layer paths), so its own directory walk
pairs them. Its JSON output is cut back into one subtree per path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from repro.diff._tree import Difference

DEFAULT_TIMEOUT = 300.0
MAX_REPORT_BYTES = 16 * 1024 * 1024


def find_diffoscope() -> str | None:
    beside = Path(sys.executable).parent / "diffoscope"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("diffoscope")


def _to_difference(node: dict[str, Any], strip1: str, strip2: str) -> Difference:
    s1 = str(node.get("source1", ""))
    s2 = str(node.get("source2", ""))
    comments = node.get("comments") or []
    return Difference(
        kind="diffoscope",
        source1=s1[len(strip1) :].lstrip("/") if s1.startswith(strip1) else s1,
        source2=s2[len(strip2) :].lstrip("/") if s2.startswith(strip2) else s2,
        comment="; ".join(str(c) for c in comments),
        unified_diff=one_order(node["unified_diff"]) if node.get("unified_diff") else None,
        details=[_to_difference(d, strip1, strip2) for d in node.get("details") or []],
    )


def one_order(diff: str) -> str:
    """The unified diff with every run of changed lines as its `-` lines, then its `+`
    lines (diffoscope's own diff can give a hunk's `+` lines first)."""
    out: list[str] = []
    minus: list[str] = []
    plus: list[str] = []

    def flush() -> None:
        out.extend(minus)
        out.extend(plus)
        minus.clear()
        plus.clear()

    in_hunk = False
    for line in diff.splitlines(keepends=True):
        if line.startswith("@@"):
            in_hunk = True
        if in_hunk and line.startswith("-"):
            minus.append(line)
        elif in_hunk and line.startswith("+"):
            plus.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "".join(out)


def run(
    dir1: Path,
    dir2: Path,
    files1: dict[str, Path],
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[dict[str, Difference], str]:
    """diffoscope's view of each differing file: {layer path: subtree}, and an error if any.

    `files1` maps layer paths to where side 1 was extracted (side 2 mirrors it).
    """
    exe = find_diffoscope()
    if exe is None:
        return {}, "diffoscope is not installed"
    cmd = [
        exe,
        "--json",
        "-",
        "--exclude-directory-metadata=yes",
        "--no-default-limits",
        f"--max-report-size={MAX_REPORT_BYTES}",
        "--max-diff-block-lines=256",
        str(dir1),
        str(dir2),
    ]
    env = {**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return {}, f"diffoscope did not finish within {timeout:.0f}s"
    except OSError as e:
        return {}, f"cannot run diffoscope: {e.strerror}"
    if proc.returncode not in (0, 1):
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return {}, f"diffoscope failed (exit {proc.returncode}): {last[0]}"
    if not proc.stdout.strip():
        return {}, ""
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {}, "diffoscope wrote unreadable JSON"
    by_location = {str(p): path for path, p in files1.items()}
    found: dict[str, Difference] = {}

    def visit(node: dict[str, Any]) -> None:
        source1 = str(node.get("source1", ""))
        path = by_location.get(source1)
        if path is not None:
            found[path] = _to_difference(node, str(dir1), str(dir2))
            return
        for child in node.get("details") or []:
            visit(child)

    visit(doc)
    return found, ""
