"""Normalisation settings and content rules: globs, presets, and the record of changes.

Content rules change what is *in* a layer, so every one is off unless a recipe turns
it on (directly or through a preset), and every change made is recorded as a
`Change` (layer, path, rule) for the build result and the attestation.

Globs match absolute paths inside the image: `*` and `?` stay within one path
component, `**` matches across components (`/var/log/**` is everything under
/var/log, not /var/log itself; `/var/log/**/*.log` includes /var/log/x.log),
`[...]` is a character class.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from repro.errors import InputError

if TYPE_CHECKING:
    from repro.oci import Descriptor

COMPRESSIONS = ("gzip", "zstd")
DEFAULT_GZIP_LEVEL = 6  # the level `gzip -n` uses: the baseline users compare with
DEFAULT_ZSTD_LEVEL = 3

# What each preset turns on. Each entry is documented in the README's recipe
# reference; the reasons are the files' known volatility.
PRESETS: dict[str, dict[str, tuple[str, ...] | bool]] = {
    "debian": {
        "drop": (
            "/var/cache/apt/**",  # downloaded .debs and pkgcache.bin (binary, timestamped)
            "/var/lib/apt/lists/**",  # index files fetched at build time
            "/var/cache/ldconfig/aux-cache",  # ldconfig's cache of inode/mtime data
            "/var/cache/debconf/*-old",  # backup copies written on every change
            "/var/lib/dpkg/*-old",
        ),
        "truncate": (
            "/var/log/**/*.log",  # dpkg.log, apt/history.log, alternatives.log: dated lines
            "/var/log/lastlog",
            "/var/log/faillog",
            "/var/log/wtmp",
            "/var/log/btmp",
        ),
        "shadow": True,  # useradd/passwd write today's day number into /etc/shadow
    },
    "alpine": {
        "drop": ("/var/cache/apk/**",),
        "truncate": ("/var/log/**/*.log",),
        "shadow": True,  # adduser writes today's day number into /etc/shadow
    },
    "python": {
        "drop": (
            "**/__pycache__/**",  # .pyc files embed source mtimes (or hashes of a moving epoch)
            "/root/.cache/pip/**",
        ),
        "truncate": (),
        "shadow": False,
    },
}

SHADOW_FILES = ("/etc/shadow", "/etc/shadow-")


@dataclass(frozen=True)
class Change:
    """One change a content rule made: in which layer, to which path, by which rule."""

    layer: int
    path: str
    rule: str

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, "path": self.path, "rule": self.rule}


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regular expression for an image-path glob; InputError if the glob is invalid."""
    if not pattern.startswith("/") and not pattern.startswith("**"):
        raise InputError(f"invalid glob {pattern!r}: it must be an absolute path (start with /)")
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole directories
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                raise InputError(f"invalid glob {pattern!r}: '[' without a closing ']'")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            if not body or body == "^":
                raise InputError(f"invalid glob {pattern!r}: empty character class")
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "]":
            raise InputError(f"invalid glob {pattern!r}: ']' without an opening '['")
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as e:
        raise InputError(f"invalid glob {pattern!r}: {e}") from None


class _GlobSet:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(dict.fromkeys(patterns))
        self._compiled = [(p, compile_glob(p)) for p in self.patterns]

    def match(self, path: str) -> str | None:
        """The first glob matching `path` (absolute), or None."""
        for pattern, regex in self._compiled:
            if regex.match(path):
                return pattern
        return None


