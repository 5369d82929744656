"""Recipes: a directory under ``recipes/`` with ``recipe.toml``, a Dockerfile and context.

This is the build part of the recipe format; bases, package sets, downloads and git
inputs join it with the lock. Every error names the file and, where it can, the line.

    # recipes/hello/recipe.toml
    description = "A greeting on busybox"
    dockerfile = "Dockerfile"          # relative to the recipe directory
    context = "."                      # relative to the recipe directory
    target = ""                        # a stage name, or "" for the last stage
    platforms = ["linux/amd64"]        # empty: the builder's own platform
    source_date_epoch = 1700000000     # integer seconds; required
    network = "none"                   # default | none | host, for RUN steps

    [args]                             # build args, --build-arg NAME=value
    GREETING = "hello"

    [labels]                           # image labels
    "org.opencontainers.image.title" = "hello"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import RecipeError

RECIPE_FILE = "recipe.toml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


@dataclass(frozen=True)
class Recipe:
    name: str
    directory: Path
    dockerfile: Path
    context: Path
    source_date_epoch: int
    description: str = ""
    target: str = ""
    platforms: tuple[str, ...] = ()
    network: str = "default"
    args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.directory / RECIPE_FILE


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """Best-effort line number of a key (in a table) or of a table header."""
    lines = text.splitlines()
    current: str | None = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1).strip().strip('"')
            if key is None and current == table:
                return number
            continue
        if key is not None and current == table:
            m = re.match(r'^("?)([^"=]+?)\1\s*=', stripped)
            if m and m.group(2).strip() == key:
                return number
    return None


class _Reader:
    """Takes values out of one parsed TOML table, reporting errors with lines."""

    def __init__(self, data: dict[str, Any], text: str, file: Path, table: str | None = None):
        self.data = dict(data)
        self.text = text
        self.file = file
        self.table = table

    def error(self, message: str, key: str | None = None) -> RecipeError:
        line = (
            _line_of(self.text, self.table, key) if key else _line_of(self.text, self.table, None)
        )
        return RecipeError(message, file=str(self.file), line=line)

    def take(
        self, key: str, kind: type | tuple[type, ...], default: Any = ..., what: str = ""
    ) -> Any:
        if key not in self.data:
            if default is ...:
                where = f"[{self.table}] " if self.table else ""
                raise self.error(f"{where}missing required key {key!r}{what}")
            return default
        value = self.data.pop(key)
        if kind is int and isinstance(value, bool):
            raise self.error(f"{key!r} must be an integer, not a boolean", key)
        if not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            got = _TYPE_NAMES.get(type(value).__name__, type(value).__name__)
            raise self.error(f"{key!r} must be {_article(names)}, not {got}", key)
        return value

    def string_table(self, key: str) -> dict[str, str]:
        table = self.take(key, dict, {})
        out: dict[str, str] = {}
        for k, v in table.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                line = _line_of(self.text, key, k)
                raise RecipeError(
                    f"[{key}] {k!r} must be a string or number", file=str(self.file), line=line
                )
            out[k] = str(v)
        return out

    def finish(self) -> None:
        for key in self.data:
            raise self.error(f"unknown key {key!r}", key)


_TYPE_NAMES = {
    "int": "integer",
    "str": "string",
    "list": "list",
    "dict": "table",
    "bool": "boolean",
}


def _article(name: str) -> str:
    name = " or ".join(_TYPE_NAMES.get(n, n) for n in name.split(" or "))
    return ("an " if name[:1] in "aeiou" else "a ") + name


def load_recipe(directory: Path) -> Recipe:
    """Read and check ``directory/recipe.toml``."""
    directory = Path(directory)
    file = directory / RECIPE_FILE
    if not directory.is_dir():
        raise RecipeError(f"no recipe directory {directory}")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"missing {RECIPE_FILE}", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read: {exc}", file=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise RecipeError(
            f"invalid TOML: {message}", file=str(file), line=int(m.group(1)) if m else None
        ) from None

    r = _Reader(data, text, file)
    name = directory.name
    if not NAME_RE.match(name):
        raise RecipeError(
            f"recipe name {name!r} must be lower-case letters, digits, '.', '_' or '-'",
            file=str(file),
        )
    description = r.take("description", str, "")
    dockerfile_rel = r.take("dockerfile", str, "Dockerfile")
    context_rel = r.take("context", str, ".")
    target = r.take("target", str, "")
    platforms = r.take("platforms", list, [])
    for p in platforms:
        if not isinstance(p, str) or not PLATFORM_RE.match(p):
            raise r.error(f"platform {p!r} must look like os/arch or os/arch/variant", "platforms")
    epoch = r.take("source_date_epoch", int, what=" (integer seconds since 1970)")
    if epoch < 0:
        raise r.error("source_date_epoch must not be negative", "source_date_epoch")
    network = r.take("network", str, "default")
    if network not in ("default", "none", "host"):
        raise r.error(f"network {network!r} must be default, none or host", "network")
    args = r.string_table("args")
    labels = r.string_table("labels")
    r.finish()

    context = _inside(directory, context_rel, "context", r)
    dockerfile = _inside(directory, dockerfile_rel, "dockerfile", r)
    if not context.is_dir():
        raise r.error(f"context {context_rel!r} is not a directory", "context")
    if not dockerfile.is_file():
        raise r.error(f"Dockerfile {dockerfile_rel!r} does not exist", "dockerfile")
    return Recipe(
        name=name,
        directory=directory,
        dockerfile=dockerfile,
        context=context,
        source_date_epoch=epoch,
        description=description,
        target=target,
        platforms=tuple(platforms),
        network=network,
        args=args,
        labels=labels,
    )


def _inside(directory: Path, rel: str, key: str, r: _Reader) -> Path:
    path = (directory / rel).resolve()
    root = directory.resolve()
    if path != root and root not in path.parents:
        raise r.error(f"{key} {rel!r} points outside the recipe directory", key)
    return path


def find_recipes(recipes_dir: Path, names: list[str] | None = None) -> list[Recipe]:
    """Load the named recipes, or every recipe under recipes_dir, sorted by name."""
    recipes_dir = Path(recipes_dir)
    if names:
        out = []
        for name in names:
            directory = Path(name) if ("/" in name or name == ".") else recipes_dir / name
            if not (directory / RECIPE_FILE).is_file() and not directory.is_dir():
                raise RecipeError(f"no recipe named {name!r} (looked in {directory})")
            out.append(load_recipe(directory))
        return out
    if not recipes_dir.is_dir():
        raise RecipeError(f"no recipes directory {recipes_dir}")
    dirs = sorted(p.parent for p in recipes_dir.glob(f"*/{RECIPE_FILE}"))
    if not dirs:
        raise RecipeError(f"no recipes found under {recipes_dir}")
    return [load_recipe(d) for d in dirs]
