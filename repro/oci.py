"""The OCI image model and its on-disk formats.

BuildKit's `oci` exporter streams an OCI image layout as a tar archive. repro
unpacks it safely into a layout directory (`extract_oci_archive`), reads the
manifests and configs in it (`OCILayout`, `load_image`), pushes it
(`repro.registry`), and writes it back as a byte-for-byte deterministic archive
(`write_oci_archive`).

Everything read from disk is checked against the digest that names it, and
blobs are streamed: a layer can be gigabytes, so no code path here holds a whole
blob in memory except the small JSON documents (manifests, configs, indexes).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from repro.errors import DigestMismatch, EnvironmentError_, InputError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

# --- media types -------------------------------------------------------------

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json"

MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
# Everything a registry serves from /manifests/ rather than /blobs/.
MANIFEST_MEDIA_TYPES = INDEX_MEDIA_TYPES | IMAGE_MANIFEST_MEDIA_TYPES
CONFIG_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG})

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_VERSION = "org.opencontainers.image.version"
# BuildKit marks provenance/SBOM manifests inside an index with this annotation.
ANNOTATION_DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type"

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
OCI_LAYOUT_VERSION = "1.0.0"

# Manifests, indexes and configs are read into memory; anything bigger than this
# is not a sane JSON document and is refused rather than loaded.
MAX_JSON_SIZE = 32 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024

# The digest algorithms accepted, with the length of their hex part.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = frozenset("0123456789abcdef")


class Readable(Protocol):
    """Anything with a binary `read(n)`: a file, a socket file, a chunk reader."""

    def read(self, n: int = -1, /) -> bytes: ...


# --- digests -----------------------------------------------------------------


def sha256_digest(data: ReadableBuffer) -> str:
    """The `sha256:<hex>` digest of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> bool:
    """Whether `value` is a well-formed digest of an algorithm repro supports."""
    if not isinstance(value, str):
        return False
    algorithm, sep, hex_part = value.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    return bool(sep) and length == len(hex_part) and set(hex_part) <= _HEX


def parse_digest(digest: str) -> tuple[str, str]:
    """Split a digest into (algorithm, hex); InputError if it is malformed."""
    if not is_digest(digest):
        raise InputError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    algorithm, _, hex_part = digest.partition(":")
    return algorithm, hex_part


def short_digest(digest: str) -> str:
    """A digest cut short for messages: `sha256:0123456789ab`."""
    return digest[: digest.find(":") + 13] if ":" in digest else digest[:12]


class Hasher:
    """Incremental digest and byte count of a stream, checked at the end."""

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _DIGEST_HEX_LENGTHS:
            raise InputError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.size = 0
        self._hash = hashlib.new(algorithm)

    @classmethod
    def for_digest(cls, digest: str) -> Hasher:
        """A hasher using the algorithm of `digest`."""
        return cls(parse_digest(digest)[0])

    def update(self, data: ReadableBuffer) -> None:
        view = memoryview(data)
        self._hash.update(view)
        self.size += view.nbytes

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def check(self, expected_digest: str, expected_size: int | None, what: str) -> None:
        """Raise DigestMismatch unless the bytes seen match the digest (and size)."""
        if expected_size is not None and self.size != expected_size:
            raise DigestMismatch(
                f"{what} has {self.size} bytes, expected {expected_size} ({expected_digest})"
            )
        actual = self.digest()
        if actual != expected_digest:
            raise DigestMismatch(
                f"{what} does not match its digest: expected {expected_digest}, got {actual}"
            )


def hash_stream(stream: Readable, algorithm: str = "sha256") -> tuple[str, int]:
    """Digest and size of everything left in `stream`, read in chunks."""
    hasher = Hasher(algorithm)
    while chunk := stream.read(CHUNK_SIZE):
        hasher.update(chunk)
    return hasher.digest(), hasher.size


