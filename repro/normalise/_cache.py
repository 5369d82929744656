"""A local cache of rewritten layers: (BuildKit's blob, options) -> repro's blob.

BuildKit exports the same layer bytes on every build of a reproducible recipe, cached
or not, but in its own compression, and re-encoding a layer costs about as much as
compressing it again (most of a small build's normalisation time). The cache keeps the
outcome of each rewrite, so the next build of the same layer only hashes the cached
blob, checks it against its digest, and links it into the output.

The key covers the source blob digest, its diffID, every normalisation option, and a
hash of the normaliser's own source files, so a change to the code or the options
can never be answered from an older result. ``REPRO_NORMALISE_CACHE=off`` turns it off;
``REPRO_CACHE_DIR`` moves it (default ``$XDG_CACHE_HOME/repro`` or ``~/.cache/repro``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from repro.cachedir import cache_home, touch
from repro.normalise._layer import LayerOutcome, normalise_layer
from repro.normalise._rules import Change, ContentRules, NormaliseOptions
from repro.oci import Descriptor, OCILayout, hash_stream, link_or_copy, parse_digest

_FORMAT = 1


def cache_root() -> Path | None:
    if os.environ.get("REPRO_NORMALISE_CACHE", "").lower() in ("off", "0", "no"):
        return None
    return cache_home("normalised")


_fingerprint_lock = threading.Lock()


def _code_fingerprint() -> str:
    """The normaliser's sources as one digest, read once per process (the builds of
    a graph normalise at the same moment, each in its own thread: as
    repro.inputs.code_identity)."""
    with _fingerprint_lock:
        return _read_code_fingerprint()


@lru_cache(maxsize=1)
def _read_code_fingerprint() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in sorted(p.name for p in here.glob("*.py")):
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()


def _key(layer: Descriptor, diff_id: str, options: NormaliseOptions) -> str:
    material = json.dumps(
        [_FORMAT, _code_fingerprint(), layer.digest, layer.size, diff_id, repr(options)]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    if not dst.exists():
        link_or_copy(src, dst)


def _verified(path: Path, digest: str, size: int) -> bool:
    algorithm, _ = parse_digest(digest)
    try:
        with open(path, "rb") as fh:
            actual, actual_size = hash_stream(fh, algorithm)
    except OSError:
        return False
    return actual_size == size and actual == digest


def _lookup(
    root: Path, key: str, dest: OCILayout, layer: Descriptor, index: int
) -> LayerOutcome | None:
    entry = root / f"{key}.json"
    try:
        data: dict[str, Any] = json.loads(entry.read_text())
        descriptor = Descriptor.from_json(data["descriptor"])
        blob = root / "blobs" / descriptor.digest.replace(":", "-")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _verified(blob, descriptor.digest, descriptor.size):
        entry.unlink(missing_ok=True)
        return None
    touch(entry, blob)  # used now: kept by `repro cache prune`
    blob_dir = dest.path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    try:
        _link_or_copy(blob, dest.blob_path(descriptor.digest))
    except FileNotFoundError:
        return None  # pruned at this very moment: normalised afresh
    changes = [Change(index, c["path"], c["rule"]) for c in data.get("changes", [])]
    return LayerOutcome(
        index,
        layer,
        descriptor,
        data["diff_id"],
        "rewritten",
        changes,
        list(data.get("whiteouts", [])),
    )


def _store(root: Path, key: str, dest: OCILayout, outcome: LayerOutcome) -> None:
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = outcome.descriptor.digest
    _link_or_copy(dest.blob_path(digest), blobs / digest.replace(":", "-"))
    record = {
        "descriptor": outcome.descriptor.to_json(),
        "diff_id": outcome.diff_id,
        "changes": [{"path": c.path, "rule": c.rule} for c in outcome.changes],
        "whiteouts": outcome.whiteouts,
    }
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, root / f"{key}.json")


def normalise_layer_cached(
    src: OCILayout,
    dest: OCILayout,
    layer: Descriptor,
    diff_id: str,
    index: int,
    options: NormaliseOptions,
    rules: ContentRules,
    *,
    keep: bool = False,
    restore: Descriptor | None = None,
) -> LayerOutcome:
    """normalise_layer, answered from the local cache when this exact rewrite was done."""
    root = cache_root()
    if keep or root is None:
        return normalise_layer(
            src, dest, layer, diff_id, index, options, rules, keep=keep, restore=restore
        )
    key = _key(layer, diff_id, options)
    hit = _lookup(root, key, dest, layer, index)
    if hit is not None:
        return hit
    outcome = normalise_layer(src, dest, layer, diff_id, index, options, rules)
    if outcome.action == "rewritten":
        try:
            root.mkdir(parents=True, exist_ok=True)
            _store(root, key, dest, outcome)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return outcome
