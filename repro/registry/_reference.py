"""Image references and registry hosts: parsing and naming, with no HTTP client.

Kept apart from the client (`repro.registry._client`) so that reading a recipe or a
lock, which parses references, does not import httpx.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from repro.errors import InputError
from repro.oci import is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

INSECURE_ENV = "REPRO_INSECURE_REGISTRIES"

# --- references --------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")


@dataclass(frozen=True)
class Reference:
    """An image reference: `host/repository[:tag][@digest]`."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """`host/repository`, without tag or digest."""
        return f"{self.host}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if any, else the tag, else `latest`."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> Reference:
        return replace(self, digest=digest)


def _looks_like_host(component: str) -> bool:
    # Docker's rule: the first component is a registry if it has a dot or a
    # port, or is localhost; otherwise it is part of a Docker Hub repository.
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse `[host[:port]/]repo[:tag][@sha256:…]`; Docker Hub names get `library/`."""
    name, at, digest = text.strip().partition("@")
    if at and not is_digest(digest):
        raise InputError(f"invalid image reference {text!r}: bad digest {digest!r}")
    first, slash, rest = name.partition("/")
    host, path = (first, rest) if slash and _looks_like_host(first) else (DOCKER_HUB, name)
    tag = None
    colon = path.rfind(":")
    if colon > path.rfind("/"):
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InputError(f"invalid image reference {text!r}: bad tag {tag!r}")
    if not _HOST_RE.match(host):
        raise InputError(f"invalid image reference {text!r}: bad registry host {host!r}")
    if host.lower() in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not _REPOSITORY_RE.match(path):
        raise InputError(
            f"invalid image reference {text!r}: repository {path!r} must be lowercase "
            "letters and digits separated by '/', '.', '_' or '-'"
        )
    return Reference(host, path, tag, digest or None)


def _as_reference(value: Reference | str) -> Reference:
    return value if isinstance(value, Reference) else parse_reference(value)


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


# --- hosts and schemes -------------------------------------------------------


def _bare_host(host: str) -> str:
    """A host without its port (and without IPv6 brackets)."""
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether `host[:port]` is this machine: localhost, 127.0.0.0/8 or ::1."""
    bare = _bare_host(host).lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def insecure_hosts_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Hosts listed in $REPRO_INSECURE_REGISTRIES (comma separated)."""
    env = os.environ if environ is None else environ
    return [h.strip().lower() for h in env.get(INSECURE_ENV, "").split(",") if h.strip()]


def api_host(host: str) -> str:
    """The host that serves the API for a reference's registry."""
    return DOCKER_HUB_API_HOST if host == DOCKER_HUB else host
