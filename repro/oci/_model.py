"""The image model: an index of images, an image of layers, each opened on demand.

Every source (an OCI layout, an OCI or Docker archive, a registry) ends up as an
`OCILayout`, and these classes read it: `Index.open(layout)` lists the runnable
images by platform, `Image` holds one manifest and its config, and `Layer` gives a
layer's compressed or uncompressed bytes as streams. Nothing is read before it is
asked for, and everything read is checked: blobs against their digests as they
stream, a layer's diffID against the config's claim when it is computed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

from repro.errors import DigestMismatch, InputError
from repro.oci._compress import uncompressed
from repro.oci._descriptor import Descriptor, manifest_children
from repro.oci._digest import VerifyingReader
from repro.oci._layout import OCILayout
from repro.oci._media import CHUNK_SIZE, IMAGE_MANIFEST_MEDIA_TYPES


@dataclass
class Layer:
    """One layer of an image: its descriptor, the diffID its config claims, its bytes."""

    layout: OCILayout
    descriptor: Descriptor
    claimed_diff_id: str | None
    index: int
    _diff_id: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type

    @property
    def what(self) -> str:
        return f"layer {self.index} ({self.digest[:19]})"

    def compressed(self) -> VerifyingReader:
        """The blob as stored; digest and size are checked when its end is read."""
        return self.layout.open_blob(self.digest, self.size)

    @contextlib.contextmanager
    def uncompressed(self) -> Iterator[IO[bytes]]:
        """The layer's tar stream. On leaving, the rest of the blob is read, so its
        digest is checked even when the reader stopped early."""
        with self.compressed() as raw:
            stream, buffered, _ = uncompressed(raw, self.what)
            yield stream
            while buffered.read(CHUNK_SIZE):
                pass

    def diff_id(self) -> str:
        """The sha256 of the uncompressed tar, computed once and checked against the
        config's claim (DigestMismatch if they differ)."""
        if self._diff_id is None:
            hasher = hashlib.sha256()
            with self.uncompressed() as stream:
                while chunk := stream.read(CHUNK_SIZE):
                    hasher.update(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if self.claimed_diff_id is not None and actual != self.claimed_diff_id:
                raise DigestMismatch(
                    f"{self.what} of {self.layout.path} does not match the diffID its "
                    f"config gives: config says {self.claimed_diff_id}, the layer is {actual}"
                )
            self._diff_id = actual
        return self._diff_id


@dataclass
class Image:
    """One image manifest with its config; its layers as descriptors and as `Layer`s."""

    descriptor: Descriptor
    manifest: dict[str, Any]
    config_descriptor: Descriptor
    config: dict[str, Any]
    layers: list[Descriptor]
    layout: OCILayout | None = None

    @property
    def diff_ids(self) -> list[str]:
        rootfs = self.config.get("rootfs")
        ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        return [str(i) for i in ids] if isinstance(ids, list) else []

    @property
    def platform(self) -> str:
        """`os/arch[/variant]`: from the index's descriptor, else from the config."""
        return platform_key(self.descriptor, self.config)

    def layer(self, index: int) -> Layer:
        if self.layout is None:
            raise InputError("this image was not read from a layout; its layers cannot be opened")
        ids = self.diff_ids
        return Layer(
            self.layout,
            self.layers[index],
            ids[index] if index < len(ids) else None,
            index,
        )

    def layer_objects(self) -> list[Layer]:
        return [self.layer(i) for i in range(len(self.layers))]


def platform_key(descriptor: Descriptor, config: Mapping[str, object]) -> str:
    """The platform an image is for, as `os/arch[/variant]`."""
    if descriptor.platform is not None:
        return str(descriptor.platform)
    os_ = str(config.get("os", "unknown"))
    arch = str(config.get("architecture", "unknown"))
    variant = config.get("variant")
    return f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"


def read_manifest(layout: OCILayout, descriptor: Descriptor) -> dict[str, Any]:
    """The parsed image manifest a descriptor names, checked to be one."""
    if descriptor.media_type not in IMAGE_MANIFEST_MEDIA_TYPES:
        raise InputError(f"{descriptor.digest} is a {descriptor.media_type}, not an image manifest")
    doc = layout.read_json(descriptor)
    if doc.get("schemaVersion") != 2:
        raise InputError(f"image manifest {descriptor.digest}: schemaVersion is not 2")
    return doc


def read_config(
    layout: OCILayout, manifest: Mapping[str, Any]
) -> tuple[Descriptor, dict[str, Any]]:
    """The config descriptor and parsed config of an image manifest."""
    config_descriptor = Descriptor.from_json(manifest.get("config"), "image manifest config")
    return config_descriptor, layout.read_json(config_descriptor)


def read_image(layout: OCILayout, descriptor: Descriptor) -> Image:
    """The image a manifest descriptor names: manifest, config and layer descriptors."""
    manifest = read_manifest(layout, descriptor)
    children = manifest_children(manifest, descriptor.media_type, f"manifest {descriptor.digest}")
    config_descriptor = children[0]
    config = layout.read_json(config_descriptor)
    return Image(descriptor, manifest, config_descriptor, config, children[1:], layout)


@dataclass
class Index:
    """What a layout's `index.json` names: one top descriptor and its runnable images."""

    layout: OCILayout
    top: Descriptor
    annotations: dict[str, str]
    images: dict[str, Image]

    @classmethod
    def open(cls, layout: OCILayout, label: str | None = None) -> Index:
        """Read a layout's images by platform; attestation manifests are left out.

        InputError if the layout names no image, or two images for one platform.
        """
        label = label or str(layout.path)
        layout.check_layout_file()
        doc = layout.read_index()
        top = layout.top_descriptor()
        images: dict[str, Image] = {}
        for descriptor in layout.image_manifests():
            if descriptor.is_attestation:
                continue
            image = read_image(layout, descriptor)
            key = image.platform
            if key in images:
                raise InputError(f"{label} holds two images for platform {key}")
            images[key] = image
        if not images:
            raise InputError(f"{label} holds no image")
        annotations = doc.get("annotations")
        return cls(layout, top, dict(cast(dict[str, str], annotations or {})), images)

    def image(self, platform: str | None = None) -> Image:
        """The one image (or the one for `os/arch[/variant]`)."""
        candidates = [
            image
            for image in self.images.values()
            if platform is None
            or (
                image.descriptor.platform.matches(platform)
                if image.descriptor.platform is not None
                else _config_matches(image.platform, platform)
            )
        ]
        if not candidates:
            wanted = f" for {platform}" if platform else ""
            raise InputError(f"OCI layout {self.layout.path} has no image{wanted}")
        if len(candidates) > 1:
            platforms = ", ".join(sorted(self.images))
            raise InputError(
                f"OCI layout {self.layout.path} has {len(candidates)} images ({platforms}); "
                "choose a platform"
            )
        return candidates[0]


def _config_matches(key: str, spec: str) -> bool:
    parts, wanted = key.split("/"), spec.split("/")
    return parts[: len(wanted)] == wanted if len(wanted) == 2 else parts == wanted


def load_image(layout: OCILayout, platform: str | None = None) -> Image:
    """Read the one runnable image in a layout (or the one for `os/arch[/variant]`).

    Attestation manifests (provenance, SBOM) are not images and are skipped.
    """
    try:
        index = Index.open(layout)
    except InputError as e:
        if e.message.endswith("holds no image"):
            raise InputError(f"OCI layout {layout.path} has no image") from None
        raise
    return index.image(platform)
