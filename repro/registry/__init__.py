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
