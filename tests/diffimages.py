"""Helpers for tests of repro diff: synthetic layers and OCI layouts, no engine needed."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repro import oci


@dataclass
class F:
    """One tar entry of a synthetic layer."""

    name: str
    data: bytes = b""
    mode: int = 0o644
    mtime: int = 1_700_000_000
    uid: int = 0
    gid: int = 0
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)


def tar_bytes(entries: Sequence[F], format: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.mtime = e.mtime
            info.uid, info.gid = e.uid, e.gid
            info.linkname = e.linkname
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def gz(data: bytes, mtime: int = 0, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=mtime)


def make_image(
    path: Path,
    layers: Sequence[Sequence[F]],
    *,
    created: str = "2023-11-14T22:13:20Z",
    platform: tuple[str, str] = ("linux", "amd64"),
    gzip_mtime: int = 0,
    gzip_level: int = 6,
    annotations: dict[str, str] | None = None,
    compress: bool = True,
) -> oci.OCILayout:
    """An OCI layout with one image of gzip layers built from `layers`."""
    layout = oci.OCILayout.create(path)
    descriptors = []
    diff_ids = []
    for entries in layers:
        raw = tar_bytes(entries)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if compress:
            blob = layout.write_blob(gz(raw, gzip_mtime, gzip_level), oci.MEDIA_TYPE_OCI_LAYER_GZIP)
        else:
            blob = layout.write_blob(raw, oci.MEDIA_TYPE_OCI_LAYER)
        descriptors.append(blob)
    config = {
        "architecture": platform[1],
        "os": platform[0],
        "created": created,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "test"} for _ in layers],
    }
    config_desc = layout.write_blob(oci.canonical_json(config), oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in descriptors],
    }
    if annotations:
        manifest["annotations"] = annotations
    manifest_desc = layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)
    manifest_desc.platform = oci.Platform(architecture=platform[1], os=platform[0])
    layout.write_index([manifest_desc])
    return layout
