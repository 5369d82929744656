"""Images made of random bytes, for push tests and bench/bench_publish.py.

Each layer is a tar holding one file of seeded random bytes: a real image that
`docker pull` and skopeo accept, of any size, written straight to an OCI layout.
Layers are uncompressed tars, or with `gzip_level` gzip streams (level 0 stores the
random bytes in gzip's framing at no CPU cost: random data does not compress, and a
registry client such as skopeo pushes a gzip layer as it is, where it would
compress an uncompressed one first).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from repro import oci


class _Hashing:
    """A write-only file that hashes (and counts) what goes through it."""

    def __init__(self, out: object) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)  # type: ignore[attr-defined,no-any-return]

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _random_tar(path: Path, size: int, seed: int, gzip_level: int | None) -> tuple[str, int, str]:
    """Write a tar (or gzip of one) of a file of `size` random bytes; return the blob's
    digest and length, and the digest of the tar (the diff_id)."""
    rng = random.Random(seed)

    class Source:
        def __init__(self) -> None:
            self.left = size

        def read(self, n: int = -1) -> bytes:
            n = self.left if n < 0 else min(n, self.left)
            self.left -= n
            return rng.randbytes(n)

    with open(path, "wb") as raw:
        blob = _Hashing(raw)
        zipped = (
            gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=gzip_level, mtime=0)  # type: ignore[arg-type]
            if gzip_level is not None
            else None
        )
        tar_out = _Hashing(zipped if zipped is not None else blob)
        with tarfile.open(fileobj=tar_out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            info = tarfile.TarInfo(f"data-{seed}.bin")
            info.size, info.mtime, info.mode = size, 0, 0o644
            tar.addfile(info, Source())  # type: ignore[arg-type]
        if zipped is not None:
            zipped.close()
    return blob.digest, blob.size, tar_out.digest


def random_image(
    dest: Path, layer_sizes: Sequence[int], seed: int = 0, gzip_level: int | None = None
) -> oci.Descriptor:
    """Write an OCI layout at `dest` with one linux/amd64 image of random layers."""
    layout = oci.OCILayout.create(dest)
    blob_dir = dest / "blobs" / "sha256"
    layers, diff_ids = [], []
    media_type = (
        oci.MEDIA_TYPE_OCI_LAYER_GZIP if gzip_level is not None else oci.MEDIA_TYPE_OCI_LAYER
    )
    for i, size in enumerate(layer_sizes):
        fd, tmp = tempfile.mkstemp(dir=blob_dir, prefix=".tmp-")
        os.close(fd)
        digest, length, diff_id = _random_tar(Path(tmp), size, seed * 1000 + i, gzip_level)
        os.replace(tmp, layout.blob_path(digest))
        layers.append(oci.Descriptor(media_type, digest, length))
        diff_ids.append(diff_id)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"random layer {i}"} for i in range(len(layers))],
    }
    config_desc = layout.write_blob(oci.canonical_json(config), oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    top = layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)
    top = oci.Descriptor(top.media_type, top.digest, top.size)
    layout.write_index([top])
    return top


def random_index(
    dest: Path, platforms: Sequence[str], layer_size: int, seed: int = 0
) -> oci.Descriptor:
    """Write an OCI layout at `dest` whose top is an index of one random image per
    platform (`os/arch`)."""
    layout = oci.OCILayout.create(dest)
    children = []
    for i, platform in enumerate(platforms):
        os_, arch = platform.split("/")
        top = random_image(dest, [layer_size], seed=seed * 100 + i)
        manifest = layout.read_json(top)
        config = layout.read_json(oci.Descriptor.from_json(manifest["config"]))
        config.update(os=os_, architecture=arch)
        config_desc = layout.write_blob(oci.canonical_json(config), oci.MEDIA_TYPE_OCI_CONFIG)
        manifest["config"] = config_desc.to_json()
        child = layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)
        children.append(
            oci.Descriptor(
                child.media_type,
                child.digest,
                child.size,
                platform=oci.Platform(architecture=arch, os=os_),
            )
        )
    index = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_INDEX,
        "manifests": [c.to_json() for c in children],
    }
    top = layout.write_blob(oci.canonical_json(index), oci.MEDIA_TYPE_OCI_INDEX)
    layout.write_index([top])
    return top
