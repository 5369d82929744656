"""Downloading locked packages: each file checked against the lock's sha256, cached by it.

``fetch_pinned(url, sha256, size, what)`` returns the path of the package in the
local cache (``$XDG_CACHE_HOME/repro/packages/pool/<sha256>``), downloading it first
if needed. A download is retried with backoff on connection errors, 429 (honouring
Retry-After) and 5xx; the bytes are hashed as they arrive and moved into the cache
only when the digest and size match, so the cache never holds a wrong or partial
file. A 404 raises ``PackageGone``: the mirror no longer has that version.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from repro.cachedir import touch
from repro.errors import (
    DigestMismatch,
    EnvironmentError_,
    InputError,
    PackageGone,  # noqa: F401 - defined in errors, re-exported here
)
from repro.packages.fetch import MirrorError, _strip, cache_dir

ATTEMPTS = 4
BACKOFF = 0.5  # seconds, doubled each attempt


def pool_dir() -> Path:
    return cache_dir() / "pool"


def cached_path(sha256: str) -> Path:
    return pool_dir() / sha256.removeprefix("sha256:")


def cached_ok(sha256: str) -> Path | None:
    """The cached file for this sha256, if it is there and its bytes match."""
    hex_digest = sha256.removeprefix("sha256:")
    target = cached_path(hex_digest)
    if target.is_file() and _file_sha256(target) == hex_digest:
        touch(target)
        return target
    return None


def fetch_pinned(
    url: str,
    sha256: str,
    size: int = 0,
    what: str = "",
    *,
    client: httpx.Client | None = None,
    sleep: object = time.sleep,
) -> Path:
    """The cached file for a package with this sha256, downloaded from `url` if absent."""
    hex_digest = sha256.removeprefix("sha256:")
    if len(hex_digest) != 64:
        raise InputError(f"{what or url}: the lock has no sha256 for it")
    target = cached_path(hex_digest)
    if cached_ok(hex_digest):
        return target
    label = what or _strip(url)
    own = client is None
    http = client or httpx.Client(timeout=120, follow_redirects=True)
    try:
        for attempt in range(ATTEMPTS):
            delay = BACKOFF * (2**attempt)
            try:
                with http.stream("GET", url) as response:
                    if response.status_code == 404:
                        raise PackageGone(f"{label}: no longer on the mirror ({_strip(url)})")
                    if response.status_code == 429 or response.status_code >= 500:
                        retry_after = response.headers.get("retry-after", "")
                        if retry_after.isdigit():
                            delay = min(float(retry_after), 60.0)
                        if attempt + 1 < ATTEMPTS:
                            sleep(delay)  # type: ignore[operator]
                            continue
                        raise MirrorError(
                            f"{label}: mirror answered HTTP {response.status_code} "
                            f"{ATTEMPTS} times for {_strip(url)}"
                        )
                    if response.status_code != 200:
                        raise MirrorError(
                            f"{label}: mirror answered HTTP {response.status_code} "
                            f"for {_strip(url)}"
                        )
                    return _store(response, target, hex_digest, size, label)
            except httpx.TransportError as exc:
                if attempt + 1 < ATTEMPTS:
                    sleep(delay)  # type: ignore[operator]
                    continue
                raise MirrorError(
                    f"{label}: mirror unreachable ({type(exc).__name__}) for {_strip(url)}"
                ) from None
        raise AssertionError("unreachable")
    finally:
        if own:
            http.close()


def _store(response: httpx.Response, target: Path, hex_digest: str, size: int, label: str) -> Path:
    try:
        return _store_in(response, target, hex_digest, size, label)
    except OSError as e:  # a full or read-only cache; httpx's errors are not OSErrors
        raise EnvironmentError_(
            f"{label}: cannot write to the package cache {target.parent}: {e.strerror or e}"
        ) from None


def _store_in(
    response: httpx.Response, target: Path, hex_digest: str, size: int, label: str
) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dl-", suffix=".tmp")
    try:
        h = hashlib.sha256()
        count = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                h.update(chunk)
                count += len(chunk)
                if size and count > size:
                    break
                out.write(chunk)
        if h.hexdigest() != hex_digest or (size and count != size):
            raise DigestMismatch(
                f"{label}: downloaded bytes do not match the locked sha256:{hex_digest[:12]}… "
                f"({count} bytes); nothing was used"
            )
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def suite_of(origin: str) -> str:
    """``bookworm-security/main`` -> ``bookworm-security``."""
    return origin.partition("/")[0]


def apt_package_url(mirrors: Mapping[str, str], origin: str, filename: str) -> str:
    """The URL of a pool file, from the mirror that serves its suite (``origin``)."""
    suite = suite_of(origin)
    base = mirrors.get(suite) or next(iter(mirrors.values()), "")
    if not base:
        raise InputError(f"no mirror is known for {origin}")
    return base.rstrip("/") + "/" + filename.lstrip("/")


def mirrors_for_suites(
    mirror: str, suites: Sequence[str], components: Sequence[str], **kwargs: object
) -> dict[str, str]:
    """suite -> base URL for each suite (security often lives on another path)."""
    from repro.config import mirror_url

    return {
        suite: mirror_url(mirror, suite=suite, components=components, **kwargs)  # type: ignore[arg-type]
        for suite in suites
    }
