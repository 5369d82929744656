"""Build the dev environment's tiny busybox base image, deterministically, without BuildKit.

    python -m repro.devbase --deb busybox-static_…deb --registry 127.0.0.1:5000 \\
        [--repo repro/busybox] [--out DIR] [--epoch SECONDS]

Tests and the dev environment need a base image that never changes and needs
no network. This module makes one from Debian's busybox-static package: it
reads the .deb itself (an `ar` archive holding `control.tar.*` and
`data.tar.*`), takes `bin/busybox`, and builds a single-layer OCI image whose
every byte is fixed by the .deb and the epoch:

- the layer is a GNU-format tar (chosen because Python writes it with no
  extension headers that could carry times or names), entries sorted by name,
  uid/gid 0, no user or group names, mtime = the epoch; then gzip level 9 with
  mtime 0 and no file name;
- config and manifest are compact JSON with sorted keys.

The image is written to an OCI layout, pushed with `Registry.push_layout`, and
the reference `HOST:PORT/REPO@sha256:…` is printed on stdout (progress goes to
stderr). Running it twice with the same .deb gives the same digest.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast

from repro.errors import InputError, ReproError
from repro.oci import (
    ANNOTATION_REF_NAME,
    ANNOTATION_VERSION,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    OCILayout,
    Platform,
    canonical_json,
    sha256_digest,
)

DEFAULT_REPO = "repro/busybox"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "bin/busybox"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\n"
GROUP = b"root:x:0:\n"

# The image's directories and their modes (tmp is world-writable and sticky).
DIRECTORIES = {
    "bin": 0o755,
    "etc": 0o755,
    "root": 0o700,
    "sbin": 0o755,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
}
# Applets are linked only into these; `busybox --list-full` also names
# `linuxrc` at the root, which a container has no use for.
APPLET_DIRS = frozenset({"bin", "sbin", "usr/bin", "usr/sbin"})
_APPLET_NAME = re.compile(r"^[A-Za-z0-9_.+\[\]-]+$")

# Debian architecture → (GOARCH, variant), as OCI platforms spell them.
GO_ARCH = {
    "amd64": ("amd64", None),
    "arm64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v5"),
    "i386": ("386", None),
    "ppc64el": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "mips64el": ("mips64le", None),
}

_TarReadMode = Literal["r|", "r|gz", "r|xz", "r|bz2"]
_TAR_MODES: dict[str, _TarReadMode] = {"": "r|", ".gz": "r|gz", ".xz": "r|xz", ".bz2": "r|bz2"}
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER_SIZE = 60


# --- reading the .deb --------------------------------------------------------


@dataclass
class DebPackage:
    """What devbase needs from busybox-static's .deb."""

    package: str
    version: str
    architecture: str
    busybox: bytes
    busybox_mtime: int


@dataclass
class _ArMember:
    name: str
    offset: int
    size: int


