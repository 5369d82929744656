"""An OCI distribution client: resolve, pull and push images with every byte verified.

The implementation lives in `repro.registry._client`; this package re-exports
its public API.
"""

from repro.registry._client import (
    DOCKER_HUB,
    INSECURE_ENV,
    MANIFEST_ACCEPT,
    ManifestChanged,
    ManifestNotFound,
    PushCounters,
    PushedImage,
    Reference,
    Registry,
    api_host,
    insecure_hosts_from_env,
    is_loopback,
    is_valid_tag,
    parse_reference,
)

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
