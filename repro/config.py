"""Repo-wide settings (``recipes/repro.toml``) and where package mirrors come from.

    # recipes/repro.toml
    registry = "127.0.0.1:5000/repro"   # default publish namespace: <registry>/<recipe>

    [mirrors]                           # optional; names used by recipes' mirror = "…"
    alpine = { env = "REPRO_MIRROR_ALPINE" }

    [signatures.apt]                    # optional; keys for package sets of a mirror
    keyring = "keys/archive.gpg"        # apt: an OpenPGP keyring (relative to recipes/)
    allow_expired = false               # apt: accept a past Valid-Until (snapshot mirrors)
    [signatures.alpine]
    keys = "keys/alpine"                # apk: a directory of RSA public keys (*.rsa.pub)

No mirror host is written in the repository. A mirror name resolves, in order, to:
the environment (``REPRO_MIRROR_<NAME>``), the user's own configuration
(``$REPRO_CONFIG`` or ``~/.config/repro/config.toml``, ``[mirrors] NAME = "URL"``),
and for apt package sets the machine's own apt sources (``/etc/apt/sources.list.d/
*.sources`` in deb822 form, or ``/etc/apt/sources.list``): the first entry whose
suites hold the wanted suite and whose components hold the wanted components.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repro.errors import InputError, RecipeError

REPO_FILE = "repro.toml"
APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class SignatureSettings:
    """``[signatures.MIRROR]`` of repro.toml: the keys package sets of that mirror trust."""

    keyring: str = ""  # apt: an absolute path to an OpenPGP keyring
    keys: str = ""  # apk: an absolute path to a directory of RSA public keys
    allow_expired: bool = False  # apt: accept a Valid-Until in the past, expired keys


@dataclass(frozen=True)
class RepoConfig:
    root: Path
    registry: str = ""
    mirrors: Mapping[str, str] = field(default_factory=dict)  # name -> env var to read
    vault: str = ""  # the package vault's repository ("" = <registry>/vault)
    signatures: Mapping[str, SignatureSettings] = field(default_factory=dict)  # by mirror name


def load_repo_config(recipes_dir: Path) -> RepoConfig:
    """Read ``repro.toml`` in the recipes directory (absent: defaults).

    It lives with the recipes, not at the top of the repository, so the top level
    stays the project's own (pyproject, package, tests) and the settings travel with
    the recipes they apply to.
    """
    root = Path(recipes_dir).resolve()
    file = root / REPO_FILE
    if not file.is_file():
        return RepoConfig(root)
    text = file.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_error(exc, file, text) from None
    registry = data.pop("registry", "")
    if not isinstance(registry, str):
        raise RecipeError(
            "'registry' must be a string", file=str(file), line=_line(text, "registry")
        )
    vault = data.pop("vault", "")
    if not isinstance(vault, str):
        raise RecipeError("'vault' must be a string", file=str(file), line=_line(text, "vault"))
    mirrors_raw = data.pop("mirrors", {})
    mirrors: dict[str, str] = {}
    if not isinstance(mirrors_raw, dict):
        raise RecipeError("[mirrors] must be a table", file=str(file))
    for name, value in mirrors_raw.items():
        if not (
            isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str)
        ):
            raise RecipeError(
                f'[mirrors] {name!r} must be {{ env = "VARIABLE" }} (no host names in the repo)',
                file=str(file),
                line=_line(text, name),
            )
        mirrors[name] = value["env"]
    signatures = _signatures(data.pop("signatures", {}), root, file, text)
    for key in data:
        raise RecipeError(f"unknown key {key!r}", file=str(file), line=_line(text, key))
    return RepoConfig(
        root, registry.rstrip("/"), mirrors, vault.rstrip("/"), signatures
    )


def _signatures(table: object, root: Path, file: Path, text: str) -> dict[str, SignatureSettings]:
    """``[signatures.NAME]`` tables: keyring/keys paths (relative to the recipes directory,
    inside the repository, or absolute) and allow_expired."""
    if not isinstance(table, dict):
        raise RecipeError("[signatures] must hold tables [signatures.MIRROR]", file=str(file))
    out: dict[str, SignatureSettings] = {}
    for name, value in table.items():
        if not isinstance(value, dict):
            raise RecipeError(
                f"[signatures] {name!r} must be a table", file=str(file), line=_line(text, name)
            )
        where = f"[signatures.{name}]"
        paths: dict[str, str] = {}
        for key in ("keyring", "keys"):
            raw = value.get(key, "")
            if not isinstance(raw, str):
                raise RecipeError(
                    f"{where} {key!r} must be a string", file=str(file), line=_line(text, key)
                )
            try:
                paths[key] = str(key_path(raw, root, repository_root(root))) if raw else ""
            except InputError as exc:
                raise RecipeError(f"{where} {exc}", file=str(file), line=_line(text, key)) from None
        allow_expired = value.get("allow_expired", False)
        if not isinstance(allow_expired, bool):
            raise RecipeError(
                f"{where} 'allow_expired' must be a boolean",
                file=str(file),
                line=_line(text, "allow_expired"),
            )
        for key in value:
            if key not in ("keyring", "keys", "allow_expired"):
                raise RecipeError(
                    f"{where} unknown key {key!r}", file=str(file), line=_line(text, key)
                )
        out[name] = SignatureSettings(paths["keyring"], paths["keys"], allow_expired)
    return out


def repository_root(start: Path) -> Path:
    """The git work tree holding `start` (the nearest directory with ``.git``), or, outside
    git, the parent of `start` (recipes/ sits at the top of a repository)."""
    start = Path(start).resolve()
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return start.parent


def key_path(raw: str, base: Path, root: Path) -> Path:
    """A configured keyring or key directory: absolute as written, or relative to `base`
    and then inside the repository `root` (a recipe names its keys, not the machine's)."""
    path = Path(raw)
    if path.is_absolute():
        return path
    resolved = (Path(base) / path).resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError(f"{raw!r} points outside the repository ({root}); use an absolute path")
    return resolved


def toml_error(exc: tomllib.TOMLDecodeError, file: Path, text: str) -> RecipeError:
    """tomllib's error as one line with the file and line (an error "at end of
    document" is on the file's last line)."""
    m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
    if m:
        line: int | None = int(m.group(1))
    elif "end of document" in str(exc):
        line = max(1, len(text.splitlines()))
    else:
        line = None
    return RecipeError(f"invalid TOML: {message}", file=str(file), line=line)


def _line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf'^\s*"?{re.escape(key)}"?\s*=', line):
            return number
    return None


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("REPRO_CONFIG"):
        return Path(env["REPRO_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "repro" / "config.toml"


def user_mirrors(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    file = user_config_file(environ)
    if not file.is_file():
        return {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read {file}: {exc}") from None
    mirrors = data.get("mirrors", {})
    if not isinstance(mirrors, dict):
        raise InputError(f'{file}: [mirrors] must be a table of NAME = "URL"')
    return {k: v for k, v in mirrors.items() if isinstance(v, str)}


# --- apt sources ---------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    # Signed-By: keyring paths and key fingerprints, or one inline ASCII-armored key block.
    signed_by: tuple[str, ...] = ()


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Entries of a deb822 ``.sources`` file (Types: deb only, Enabled: no skipped)."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[:1] in " \t" and last:
                # Keep the line break: Signed-By may hold an ASCII-armored key block.
                fields[last] += "\n" + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip().lower()
                fields[last] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(
                    uri.rstrip("/"),
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "").split()),
                    _signed_by(fields.get("signed-by", "")),
                )
            )
    return out


def _signed_by(value: str) -> tuple[str, ...]:
    """Signed-By as a tuple: one armored key block (deb822's " ." lines made blank again),
    or the keyring paths and fingerprints it lists (commas or spaces between them)."""
    if "-----BEGIN PGP PUBLIC KEY BLOCK-----" in value:
        lines = ["" if line.strip() == "." else line.strip() for line in value.splitlines()]
        return ("\n".join(lines).strip() + "\n",)
    return tuple(value.replace(",", " ").split())


def parse_sources_list(text: str) -> list[AptSource]:
    """Entries of a one-line-style ``sources.list``."""
    out: list[AptSource] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        parts = line.split()
        if not parts or parts[0] != "deb":
            continue
        parts = parts[1:]
        signed_by = ""
        if parts and parts[0].startswith("["):
            options: list[str] = []
            while parts:
                options.append(parts.pop(0))
                if options[-1].endswith("]"):
                    break
            for option in " ".join(options).strip("[] ").split():
                key, _, value = option.partition("=")
                if key.lower() == "signed-by":
                    signed_by = value
        if len(parts) >= 2:
            out.append(
                AptSource(
                    parts[0].rstrip("/"), (parts[1],), tuple(parts[2:]), _signed_by(signed_by)
                )
            )
    return out


def machine_apt_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    out: list[AptSource] = []
    for file in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        out += parse_deb822_sources(file.read_text(encoding="utf-8", errors="replace"))
    for file in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if file.is_file():
            out += parse_sources_list(file.read_text(encoding="utf-8", errors="replace"))
    return out


def mirror_url(
    name: str,
    *,
    suite: str = "",
    components: Sequence[str] = (),
    repo: RepoConfig | None = None,
    environ: Mapping[str, str] | None = None,
    apt_dir: Path = APT_DIR,
) -> str:
    """The base URL of the mirror called `name` (see the module doc for the order)."""
    return mirror_source(
        name, suite=suite, components=components, repo=repo, environ=environ, apt_dir=apt_dir
    )[0]


def mirror_source(
    name: str,
    *,
    suite: str = "",
    components: Sequence[str] = (),
    repo: RepoConfig | None = None,
    environ: Mapping[str, str] | None = None,
    apt_dir: Path = APT_DIR,
) -> tuple[str, AptSource | None]:
    """The mirror's URL, and the machine's apt source it came from (None when it came from
    the environment or the user's configuration): its Signed-By says which keys to trust."""
    env = os.environ if environ is None else environ
    variable = (repo.mirrors.get(name) if repo else None) or (
        "REPRO_MIRROR_" + re.sub(r"[^A-Z0-9]", "_", name.upper())
    )
    if env.get(variable):
        return env[variable].rstrip("/"), None
    mine = user_mirrors(env)
    if name in mine:
        return mine[name].rstrip("/"), None
    if name == "apt":
        for source in machine_apt_sources(apt_dir):
            if suite in source.suites and all(c in source.components for c in components):
                return source.uri, source
        raise InputError(
            f"no apt source of this machine serves {suite} {' '.join(components)}: "
            f"add it to {apt_dir}/sources.list.d or set REPRO_MIRROR_APT"
        )
    raise InputError(
        f"mirror {name!r} is not configured: set {variable} or add it to [mirrors] in "
        f"{user_config_file(env)}"
    )