class VerifyingReader(io.RawIOBase):
    """A read-only stream that checks digest and size when its end is reached.

    Reading past the expected size, or reaching EOF with the wrong digest or
    size, raises DigestMismatch, so a consumer that reads to the end never
    silently accepts corrupt bytes.
    """

    def __init__(
        self, raw: IO[bytes], digest: str, size: int | None, what: str, *, close_raw: bool = True
    ) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._close_raw = close_raw
        self._hasher = Hasher.for_digest(digest)
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        if not data:
            self._verify()
            return 0
        view[: len(data)] = data
        self._hasher.update(data)
        if self._size is not None and self._hasher.size > self._size:
            raise DigestMismatch(
                f"{self._what} is longer than the {self._size} bytes its descriptor says"
            )
        return len(data)

    def verify_eof(self) -> None:
        """Check that nothing is left to read and that digest and size match."""
        if self.read(1):
            raise DigestMismatch(f"{self._what} is longer than the {self._size} bytes expected")
        self._verify()

    def _verify(self) -> None:
        if not self.verified:
            self._hasher.check(self._digest, self._size, self._what)
            self.verified = True

    def close(self) -> None:
        if not self.closed and self._close_raw:
            self._raw.close()
        super().close()


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


# --- atomic files ------------------------------------------------------------


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write a file so that readers see either the old one or the whole new one.

    The data goes to a temporary file in the same directory (so the rename
    cannot cross file systems), is flushed to disk, then renamed over `path`.
    On any error the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as out:
        out.write(data)


def _copy_hashed(src: Readable, dst: IO[bytes], hasher: Hasher) -> None:
    while chunk := src.read(CHUNK_SIZE):
        hasher.update(chunk)
        dst.write(chunk)


# --- outputs: what a sink may replace ----------------------------------------------


_LAYOUT_ENTRIES = frozenset({"oci-layout", "index.json", "blobs"})


def check_output_target(kind: str, path: str | os.PathLike[str]) -> None:
    """Refuse to write an output of `kind` ("oci" or "oci-archive") at `path` unless
    nothing is there, or what is there is an earlier output of the same kind.

    A layout directory may replace an empty directory or an OCI layout (only
    `oci-layout`, `index.json` and `blobs/<algorithm>/<hex>`); an archive may replace
    an empty file or a tar holding `oci-layout` and `index.json`. Anything else is the
    user's and is refused with one line (InputError), never renamed or deleted.
    """
    target = Path(path)
    where = f"{kind}:{target}"
    here = Path.cwd().resolve()
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError) as e:
        raise InputError(f"--output {where}: cannot resolve the path ({e})") from None
    if resolved == here or resolved in here.parents or resolved == Path(resolved.anchor):
        raise InputError(f"--output {where}: that is the current directory or one above it")
    if target.is_symlink():
        raise InputError(f"--output {where}: is a symbolic link; give the real path")
    if not target.exists():
        parent = target.absolute().parent
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--output {where}: {parent} is not a directory")
        return
    if kind == "oci":
        if not target.is_dir():
            raise InputError(
                f"--output {where}: exists and is not a directory; remove it or choose another"
            )
        if not _is_oci_layout_dir(target):
            raise InputError(
                f"--output {where}: exists and is not an OCI layout that repro wrote "
                "(it would be replaced); remove it or choose another"
            )
        return
    if not target.is_file():
        raise InputError(f"--output {where}: exists and is not a regular file")
    if target.stat().st_size and not _is_oci_archive_file(target):
        raise InputError(
            f"--output {where}: exists and is not an OCI archive (it would be replaced); "
            "remove it or choose another"
        )


