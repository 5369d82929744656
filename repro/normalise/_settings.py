"""The recipe's ``[normalise]`` table, checked with file and line in every error.

    [normalise]
    compression = "gzip"        # gzip (default) or zstd
    level = 6                   # gzip 0-9 (default 6), zstd 1-19 (default 3)
    created = 1735689600        # config/history `created` (default: the epoch)
    uname = ""                  # user/group names in tar headers (default: none)
    gname = ""
    presets = ["debian"]        # debian, alpine, python: see repro.normalise._rules
    drop = ["/var/log/**"]      # globs of paths removed from the recipe's layers
    truncate = ["/var/log/*.log"]  # globs of files emptied
    shadow = true               # /etc/shadow{,-} change dates set to the epoch's day
    umask = "022"               # clear these permission bits in the recipe's layers

Every rule is off unless named here (or in a preset named here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repro.errors import InputError, RecipeError
from repro.normalise._rules import COMPRESSIONS, PRESETS, NormaliseOptions, compile_glob

_KEYS = (
    "compression",
    "level",
    "created",
    "uname",
    "gname",
    "presets",
    "drop",
    "truncate",
    "shadow",
    "umask",
)


@dataclass(frozen=True)
class NormaliseSettings:
    """What a recipe asks of normalisation (the epoch and base layers come from the build)."""

    compression: str = "gzip"
    level: int | None = None
    created: int | None = None
    uname: str = ""
    gname: str = ""
    presets: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    truncate: tuple[str, ...] = ()
    shadow: bool = False
    umask: int = 0

    def options(self, epoch: int, keep_layers: int = 0) -> NormaliseOptions:
        return NormaliseOptions(
            epoch=epoch,
            created=self.created,
            compression=self.compression,
            level=self.level,
            uname=self.uname,
            gname=self.gname,
            keep_layers=keep_layers,
            presets=self.presets,
            drop=self.drop,
            truncate=self.truncate,
            shadow=self.shadow,
            umask=self.umask,
        )


def parse_settings(
    table: dict[str, Any], error: Callable[[str, str | None], RecipeError]
) -> NormaliseSettings:
    """Check a parsed ``[normalise]`` table; `error(message, key)` makes a located error."""
    for key in table:
        if key not in _KEYS:
            raise error(f"[normalise] unknown key {key!r}", key)

    def get(key: str, kind: type, default: Any) -> Any:
        value = table.get(key, default)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise error(f"[normalise] {key!r} must be {_kind_name(kind)}", key)
        return value

    def globs(key: str) -> tuple[str, ...]:
        values = get(key, list, [])
        for value in values:
            if not isinstance(value, str):
                raise error(f"[normalise] {key!r} must be a list of strings", key)
            try:
                compile_glob(value)
            except InputError as e:
                raise error(f"[normalise] {key}: {e.message}", key) from None
        return tuple(values)

    compression = get("compression", str, "gzip")
    if compression not in COMPRESSIONS:
        raise error(f"[normalise] compression {compression!r} must be gzip or zstd", "compression")
    level = get("level", int, 0) if "level" in table else None
    if level is not None:
        low, high = (0, 9) if compression == "gzip" else (1, 19)
        if not low <= level <= high:
            raise error(f"[normalise] {compression} level {level} is not in {low}..{high}", "level")
    created = get("created", int, 0) if "created" in table else None
    if created is not None and created < 0:
        raise error("[normalise] created must not be negative", "created")
    presets = get("presets", list, [])
    for preset in presets:
        if preset not in PRESETS:
            raise error(
                f"[normalise] unknown preset {preset!r}; expected one of "
                + ", ".join(sorted(PRESETS)),
                "presets",
            )
    return NormaliseSettings(
        compression=compression,
        level=level,
        created=created,
        uname=get("uname", str, ""),
        gname=get("gname", str, ""),
        presets=tuple(presets),
        drop=globs("drop"),
        truncate=globs("truncate"),
        shadow=get("shadow", bool, False),
        umask=_umask(get("umask", str, "0"), error),
    )


def _umask(value: str, error: Callable[[str, str | None], RecipeError]) -> int:
    """An octal umask written as a string ("022", "0022"): 0 to 0777."""
    if not value or len(value) > 4 or any(c not in "01234567" for c in value):
        raise error(f"[normalise] umask {value!r} must be octal digits, like \"022\"", "umask")
    mask = int(value, 8)
    if mask > 0o777:
        raise error(f"[normalise] umask {value!r} must be at most 777", "umask")
    return mask


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", list: "a list"}[kind]
