"""Registry credentials from the user's Docker config, the way `docker login` left them.

Reads `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`) and answers
`get_credentials(host)` from, in order: a per-host `credHelpers` entry, the
global `credsStore`, then the inline `auths` entry. Helpers are run as
`docker-credential-<name> get` with the server address on stdin.

Secrets never appear in logs, messages or reprs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import InputError, RegistryError

log = logging.getLogger(__name__)

# Docker Hub goes by several names; credentials for any of them are stored under
# the legacy index URL, which is also what credential helpers expect.
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"

# A username that means "the secret is an identity (refresh) token".
TOKEN_USERNAME = "<token>"

_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HELPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credentials:
    """A username and secret for one registry; `identity_token` for OAuth2 refresh."""

    username: str
    secret: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)


def normalize_host(server: str) -> str:
    """The bare `host[:port]` of a server address; every Docker Hub alias is `docker.io`.

    `https://index.docker.io/v1/` → `docker.io`, `http://Reg:5000/x` → `reg:5000`.
    """
    host = server.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def helper_server_address(host: str) -> str:
    """What to pass a credential helper for a host: Docker Hub's legacy URL, else the host."""
    host = normalize_host(host)
    return DOCKER_HUB_SERVER if host == DOCKER_HUB else host


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the Docker config is: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`."""
    env = os.environ if environ is None else environ
    directory = env.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def load_config(path: Path) -> dict[str, Any]:
    """The parsed config file; {} if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read Docker config {path}: {e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"Docker config {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InputError(f"Docker config {path} is not a JSON object")
    return doc


def _lookup(table: Any, host: str) -> Any:
    """The value of the first key of `table` that names `host` (keys may be URLs)."""
    if not isinstance(table, dict):
        return None
    for key, value in table.items():
        if isinstance(key, str) and normalize_host(key) == host:
            return value
    return None


def _from_auth_entry(entry: Any, host: str, path: Path) -> Credentials | None:
    """Credentials from an `auths` entry: `auth` (base64 user:pass), username/password, token."""
    if not isinstance(entry, dict):
        return None
    username, secret = entry.get("username") or "", entry.get("password") or ""
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InputError(
                f"Docker config {path}: the auth entry for {host} is not base64"
            ) from None
        username, sep, secret = decoded.partition(":")
        if not sep:
            raise InputError(
                f"Docker config {path}: the auth entry for {host} is not user:password"
            )
    token = entry.get("identitytoken") or None
    if token:
        return Credentials(username or TOKEN_USERNAME, secret, str(token))
    if not username and not secret:
        return None  # an empty placeholder: `docker login` used a credential store
    return Credentials(str(username), str(secret))


def run_helper(
    name: str, host: str, environ: Mapping[str, str] | None = None
) -> Credentials | None:
    """Ask `docker-credential-<name>` for the credentials of `host`; None if it has none."""
    if not _HELPER_NAME.match(name):
        raise InputError(f"invalid Docker credential helper name {name!r}")
    program = f"docker-credential-{name}"
    env = os.environ if environ is None else environ
    executable = shutil.which(program, path=env.get("PATH", os.defpath))
    if executable is None:
        raise RegistryError(
            f"Docker credential helper {program} is not on PATH (needed for {host})"
        )
    log.debug("asking %s for credentials for %s", program, host)
    try:
        result = subprocess.run(
            [executable, "get"],
            input=helper_server_address(host).encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
            env=dict(env),
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(f"Docker credential helper {program} timed out for {host}") from None
    except OSError as e:
        raise RegistryError(f"cannot run Docker credential helper {program}: {e.strerror}") from e
    if result.returncode != 0:
        return _helper_failure(program, host, result)
    return _parse_helper_answer(program, host, result.stdout)


def _helper_failure(
    program: str, host: str, result: subprocess.CompletedProcess[bytes]
) -> Credentials | None:
    # On failure helpers print an error message (never the secret) on stdout or stderr.
    message = (result.stdout or result.stderr).decode("utf-8", "replace").strip()
    if "credentials not found" in message.lower():
        return None
    first_line = message.splitlines()[0][:200] if message else f"exit status {result.returncode}"
    raise RegistryError(f"Docker credential helper {program} failed for {host}: {first_line}")


def _parse_helper_answer(program: str, host: str, stdout: bytes) -> Credentials | None:
    try:
        answer = json.loads(stdout)
    except (json.JSONDecodeError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict):
        # The output may hold a secret, so it is not quoted.
        raise RegistryError(
            f"Docker credential helper {program} gave an unreadable answer for {host}"
        )
    username, secret = answer.get("Username") or "", answer.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryError(
            f"Docker credential helper {program} gave an unreadable answer for {host}"
        )
    if not secret:
        return None
    if username == TOKEN_USERNAME:
        return Credentials(username, secret, identity_token=secret)
    return Credentials(username, secret)


def get_credentials(host: str, *, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials the user's Docker config holds for `host`, or None."""
    host = normalize_host(host)
    path = config_path(environ)
    config = load_config(path)
    helper = _lookup(config.get("credHelpers"), host) or config.get("credsStore")
    if helper:
        if not isinstance(helper, str):
            raise InputError(f"Docker config {path}: credential helper for {host} is not a string")
        found = run_helper(helper, host, environ)
        if found is not None:
            return found
    return _from_auth_entry(_lookup(config.get("auths"), host), host, path)
