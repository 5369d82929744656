"""Where repro keeps what it can recompute: ``$REPRO_CACHE_DIR``, else
``$XDG_CACHE_HOME/repro``, else ``~/.cache/repro``. (Downloaded packages keep their
older place under ``$XDG_CACHE_HOME/repro/packages``: repro.packages.cache_dir.)"""

from __future__ import annotations

import os
from pathlib import Path


def cache_home(name: str) -> Path:
    """The cache's subdirectory `name` (not created here)."""
    base = os.environ.get("REPRO_CACHE_DIR")
    if base:
        return Path(base) / name
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "repro" / name


def touch(*paths: str | os.PathLike[str]) -> None:
    """Mark cache entries as used now (their mtime), for `repro cache prune`'s
    least-recently-used order. Best effort: a read-only cache is still a cache."""
    for path in paths:
        try:
            os.utime(path)
        except OSError:
            pass
