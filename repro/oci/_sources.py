"""Sources: an image read from an OCI layout, an OCI archive, a Docker archive or a
registry, all with one interface.

`open_source(spec)` yields a `Source`: its label, the layout it is read from, its
top descriptor and its runnable images by platform (an `Index`). An archive is
unpacked (safely) and a registry image pulled (every byte digest-checked) into a
temporary layout that lives as long as the source is open; a Docker archive
(`docker save`) is turned into one, its blobs checked against the names and the
digests it gives them.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from repro.errors import InputError
from repro.oci._archive import extract_oci_archive, member_path
from repro.oci._compress import compression_of
from repro.oci._descriptor import (
    Descriptor,
    Platform,
    canonical_json,
    manifest_children,
    parse_json_document,
)
from repro.oci._digest import is_digest
from repro.oci._layout import OCILayout
from repro.oci._media import (
    IMAGE_MANIFEST_MEDIA_TYPES,
    MAX_JSON_SIZE,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
)
from repro.oci._model import Image, Index
from repro.oci._spec import ImageSpec, parse_source_spec


@dataclass
class Source:
    """An image (one or more platforms) opened for reading."""

    label: str
    layout: OCILayout
    top: Descriptor
    images: dict[str, Image] = field(default_factory=dict)
    index_annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_layout(cls, label: str, layout: OCILayout) -> Source:
        index = Index.open(layout, label)
        return cls(label, layout, index.top, index.images, index.annotations)

    def open_blob(self, descriptor: Descriptor) -> IO[bytes]:
        return cast(IO[bytes], self.layout.open_blob(descriptor.digest, descriptor.size))


@contextlib.contextmanager
def open_source(spec: str | ImageSpec) -> Iterator[Source]:
    """Open an image for reading; see `repro.oci._spec` for the forms `spec` takes."""
    parsed = parse_source_spec(spec) if isinstance(spec, str) else spec
    label = parsed.text or str(parsed)
    if parsed.kind == "registry":
        assert parsed.reference is not None
        with tempfile.TemporaryDirectory(prefix="repro-pull-") as tmp:
            layout = pull_to_layout(parsed.reference, Path(tmp) / "layout")
            yield Source.from_layout(label, layout)
        return
    path = parsed.path
    assert path is not None
    if parsed.kind == "oci":
        if not path.is_dir():
            raise InputError(f"{label!r}: {path} is not a directory")
        yield Source.from_layout(label, OCILayout(path))
        return
    if not path.is_file():
        raise InputError(f"{label!r}: {path} is not a file")
    with tempfile.TemporaryDirectory(prefix="repro-source-") as tmp:
        if parsed.kind == "docker-archive":
            layout = docker_archive_to_layout(path, Path(tmp) / "layout")
        else:
            layout = extract_oci_archive(path, Path(tmp) / "layout")
        yield Source.from_layout(label, layout)


def pull_to_layout(reference: str, dest: Path) -> OCILayout:
    """Copy an image (every platform, attestations left out) from a registry into a layout.

    Every manifest and blob is digest-checked by the registry client as it arrives.
    """
    from repro.oci._descriptor import parse_json_document
    from repro.registry import Registry, parse_reference

    ref = parse_reference(reference)
    layout = OCILayout.create(dest)
    with Registry() as registry:
        top = registry.resolve(ref)
        pending = [top]
        while pending:
            descriptor = pending.pop()
            data, _, _ = registry.get_manifest(ref.with_digest(descriptor.digest))
            layout.write_blob(data, descriptor.media_type, expected_digest=descriptor.digest)
            doc = parse_json_document(data, f"manifest {descriptor.digest} of {reference}")
            children = manifest_children(doc, descriptor.media_type, str(descriptor.digest))
            if descriptor.is_index:
                pending.extend(c for c in children if c.is_manifest and not c.is_attestation)
                continue
            copy_blobs(registry, ref.name, children, layout)
        layout.write_index([top])
    return layout


def copy_blobs(registry: Any, repository: str, blobs: list[Descriptor], layout: OCILayout) -> None:
    """Fetch the blobs `layout` lacks from a registry repository (each digest-checked)."""
    for blob in blobs:
        path = layout.blob_path(blob.digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            registry.get_blob(repository, blob.digest, path, blob.size)


# --- Docker archives (`docker save`) ------------------------------------------------

_LAYER_MEDIA_TYPES = {
    "gzip": MEDIA_TYPE_OCI_LAYER_GZIP,
    "zstd": MEDIA_TYPE_OCI_LAYER_ZSTD,
    "none": MEDIA_TYPE_OCI_LAYER,
}


class _DockerArchive:
    """The members of a `docker save` tar, by their normalised paths."""

    def __init__(self, tar: tarfile.TarFile, label: str) -> None:
        self.tar = tar
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            self.members[member_path(member.name, label)] = member

    def member(self, name: str, what: str) -> tarfile.TarInfo:
        """The regular file at `name`, following one symlink inside the archive (old
        Docker archives link repeated layers to the first copy)."""
        path = member_path(name, self.label)
        member = self.members.get(path)
        if member is not None and member.issym():
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
            if member.linkname.startswith("/") or joined.startswith("../") or joined == "..":
                raise InputError(
                    f"{self.label}: refusing link {name!r} -> {member.linkname!r}: "
                    "it points outside the archive"
                )
            member = self.members.get(joined)
        if member is None or not member.isreg():
            raise InputError(f"{self.label}: {what} {name!r} is not a file in the archive")
        return member

    def open(self, member: tarfile.TarInfo) -> IO[bytes]:
        stream = self.tar.extractfile(member)
        if stream is None:  # pragma: no cover - regular files always have a stream
            raise InputError(f"{self.label}: cannot read {member.name!r}")
        return stream


def _named_digest(name: str) -> str | None:
    """The digest a Docker archive path names, if it names one: `blobs/sha256/HEX`
    (Docker 25 and later) or `HEX.json` (a config in the older format)."""
    parts = name.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "blobs" and is_digest(f"{parts[1]}:{parts[2]}"):
        return f"{parts[1]}:{parts[2]}"
    if len(parts) == 1 and parts[0].endswith(".json") and is_digest(f"sha256:{parts[0][:-5]}"):
        return f"sha256:{parts[0][:-5]}"
    return None


def docker_archive_to_layout(path: Path, dest: Path) -> OCILayout:
    """Turn a `docker save` archive holding one image into an OCI layout at `dest`.

    The config and layers keep their bytes (so diffIDs and the config digest are
    the image's own); the manifest is written anew, since the older archive format
    does not keep the registry's. Blobs named by digest are checked against it.
    """
    label = str(path)
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as e:
        raise InputError(
            f"{label} is not a Docker archive (a tar from `docker save`): {e}"
        ) from None
    with tar:
        archive = _DockerArchive(tar, label)
        manifest_member = archive.members.get("manifest.json")
        if manifest_member is None or not manifest_member.isreg():
            raise InputError(f"{label} is not a Docker archive: it has no manifest.json")
        if manifest_member.size > MAX_JSON_SIZE:
            raise InputError(f"{label}: manifest.json is too large")
        try:
            entries = json.loads(archive.open(manifest_member).read())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{label}: manifest.json is not valid JSON: {e}") from None
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
            count = len(entries) if isinstance(entries, list) else 0
            raise InputError(
                f"{label}: holds {count} images; repro diff reads an archive of exactly one "
                "(docker save IMAGE)"
            )
        entry = entries[0]
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise InputError(f"{label}: manifest.json has no Config and Layers")
        layout = OCILayout.create(dest)
        config_member = archive.member(config_name, "the config")
        if config_member.size > MAX_JSON_SIZE:
            raise InputError(f"{label}: the config is too large")
        config_data = archive.open(config_member).read()
        config_descriptor = layout.write_blob(
            config_data, MEDIA_TYPE_OCI_CONFIG, expected_digest=_named_digest(config_name)
        )
        try:
            config = json.loads(config_data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{label}: the config is not valid JSON: {e}") from None
        layers = []
        for name in layer_names:
            if not isinstance(name, str):
                raise InputError(f"{label}: manifest.json lists a layer that is not a path")
            member = archive.member(name, "the layer")
            stream = archive.open(member)
            head = stream.read(4)
            media_type = _LAYER_MEDIA_TYPES[compression_of(head)]
            layers.append(
                layout.write_blob_from(
                    cast(IO[bytes], _Prefixed(head, stream)),
                    media_type,
                    expected_digest=_named_digest(name),
                    expected_size=member.size,
                )
            )
        descriptor = _original_manifest(archive, layout, config_descriptor, layers)
    if descriptor is None:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": config_descriptor.to_json(),
            "layers": [d.to_json() for d in layers],
        }
        descriptor = layout.write_blob(canonical_json(manifest), MEDIA_TYPE_OCI_MANIFEST)
    if isinstance(config, dict) and isinstance(config.get("architecture"), str):
        descriptor.platform = Platform.from_json(
            {k: v for k, v in config.items() if k in ("architecture", "os", "variant")},
            f"{label} config",
        )
    layout.write_index([descriptor])
    return layout


def _original_manifest(
    archive: _DockerArchive,
    layout: OCILayout,
    config: Descriptor,
    layers: list[Descriptor],
) -> Descriptor | None:
    """The image's own manifest, when the archive keeps it (Docker 25 and later write
    an OCI `index.json` beside `manifest.json`) and it names exactly this config and
    these layers; written to `layout` under its digest."""
    member = archive.members.get("index.json")
    if member is None or not member.isreg() or member.size > MAX_JSON_SIZE:
        return None
    try:
        index = parse_json_document(archive.open(member).read(), f"index.json in {archive.label}")
        candidates = manifest_children(index, MEDIA_TYPE_OCI_INDEX, "index.json")
    except InputError:
        return None
    wanted = [config.digest] + [d.digest for d in layers]
    for candidate in candidates:
        if candidate.media_type not in IMAGE_MANIFEST_MEDIA_TYPES:
            continue
        blob = archive.members.get(f"blobs/{candidate.digest.replace(':', '/')}")
        if blob is None or not blob.isreg() or blob.size > MAX_JSON_SIZE:
            continue
        data = archive.open(blob).read()
        try:
            doc = parse_json_document(data, candidate.digest)
            children = manifest_children(doc, candidate.media_type, candidate.digest)
        except InputError:
            continue
        if [d.digest for d in children] != wanted:
            continue
        # Rewrite the layers' media types as the manifest gives them.
        for written, declared in zip(layers, children[1:], strict=True):
            written.media_type = declared.media_type
        stored = layout.write_blob(data, candidate.media_type, expected_digest=candidate.digest)
        stored.annotations = {}
        return stored
    return None


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of a stream."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._prefix:
            out, self._prefix = (
                (self._prefix, b"") if n < 0 else (self._prefix[:n], self._prefix[n:])
            )
            if n < 0:
                return out + self._rest.read()
            if len(out) < n:
                out += self._rest.read(n - len(out))
            return out
        return self._rest.read(n)
