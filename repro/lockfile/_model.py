"""Typed, frozen entries of a lock, with `from_toml` (checked) and `to_toml`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from repro.errors import InputError
from repro.oci import INDEX_MEDIA_TYPES as _INDEX_MEDIA_TYPES
from repro.oci import is_digest
from repro.packages import Pin

LOCK_VERSION = 1
LOCK_HEADER = "# Written by `repro lock`; do not edit. `repro lock --update` moves the pins.\n"
TOP_KEYS = frozenset(
    {"version", "recipe", "inputs", "source_date_epoch", "bases", "packages", "downloads", "git"}
)
INDEX_MEDIA_TYPES = _INDEX_MEDIA_TYPES
_TOP_ORDER = ("version", "recipe", "inputs", "source_date_epoch")
_BASE_KEYS = frozenset({"digest", "media_type", "platforms", "image"})
_SET_KEYS = frozenset({"spec", "package", "base", "base_manifest", "base_db", "suites"})
_PIN_KEYS = frozenset(
    {"name", "version", "architecture", "sha256", "checksum", "filename", "size", "origin"}
)
_DOWNLOAD_KEYS = frozenset({"spec", "sha256", "size"})
_GIT_KEYS = frozenset({"spec", "ref", "commit"})


class LockInvalid(InputError):
    """A lock that does not make sense by itself: edited or damaged (repro writes
    every lock; `repro lock --update` writes it anew)."""


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise LockInvalid(f"has no table at {where}")
    return value


def _unknown(data: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise LockInvalid(f"has an unknown key {extra[0]!r}" + (f" in {where}" if where else ""))


def _str(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise LockInvalid(f"has no valid {key} for {where}")
    return value


def _digest(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not is_digest(value):
        raise LockInvalid(f"has no valid {key} for {where}")
    return str(value)


@dataclass(frozen=True)
class BaseEntry:
    """A pinned base image: the digest the reference resolved to, per platform."""

    ref: str
    digest: str
    media_type: str = ""
    platforms: Mapping[str, str] = field(default_factory=dict)
    image: str = ""  # for `recipe:NAME` bases: the repository the recipe publishes to

    @classmethod
    def from_toml(cls, ref: str, data: Any) -> BaseEntry:
        where = f"base {ref}"
        table = _table(data, where)
        _unknown(table, _BASE_KEYS, where)
        digest = _digest(table, "digest", where)
        platforms = table.get("platforms") or {}
        if not isinstance(platforms, Mapping) or not all(
            isinstance(k, str) and is_digest(v) for k, v in platforms.items()
        ):
            raise LockInvalid(f"has an invalid platform digest for base {ref}")
        media_type = _str(table, "media_type", where, required=False)
        if (
            platforms
            and media_type not in INDEX_MEDIA_TYPES
            and set(platforms.values()) != {digest}
        ):
            raise LockInvalid(f"disagrees with itself on base {ref} (digest vs platforms)")
        return cls(
            ref=ref,
            digest=digest,
            media_type=media_type,
            platforms=MappingProxyType(dict(platforms)),
            image=_str(table, "image", where, required=False),
        )

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": self.digest}
        for key in ("media_type", "image"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.platforms:
            out["platforms"] = dict(self.platforms)
        return out


@dataclass(frozen=True)
class PackageSetEntry:
    """A resolved package set: its closure, and the base state it was resolved on."""

    kind: str  # "apt" or "apk"
    name: str
    spec: str
    packages: tuple[Pin, ...] = ()
    base: str = ""
    base_manifest: str = ""
    base_db: str = ""
    suites: tuple[str, ...] = ()

    @classmethod
    def from_toml(cls, kind: str, name: str, data: Any) -> PackageSetEntry:
        where = f"package set {kind}.{name}"
        table = _table(data, where)
        _unknown(table, _SET_KEYS, where)
        pins = table.get("package") or []
        if not isinstance(pins, list):
            raise LockInvalid(f"has no package list for {where}")
        parsed = []
        for i, pin in enumerate(pins):
            pin_where = f"{where} package {i + 1}"
            pin_table = _table(pin, pin_where)
            _unknown(pin_table, _PIN_KEYS, pin_where)
            _str(pin_table, "name", pin_where)
            _str(pin_table, "version", pin_where)
            size = pin_table.get("size", 0)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise LockInvalid(f"has no valid size for {pin_where}")
            parsed.append(Pin.from_toml(dict(pin_table)))
        suites = table.get("suites") or []
        if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
            raise LockInvalid(f"has no valid suites for {where}")
        return cls(
            kind=kind,
            name=name,
            spec=_digest(table, "spec", where),
            packages=tuple(parsed),
            base=_str(table, "base", where, required=False),
            base_manifest=_digest(table, "base_manifest", where, required=False),
            base_db=_digest(table, "base_db", where, required=False),
            suites=tuple(suites),
        )

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec}
        for key in ("base", "base_manifest", "base_db"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.suites:
            out["suites"] = list(self.suites)
        if self.packages:
            out["package"] = [p.to_toml() for p in self.packages]
        return out


@dataclass(frozen=True)
class DownloadEntry:
    name: str
    spec: str
    sha256: str
    size: int

    @classmethod
    def from_toml(cls, name: str, data: Any) -> DownloadEntry:
        where = f"download {name}"
        table = _table(data, where)
        _unknown(table, _DOWNLOAD_KEYS, where)
        size = table.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LockInvalid(f"has no valid size for {where}")
        return cls(name, _digest(table, "spec", where), _digest(table, "sha256", where), size)

    def to_toml(self) -> dict[str, Any]:
        return {"spec": self.spec, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class GitEntry:
    name: str
    spec: str
    ref: str
    commit: str

    @classmethod
    def from_toml(cls, name: str, data: Any) -> GitEntry:
        where = f"git input {name}"
        table = _table(data, where)
        _unknown(table, _GIT_KEYS, where)
        commit = _str(table, "commit", where)
        if len(commit) not in (40, 64) or not all(c in "0123456789abcdef" for c in commit):
            raise LockInvalid(f"has no valid commit for {where}")
        return cls(name, _digest(table, "spec", where), _str(table, "ref", where), commit)

    def to_toml(self) -> dict[str, Any]:
        return {"spec": self.spec, "ref": self.ref, "commit": self.commit}


@dataclass(frozen=True)
class Lock:
    """One recipe's `repro.lock`."""

    version: int
    recipe: str
    inputs: str
    source_date_epoch: int
    bases: Mapping[str, BaseEntry] = field(default_factory=dict)
    packages: Mapping[str, Mapping[str, PackageSetEntry]] = field(default_factory=dict)
    downloads: Mapping[str, DownloadEntry] = field(default_factory=dict)
    git: Mapping[str, GitEntry] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> Lock:
        """The lock `data` (parsed TOML) describes; LockInvalid naming what is wrong."""
        _unknown(data, TOP_KEYS, "")
        version = data.get("version")
        if version != LOCK_VERSION:
            raise LockInvalid("is from another version of repro")
        epoch = data.get("source_date_epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise LockInvalid("has no valid source_date_epoch")
        bases = _table(data.get("bases") or {}, "bases")
        packages = _table(data.get("packages") or {}, "packages")
        downloads = _table(data.get("downloads") or {}, "downloads")
        git = _table(data.get("git") or {}, "git")
        return cls(
            version=version,
            recipe=_str(data, "recipe", "the recipe"),
            inputs=_digest(data, "inputs", "the recipe's inputs"),
            source_date_epoch=epoch,
            bases=MappingProxyType({r: BaseEntry.from_toml(r, e) for r, e in bases.items()}),
            packages=MappingProxyType(
                {
                    kind: MappingProxyType(
                        {
                            name: PackageSetEntry.from_toml(kind, name, entry)
                            for name, entry in _table(sets, f"packages.{kind}").items()
                        }
                    )
                    for kind, sets in packages.items()
                }
            ),
            downloads=MappingProxyType(
                {n: DownloadEntry.from_toml(n, e) for n, e in downloads.items()}
            ),
            git=MappingProxyType({n: GitEntry.from_toml(n, e) for n, e in git.items()}),
        )

    def to_toml(self) -> dict[str, Any]:
        """The lock as TOML data, in the order `repro lock` writes it."""
        out: dict[str, Any] = {
            "version": self.version,
            "recipe": self.recipe,
            "inputs": self.inputs,
            "source_date_epoch": self.source_date_epoch,
        }
        if self.bases:
            out["bases"] = {r: e.to_toml() for r, e in self.bases.items()}
        if self.packages:
            out["packages"] = {
                kind: {name: e.to_toml() for name, e in sets.items()}
                for kind, sets in self.packages.items()
            }
        if self.downloads:
            out["downloads"] = {n: e.to_toml() for n, e in self.downloads.items()}
        if self.git:
            out["git"] = {n: e.to_toml() for n, e in self.git.items()}
        return out

    def package_set(self, kind: str, name: str) -> PackageSetEntry | None:
        return self.packages.get(kind, {}).get(name)


def dump_toml(data: Mapping[str, Any]) -> str:
    """The text of a lock: the header, then TOML with keys in a stable order."""
    import tomli_w

    return LOCK_HEADER + tomli_w.dumps(_sorted(data))


def _sorted(value: Any, top: bool = True) -> Any:
    if isinstance(value, Mapping) and top:
        first = [k for k in _TOP_ORDER if k in value]
        rest = sorted(k for k in value if k not in _TOP_ORDER)
        return {k: _sorted(value[k], False) for k in first + rest}
    if isinstance(value, Mapping):
        return {k: _sorted(value[k], False) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v, False) for v in value]
    return value
