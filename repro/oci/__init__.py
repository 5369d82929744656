"""The OCI image model, its on-disk formats, and where images come from and go to.

    _media       media types, annotation keys, layout file names
    _digest      digests, hashing, `VerifyingReader` (checks digest and size at EOF)
    _descriptor  `Descriptor`, `Platform`, canonical JSON, a document's children
    _compress    `uncompressed()`: the one place that decompresses a layer
    _layout      `OCILayout`: a layout directory, its index and blobs
    _model       `Index`, `Image`, `Layer`: read on demand, checked as read
    _archive     OCI archives: safe unpacking, the stream check, deterministic writing
    _files       atomic writes, and what an output may replace (`check_output_target`)
    _documents   `CachedDocuments`: manifests and configs by digest, kept between runs
    _spec        the one parser of image references and output specs
    _sources     `open_source()`: layouts, OCI archives, Docker archives, registries

Everything read is checked against the digest that names it, and blobs are
streamed: a layer can be gigabytes, so no code path here holds a whole blob in
memory except the small JSON documents (manifests, configs, indexes). Pushing to a
registry is `repro.registry`; making an image canonical is `repro.normalise`.
"""

from repro.oci._archive import (
    check_archive_stream,
    extract_oci_archive,
    member_path,
    write_oci_archive,
)
from repro.oci._compress import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    compression_of,
    uncompressed,
    zstandard_module,
)
from repro.oci._descriptor import (
    Descriptor,
    Platform,
    canonical_json,
    manifest_children,
    parse_json_document,
)
from repro.oci._digest import (
    Hasher,
    Readable,
    VerifyingReader,
    hash_stream,
    is_digest,
    parse_digest,
    sha256_digest,
    short_digest,
)
from repro.oci._documents import CachedDocuments, documents_dir
from repro.oci._files import (
    atomic_write_bytes,
    atomic_writer,
    check_output_target,
    link_or_copy,
    replace_output,
    scratch_dir,
    staging_dir_beside,
)
from repro.oci._layout import OCILayout, check_blob_size
from repro.oci._media import (
    ANNOTATION_CREATED,
    ANNOTATION_DOCKER_REFERENCE_TYPE,
    ANNOTATION_REF_NAME,
    ANNOTATION_VERSION,
    BLOBS_DIR,
    CHUNK_SIZE,
    CONFIG_MEDIA_TYPES,
    IMAGE_MANIFEST_MEDIA_TYPES,
    INDEX_FILE,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MAX_JSON_SIZE,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_EMPTY,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    OCI_LAYOUT_FILE,
    OCI_LAYOUT_VERSION,
)
from repro.oci._model import (
    Image,
    Index,
    Layer,
    load_image,
    platform_key,
    read_config,
    read_image,
    read_manifest,
)
from repro.oci._shelf import SHELF_MIN_SIZE, shelf_dir, shelve, shelve_layers, take_shelved
from repro.oci._sources import (
    Source,
    copy_blobs,
    docker_archive_to_layout,
    open_source,
    pull_to_layout,
)
from repro.oci._spec import (
    REGISTRY_PREFIXES,
    ImageSpec,
    Output,
    parse_output_spec,
    parse_source_spec,
)

__all__ = [
    "ANNOTATION_CREATED",
    "ANNOTATION_DOCKER_REFERENCE_TYPE",
    "ANNOTATION_REF_NAME",
    "ANNOTATION_VERSION",
    "BLOBS_DIR",
    "CHUNK_SIZE",
    "CONFIG_MEDIA_TYPES",
    "GZIP_MAGIC",
    "IMAGE_MANIFEST_MEDIA_TYPES",
    "INDEX_FILE",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_JSON_SIZE",
    "MEDIA_TYPE_DOCKER_CONFIG",
    "MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP",
    "MEDIA_TYPE_DOCKER_LAYER_GZIP",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_EMPTY",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER",
    "MEDIA_TYPE_OCI_LAYER_GZIP",
    "MEDIA_TYPE_OCI_LAYER_ZSTD",
    "MEDIA_TYPE_OCI_MANIFEST",
    "OCI_LAYOUT_FILE",
    "OCI_LAYOUT_VERSION",
    "REGISTRY_PREFIXES",
    "ZSTD_MAGIC",
    "Descriptor",
    "Hasher",
    "Image",
    "ImageSpec",
    "Index",
    "Layer",
    "OCILayout",
    "Output",
    "Platform",
    "Readable",
    "Source",
    "VerifyingReader",
    "CachedDocuments",
    "atomic_write_bytes",
    "documents_dir",
    "atomic_writer",
    "canonical_json",
    "check_archive_stream",
    "check_blob_size",
    "check_output_target",
    "compression_of",
    "copy_blobs",
    "docker_archive_to_layout",
    "extract_oci_archive",
    "hash_stream",
    "is_digest",
    "load_image",
    "manifest_children",
    "member_path",
    "open_source",
    "parse_digest",
    "parse_json_document",
    "parse_output_spec",
    "parse_source_spec",
    "platform_key",
    "pull_to_layout",
    "read_config",
    "read_image",
    "read_manifest",
    "link_or_copy",
    "replace_output",
    "SHELF_MIN_SIZE",
    "shelf_dir",
    "shelve",
    "shelve_layers",
    "sha256_digest",
    "short_digest",
    "scratch_dir",
    "staging_dir_beside",
    "take_shelved",
    "uncompressed",
    "write_oci_archive",
    "zstandard_module",
]
