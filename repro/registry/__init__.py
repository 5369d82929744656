"""An OCI distribution client: resolve, pull and push images with every byte verified.

The client lives in `repro.registry._client`, references and hosts in
`repro.registry._reference`; this package re-exports their public API. The client's
names are loaded when first used: reading a recipe or a lock parses references, and
importing the client (httpx) costs about 0.05 s that such commands need not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repro.registry._reference import (
    DOCKER_HUB,
    INSECURE_ENV,
    Reference,
    api_host,
    insecure_hosts_from_env,
    is_loopback,
    is_valid_tag,
    parse_reference,
)

if TYPE_CHECKING:
    from repro.registry._client import (
        MANIFEST_ACCEPT,
        ManifestChanged,
        ManifestNotFound,
        PushCounters,
        PushedImage,
        Registry,
    )

_FROM_CLIENT = frozenset(
    {
        "MANIFEST_ACCEPT",
        "ManifestChanged",
        "ManifestNotFound",
        "PushCounters",
        "PushedImage",
        "Registry",
    }
)


class LazyRegistry:
    """A `Registry` made when first asked for (`get()`, thread-safe) and closed by
    `close()`: shared by work that may need no registry at all, such as a build whose
    bases' documents are in the local cache."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._client: Registry | None = None

    def get(self) -> Registry:
        with self._lock:
            if self._client is None:
                from repro.registry._client import Registry

                self._client = Registry()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        from repro.registry import _client

        value = getattr(_client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DOCKER_HUB",
    "INSECURE_ENV",
    "LazyRegistry",
    "MANIFEST_ACCEPT",
    "ManifestChanged",
    "ManifestNotFound",
    "PushCounters",
    "PushedImage",
    "Reference",
    "Registry",
    "api_host",
    "insecure_hosts_from_env",
    "is_loopback",
    "is_valid_tag",
    "parse_reference",
]
