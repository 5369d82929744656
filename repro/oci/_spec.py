"""Image references and output specs: the one parser every command uses.

    oci:DIR                 an OCI image layout directory
    oci-archive:FILE        an OCI layout in a tar file (what `repro build` and
                            BuildKit's `oci` exporter write)
    docker-archive:FILE     what `docker save` writes (read only)
    docker://REF, registry:REF
                            an image in a registry (read only here; `repro publish`
                            writes to registries)

As a source (`repro diff`), a bare existing path is taken as a layout directory or
an archive file. As an output (`repro build --output`), only `oci:` and
`oci-archive:` are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repro.errors import InputError

OUTPUT_KINDS = ("oci", "oci-archive")
FILE_KINDS = ("oci", "oci-archive", "docker-archive")
REGISTRY_PREFIXES = ("docker://", "registry:")


@dataclass(frozen=True)
class ImageSpec:
    """Where an image is read from or written to."""

    kind: str  # "oci", "oci-archive", "docker-archive" or "registry"
    path: Path | None = None
    reference: str | None = None
    text: str = ""

    def __str__(self) -> str:
        if self.kind == "registry":
            return f"docker://{self.reference}"
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class Output:
    """Where a build writes its image: an OCI layout directory or an OCI archive file."""

    kind: str  # "oci" or "oci-archive"
    path: Path

    @classmethod
    def parse(cls, value: str) -> Output:
        spec = parse_output_spec(value)
        assert spec.path is not None
        return cls(spec.kind, spec.path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_output_spec(value: str) -> ImageSpec:
    """`oci:DIR` or `oci-archive:FILE` for `--output`; InputError for anything else."""
    kind, sep, path = value.partition(":")
    if not sep or kind not in OUTPUT_KINDS or not path:
        raise InputError(f"--output {value!r}: expected oci:DIR or oci-archive:FILE")
    return ImageSpec(kind, Path(path), text=value)


def parse_source_spec(value: str) -> ImageSpec:
    """An image to read: a layout, an OCI or Docker archive, a registry reference, or
    an existing path (a directory is a layout, a file an archive)."""
    for prefix in REGISTRY_PREFIXES:
        if value.startswith(prefix):
            reference = value[len(prefix) :]
            if not reference:
                raise InputError(f"{value!r}: no image reference after {prefix}")
            return ImageSpec("registry", reference=reference, text=value)
    kind, sep, rest = value.partition(":")
    if not sep or kind not in FILE_KINDS:
        path = Path(value)
        if path.is_dir():
            kind, rest = "oci", value
        elif path.is_file():
            kind, rest = "oci-archive", value
        else:
            raise InputError(
                f"{value!r}: expected oci:DIR, oci-archive:FILE, docker-archive:FILE, "
                "docker://REF, or an existing path"
            )
    if not rest:
        raise InputError(f"{value!r}: no path after {kind}:")
    return ImageSpec(kind, Path(rest), text=value)