@dataclass(frozen=True)
class NormaliseOptions:
    """How to normalise an image. The defaults change encoding only, never content.

    - `epoch`: SOURCE_DATE_EPOCH; file mtimes above it are clamped to it.
    - `created`: the config's `created` and every `history[].created` (default: epoch).
    - `compression`: "gzip" (default) or "zstd", with `level` (default 6 or 3).
    - `uname`/`gname`: the user and group names written in every tar header
      (default empty; numeric ids are always kept as they are).
    - `keep_layers`: how many leading layers (the base image's) keep their bytes;
      `base_layers`: the base image's own layer descriptors, when known (from the
      lock): those blobs are used where the exported ones differ.
    - content rules: `drop` and `truncate` globs, `shadow` (set the change dates in
      /etc/shadow and /etc/shadow- to the epoch's day), `umask` (permission bits it
      names are cleared on every entry of the recipe's layers, as if the files had
      been made under that umask), and `presets` that add to them.
    """

    epoch: int
    created: int | None = None
    compression: str = "gzip"
    level: int | None = None
    uname: str = ""
    gname: str = ""
    keep_layers: int = 0
    base_layers: tuple[Descriptor, ...] = ()
    presets: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    truncate: tuple[str, ...] = ()
    shadow: bool = False
    umask: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.umask <= 0o777:
            raise InputError(f"normalise: umask {self.umask:o} is not in 000..777")
        if self.epoch < 0:
            raise InputError("normalise: the epoch must not be negative")
        if self.compression not in COMPRESSIONS:
            raise InputError(f"normalise: compression {self.compression!r}: expected gzip or zstd")
        low, high = (0, 9) if self.compression == "gzip" else (1, 19)
        if self.level is not None and not low <= self.level <= high:
            raise InputError(
                f"normalise: {self.compression} level {self.level} is not in {low}..{high}"
            )
        for preset in self.presets:
            if preset not in PRESETS:
                raise InputError(
                    f"normalise: unknown preset {preset!r}; expected one of "
                    + ", ".join(sorted(PRESETS))
                )
        for pattern in (*self.drop, *self.truncate):
            compile_glob(pattern)

    @property
    def compression_level(self) -> int:
        if self.level is not None:
            return self.level
        return DEFAULT_GZIP_LEVEL if self.compression == "gzip" else DEFAULT_ZSTD_LEVEL

    @property
    def created_time(self) -> int:
        return self.epoch if self.created is None else self.created

    def effective(self) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        """The drop globs, truncate globs and shadow switch, presets included."""
        drop: list[str] = []
        truncate: list[str] = []
        shadow = self.shadow
        for preset in self.presets:
            rules = PRESETS[preset]
            drop.extend(rules["drop"])  # type: ignore[arg-type]
            truncate.extend(rules["truncate"])  # type: ignore[arg-type]
            shadow = shadow or bool(rules["shadow"])
        drop.extend(self.drop)
        truncate.extend(self.truncate)
        return tuple(dict.fromkeys(drop)), tuple(dict.fromkeys(truncate)), shadow

    def fingerprint(self) -> str:
        """A short hash of what decides a layer's bytes (written in the marker).

        `umask` is left out, so that a recipe that adds it keeps its digests when its
        modes already comply; a marked layer is therefore never trusted as canonical
        when `umask` is set (see `normalise_layer`).
        """
        drop, truncate, shadow = self.effective()
        text = "\n".join(
            [
                f"epoch={self.epoch}",
                f"uname={self.uname}",
                f"gname={self.gname}",
                "drop=" + "\0".join(drop),
                "truncate=" + "\0".join(truncate),
                f"shadow={shadow}",
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ContentRules:
    """The compiled content rules of one NormaliseOptions."""

    drop: _GlobSet
    truncate: _GlobSet
    shadow: bool
    shadow_day: int = 0
    umask: int = 0
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: NormaliseOptions) -> ContentRules:
        drop, truncate, shadow = options.effective()
        return cls(
            drop=_GlobSet(drop),
            truncate=_GlobSet(truncate),
            shadow=shadow,
            shadow_day=options.epoch // 86400,
            umask=options.umask,
        )

    @property
    def active(self) -> bool:
        return bool(self.drop.patterns or self.truncate.patterns or self.shadow or self.umask)


def rewrite_shadow(data: bytes, day: int) -> bytes:
    """/etc/shadow with every non-empty last-change field (the third) set to `day`."""
    lines = data.split(b"\n")
    out = []
    for line in lines:
        fields = line.split(b":")
        if len(fields) >= 3 and fields[2] != b"":
            fields[2] = str(day).encode()
        out.append(b":".join(fields))
    return b"\n".join(out)


def validate_globs(patterns: Sequence[str]) -> None:
    for pattern in patterns:
        compile_glob(pattern)
