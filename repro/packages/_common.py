"""What a resolver returns, and the error it raises."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from repro.errors import (
    ResolveError,  # noqa: F401 - defined in errors, re-exported here
)


@dataclass(frozen=True, order=True)
class Pin:
    """One package of a closure at an exact version, with its checksum from the index."""

    name: str
    version: str
    architecture: str = ""
    sha256: str = ""
    filename: str = ""  # mirror-relative path (pool/…), or the apk file name
    size: int = 0
    origin: str = ""  # suite/component (apt) or branch/repository (apk)
    checksum: str = ""  # apk: the index's C: field (Q1 + base64 SHA-1 of the control part)

    def to_toml(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "version": self.version}
        for key in ("architecture", "sha256", "checksum", "filename", "origin"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.size:
            out["size"] = self.size
        return out

    @classmethod
    def from_toml(cls, data: dict[str, object]) -> Pin:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            architecture=str(data.get("architecture", "")),
            sha256=str(data.get("sha256", "")),
            filename=str(data.get("filename", "")),
            size=int(data.get("size", 0)),  # type: ignore[call-overload]
            origin=str(data.get("origin", "")),
            checksum=str(data.get("checksum", "")),
        )


@dataclass
class Closure:
    pins: list[Pin] = field(default_factory=list)

    def sorted(self) -> list[Pin]:
        return sorted(self.pins, key=lambda p: (p.name, p.version, p.architecture))


def cache_dir() -> Path:
    """Where downloaded packages and indexes are kept (``$XDG_CACHE_HOME/repro/packages``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repro" / "packages"
