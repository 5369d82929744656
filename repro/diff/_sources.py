"""Where the two images of a diff come from: OCI layouts, OCI archives, registries.

A source lists its runnable images by platform and opens blobs as digest-checked
streams. An archive is unpacked (safely, by repro.oci) into a temporary layout that
lives as long as the source is open; a registry image is pulled (every byte
digest-checked) into one the same way.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from repro import oci
from repro.errors import InputError


@dataclass
class ImageSource:
    label: str
    layout: oci.OCILayout
    top: oci.Descriptor
    images: dict[str, oci.Image] = field(default_factory=dict)
    index_annotations: dict[str, str] = field(default_factory=dict)

    def open_blob(self, descriptor: oci.Descriptor) -> IO[bytes]:
        return cast(IO[bytes], self.layout.open_blob(descriptor.digest, descriptor.size))


def platform_key(descriptor: oci.Descriptor, config: dict[str, object]) -> str:
    if descriptor.platform is not None:
        return str(descriptor.platform)
    os_ = str(config.get("os", "unknown"))
    arch = str(config.get("architecture", "unknown"))
    variant = config.get("variant")
    return f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"


def load_source(label: str, layout: oci.OCILayout) -> ImageSource:
    layout.check_layout_file()
    index = layout.read_index()
    top = layout.top_descriptor()
    source = ImageSource(label, layout, top, index_annotations=dict(index.get("annotations") or {}))
    for descriptor in layout.image_manifests():
        if descriptor.is_attestation:
            continue
        manifest = oci.read_manifest(layout, descriptor)
        config_descriptor, config = oci.read_config(layout, manifest)
        layers = oci.manifest_children(
            manifest, descriptor.media_type, f"manifest {descriptor.digest}"
        )[1:]
        key = platform_key(descriptor, config)
        if key in source.images:
            raise InputError(f"{label} holds two images for platform {key}")
        source.images[key] = oci.Image(descriptor, manifest, config_descriptor, config, layers)
    if not source.images:
        raise InputError(f"{label} holds no image")
    return source


REGISTRY_PREFIXES = ("docker://", "registry:")


def pull_to_layout(reference: str, dest: Path) -> oci.OCILayout:
    """Copy an image (every platform, attestations left out) from a registry into a layout.

    Every manifest and blob is digest-checked by the registry client as it arrives.
    """
    from repro.registry import Registry, parse_reference

    ref = parse_reference(reference)
    layout = oci.OCILayout.create(dest)
    with Registry() as registry:
        top = registry.resolve(ref)

        def fetch_manifest(descriptor: oci.Descriptor) -> dict[str, object]:
            data, _, _ = registry.get_manifest(ref.with_digest(descriptor.digest))
            layout.write_blob(data, descriptor.media_type, expected_digest=descriptor.digest)
            return oci.parse_json_document(data, f"manifest {descriptor.digest} of {reference}")

        pending = [top]
        while pending:
            descriptor = pending.pop()
            doc = fetch_manifest(descriptor)
            children = oci.manifest_children(doc, descriptor.media_type, str(descriptor.digest))
            if descriptor.is_index:
                pending.extend(c for c in children if c.is_manifest and not c.is_attestation)
                continue
            for blob in children:
                if not layout.has_blob(blob.digest):
                    registry.get_blob(ref, blob.digest, layout.blob_path(blob.digest), blob.size)
        layout.write_index([top])
    return layout


@contextlib.contextmanager
def open_source(spec: str) -> Iterator[ImageSource]:
    """`oci:DIR`, `oci-archive:FILE`, `docker://REF` / `registry:REF`, or a bare path."""
    for prefix in REGISTRY_PREFIXES:
        if spec.startswith(prefix):
            with tempfile.TemporaryDirectory(prefix="repro-diff-pull-") as tmp:
                layout = pull_to_layout(spec[len(prefix) :], Path(tmp) / "layout")
                yield load_source(spec, layout)
            return
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("oci", "oci-archive"):
        path = Path(spec)
        if path.is_dir():
            kind, rest = "oci", spec
        elif path.is_file():
            kind, rest = "oci-archive", spec
        else:
            raise InputError(f"{spec!r}: expected oci:DIR, oci-archive:FILE, or an existing path")
    if not rest:
        raise InputError(f"{spec!r}: no path after {kind}:")
    path = Path(rest)
    if kind == "oci":
        if not path.is_dir():
            raise InputError(f"{spec!r}: {path} is not a directory")
        yield load_source(spec, oci.OCILayout(path))
        return
    if not path.is_file():
        raise InputError(f"{spec!r}: {path} is not a file")
    with tempfile.TemporaryDirectory(prefix="repro-diff-") as tmp:
        layout = oci.extract_oci_archive(path, Path(tmp) / "layout")
        yield load_source(spec, layout)
