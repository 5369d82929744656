"""Build records: how an image digest was made, for `repro publish` and the provenance.

`repro build` writes one small JSON file per image digest it produced, under the
cache (``$REPRO_CACHE_DIR/builds`` or ``$XDG_CACHE_HOME/repro/builds``, default
``~/.cache/repro/builds``), named ``sha256-<hex>.json``. It says which recipe and
lock (path and sha256 of its bytes) it came from, the builder and the version the
BuildKit reported, and the OCI exporter options sent (repro.buildkit._exporter).

Why not in the image or beside the output: either would change what `repro build`
writes (the digest, or the files an output directory may hold). Why not in the lock:
the BuildKit version changes with every builder upgrade, which would make every lock
stale without any input changing; the exporter options are fixed by repro's version,
not by the recipe. The record is information for the provenance, keyed by the
content it describes; a missing record only means the provenance cannot name them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repro.cachedir import cache_home, touch
from repro.errors import ReproError
from repro.oci import atomic_write_bytes, is_digest, parse_digest

RECORD_VERSION = 1


def records_dir() -> Path:
    return cache_home("builds")


def _record_path(digest: str) -> Path:
    algorithm, hex_ = parse_digest(digest)
    return records_dir() / f"{algorithm}-{hex_}.json"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (a lock's digest), or "" when it cannot be read."""
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def write_build_record(record: dict[str, Any]) -> None:
    """Store `record` under its `digest` (atomically; a failure to write is ignored:
    the record is information, and a read-only cache must not fail a build)."""
    digest = record.get("digest")
    if not is_digest(digest):
        return
    data = {"version": RECORD_VERSION, **record}
    try:
        path = _record_path(str(digest))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, data)
    except OSError:
        pass


def read_build_record(digest: str) -> dict[str, Any] | None:
    """The record of the build that produced `digest`, if this machine has one."""
    try:
        data = json.loads(_record_path(digest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("digest") != digest:
        return None
    touch(_record_path(digest))
    return data


def _inputs_path(fingerprint: str) -> Path:
    return records_dir() / "inputs" / f"{fingerprint}.json"


def remember_inputs(fingerprint: str, result: dict[str, Any]) -> None:
    """Note that a build with inputs `fingerprint` (repro.inputs) made `result` (a
    RecipeResult's JSON, naming where the image was written). Ignored on failure."""
    if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        return
    try:
        path = _inputs_path(fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": RECORD_VERSION, "inputs": fingerprint, "result": result}
        _write_json(path, data)
    except OSError:
        pass


def recall_inputs(
    fingerprint: str, warn: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    """The result of the last build with inputs `fingerprint`, if its image is still
    where that build wrote it, with the same digest and every blob matching its
    digest (an image found damaged is passed over, and `warn` told why)."""
    from repro.oci import OCILayout, Output

    if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        return None
    try:
        data = json.loads(_inputs_path(fingerprint).read_text(encoding="utf-8"))
        result = data["result"]
        digest = result["digest"]
        output = Output.parse(result["output"])
    except (OSError, ValueError, KeyError, TypeError, ReproError):
        return None
    if data.get("inputs") != fingerprint or not is_digest(digest):
        return None
    if output.kind != "oci" or not output.path.is_absolute():
        return None
    try:
        layout = OCILayout(output.path)
        if layout.top_descriptor().digest != digest:
            return None  # built over since
        layout.verify(full=True)
    except (OSError, ReproError) as e:
        if warn is not None and output.path.is_dir():
            warn(f"{output.path} no longer holds the image built there ({e}); building it")
        return None
    touch(_inputs_path(fingerprint))
    return dict(result)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Not forced to disk: information that a lost or unreadable file only leaves out.
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode(), durable=False)
