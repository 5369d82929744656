"""The base image's layers of a build, exactly, from the lock's pinned base digests.

BuildKit may export a base layer as other bytes than the base image's own: another
compressed blob with the same contents from its content store, or a recompressed one
(`force-compression`). With the lock's base manifest digests, the base's layers are
known exactly: the longest locked base whose diff_ids begin the image's. Those layers
keep the base image's own blobs, fetched from the registry where BuildKit's differ.

The base's manifest and config are named by digest, so they are read through
`repro.oci.CachedDocuments`: a build whose base is known asks the registry nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from repro.oci import (
    IMAGE_MANIFEST_MEDIA_TYPES,
    MAX_JSON_SIZE,
    CachedDocuments,
    Descriptor,
    manifest_children,
    parse_json_document,
)


@dataclass
class BaseLayers:
    """The base image a build's image starts with: its repository and layer blobs."""

    repository: str
    layers: list[Descriptor]
    diff_ids: list[str]


def _diff_ids(config: Mapping[str, Any]) -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [str(i) for i in ids] if isinstance(ids, list) else []


def locked_base_layers(
    lock: Mapping[str, Any], platform: str, config: Mapping[str, Any], client: Callable[[], Any]
) -> BaseLayers | None:
    """The locked base whose layers begin the image with `config`, or None.

    `client()` gives a `repro.registry.Registry`, asked for only when a manifest or
    config is not in the local cache; registry errors propagate.
    """
    from repro.registry import parse_reference

    documents = CachedDocuments(client)
    image_ids = _diff_ids(config)
    best: BaseLayers | None = None
    bases = lock.get("bases")
    if not isinstance(bases, dict):
        return None
    for ref, entry in sorted(bases.items()):
        if not isinstance(entry, dict):
            continue
        platforms = entry.get("platforms")
        digest = (platforms.get(platform) if isinstance(platforms, dict) else None) or entry.get(
            "digest"
        )
        if not isinstance(digest, str):
            continue
        # A `recipe:NAME` base names its image in the entry; any other base is its ref.
        image = entry.get("image")
        repository = parse_reference(image if isinstance(image, str) else ref).name
        data, media_type, _ = documents.get_manifest(f"{repository}@{digest}")
        if media_type not in IMAGE_MANIFEST_MEDIA_TYPES:
            continue  # an index without the platform: nothing to match
        manifest = parse_json_document(data, f"base image {ref}@{digest}")
        children = manifest_children(manifest, media_type, f"base image {ref}")
        config_descriptor, layers = children[0], children[1:]
        if config_descriptor.size > MAX_JSON_SIZE:
            continue
        config_data = documents.small_blob(repository, config_descriptor)
        base_ids = _diff_ids(parse_json_document(config_data, f"config of {ref}"))
        if len(base_ids) != len(layers) or image_ids[: len(base_ids)] != base_ids:
            continue
        if best is None or len(base_ids) > len(best.diff_ids):
            best = BaseLayers(repository, layers, base_ids)
    return best
