"""The blob shelf: the layers of images repro wrote, by digest, so that a build need
not receive them from BuildKit again.

Every build's export holds its base image's layers as well as its own: an application
on the 50 MB Debian base received those 50 MB from BuildKit on every build, though
they sat in the base's own output. Builds that take the export blob by blob
(repro.buildkit._content) first ask the shelf: a layer on it is checked against its
digest, hard-linked into the export and not sent.

The shelf is ``<cache>/blobs/sha256/<hex>`` (repro.cachedir): hard links to the
layers of the images repro writes (`shelve`), so it costs directory entries, not
space, while those images exist. `repro cache prune` removes the least recently used.
A shelf file is trusted for nothing: one that no longer matches its digest is
removed and the blob is received as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from repro.cachedir import cache_home, touch
from repro.oci._descriptor import Descriptor
from repro.oci._digest import hash_stream, is_digest
from repro.oci._files import link_or_copy
from repro.oci._layout import OCILayout

# Smaller blobs (JSON, tiny layers) cost less to receive than to look up and check.
SHELF_MIN_SIZE = 64 * 1024


def shelf_dir() -> Path:
    return cache_home("blobs")


def _shelf_path(digest: str) -> Path | None:
    if not is_digest(digest) or not digest.startswith("sha256:"):
        return None
    return shelf_dir() / "sha256" / digest.partition(":")[2]


def take_shelved(digest: str, size: int, dest: Path) -> bool:
    """Put the shelf's copy of blob `digest` (`size` bytes) at `dest`, checked against
    its digest first; False when the shelf has no good copy (nothing is written)."""
    src = _shelf_path(digest)
    if src is None or size < SHELF_MIN_SIZE:
        return False
    try:
        if src.stat().st_size != size:
            return False
        with open(src, "rb") as fh:
            actual, _ = hash_stream(fh)
    except OSError:
        return False
    if actual != digest:
        with contextlib.suppress(OSError):
            src.unlink()  # changed since it was shelved: of no use to anyone
        return False
    try:
        link_or_copy(src, dest)
    except OSError:
        return False  # pruned meanwhile, or `dest` cannot be written: received instead
    touch(src)  # used now: kept by `repro cache prune`
    return True


def shelve(layout: OCILayout, blobs: Iterable[Descriptor]) -> None:
    """Put these blobs of `layout` (already checked: they were just written) on the
    shelf. Best effort: a shelf that cannot be written only means more is sent."""
    for blob in blobs:
        dest = _shelf_path(blob.digest)
        if dest is None or blob.size < SHELF_MIN_SIZE:
            continue
        try:
            if dest.exists():
                touch(dest)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(layout.blob_path(blob.digest), dest)
        except OSError:
            continue


def shelve_layers(layout: OCILayout) -> None:
    """Shelve the layers of every image in `layout`."""
    from repro.oci._model import read_image

    layers: dict[str, Descriptor] = {}
    for manifest in layout.image_manifests():
        for layer in read_image(layout, manifest).layers:
            layers.setdefault(layer.digest, layer)
    shelve(layout, layers.values())
