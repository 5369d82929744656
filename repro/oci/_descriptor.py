"""Descriptors and platforms: what a blob is, and the JSON documents that list them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from repro.errors import InputError
from repro.oci._digest import is_digest
from repro.oci._media import (
    ANNOTATION_DOCKER_REFERENCE_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
)

# --- descriptors -------------------------------------------------------------


@dataclass
class Platform:
    """The platform an image manifest is for, as in an index descriptor."""

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None
    os_features: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "platform") -> Platform:
        if not isinstance(data, dict):
            raise InputError(f"{where} is not a JSON object")
        arch, os_name = data.get("architecture"), data.get("os")
        if not isinstance(arch, str) or not isinstance(os_name, str):
            raise InputError(f"{where} lacks a string architecture and os")
        features = data.get("os.features") or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise InputError(f"{where} has an invalid os.features list")
        return cls(
            architecture=arch,
            os=os_name,
            variant=_optional_str(data, "variant", where),
            os_version=_optional_str(data, "os.version", where),
            os_features=list(features),
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, spec: str) -> bool:
        """Whether this platform is `os/arch[/variant]` (variant optional in spec)."""
        parts = spec.split("/")
        if len(parts) not in (2, 3) or parts[:2] != [self.os, self.architecture]:
            return False
        return len(parts) == 2 or parts[2] == (self.variant or "")


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: {key} is not a string")
    return value


# Fields of a descriptor the dataclass models; anything else is kept in `extra`
# so that reading and writing a descriptor never drops data.
_DESCRIPTOR_FIELDS = frozenset({"mediaType", "digest", "size", "annotations", "platform"})


@dataclass
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(mediaType=self.media_type, digest=self.digest, size=self.size)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(data, dict):
            raise InputError(f"{where} is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InputError(f"{where} has no mediaType")
        if not is_digest(digest):
            raise InputError(f"{where} has an invalid digest {digest!r}")
        assert isinstance(digest, str)  # narrowed by is_digest
        # bool is an int in Python; a JSON `true` is no size.
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{where} has an invalid size {size!r}")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InputError(f"{where} has invalid annotations")
        platform = data.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=dict(annotations),
            platform=None
            if platform is None
            else Platform.from_json(platform, f"{where} platform"),
            extra={k: v for k, v in data.items() if k not in _DESCRIPTOR_FIELDS},
        )

    @property
    def is_manifest(self) -> bool:
        """Whether a registry stores this under /manifests/ (image manifest or index)."""
        return self.media_type in MANIFEST_MEDIA_TYPES

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def is_attestation(self) -> bool:
        """Whether BuildKit marked this manifest as provenance/SBOM, not a runnable image."""
        return self.annotations.get(ANNOTATION_DOCKER_REFERENCE_TYPE) == "attestation-manifest"


def canonical_json(data: Any) -> bytes:
    """Compact JSON with sorted keys: the one serialisation repro writes."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def parse_json_document(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object (manifest, index, config); InputError if it is not one."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{what} is not a JSON object")
    return doc


def manifest_children(doc: Mapping[str, Any], media_type: str, what: str) -> list[Descriptor]:
    """The descriptors a manifest or index refers to and that must travel with it.

    For an index: its manifests. For an image manifest: its config, then its
    layers. A `subject` is not included: it points at another image that is
    pushed on its own.
    """
    if media_type in INDEX_MEDIA_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InputError(f"{what} has no manifests list")
        return [Descriptor.from_json(d, f"{what} manifests[{i}]") for i, d in enumerate(entries)]
    if media_type in IMAGE_MANIFEST_MEDIA_TYPES:
        layers = doc.get("layers")
        if layers is None and "layers" in doc:
            layers = []  # BuildKit writes "layers": null for an image with none (FROM scratch)
        if not isinstance(layers, list):
            raise InputError(f"{what} has no layers list")
        config = Descriptor.from_json(doc.get("config"), f"{what} config")
        return [config] + [
            Descriptor.from_json(d, f"{what} layers[{i}]") for i, d in enumerate(layers)
        ]
    return []