def _is_oci_layout_dir(path: Path) -> bool:
    try:
        names = {p.name for p in path.iterdir()}
        if not names:
            return True
        if not names <= _LAYOUT_ENTRIES or not (path / OCI_LAYOUT_FILE).is_file():
            return False
        blobs = path / BLOBS_DIR
        if not blobs.exists():
            return True
        if blobs.is_symlink() or not blobs.is_dir():
            return False
        for algorithm in blobs.iterdir():
            if algorithm.is_symlink() or not algorithm.is_dir():
                return False
            for blob in algorithm.iterdir():
                name = blob.name
                if blob.is_symlink() or not blob.is_file() or not name.isalnum():
                    return False
        return True
    except OSError:
        return False


def _is_oci_archive_file(path: Path) -> bool:
    try:
        with tarfile.open(path, mode="r:") as tar:
            names = {m.name.removeprefix("./") for m in tar}
    except (OSError, tarfile.TarError):
        return False
    return {OCI_LAYOUT_FILE, INDEX_FILE} <= names


def replace_output(kind: str, staged: Path, dest: Path) -> None:
    """Move a finished output from `staged` (beside `dest`) to `dest`, atomically for
    an archive and with one rename each way for a layout; what `dest` held must pass
    `check_output_target` (checked again here: it may have changed since). The new
    output keeps the permissions of the one it replaces."""
    check_output_target(kind, dest)
    try:
        if dest.exists():
            os.chmod(staged, dest.stat().st_mode & 0o7777)
        if kind == "oci-archive":
            os.replace(staged, dest)
            return
        if not dest.exists():
            os.rename(staged, dest)
            return
        old = staged.with_name(staged.name + "-old")
        os.rename(dest, old)
        try:
            os.rename(staged, dest)
        except OSError:
            os.rename(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise EnvironmentError_(f"cannot write {kind}:{dest}: {e.strerror or e}") from None


def staging_dir_beside(dest: Path, tag: str) -> Path:
    """A new temporary directory next to `dest` (same file system, so renames work)."""
    parent = dest.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{tag}-", dir=parent))
    except OSError as e:
        raise InputError(f"cannot write next to {dest}: {e.strerror or e}") from None


# --- image layouts -----------------------------------------------------------


@dataclass
class Image:
    """One image manifest read from a layout, with its config."""

    descriptor: Descriptor
    manifest: dict[str, Any]
    config_descriptor: Descriptor
    config: dict[str, Any]
    layers: list[Descriptor]


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
            _check_blob_size(self, descriptor)
            if full and not descriptor.is_manifest:  # manifests were read and checked by walk
                with self.open_blob(descriptor.digest, descriptor.size) as reader:
                    while reader.read(CHUNK_SIZE):
                        pass


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


def load_image(layout: OCILayout, platform: str | None = None) -> Image:
    """Read the one runnable image in a layout (or the one for `os/arch[/variant]`).

    Attestation manifests (provenance, SBOM) are not images and are skipped.
    """
    candidates = [d for d in layout.image_manifests() if not d.is_attestation]
    if platform is not None:
        candidates = [d for d in candidates if d.platform is None or d.platform.matches(platform)]
    if not candidates:
        wanted = f" for {platform}" if platform else ""
        raise InputError(f"OCI layout {layout.path} has no image{wanted}")
    if len(candidates) > 1:
        platforms = ", ".join(sorted(str(d.platform) for d in candidates if d.platform))
        raise InputError(
            f"OCI layout {layout.path} has {len(candidates)} images ({platforms}); "
            "choose a platform"
        )
    descriptor = candidates[0]
    manifest = read_manifest(layout, descriptor)
    config_descriptor, config = read_config(layout, manifest)
    layers = manifest_children(manifest, descriptor.media_type, f"manifest {descriptor.digest}")[1:]
    return Image(descriptor, manifest, config_descriptor, config, layers)


# --- archives ----------------------------------------------------------------

# Top-level regular files an OCI archive may hold. `manifest.json` is the Docker
# compatibility file some exporters add; it is accepted but not unpacked.
_LAYOUT_FILES = frozenset({OCI_LAYOUT_FILE, INDEX_FILE})
_IGNORED_FILES = frozenset({"manifest.json"})


def _member_path(name: str, label: str) -> str:
    """The normalised relative path of a tar member, refusing anything that escapes."""
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise InputError(f"{label}: refusing archive member {name!r}: not a relative path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{label}: refusing archive member {name!r}: it contains '..'")
    return "/".join(parts)


def _member_kind(path: str) -> str:
    """What an archive path is in an OCI layout: dir, layout, ignored, blob or ''."""
    parts = path.split("/")
    if path in ("", BLOBS_DIR):  # "" is the archive's own "./" entry
        return "dir"
    if len(parts) == 2 and parts[0] == BLOBS_DIR and parts[1] in _DIGEST_HEX_LENGTHS:
        return "dir"
    if path in _LAYOUT_FILES:
        return "layout"
    if path in _IGNORED_FILES:
        return "ignored"
    if len(parts) == 3 and parts[0] == BLOBS_DIR and is_digest(f"{parts[1]}:{parts[2]}"):
        return "blob"
    return ""


def _type_name(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symlink"
    if member.islnk():
        return "a hard link"
    if member.isdev():
        return "a device or fifo"
    return "not a regular file"


class _Extractor:
    """Unpacks the members of one OCI archive into a layout directory."""

    def __init__(self, tar: tarfile.TarFile, dest: Path, label: str) -> None:
        self.tar = tar
        self.dest = dest
        self.label = label
        self.seen: set[str] = set()

    def member(self, member: tarfile.TarInfo) -> None:
        path = _member_path(member.name, self.label)
        if not (member.isreg() or member.isdir()):
            raise InputError(
                f"{self.label}: refusing archive member {member.name!r}: it is {_type_name(member)}"
            )
        kind = _member_kind(path)
        if not kind:
            raise InputError(
                f"{self.label}: refusing archive member {member.name!r}: "
                "it is not part of an OCI image layout"
            )
        if (kind == "dir") != member.isdir():
            raise InputError(
                f"{self.label}: refusing archive member {member.name!r}: "
                f"expected a {'directory' if kind == 'dir' else 'regular file'}"
            )
        if path in self.seen:
            raise InputError(f"{self.label}: archive member {member.name!r} appears twice")
        self.seen.add(path)
        if kind == "dir":
            (self.dest / path).mkdir(parents=True, exist_ok=True)
        elif kind == "layout":
            self._layout_file(member, path)
        elif kind == "blob":
            self._blob(member, path)

    def _open(self, member: tarfile.TarInfo) -> IO[bytes]:
        source = self.tar.extractfile(member)
        if source is None:  # cannot happen for a regular file; keeps mypy honest
            raise InputError(f"{self.label}: cannot read archive member {member.name!r}")
        return source

    def _layout_file(self, member: tarfile.TarInfo, path: str) -> None:
        if member.size > MAX_JSON_SIZE:
            raise InputError(f"{self.label}: {path} is larger than {MAX_JSON_SIZE} bytes")
        data = self._open(member).read()
        parse_json_document(data, f"{path} in {self.label}")
        atomic_write_bytes(self.dest / path, data)

    def _blob(self, member: tarfile.TarInfo, path: str) -> None:
        _, algorithm, hex_part = path.split("/")
        target = self.dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = Hasher(algorithm)
        with atomic_writer(target) as out:
            _copy_hashed(self._open(member), out, hasher)
            # Checked before the rename, so a bad blob never appears under its name.
            hasher.check(f"{algorithm}:{hex_part}", None, f"{path} in {self.label}")


def _prepare_empty_dir(dest: Path) -> bool:
    """Make sure `dest` is an empty directory; True if it had to be created."""
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise InputError(
                f"cannot unpack an OCI archive into {dest}: it is not an empty directory"
            )
        return False
    try:
        dest.mkdir(parents=True)
    except OSError as e:
        raise EnvironmentError_(f"cannot create {dest}: {e.strerror}") from e
    return True


def _remove_contents(dest: Path, remove_dir: bool) -> None:
    if remove_dir:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _extract_stream(stream: Readable, dest: Path, label: str) -> None:
    try:
        # Stream mode ("r|"): members are read in order, never seeking, so the
        # archive may be a pipe and is never held in memory.
        # Stream mode uses nothing but read(), so any Readable will do.
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|*") as tar:
            extractor = _Extractor(tar, dest, label)
            for member in tar:
                extractor.member(member)
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"{label} is not a valid tar archive: {e}") from None
    except OSError as e:
        raise EnvironmentError_(f"cannot unpack {label} into {dest}: {e.strerror or e}") from e


def extract_oci_archive(
    source: str | os.PathLike[str] | Readable, dest_dir: str | os.PathLike[str]
) -> OCILayout:
    """Safely unpack an OCI archive into `dest_dir` (absent or empty) and check it.

    Only `oci-layout`, `index.json`, `blobs/` and `blobs/<alg>/<hex>` are
    accepted, as regular files or directories; every blob must hash to its name,
    and every blob the index reaches must be present. On any failure the
    directory is left as it was found and InputError or DigestMismatch is raised.
    """
    dest = Path(dest_dir)
    created = _prepare_empty_dir(dest)
    try:
        if isinstance(source, str | os.PathLike):
            label = str(source)
            try:
                stream = open(source, "rb")  # noqa: SIM115 - closed just below
            except OSError as e:
                raise InputError(f"cannot read OCI archive {label}: {e.strerror}") from e
            with stream:
                _extract_stream(stream, dest, label)
        else:
            label = getattr(source, "name", None) or "OCI archive"
            _extract_stream(source, dest, str(label))
        layout = OCILayout(dest)
        layout.verify()
        return layout
    except BaseException:
        _remove_contents(dest, created)
        raise


def _tar_entry(name: str, *, directory: bool, size: int = 0) -> tarfile.TarInfo:
    """A tar header with every field that could vary between machines pinned."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_blob_size(layout: OCILayout, descriptor: Descriptor) -> None:
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


def write_oci_archive(layout: OCILayout, dest_file: str | os.PathLike[str]) -> None:
    """Write a layout as a deterministic tar archive, atomically.

    The same layout always gives the same bytes: members sorted by name, GNU
    tar format, mtime 0, uid/gid 0, no user or group names, modes 0644/0755.
    Only `oci-layout`, `index.json` and the blobs reachable from the index are
    written; each blob is checked against its digest as it is copied.
    """
    layout.check_layout_file()
    blobs = {d.digest: d for d in layout.walk()}
    entries: dict[str, tuple[str, Descriptor | None]] = {
        OCI_LAYOUT_FILE: ("layout", None),
        INDEX_FILE: ("layout", None),
        BLOBS_DIR: ("dir", None),
    }
    for blob in blobs.values():
        algorithm, hex_part = parse_digest(blob.digest)
        entries[f"{BLOBS_DIR}/{algorithm}"] = ("dir", None)
        entries[f"{BLOBS_DIR}/{algorithm}/{hex_part}"] = ("blob", blob)
    try:
        mode = Path(dest_file).stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    with (
        atomic_writer(dest_file, mode) as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name in sorted(entries):
            kind, descriptor = entries[name]
            if kind == "dir":
                tar.addfile(_tar_entry(name, directory=True))
            elif kind == "layout":
                data = layout._read_small_file(name)
                tar.addfile(_tar_entry(name, directory=False, size=len(data)), io.BytesIO(data))
            else:
                assert descriptor is not None
                _check_blob_size(layout, descriptor)
                info = _tar_entry(name, directory=False, size=descriptor.size)
                with layout.open_blob(descriptor.digest, descriptor.size) as reader:
                    tar.addfile(info, reader)
                    reader.verify_eof()
