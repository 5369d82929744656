"""Fetching package indexes from a mirror, checked against the suite's Release file.

Downloaded indexes are cached under ``$XDG_CACHE_HOME/repro/packages`` by the sha256
the Release file gives them, so an unchanged suite is not fetched twice, and a
parsed index is kept in memory for the life of the process.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import httpx

from repro.errors import InputError, RegistryError
from repro.packages.deb import DebIndex

_PARSED: dict[tuple[str, ...], DebIndex] = {}
_LOCK = threading.Lock()


class MirrorError(RegistryError):
    """A mirror could not be reached or sent something that does not check out."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repro" / "packages"


def _get(client: httpx.Client, url: str) -> bytes | None:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise MirrorError(f"mirror unreachable: {type(exc).__name__} for {_strip(url)}") from None
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise MirrorError(f"mirror answered HTTP {response.status_code} for {_strip(url)}")
    return response.content


def _strip(url: str) -> str:
    """The URL path only: messages and files never carry a mirror's host name."""
    return "/" + url.split("://", 1)[-1].partition("/")[2]


def release_hashes(text: str) -> dict[str, tuple[str, int]]:
    """The SHA256 section of a Release/InRelease file: path -> (sha256, size)."""
    out: dict[str, tuple[str, int]] = {}
    in_section = False
    for line in text.splitlines():
        if line.startswith("SHA256:"):
            in_section = True
            continue
        if in_section:
            if not line.startswith(" "):
                in_section = False
                continue
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                out[parts[2]] = (parts[0], int(parts[1]))
    return out


def fetch_packages_text(
    client: httpx.Client, mirror: str, suite: str, component: str, arch: str
) -> str:
    """The text of ``dists/SUITE/COMPONENT/binary-ARCH/Packages`` from the mirror."""
    base = f"{mirror}/dists/{suite}"
    release = _get(client, f"{base}/InRelease") or _get(client, f"{base}/Release")
    if release is None:
        raise InputError(f"suite {suite} not found on the mirror ({_strip(base)}/Release)")
    hashes = release_hashes(release.decode("utf-8", "replace"))
    rel = f"{component}/binary-{arch}/Packages"
    for ext, decode in ((".xz", lzma.decompress), (".gz", gzip.decompress), ("", bytes)):
        if rel + ext not in hashes:
            continue
        sha, size = hashes[rel + ext]
        cached = cache_dir() / f"{sha}{ext}"
        data: bytes | None = None
        if cached.is_file():
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                data = None
        if data is None:
            data = _get(client, f"{base}/{rel}{ext}")
            if data is None:
                continue
            if hashlib.sha256(data).hexdigest() != sha or len(data) != size:
                raise MirrorError(
                    f"{suite}/{rel}{ext} does not match the sha256 in the suite's Release file"
                )
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(cached.suffix + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, cached)
        return decode(data).decode("utf-8", "replace")
    raise InputError(f"{suite} has no {component} index for {arch} on the mirror")


def load_deb_index(
    mirror: str | Mapping[str, str],
    suites: tuple[str, ...],
    components: tuple[str, ...],
    arch: str,
) -> DebIndex:
    """The merged index of the suites and components (cached in memory).

    `mirror` is one base URL for every suite, or suite -> base URL when the suites
    live on different mirror paths (Debian's security suite does).
    """
    bases = {s: mirror if isinstance(mirror, str) else mirror[s] for s in suites}
    key = (*(bases[s] for s in suites), *suites, "|", *components, arch)
    with _LOCK:
        if key in _PARSED:
            return _PARSED[key]
    index = DebIndex(arch)
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        for suite in suites:
            for component in components:
                text = fetch_packages_text(client, bases[suite], suite, component, arch)
                index.add(text, f"{suite}/{component}")
    with _LOCK:
        _PARSED[key] = index
    return index
