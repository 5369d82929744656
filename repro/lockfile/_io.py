"""Reading and writing `repro.lock` files (atomically; keys in a stable order)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from repro.errors import RecipeError
from repro.lockfile._model import dump_toml
from repro.recipe import Recipe


def read_lock(recipe: Recipe) -> dict[str, Any] | None:
    file = recipe.lock_file
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc}", file=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        from repro.config import toml_error

        bad = toml_error(exc, file, text)
        raise RecipeError(
            f"{bad.message} (a lock is written by repro lock: run repro lock --update)",
            file=str(file),
            line=bad.line,
        ) from None
    return data


def dump_lock(data: Mapping[str, Any]) -> str:
    return dump_toml(data)


def write_lock(recipe: Recipe, data: Mapping[str, Any]) -> None:
    from repro.oci import atomic_write_bytes

    atomic_write_bytes(recipe.lock_file, dump_lock(data).encode())
