"""Fetching package indexes from a mirror, checked against the suite's Release file.

The Release file is trusted only once its OpenPGP signature checks out against the
keys configured for the package set (``repro.packages.openpgp``, ``repro.packages.trust``):
``InRelease`` (clearsigned; the hashes come from its signed text only), or ``Release``
with its detached ``Release.gpg`` when the mirror has no InRelease.

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

import httpx

from repro.cachedir import touch
from repro.errors import InputError, MirrorError, SignatureError
from repro.packages._common import cache_dir
from repro.packages.deb import DebIndex
from repro.packages.openpgp import check_release, split_clearsigned, verify_clearsigned
from repro.packages.openpgp import verify_detached as verify_release_gpg
from repro.packages.trust import DebTrust, default_deb_trust

_PARSED: dict[tuple[str, ...], DebIndex] = {}
_LOCK = threading.Lock()


__all__ = ["MirrorError", "cache_dir", "fetch_packages_text", "fetch_release", "load_deb_index"]


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


def fetch_release(
    client: httpx.Client, mirror: str, suite: str, trust: DebTrust | None = None
) -> str:
    """The signed text of the suite's InRelease (or Release, with Release.gpg), after its
    signature, suite and Valid-Until check out; `trust` defaults to the Signed-By of
    the machine's apt source for this mirror, else Debian's archive keyring."""
    trust = trust or default_deb_trust(mirror, suite)
    base = f"{mirror}/dists/{suite}"
    path = f"dists/{suite}/InRelease"
    inrelease = _get(client, f"{base}/InRelease")
    if inrelease is not None:
        if trust.trusted:  # explicitly configured: nothing is checked
            return _unchecked_text(inrelease, path)
        text = verify_clearsigned(inrelease, path, trust)
    else:
        path = f"dists/{suite}/Release"
        release = _get(client, f"{base}/Release")
        if release is None:
            raise InputError(f"suite {suite} not found on the mirror ({_strip(base)}/Release)")
        if not trust.trusted:
            signature = _get(client, f"{base}/Release.gpg")
            if signature is None:
                raise SignatureError(
                    f"{path}: not signed (no InRelease, and no Release.gpg beside it)"
                )
            verify_release_gpg(release, signature, path, trust)
        text = release.decode("utf-8", "replace")
    if not trust.trusted:
        check_release(text, suite, path, trust)
    return text


def _unchecked_text(inrelease: bytes, path: str) -> str:
    """An InRelease read without checking it (``trusted = true``): its signed part if it
    has one, else all of it."""
    try:
        return split_clearsigned(inrelease, path)[0].decode("utf-8", "replace") + "\n"
    except SignatureError:
        return inrelease.decode("utf-8", "replace")


def fetch_packages_text(
    client: httpx.Client,
    mirror: str,
    suite: str,
    component: str,
    arch: str,
    *,
    trust: DebTrust | None = None,
) -> str:
    """The text of ``dists/SUITE/COMPONENT/binary-ARCH/Packages`` from the mirror."""
    base = f"{mirror}/dists/{suite}"
    hashes = release_hashes(fetch_release(client, mirror, suite, trust))
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
            else:
                touch(cached)
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
    mirror: str,
    suites: tuple[str, ...],
    components: tuple[str, ...],
    arch: str,
    *,
    trust: DebTrust | None = None,
) -> DebIndex:
    """The merged index of the suites and components (cached in memory, per trust).

    `trust` says which keys the suites' Release files must be signed by: callers that
    know the package set pass ``repro.packages.trust.deb_trust(set, repo)``.
    """
    return load_deb_index_from(
        {suite: mirror for suite in suites},
        components,
        arch,
        trusts={suite: trust for suite in suites} if trust is not None else None,
    )


def load_deb_index_from(
    mirrors: Mapping[str, str],
    components: tuple[str, ...],
    arch: str,
    *,
    trusts: Mapping[str, DebTrust] | None = None,
) -> DebIndex:
    """The merged index of several suites, each from its own mirror (suite -> URL) and
    checked against its own keys (suite -> DebTrust; default: the machine's);
    bookworm-security, for one, usually lives on another path than bookworm."""
    trusts = trusts or {}
    key = (
        "multi",
        *(f"{suite}={url}:{trusts.get(suite)!r}" for suite, url in mirrors.items()),
        "|",
        *components,
        arch,
    )
    with _LOCK:
        if key in _PARSED:
            return _PARSED[key]
    index = DebIndex(arch)
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        for suite, mirror in mirrors.items():
            for component in components:
                text = fetch_packages_text(
                    client, mirror, suite, component, arch, trust=trusts.get(suite)
                )
                index.add(text, f"{suite}/{component}")
    with _LOCK:
        _PARSED[key] = index
    return index
