"""`repro cache`: what repro keeps to be fast, how big it is, and pruning it.

Every part of the cache is something repro can make or fetch again (repro.cachedir):
downloaded packages and indexes, normalised layers, the blob shelf (layers of built
images), registry documents, build records, rendered Dockerfiles. Nothing removes
old entries by itself, so a machine that builds every day, or a CI cache restored
and saved under a new key after each lock update, only grows. `prune` removes the
least recently used entries: every read of an entry marks it used
(`repro.cachedir.touch`), so what builds still need stays.

An entry is one file. Files used or written in the last few minutes (`GRACE`) are
never removed, so a build running beside the prune keeps what it is reading. A
normalised layer's JSON entry and its blob go together: blobs no remaining entry
names are removed as well. Sizes are apparent sizes; a blob hard-linked into an
output directory frees its space only when the output goes too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

GRACE = 10 * 60  # seconds: entries used more recently than this are always kept


@dataclass
class Section:
    name: str
    path: Path
    what: str


@dataclass
class Entry:
    path: Path
    size: int
    used: float  # mtime: the last write or read (touch)


@dataclass
class Usage:
    name: str
    path: Path
    what: str
    entries: int = 0
    size: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "section": self.name,
            "path": str(self.path),
            "what": self.what,
            "entries": self.entries,
            "bytes": self.size,
        }


@dataclass
class PruneResult:
    removed: dict[str, list[Entry]] = field(default_factory=dict)
    kept: dict[str, Usage] = field(default_factory=dict)
    dry_run: bool = False

    def removed_bytes(self) -> int:
        return sum(e.size for entries in self.removed.values() for e in entries)

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "removed": {
                name: {"entries": len(v), "bytes": sum(e.size for e in v)}
                for name, v in self.removed.items()
            },
            "kept": {
                name: {"entries": u.entries, "bytes": u.size} for name, u in self.kept.items()
            },
        }


def sections() -> list[Section]:
    """The cache's parts, each where the code that fills it puts it. Not the package
    contexts of builds (``contexts``): their files are hard links to the package pool,
    with its mtimes, so a build running for longer than GRACE could lose them."""
    from repro.cachedir import cache_home
    from repro.lock import rendered_dir
    from repro.oci import documents_dir, shelf_dir
    from repro.packages import cache_dir
    from repro.records import records_dir

    packages = cache_dir()
    return [
        Section("packages", packages, "downloaded packages and package indexes"),
        Section("installed", packages.parent / "installed", "package databases read from images"),
        Section("normalised", cache_home("normalised"), "normalised layers"),
        Section("blobs", shelf_dir(), "layers of built images, not sent by BuildKit again"),
        Section("documents", documents_dir(), "registry manifests and configs by digest"),
        Section("builds", records_dir(), "build records (publish, provenance, reuse)"),
        Section("dockerfiles", rendered_dir(), "Dockerfiles rendered with locked bases"),
    ]


def _files(root: Path) -> Iterator[os.DirEntry[str]]:
    try:
        listing = list(os.scandir(root))
    except OSError:
        return
    for entry in listing:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _files(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry
        except OSError:
            continue


def entries(section: Section) -> list[Entry]:
    found = []
    for item in _files(section.path):
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:
            continue
        found.append(Entry(Path(item.path), st.st_size, st.st_mtime))
    return found


def usage() -> list[Usage]:
    out = []
    for s in sections():
        found = entries(s)
        out.append(Usage(s.name, s.path, s.what, len(found), sum(e.size for e in found)))
    return out


def prune(
    *,
    max_size: int | None = None,
    unused_for: float | None = None,
    everything: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> PruneResult:
    """Remove entries unused for `unused_for` seconds, then the least recently used
    ones until the whole cache is at most `max_size` bytes (`everything`: all
    entries). Entries used in the last GRACE seconds stay whatever the options."""
    now = time.time() if now is None else now
    parts = sections()
    found = {s.name: entries(s) for s in parts}
    doomed: set[Path] = set()
    candidates = sorted(
        (e for es in found.values() for e in es if now - e.used >= GRACE),
        key=lambda e: (e.used, str(e.path)),
    )
    if everything:
        doomed.update(e.path for e in candidates)
    if unused_for is not None:
        doomed.update(e.path for e in candidates if now - e.used >= unused_for)
    if max_size is not None:
        total = sum(e.size for es in found.values() for e in es if e.path not in doomed)
        for e in candidates:
            if total <= max_size:
                break
            if e.path not in doomed:
                doomed.add(e.path)
                total -= e.size
    normalised = next(s for s in parts if s.name == "normalised")
    _pair_normalised(normalised.path, found["normalised"], doomed, now)
    result = PruneResult(dry_run=dry_run)
    for s in parts:
        gone = [e for e in found[s.name] if e.path in doomed]
        left = [e for e in found[s.name] if e.path not in doomed]
        if not dry_run:
            for e in gone:
                try:
                    e.path.unlink()
                except FileNotFoundError:
                    pass
            _remove_empty_dirs(s.path)
        result.removed[s.name] = gone
        result.kept[s.name] = Usage(s.name, s.path, s.what, len(left), sum(e.size for e in left))
    return result


def _pair_normalised(root: Path, found: list[Entry], doomed: set[Path], now: float) -> None:
    """Keep the normalise cache's entries and blobs together, in `doomed`: an entry
    whose blob goes goes too (it could only miss), and a blob that no remaining entry
    names goes (unless within GRACE: a build may be storing the entry for a blob it has
    just linked)."""
    blobs = root / "blobs"
    names: dict[Path, str] = {}  # entry -> the blob file it names
    for e in found:
        if e.path.parent != root or e.path.suffix != ".json":
            continue
        try:
            digest = json.loads(e.path.read_text())["descriptor"]["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(digest, str):
            names[e.path] = digest.replace(":", "-")
    doomed.update(entry for entry, blob in names.items() if blobs / blob in doomed)
    named = {blob for entry, blob in names.items() if entry not in doomed}
    doomed.update(
        e.path
        for e in found
        if e.path.parent == blobs and e.path.name not in named and now - e.used >= GRACE
    )


def _remove_empty_dirs(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        if dirpath != str(root) and not dirnames and not filenames:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GB', '10GiB', '1024' (bytes) -> bytes (powers of 1024)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    scale = 1
    if value and value[-1] in units:
        scale = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 500M, 2G, 10GiB)") from None
    if number < 0:
        raise ValueError(f"not a size: {text!r} (examples: 500M, 2G, 10GiB)")
    return int(number * scale)


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '1w' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    value = text.strip().lower()
    try:
        if value and value[-1] in units:
            number = float(value[:-1]) * units[value[-1]]
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (examples: 30d, 12h, 1w)") from None
    if number < 0:
        raise ValueError(f"not a duration: {text!r} (examples: 30d, 12h, 1w)")
    return number


def human(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"
