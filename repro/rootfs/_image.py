"""The one-layer OCI image of a root filesystem, written by repro itself.

The layer goes through the project's canonical encoder (`repro.normalise._layer.
write_entries`): entries sorted, times clamped to the epoch, numeric owners as the
packages have them, the fixed gzip (or zstd) stream and the marker that later
normalisation recognises. Config, manifest and index are canonical JSON with
``created`` at the epoch, so the image digest is a function of the packages, the
recipe and the epoch only.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from repro import oci
from repro.normalise import Change, ContentRules, NormaliseOptions, layer_blob, write_entries
from repro.rootfs._deb import DIR, FIFO, FILE, HARDLINK, SYMLINK
from repro.rootfs._tree import Node, Tree

_TYPES = {
    FILE: tarfile.REGTYPE,
    DIR: tarfile.DIRTYPE,
    SYMLINK: tarfile.SYMTYPE,
    HARDLINK: tarfile.LNKTYPE,
    FIFO: tarfile.FIFOTYPE,
}


@dataclass
class LayerResult:
    descriptor: oci.Descriptor
    diff_id: str
    entries: int
    changes: list[Change]


def _info(path: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = _TYPES[node.kind]
    info.mode = node.mode
    info.uid = node.uid
    info.gid = node.gid
    info.mtime = node.mtime
    info.size = node.size
    if node.kind in (SYMLINK, HARDLINK):
        info.linkname = node.linkname
    return info


def write_layer(tree: Tree, layout: oci.OCILayout, options: NormaliseOptions) -> LayerResult:
    """Write the tree as one canonical layer blob into `layout`."""
    entries: dict[str, tarfile.TarInfo] = {}
    nodes: dict[int, Node] = {}
    for path, node in tree:
        if path == ".":
            continue  # the root directory itself is the runtime's
        info = _info(path, node)
        entries[path] = info
        nodes[id(info)] = node

    def open_data(member: tarfile.TarInfo) -> IO[bytes]:
        node = nodes[id(member)]
        if node.data is not None:
            return io.BytesIO(node.data)
        assert node.package is not None and node.entry is not None
        spill = node.package.spill
        spill.seek(node.entry.offset)
        return spill

    with layer_blob(layout, options) as sink:
        changes = write_entries(
            entries,
            open_data,
            sink,
            options,
            ContentRules.from_options(options),
            0,
            "root filesystem",
        )
    digest = sink.blob_hasher.digest()
    descriptor = oci.Descriptor(sink.media_type, digest, sink.blob_hasher.size)
    return LayerResult(descriptor, sink.diff_hasher.digest(), len(entries), changes)


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass
class ImageConfig:
    platform: oci.Platform
    env: Sequence[str]
    cmd: Sequence[str]
    entrypoint: Sequence[str] = ()
    user: str = ""
    workdir: str = ""
    labels: Mapping[str, str] | None = None
    created_by: str = ""


def write_image(
    layout: oci.OCILayout, layer: LayerResult, config: ImageConfig, created: int
) -> tuple[oci.Descriptor, oci.Descriptor]:
    """Config, manifest and index.json for the one-layer image; (manifest, config) descriptors."""
    inner: dict[str, Any] = {"Env": list(config.env)}
    if config.entrypoint:
        inner["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        inner["Cmd"] = list(config.cmd)
    if config.user:
        inner["User"] = config.user
    if config.workdir:
        inner["WorkingDir"] = config.workdir
    if config.labels:
        inner["Labels"] = dict(config.labels)
    when = rfc3339(created)
    doc: dict[str, Any] = {
        "architecture": config.platform.architecture,
        "os": config.platform.os,
        "config": inner,
        "created": when,
        "history": [{"created": when, "created_by": config.created_by, "comment": "repro.rootfs"}],
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    if config.platform.variant:
        doc["variant"] = config.platform.variant
    config_blob = oci.canonical_json(doc)
    config_descriptor = layout.write_blob(config_blob, oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
            "config": config_descriptor.to_json(),
            "layers": [layer.descriptor.to_json()],
        }
    )
    written = layout.write_blob(manifest, oci.MEDIA_TYPE_OCI_MANIFEST)
    descriptor = oci.Descriptor(
        oci.MEDIA_TYPE_OCI_MANIFEST, written.digest, written.size, platform=config.platform
    )
    layout.write_index([descriptor])
    return descriptor, config_descriptor