def _ar_members(stream: IO[bytes], label: str) -> dict[str, _ArMember]:
    """The members of an ar archive, by name (GNU-style trailing '/' removed)."""
    if stream.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise InputError(f"{label} is not a .deb package (not an ar archive)")
    total = os.fstat(stream.fileno()).st_size
    members: dict[str, _ArMember] = {}
    while header := stream.read(_AR_HEADER_SIZE):
        if len(header) < _AR_HEADER_SIZE or header[58:60] != b"`\n":
            raise InputError(f"{label} is not a valid .deb package: corrupt ar header")
        name = header[0:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise InputError(f"{label}: ar member {name!r} has an invalid size") from None
        offset = stream.tell()
        if offset + size > total:
            raise InputError(f"{label} is truncated (ar member {name!r})")
        members[name] = _ArMember(name, offset, size)
        stream.seek(offset + size + (size & 1))  # members are 2-byte aligned
    return members


class _Slice:
    """A read-only view of `size` bytes of a file from `offset` (one ar member)."""

    def __init__(self, stream: IO[bytes], offset: int, size: int) -> None:
        self._stream = stream
        self._position = offset
        self._remaining = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._remaining:
            n = self._remaining
        self._stream.seek(self._position)
        data = self._stream.read(n)
        self._position += len(data)
        self._remaining -= len(data)
        return data


@contextlib.contextmanager
def _open_member_tar(
    stream: IO[bytes], members: dict[str, _ArMember], stem: str, label: str
) -> Iterator[tarfile.TarFile]:
    """Open `control.tar.*` or `data.tar.*` for streaming, whatever its compression."""
    suffix = next((s for s in _TAR_MODES if stem + s in members), None)
    if suffix is None:
        if stem + ".zst" in members:
            raise InputError(
                f"{label}: {stem}.zst is zstd-compressed, which Python 3.11 cannot read; "
                "use a .deb compressed with xz or gzip (as Debian 12 ships)"
            )
        raise InputError(f"{label} is not a valid .deb package: it has no {stem}.*")
    member, mode = members[stem + suffix], _TAR_MODES[suffix]
    try:
        slice_ = _Slice(stream, member.offset, member.size)
        # Stream mode only calls read(), which is all a slice offers.
        with tarfile.open(fileobj=cast(IO[bytes], slice_), mode=mode) as tar:
            yield tar
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{label}: cannot read {member.name}: {e}") from None


def _normalise(name: str) -> str:
    return name[2:] if name.startswith("./") else name.lstrip("/")


def parse_control(text: str) -> dict[str, str]:
    """The fields of a Debian control paragraph (continuation lines folded in)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def _read_control(tar: tarfile.TarFile, label: str) -> dict[str, str]:
    for member in tar:
        if _normalise(member.name) == "control" and member.isreg():
            source = tar.extractfile(member)
            if source is not None:
                return parse_control(source.read().decode("utf-8", "replace"))
    raise InputError(f"{label}: control.tar has no control file")


def _read_busybox(tar: tarfile.TarFile, label: str) -> tuple[bytes, int]:
    # Newer Debian releases ship it under usr/ (merged /usr); the image keeps bin/.
    found: dict[str, tuple[bytes, int]] = {}
    for member in tar:
        name = _normalise(member.name)
        if name in (BUSYBOX, "usr/bin/busybox") and member.isreg():
            source = tar.extractfile(member)
            if source is not None:
                found[name] = (source.read(), int(member.mtime))
    for name in (BUSYBOX, "usr/bin/busybox"):
        if name in found:
            return found[name]
    raise InputError(f"{label}: data.tar has no bin/busybox regular file")


def read_deb(path: str | os.PathLike[str]) -> DebPackage:
    """Read the control fields and the busybox binary from a busybox-static .deb."""
    label = str(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise InputError(f"cannot read {label}: {e.strerror}") from e
    with stream:
        members = _ar_members(stream, label)
        with _open_member_tar(stream, members, "control.tar", label) as tar:
            control = _read_control(tar, label)
        with _open_member_tar(stream, members, "data.tar", label) as tar:
            busybox, mtime = _read_busybox(tar, label)
    missing = [f for f in ("Package", "Version", "Architecture") if not control.get(f)]
    if missing:
        raise InputError(f"{label}: control file lacks {', '.join(missing)}")
    return DebPackage(
        package=control["Package"],
        version=control["Version"],
        architecture=control["Architecture"],
        busybox=busybox,
        busybox_mtime=mtime,
    )


# --- applets -----------------------------------------------------------------


def parse_applets(listing: str) -> list[str]:
    """Applet paths from `busybox --list-full` output: sorted, checked, deduplicated.

    Paths outside APPLET_DIRS and `bin/busybox` itself are left out; a name
    that could escape its directory is refused.
    """
    applets: set[str] = set()
    for line in listing.splitlines():
        path = line.strip().lstrip("/")
        if not path:
            continue
        directory, _, name = path.rpartition("/")
        if not _APPLET_NAME.match(name) or name in (".", ".."):
            raise InputError(f"busybox listed a strange applet path {line.strip()!r}")
        if directory in APPLET_DIRS and path != BUSYBOX:
            applets.add(path)
    return sorted(applets)


def list_applets(busybox: bytes) -> list[str]:
    """Run the busybox binary with `--list-full` and parse what it prints."""
    with tempfile.TemporaryDirectory(prefix="repro-devbase-") as tmp:
        program = Path(tmp) / "busybox"
        program.write_bytes(busybox)
        program.chmod(0o755)
        try:
            result = subprocess.run(
                [str(program), "--list-full"],
                capture_output=True,
                timeout=60,
                check=False,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            )
        except OSError as e:
            raise InputError(
                f"cannot run the packaged busybox on this machine to list its applets: {e.strerror}"
            ) from e
        except subprocess.TimeoutExpired:
            raise InputError("busybox --list-full did not finish within 60 s") from None
    if result.returncode != 0:
        raise InputError(f"busybox --list-full failed with exit status {result.returncode}")
    applets = parse_applets(result.stdout.decode("utf-8", "replace"))
    if not applets:
        raise InputError("busybox --list-full listed no applets")
    return applets


# --- building the image ------------------------------------------------------


def _entry(name: str, kind: bytes, mode: int, epoch: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_layer(busybox: bytes, applets: Sequence[str], epoch: int) -> bytes:
    """The uncompressed layer tar: directories, busybox, passwd/group, applet symlinks."""
    files = {BUSYBOX: (busybox, 0o755), "etc/passwd": (PASSWD, 0o644), "etc/group": (GROUP, 0o644)}
    clash = (set(applets) & (set(files) | set(DIRECTORIES))) - {BUSYBOX}
    if clash:
        raise InputError(f"busybox applet {sorted(clash)[0]} clashes with a file of the image")
    names = sorted(set(DIRECTORIES) | set(files) | set(applets))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in names:
            if name in DIRECTORIES:
                tar.addfile(_entry(name, tarfile.DIRTYPE, DIRECTORIES[name], epoch))
            elif name in files:
                data, mode = files[name]
                tar.addfile(_entry(name, tarfile.REGTYPE, mode, epoch, len(data)), io.BytesIO(data))
            else:
                link = _entry(name, tarfile.SYMTYPE, 0o777, epoch)
                link.linkname = "/" + BUSYBOX
                tar.addfile(link)
    return out.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with no file name, mtime 0 and level 9, so equal input gives equal output."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=out, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def version_tag(version: str) -> str:
    """A registry tag for a Debian version: `1:1.35.0-4+deb12u1` → `1.35.0-4_deb12u1`.

    The epoch is dropped, `+` becomes `_` and `~` becomes `-`; anything else a
    tag cannot hold becomes `_`.
    """
    text = re.sub(r"^\d+:", "", version).replace("+", "_").replace("~", "-")
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    if not text or not re.match(r"[A-Za-z0-9_]", text):
        text = "_" + text
    return text[:128]


def go_platform(deb_architecture: str) -> Platform:
    try:
        arch, variant = GO_ARCH[deb_architecture]
    except KeyError:
        raise InputError(f"unsupported Debian architecture {deb_architecture!r}") from None
    return Platform(architecture=arch, os="linux", variant=variant)


@dataclass
class BuiltImage:
    """The three blobs of the base image and what names them."""

    layer: bytes
    diff_id: str
    config: bytes
    manifest: bytes
    version: str
    tag: str
    platform: Platform
    applets: list[str]

    @property
    def layer_descriptor(self) -> Descriptor:
        return Descriptor(MEDIA_TYPE_OCI_LAYER_GZIP, sha256_digest(self.layer), len(self.layer))

    @property
    def config_descriptor(self) -> Descriptor:
        return Descriptor(MEDIA_TYPE_OCI_CONFIG, sha256_digest(self.config), len(self.config))

    @property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor(
            MEDIA_TYPE_OCI_MANIFEST,
            sha256_digest(self.manifest),
            len(self.manifest),
            annotations={ANNOTATION_REF_NAME: self.tag},
            platform=self.platform,
        )


def _config(package: DebPackage, platform: Platform, diff_id: str, epoch: int) -> dict[str, Any]:
    created = rfc3339(epoch)
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["/bin/sh"]},
        "created": created,
        "history": [
            {"created": created, "created_by": f"repro devbase {package.package} {package.version}"}
        ],
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if platform.variant:
        config["variant"] = platform.variant
    return config


def assemble_image(package: DebPackage, applets: Sequence[str], epoch: int) -> BuiltImage:
    """Build layer, config and manifest from what was read; a pure function."""
    if epoch < 0:
        raise InputError(f"the epoch must not be negative (got {epoch})")
    platform = go_platform(package.architecture)
    tar = build_layer(package.busybox, applets, epoch)
    layer = gzip_deterministic(tar)
    diff_id = sha256_digest(tar)
    config = canonical_json(_config(package, platform, diff_id, epoch))
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": MEDIA_TYPE_OCI_LAYER_GZIP,
                    "digest": sha256_digest(layer),
                    "size": len(layer),
                }
            ],
            "annotations": {ANNOTATION_VERSION: package.version},
        }
    )
    return BuiltImage(
        layer=layer,
        diff_id=diff_id,
        config=config,
        manifest=manifest,
        version=package.version,
        tag=version_tag(package.version),
        platform=platform,
        applets=list(applets),
    )


def build_image(deb: str | os.PathLike[str], epoch: int | None = None) -> BuiltImage:
    """Read the .deb, list busybox's applets and build the image (default epoch:
    the mtime of bin/busybox in the .deb)."""
    package = read_deb(deb)
    applets = list_applets(package.busybox)
    return assemble_image(package, applets, package.busybox_mtime if epoch is None else epoch)


def write_layout(image: BuiltImage, out_dir: str | os.PathLike[str]) -> OCILayout:
    """Write the image's blobs and an index naming it into an OCI layout."""
    layout = OCILayout.create(out_dir)
    layout.write_blob(image.layer, MEDIA_TYPE_OCI_LAYER_GZIP)
    layout.write_blob(image.config, MEDIA_TYPE_OCI_CONFIG)
    layout.write_blob(image.manifest, MEDIA_TYPE_OCI_MANIFEST)
    layout.write_index([image.manifest_descriptor])
    return layout


