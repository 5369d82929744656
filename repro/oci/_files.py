"""Atomic writes, and what an output may replace (sinks never delete user data)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from repro.errors import EnvironmentError_, InputError
from repro.oci._digest import Hasher, Readable
from repro.oci._media import BLOBS_DIR, CHUNK_SIZE, INDEX_FILE, OCI_LAYOUT_FILE

# --- atomic files ------------------------------------------------------------

# Directories whose files are deleted when the work that writes them ends (a build's
# staged export, verify's images): no one reads them after a power cut, so writes
# there are not forced to disk. Counted, as two threads may mark the same one.
_scratch: dict[str, int] = {}
_scratch_lock = threading.Lock()


@contextlib.contextmanager
def scratch_dir(path: str | os.PathLike[str]) -> Iterator[None]:
    """While inside, atomic writes under `path` skip fsync (still write-then-rename:
    a reader never sees half a file). Only for directories removed afterwards."""
    key = os.path.join(os.path.abspath(path), "")
    with _scratch_lock:
        _scratch[key] = _scratch.get(key, 0) + 1
    try:
        yield
    finally:
        with _scratch_lock:
            _scratch[key] -= 1
            if not _scratch[key]:
                del _scratch[key]


def _durable(target: Path) -> bool:
    if not _scratch:
        return True
    where = os.path.abspath(target)
    with _scratch_lock:
        return not any(where.startswith(key) for key in _scratch)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: int = 0o644, durable: bool = True
) -> Iterator[BinaryIO]:
    """Write a file so that readers see either the old one or the whole new one.

    The data goes to a temporary file in the same directory (so the rename
    cannot cross file systems), is flushed to disk (not under a `scratch_dir`, nor
    when not `durable`: a cache entry that can be made again), then renamed over
    `path`. On any error the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    sweep_stale(target.parent, target.name)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if durable and _durable(target):
                os.fsync(out.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(target)  # a failed write says which file it was for
        raise


# What a repro process stages beside `name`: `.NAME.[TAG-]PID-XXXXXXXX`, plus `-old`
# (a layout being replaced) or `.tmp` (an atomic file).
_STAGED = re.compile(r"(?:^|-)(\d+)-[a-z0-9_]{8}(?:-old|\.tmp)?$")


# Directory -> the names starting with "." that this process saw there at its first
# sweep (what it has removed since taken out). What a killed process left is there
# before this one starts (or is swept by the next), so one listing per directory and
# process is enough: an atomic write into a cache of thousands of entries then costs
# no directory listing, where it cost 4 ms each (a graph build makes dozens).
_dotted: dict[str, list[str]] = {}
_dotted_lock = threading.Lock()


def sweep_stale(parent: Path, name: str) -> None:
    """Remove what a killed repro left beside `name` (SIGKILL, a crash, a power cut):
    its staging directories and temporary files, whose names carry the pid of the
    process that made them, when that process is gone. Best effort."""
    prefix = f".{name}."
    key = os.fspath(parent)
    with _dotted_lock:
        dotted = _dotted.get(key)
        if dotted is None:
            try:
                with os.scandir(parent) as listing:
                    dotted = _dotted[key] = [e.name for e in listing if e.name[:1] == "."]
            except OSError:
                return
        stale = [
            n
            for n in dotted
            if n.startswith(prefix)
            and (found := _STAGED.search(n[len(prefix) :])) is not None
            and not _alive(int(found.group(1)))
        ]
        for n in stale:
            dotted.remove(n)
    for entry_name in stale:
        entry = parent / entry_name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o644, durable: bool = True
) -> None:
    with atomic_writer(path, mode, durable) as out:
        out.write(data)


def link_or_copy(src: str | os.PathLike[str], dest: Path) -> None:
    """Make `dest` a hard link to `src`, or a copy where a link is impossible (another
    file system), through a temporary name beside it: `dest` is never half-written.
    Raises OSError."""
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
        sweep_stale(parent, dest.name)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{tag}-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise InputError(f"cannot write next to {dest}: {e.strerror or e}") from None
