"""Fetching Alpine packages: where a pin lives on a mirror, and its sha256 at lock time.

An APKINDEX gives each package's ``C:`` checksum (the SHA-1 of its control part) and
size, but no digest of the whole file. The lock, the package cache and the vault all
address a package file by its sha256, so `pin_apk_files` downloads each package of a
closure once when locking, checks it against the signed index (``C:``, then the
``datahash`` its control part names, then each file: `repro.rootfs._apk`), and records
the sha256 and size of the bytes it checked. The file stays in the cache, so the first
build does not download it again. From then on a build checks the file against the
locked sha256 (`repro.packages.download.fetch_pinned`) and, when it reads it, against
the locked ``C:`` chain once more.

A mirror's layout: ``<mirror>/<branch>/<repository>/<arch>/<name>-<version>.apk``; a
pin's ``origin`` is ``branch/repository``. The architecture is the set's, not the
package's ``A:`` (``noarch`` packages live in every architecture's directory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from repro.errors import InputError
from repro.packages._common import Pin
from repro.packages.download import ATTEMPTS, BACKOFF, PackageGone, cached_ok, pool_dir
from repro.packages.fetch import MirrorError, _strip, cache_dir

JOBS = 8


def apk_package_url(mirror: str, origin: str, architecture: str, filename: str) -> str:
    """``<mirror>/<branch>/<repository>/<arch>/<file>`` for a pin whose origin is
    ``branch/repository``."""
    if not mirror:
        raise InputError(f"no mirror is known for {origin}")
    if origin.count("/") != 1 or not filename or "/" in filename:
        raise InputError(f"apk pin {filename!r}: origin {origin!r} is not branch/repository")
    return f"{mirror.rstrip('/')}/{origin}/{architecture}/{filename}"


def _known(checksum: str) -> Path:
    """Where the sha256 of the package with this C: checksum is remembered."""
    key = hashlib.sha256(checksum.encode()).hexdigest()
    return cache_dir() / "apk-checksums" / key


def _download(client: httpx.Client, url: str, dest: Path, label: str) -> None:
    for attempt in range(ATTEMPTS):
        try:
            with client.stream("GET", url) as response:
                if response.status_code == 404:
                    raise PackageGone(f"{label}: no longer on the mirror ({_strip(url)})")
                retry = response.status_code == 429 or response.status_code >= 500
                if retry and attempt + 1 < ATTEMPTS:
                    time.sleep(BACKOFF * 2**attempt)
                    continue
                if response.status_code != 200:
                    raise MirrorError(
                        f"{label}: mirror answered HTTP {response.status_code} for {_strip(url)}"
                    )
                with open(dest, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                return
        except httpx.TransportError as exc:
            if attempt + 1 < ATTEMPTS:
                time.sleep(BACKOFF * 2**attempt)
                continue
            raise MirrorError(
                f"{label}: mirror unreachable ({type(exc).__name__}) for {_strip(url)}"
            ) from None


def fetch_checked(
    url: str, checksum: str, size: int, label: str, client: httpx.Client
) -> tuple[Path, str, int]:
    """The cached file of a package known only by its index entry (C:, S:), downloaded
    and checked against them if needed; (path, sha256 hex, size)."""
    from repro.errors import ApkFileError
    from repro.rootfs import verify_apk

    known = _known(checksum)
    try:
        sha = known.read_text().strip()
    except OSError:
        sha = ""
    if sha:
        cached = cached_ok(sha)
        if cached is not None:
            return cached, sha, cached.stat().st_size
    pool = pool_dir()
    pool.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=pool, prefix=".apk-", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        _download(client, url, tmp, label)
        got = tmp.stat().st_size
        if size and got != size:
            raise ApkFileError(
                f"{label}: the mirror's file has {got} bytes, the signed index says {size}; "
                "nothing was used"
            )
        verify_apk(tmp, checksum, label)  # C:, then datahash, against the signed index
        h = hashlib.sha256()
        with open(tmp, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        sha = h.hexdigest()
        target = pool / sha
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(sha + "\n")
    return target, sha, got


def pin_apk_files(
    pins: Sequence[Pin], mirror: str, architecture: str, label: str, jobs: int = JOBS
) -> list[Pin]:
    """`pins` with the sha256 and size of each package file, downloaded (into the cache)
    and checked against the signed index's checksums (see the module doc)."""
    if not pins:
        return []
    with httpx.Client(timeout=120, follow_redirects=True) as client:

        def one(pin: Pin) -> Pin:
            url = apk_package_url(mirror, pin.origin, architecture, pin.filename)
            what = f"{label} {pin.name} {pin.version}"
            _, sha, size = fetch_checked(url, pin.checksum, pin.size, what, client)
            return dataclasses.replace(pin, sha256=sha, size=size)

        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(pins)))) as pool:
            return list(pool.map(one, pins))
