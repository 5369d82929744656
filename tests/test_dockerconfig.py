"""Tests for repro.dockerconfig: auths entries, credential helpers, host normalisation."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from repro.dockerconfig import (
    Credentials,
    config_path,
    get_credentials,
    helper_server_address,
    normalize_host,
)
from repro.errors import InputError, RegistryError

# A fake docker-credential helper: answers from a JSON table keyed by server
# address, logs what it was asked, and fails like the real ones when told to.
HELPER = """#!/bin/sh
[ "$1" = get ] || { echo "unsupported action $1" >&2; exit 1; }
server=$(cat)
printf '%s\\n' "$server" >> "$FAKE_HELPER_LOG"
exec python3 - "$server" <<'EOF'
import json, os, sys
table = json.load(open(os.environ["FAKE_HELPER_TABLE"]))
answer = table.get(sys.argv[1])
if answer is None:
    print("credentials not found in native keychain")
    sys.exit(1)
if answer == "broken":
    print("helper exploded: keyring locked", file=sys.stderr)
    sys.exit(3)
print(json.dumps(answer))
EOF
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own DOCKER_CONFIG and a PATH holding the fake helper."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(HELPER)
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "config").mkdir()
    (tmp_path / "table.json").write_text("{}")
    return {
        "DOCKER_CONFIG": str(tmp_path / "config"),
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_HELPER_TABLE": str(tmp_path / "table.json"),
        "FAKE_HELPER_LOG": str(tmp_path / "helper.log"),
    }


def write_config(env: dict[str, str], config: object) -> None:
    Path(env["DOCKER_CONFIG"], "config.json").write_text(json.dumps(config))


def helper_table(env: dict[str, str], table: dict[str, object]) -> None:
    Path(env["FAKE_HELPER_TABLE"]).write_text(json.dumps(table))


def helper_calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_HELPER_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "server, host",
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("http://Registry.Example:5000/some/path", "registry.example:5000"),
        ("ghcr.io", "ghcr.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
    ],
)
def test_normalize_host(server: str, host: str) -> None:
    assert normalize_host(server) == host


def test_helper_server_address() -> None:
    assert helper_server_address("registry-1.docker.io") == "https://index.docker.io/v1/"
    assert helper_server_address("https://ghcr.io") == "ghcr.io"


def test_config_path(tmp_path: Path) -> None:
    assert config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert config_path({}) == Path.home() / ".docker" / "config.json"


def test_no_config_file_means_no_credentials(env: dict[str, str]) -> None:
    assert get_credentials("ghcr.io", environ=env) is None


def test_auth_field_is_base64_user_colon_password(env: dict[str, str]) -> None:
    write_config(env, {"auths": {"https://index.docker.io/v1/": {"auth": b64("alice:s3:cr3t")}}})
    creds = get_credentials("registry-1.docker.io", environ=env)
    assert creds == Credentials("alice", "s3:cr3t")
    assert get_credentials("ghcr.io", environ=env) is None


def test_username_and_password_fields(env: dict[str, str]) -> None:
    write_config(env, {"auths": {"https://reg.example:5000": {"username": "u", "password": "p"}}})
    assert get_credentials("reg.example:5000", environ=env) == Credentials("u", "p")


def test_identity_token_entry(env: dict[str, str]) -> None:
    write_config(env, {"auths": {"reg.example": {"identitytoken": "refresh-me"}}})
    creds = get_credentials("reg.example", environ=env)
    assert creds is not None
    assert creds.username == "<token>" and creds.identity_token == "refresh-me"


def test_empty_placeholder_entry_means_none(env: dict[str, str]) -> None:
    write_config(env, {"auths": {"reg.example": {}}})
    assert get_credentials("reg.example", environ=env) is None


