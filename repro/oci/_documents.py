"""Small documents named by digest (manifests, configs), kept on disk between runs.

A manifest or config named by its digest never changes, so a build asks the registry
for its base's documents once: they are kept under ``$REPRO_CACHE_DIR/documents``
(default ``~/.cache/repro/documents``), and every read from there is checked against
the digest (damaged or planted bytes are fetched again and replaced). A cache that
cannot be written is no error. Blobs of any size go to the registry as before: only
documents up to MAX_JSON_SIZE are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from repro.cachedir import cache_home, touch
from repro.oci._descriptor import Descriptor
from repro.oci._digest import is_digest, parse_digest
from repro.oci._files import atomic_write_bytes
from repro.oci._media import MAX_JSON_SIZE


def documents_dir() -> Path:
    return cache_home("documents")


def _declared_media_type(data: bytes) -> str:
    try:
        value = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


class CachedDocuments:
    """A registry client's reads, with manifests by digest and small blobs kept.

    `client()` gives the registry client (a `repro.registry.Registry`) and is called
    only for what the cache does not hold: a build whose base documents are known
    asks the registry nothing, and does not even import its client.
    """

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client

    def _path(self, digest: str) -> Path:
        algorithm, hex_ = parse_digest(digest)
        return documents_dir() / f"{algorithm}-{hex_}"

    def _cached(self, digest: str) -> bytes | None:
        try:
            with open(self._path(digest), "rb") as f:
                data = f.read(MAX_JSON_SIZE + 1)
        except (OSError, ValueError):
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return None
        touch(self._path(digest))
        return data

    def _keep(self, digest: str, data: bytes) -> None:
        try:
            path = self._path(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data, durable=False)
        except (OSError, ValueError):
            pass

    def get_manifest(self, ref: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) as `Registry.get_manifest`; by digest from the
        cache when it has the manifest (and the manifest says its media type)."""
        digest = ref.rpartition("@")[2]
        if is_digest(digest):
            data = self._cached(digest)
            declared = _declared_media_type(data) if data is not None else ""
            if data is not None and declared:
                return data, declared, digest
        data, media_type, got = self._client().get_manifest(ref)
        # Kept only when the document states the type the registry gave it.
        if is_digest(digest) and media_type and _declared_media_type(data) == media_type:
            self._keep(digest, data)
        return data, media_type, got

    def get_blob(
        self, repository: str, digest: str, dest: IO[bytes] | Path | str, size: int
    ) -> Any:
        """As `Registry.get_blob`: always the registry (blobs may be big)."""
        return self._client().get_blob(repository, digest, dest, size)

    def small_blob(self, repository: str, descriptor: Descriptor) -> bytes:
        """A config (or other document) blob's bytes: from the cache, else fetched
        and kept."""
        data = self._cached(descriptor.digest)
        if data is not None:
            return data
        buffer = io.BytesIO()
        self._client().get_blob(repository, descriptor.digest, buffer, descriptor.size)
        data = buffer.getvalue()
        self._keep(descriptor.digest, data)
        return data
