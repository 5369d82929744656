"""OCI archives: a layout as one tar, unpacked safely and written deterministically."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import IO, cast

from repro.errors import DigestMismatch, EnvironmentError_, InputError
from repro.oci._descriptor import Descriptor, parse_json_document
from repro.oci._digest import _DIGEST_HEX_LENGTHS, Hasher, Readable, is_digest, parse_digest
from repro.oci._files import _copy_hashed, atomic_write_bytes, atomic_writer
from repro.oci._layout import OCILayout, check_blob_size
from repro.oci._media import BLOBS_DIR, CHUNK_SIZE, INDEX_FILE, MAX_JSON_SIZE, OCI_LAYOUT_FILE

# --- archives ----------------------------------------------------------------

# Top-level regular files an OCI archive may hold. `manifest.json` is the Docker
# compatibility file some exporters add; it is accepted but not unpacked.
_LAYOUT_FILES = frozenset({OCI_LAYOUT_FILE, INDEX_FILE})
_IGNORED_FILES = frozenset({"manifest.json"})


def member_path(name: str, label: str) -> str:
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
        path = member_path(member.name, self.label)
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
                check_blob_size(layout, descriptor)
                info = _tar_entry(name, directory=False, size=descriptor.size)
                with layout.open_blob(descriptor.digest, descriptor.size) as reader:
                    tar.addfile(info, reader)
                    reader.verify_eof()


def check_archive_stream(source: Readable, label: str = "the export from BuildKit") -> None:
    """Read an OCI archive as a stream (no seeking, nothing written) and check it:
    every member's path is a safe relative path, every blob hashes to its name, and
    there is an `index.json`. The one archive check besides `extract_oci_archive`."""
    seen_index = False
    try:
        with tarfile.open(fileobj=cast(IO[bytes], source), mode="r|") as tar:
            for member in tar:
                path = member_path(member.name, label)
                if path == INDEX_FILE:
                    seen_index = True
                if not member.isfile() or _member_kind(path) != "blob":
                    continue
                _, algorithm, hex_part = path.split("/")
                digest = f"{algorithm}:{hex_part}"
                hasher = Hasher(algorithm)
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has one
                while chunk := stream.read(CHUNK_SIZE):
                    hasher.update(chunk)
                hasher.check(digest, member.size, f"blob {digest} in {label}")
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"{label} is not a valid tar archive: {e}") from None
    if not seen_index:
        raise DigestMismatch(f"{label} has no index.json")