def test_bad_auth_field_is_an_input_error(env: dict[str, str]) -> None:
    write_config(env, {"auths": {"reg.example": {"auth": "!!!not base64!!!"}}})
    with pytest.raises(InputError, match="not base64"):
        get_credentials("reg.example", environ=env)
    write_config(env, {"auths": {"reg.example": {"auth": b64("no-colon")}}})
    with pytest.raises(InputError, match="user:password"):
        get_credentials("reg.example", environ=env)


def test_malformed_config_is_an_input_error(env: dict[str, str]) -> None:
    Path(env["DOCKER_CONFIG"], "config.json").write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        get_credentials("reg.example", environ=env)


def test_cred_helper_per_host(env: dict[str, str]) -> None:
    write_config(env, {"credHelpers": {"reg.example": "fake"}, "auths": {}})
    helper_table(
        env, {"reg.example": {"ServerURL": "reg.example", "Username": "bob", "Secret": "pw"}}
    )
    assert get_credentials("https://reg.example/", environ=env) == Credentials("bob", "pw")
    assert helper_calls(env) == ["reg.example"]


def test_creds_store_is_asked_with_docker_hub_url(env: dict[str, str]) -> None:
    write_config(env, {"credsStore": "fake", "auths": {"https://index.docker.io/v1/": {}}})
    helper_table(env, {"https://index.docker.io/v1/": {"Username": "carol", "Secret": "pw2"}})
    assert get_credentials("docker.io", environ=env) == Credentials("carol", "pw2")
    assert helper_calls(env) == ["https://index.docker.io/v1/"]


def test_helper_token_username_gives_identity_token(env: dict[str, str]) -> None:
    write_config(env, {"credsStore": "fake"})
    helper_table(env, {"reg.example": {"Username": "<token>", "Secret": "idtok"}})
    creds = get_credentials("reg.example", environ=env)
    assert creds is not None and creds.identity_token == "idtok"


def test_helper_credentials_not_found_falls_back_to_auths(env: dict[str, str]) -> None:
    write_config(env, {"credsStore": "fake", "auths": {"reg.example": {"auth": b64("d:e")}}})
    assert get_credentials("reg.example", environ=env) == Credentials("d", "e")
    assert get_credentials("other.example", environ=env) is None
    assert helper_calls(env) == ["reg.example", "other.example"]


def test_helper_failure_is_a_one_line_registry_error(env: dict[str, str]) -> None:
    write_config(env, {"credHelpers": {"reg.example": "fake"}})
    helper_table(env, {"reg.example": "broken"})
    with pytest.raises(RegistryError, match="keyring locked") as excinfo:
        get_credentials("reg.example", environ=env)
    assert "\n" not in str(excinfo.value)


def test_missing_helper(env: dict[str, str]) -> None:
    write_config(env, {"credHelpers": {"reg.example": "absent"}})
    with pytest.raises(RegistryError, match="docker-credential-absent is not on PATH"):
        get_credentials("reg.example", environ=env)


def test_helper_name_cannot_be_a_path(env: dict[str, str]) -> None:
    write_config(env, {"credsStore": "../../bin/sh"})
    with pytest.raises(InputError, match="invalid Docker credential helper"):
        get_credentials("reg.example", environ=env)


def test_secrets_never_in_repr() -> None:
    creds = Credentials("user", "hunter2", identity_token="tok-secret")
    assert "hunter2" not in repr(creds) and "tok-secret" not in repr(creds)
    assert "user" in repr(creds)


def test_unreadable_helper_answer_does_not_leak_it(env: dict[str, str], tmp_path: Path) -> None:
    helper = Path(env["PATH"].split(":")[0]) / "docker-credential-leaky"
    helper.write_text("#!/bin/sh\ncat >/dev/null\necho 'not-json TOPSECRET'\n")
    helper.chmod(0o755)
    write_config(env, {"credsStore": "leaky"})
    with pytest.raises(RegistryError, match="unreadable answer") as excinfo:
        get_credentials("reg.example", environ=env)
    assert "TOPSECRET" not in str(excinfo.value)
