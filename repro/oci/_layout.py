"""The OCI image layout directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from repro.errors import DigestMismatch, EnvironmentError_, InputError
from repro.oci._descriptor import Descriptor, canonical_json, manifest_children, parse_json_document
from repro.oci._digest import Hasher, VerifyingReader, parse_digest
from repro.oci._files import _copy_hashed, atomic_write_bytes
from repro.oci._media import (
    BLOBS_DIR,
    CHUNK_SIZE,
    IMAGE_MANIFEST_MEDIA_TYPES,
    INDEX_FILE,
    MAX_JSON_SIZE,
    MEDIA_TYPE_OCI_INDEX,
    OCI_LAYOUT_FILE,
    OCI_LAYOUT_VERSION,
)

# --- image layouts -----------------------------------------------------------


class OCILayout:
    """An OCI image layout directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"OCILayout({str(self.path)!r})"

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> OCILayout:
        """Make (or reuse) a layout directory, with an empty index if it has none."""
        layout = cls(path)
        try:
            (layout.path / BLOBS_DIR / "sha256").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EnvironmentError_(f"cannot create OCI layout {layout.path}: {e.strerror}") from e
        if not (layout.path / OCI_LAYOUT_FILE).exists():
            atomic_write_bytes(
                layout.path / OCI_LAYOUT_FILE,
                canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}),
            )
        if not (layout.path / INDEX_FILE).exists():
            layout.write_index([])
        return layout

    # -- the top-level files --

    def _read_small_file(self, name: str) -> bytes:
        path = self.path / name
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JSON_SIZE + 1)
        except FileNotFoundError:
            raise InputError(f"{self.path} is not an OCI image layout: it has no {name}") from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from e
        if len(data) > MAX_JSON_SIZE:
            raise InputError(f"{path} is larger than {MAX_JSON_SIZE} bytes")
        return data

    def check_layout_file(self) -> None:
        """Check `oci-layout` names a layout version repro understands."""
        doc = parse_json_document(
            self._read_small_file(OCI_LAYOUT_FILE), str(self.path / OCI_LAYOUT_FILE)
        )
        version = doc.get("imageLayoutVersion")
        if version != OCI_LAYOUT_VERSION:
            raise InputError(
                f"{self.path / OCI_LAYOUT_FILE}: unsupported imageLayoutVersion {version!r}"
            )

    def read_index(self) -> dict[str, Any]:
        """The parsed `index.json`, checked to be an image index."""
        where = str(self.path / INDEX_FILE)
        doc = parse_json_document(self._read_small_file(INDEX_FILE), where)
        if doc.get("schemaVersion") != 2:
            raise InputError(f"{where}: schemaVersion is not 2")
        media_type = doc.get("mediaType", MEDIA_TYPE_OCI_INDEX)
        if media_type != MEDIA_TYPE_OCI_INDEX:
            raise InputError(f"{where}: mediaType {media_type!r} is not an OCI image index")
        return doc

    def index_manifests(self) -> list[Descriptor]:
        """The descriptors listed directly in `index.json`."""
        return manifest_children(
            self.read_index(), MEDIA_TYPE_OCI_INDEX, str(self.path / INDEX_FILE)
        )

    def write_index(
        self, manifests: Sequence[Descriptor], annotations: Mapping[str, str] | None = None
    ) -> None:
        """Replace `index.json` atomically."""
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [d.to_json() for d in manifests],
        }
        if annotations:
            doc["annotations"] = dict(annotations)
        atomic_write_bytes(self.path / INDEX_FILE, canonical_json(doc))

    def top_descriptor(self) -> Descriptor:
        """The one manifest or index that `index.json` names.

        BuildKit lists the same descriptor once per image name, so entries that
        share a digest count as one.
        """
        entries = self.index_manifests()
        digests = {d.digest for d in entries}
        if len(digests) != 1:
            raise InputError(
                f"{self.path / INDEX_FILE} names {len(digests)} images; expected exactly one"
            )
        return entries[0]

    # -- blobs --

    def blob_path(self, digest: str) -> Path:
        algorithm, hex_part = parse_digest(digest)
        return self.path / BLOBS_DIR / algorithm / hex_part

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def _what(self, digest: str) -> str:
        return f"blob {digest} in OCI layout {self.path}"

    def open_blob(self, digest: str, size: int | None = None) -> VerifyingReader:
        """Open a blob for streaming; digest and size are checked at EOF."""
        path = self.blob_path(digest)
        try:
            raw = open(path, "rb")  # noqa: SIM115 - the reader owns and closes it
        except FileNotFoundError:
            raise InputError(f"blob {digest} is missing from OCI layout {self.path}") from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from e
        return VerifyingReader(raw, digest, size, self._what(digest))

    def read_blob(self, digest: str, size: int | None = None, max_size: int | None = None) -> bytes:
        """Read a whole (small) blob, checking its digest and size."""
        path = self.blob_path(digest)
        with contextlib.suppress(OSError):
            actual = path.stat().st_size
            if size is not None and actual != size:
                raise DigestMismatch(f"{self._what(digest)} has {actual} bytes, expected {size}")
            if max_size is not None and actual > max_size:
                raise InputError(f"{self._what(digest)} is too large to load ({actual} bytes)")
        with self.open_blob(digest, size) as reader:
            return reader.read()

    def read_json(self, descriptor: Descriptor) -> dict[str, Any]:
        """Read and parse the JSON document (manifest, index, config) a descriptor names."""
        data = self.read_blob(descriptor.digest, descriptor.size, MAX_JSON_SIZE)
        return parse_json_document(data, self._what(descriptor.digest))

    def write_blob(
        self,
        data: bytes,
        media_type: str = "application/octet-stream",
        expected_digest: str | None = None,
    ) -> Descriptor:
        """Store bytes as a blob (atomically) and return its descriptor."""
        return self.write_blob_from(io.BytesIO(data), media_type, expected_digest, len(data))

    def write_blob_from(
        self,
        stream: IO[bytes],
        media_type: str = "application/octet-stream",
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> Descriptor:
        """Stream a blob into the layout (temp file + rename), checking it if asked."""
        hasher = Hasher.for_digest(expected_digest) if expected_digest else Hasher()
        blob_dir = self.path / BLOBS_DIR / hasher.algorithm
        blob_dir.mkdir(parents=True, exist_ok=True)
        # The temp name starts with a dot, so it can never be taken for a blob.
        fd, tmp_name = tempfile.mkstemp(dir=blob_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_hashed(stream, out, hasher)
            what = f"blob written to OCI layout {self.path}"
            if expected_digest:
                hasher.check(expected_digest, expected_size, what)
            elif expected_size is not None and hasher.size != expected_size:
                raise DigestMismatch(f"{what} has {hasher.size} bytes, expected {expected_size}")
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, self.blob_path(hasher.digest()))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return Descriptor(media_type=media_type, digest=hasher.digest(), size=hasher.size)

    # -- walking the graph --

    def children(self, descriptor: Descriptor) -> list[Descriptor]:
        """The descriptors a manifest or index refers to; [] for other blobs."""
        if not descriptor.is_manifest:
            return []
        doc = self.read_json(descriptor)
        declared = doc.get("mediaType")
        if declared is not None and declared != descriptor.media_type:
            raise InputError(
                f"{self._what(descriptor.digest)} says its media type is {declared!r}, "
                f"but it is referenced as {descriptor.media_type!r}"
            )
        return manifest_children(doc, descriptor.media_type, self._what(descriptor.digest))

    def walk(self, roots: Sequence[Descriptor] | None = None) -> Iterator[Descriptor]:
        """Every descriptor reachable from `roots` (default: the index), each once.

        Children come before the manifest or index that refers to them, which is
        the order a registry needs them pushed in.
        """
        seen: set[str] = set()
        for root in self.index_manifests() if roots is None else roots:
            yield from self._walk(root, seen)

    def _walk(self, descriptor: Descriptor, seen: set[str]) -> Iterator[Descriptor]:
        if descriptor.digest in seen:
            return
        # Marked before recursing: content addressing rules out real cycles, but a
        # crafted layout must not send us into infinite recursion.
        seen.add(descriptor.digest)
        for child in self.children(descriptor):
            yield from self._walk(child, seen)
        yield descriptor

    def blobs(self) -> Iterator[Descriptor]:
        """Every blob reachable from the index (manifests, configs, layers), each once."""
        return self.walk()

    def image_manifests(self) -> list[Descriptor]:
        """The image manifests reachable from the index, through nested indexes.

        A manifest found inside an index carries the platform its parent index
        gives it.
        """
        found: list[Descriptor] = []
        seen: set[str] = set()
        pending = list(self.index_manifests())
        while pending:
            descriptor = pending.pop(0)
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            if descriptor.is_index:
                pending.extend(self.children(descriptor))
            elif descriptor.media_type in IMAGE_MANIFEST_MEDIA_TYPES:
                found.append(descriptor)
        return found

    def verify(self, *, full: bool = False) -> None:
        """Check every reachable blob is present with the right size (and digest if `full`)."""
        self.check_layout_file()
        for descriptor in self.walk():
            check_blob_size(self, descriptor)
            if full and not descriptor.is_manifest:  # manifests were read and checked by walk
                with self.open_blob(descriptor.digest, descriptor.size) as reader:
                    while reader.read(CHUNK_SIZE):
                        pass


def check_blob_size(layout: OCILayout, descriptor: Descriptor) -> None:
    """Fail early, and clearly, on a missing or truncated blob."""
    path = layout.blob_path(descriptor.digest)
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise InputError(
            f"OCI layout {layout.path} is incomplete: blob {descriptor.digest} is missing"
        ) from None
    if actual != descriptor.size:
        raise DigestMismatch(
            f"blob {descriptor.digest} in OCI layout {layout.path} has {actual} bytes, "
            f"expected {descriptor.size}"
        )
