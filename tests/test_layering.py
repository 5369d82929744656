"""The package layout holds: no module imports a private module or a private name
of another package (`repro.diff._causes` from `repro.verify`, say). What a package
offers others is what its `__init__` exports; inside a package anything goes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _own_package(path: Path, root: Path) -> str:
    """`repro.diff` for repro/diff/_causes.py, `repro.verify` for repro/verify.py."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:2])


def _violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / "repro").rglob("*.py")):
        if "proto" in path.parts:
            continue
        own = _own_package(path, root)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            module = node.module
            if not module.startswith("repro.") or module.startswith(own + ".") or module == own:
                continue
            target = ".".join(module.split(".")[:2])
            if target == own:
                continue
            private_module = any(p.startswith("_") for p in module.split(".")[1:])
            private_names = [
                a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
            ]
            if private_module or private_names:
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.append(
                    f"{where}: from {module} import {', '.join(a.name for a in node.names)}"
                )
    return found


def test_no_private_imports_across_packages() -> None:
    assert _violations() == []


def test_the_check_finds_a_private_import(tmp_path: Path) -> None:
    """The rule itself works, on a made-up tree: across packages is reported, inside
    a package and through a package's public names is not."""
    (tmp_path / "repro" / "diff").mkdir(parents=True)
    (tmp_path / "repro" / "diff" / "_causes.py").write_text("X = 1\n")
    (tmp_path / "repro" / "diff" / "_tree.py").write_text("from repro.diff._causes import X\n")
    (tmp_path / "repro" / "verify.py").write_text(
        "from repro.diff._causes import X\nfrom repro.diff import Y\nfrom repro.lock import _z\n"
    )
    assert _violations(tmp_path) == [
        "repro/verify.py:1: from repro.diff._causes import X",
        "repro/verify.py:3: from repro.lock import _z",
    ]