# --- command line ------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m repro.devbase",
        description="Build the busybox base image from busybox-static's .deb and push it.",
    )
    parser.add_argument("--deb", required=True, type=Path, help="busybox-static .deb file")
    parser.add_argument("--registry", required=True, help="registry HOST:PORT to push to")
    parser.add_argument("--repo", default=DEFAULT_REPO, help=f"repository (default {DEFAULT_REPO})")
    parser.add_argument("--out", type=Path, help="keep the OCI layout in this directory")
    parser.add_argument(
        "--epoch",
        type=int,
        help="SOURCE_DATE_EPOCH for file and config times "
        "(default: the mtime of bin/busybox in the .deb)",
    )
    return parser.parse_args(argv)


def _push(image: BuiltImage, layout: OCILayout, registry: str, repo: str) -> str:
    # Imported here: building needs no HTTP client, and tests of it need no registry.
    from repro.registry import Registry, parse_reference

    ref = parse_reference(f"{registry}/{repo}:{image.tag}")
    if ref.host != registry:
        raise InputError(f"--registry must be HOST:PORT, not {registry!r}")
    with Registry() as client:
        digest = client.push_layout(layout, ref)
    return f"{ref.name}@{digest}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        image = build_image(args.deb, args.epoch)
        digest = image.manifest_descriptor.digest
        print(
            f"built {image.tag} ({image.platform}, {len(image.applets)} applets): {digest}",
            file=sys.stderr,
        )
        with contextlib.ExitStack() as stack:
            out = args.out or stack.enter_context(tempfile.TemporaryDirectory(prefix="devbase-"))
            layout = write_layout(image, out)
            reference = _push(image, layout, args.registry, args.repo)
    except ReproError as e:
        print(f"repro devbase: {e}", file=sys.stderr)
        return e.exit_code
    print(reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
