"""The image references a Dockerfile reads, and rewriting them to locked digests.

Images are named by ``FROM``, ``COPY/ADD --from=``, ``RUN --mount=…,from=`` and the
``# syntax=`` parser directive (the frontend image). A name
that is an earlier stage (or a stage index) is not an image. ``$VAR`` in a ``FROM`` is
expanded from the ``ARG`` defaults before the first ``FROM`` (and from given args).
Rendering replaces each image name in place, so line numbers stay the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from repro.errors import RecipeError

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class ImageUse:
    """One place a Dockerfile names an image."""

    line: int  # 1-based line of the token
    start: int  # offset of the token in that line
    end: int
    written: str  # the token as written
    image: str  # after ARG expansion
    instruction: str  # FROM, COPY, ADD, RUN


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, physical lines joined) for each instruction; comments dropped."""
    out: list[tuple[int, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            nxt = lines[i]
            if nxt.strip().startswith("#"):
                parts.append("\\")
                continue
            parts.append(nxt)
        out.append((start, "\n".join(parts)))
        i += 1
    return out


def _expand(value: str, args: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in args:
            raise KeyError(name)
        return args[name]

    return _VAR.sub(sub, value)


def image_uses(
    text: str, file: Path | str = "Dockerfile", build_args: Mapping[str, str] | None = None
) -> list[ImageUse]:
    """Every image reference in a Dockerfile, in order."""
    uses: list[ImageUse] = []
    stages: set[str] = set()
    global_args: dict[str, str] = {}
    seen_from = False
    physical = text.split("\n")
    # Parser directives: `# syntax=IMAGE` names the frontend image, an image source too.
    for number, raw in enumerate(physical, 1):
        m = re.match(r"^#\s*syntax\s*=\s*(\S+)\s*$", raw, re.IGNORECASE)
        if m:
            pos = m.start(1)
            uses.append(
                ImageUse(number, pos, pos + len(m.group(1)), m.group(1), m.group(1), "syntax")
            )
            continue
        if not re.match(r"^#\s*\w+\s*=", raw):
            break

    def locate(first: int, token: str, after: int = 0) -> tuple[int, int]:
        # find the token on the physical lines of this instruction
        for n in range(first - 1, len(physical)):
            pos = physical[n].find(token, after if n == first - 1 else 0)
            if pos >= 0:
                return n + 1, pos
        return first, 0

    for number, logical in _logical_lines(text):
        words = logical.replace("\\\n", " ").split()
        if not words:
            continue
        instr = words[0].upper()
        if instr == "ARG" and not seen_from:
            for word in words[1:]:
                name, _, default = word.partition("=")
                value = default.strip('"').strip("'")
                global_args[name] = (build_args or {}).get(name, value)
            continue
        if instr == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                raise RecipeError("FROM names no image", file=str(file), line=number)
            token = rest[0]
            try:
                image = _expand(token, global_args)
            except KeyError as exc:
                raise RecipeError(
                    f"FROM {token}: ${exc.args[0]} has no default in an ARG before the first FROM",
                    file=str(file),
                    line=number,
                ) from None
            stage = rest[2].lower() if len(rest) >= 3 and rest[1].upper() == "AS" else ""
            if image.lower() not in stages and image != "scratch":
                line, pos = locate(number, token, len(words[0]))
                uses.append(ImageUse(line, pos, pos + len(token), token, image, "FROM"))
            if stage:
                stages.add(stage)
            continue
        if instr in ("COPY", "ADD", "RUN"):
            for word in words[1:]:
                if not word.startswith("--"):
                    if instr != "RUN":
                        break
                    continue
                values: list[str] = []
                if word.startswith("--from="):
                    values.append(word[len("--from=") :])
                elif word.startswith("--mount="):
                    for part in word[len("--mount=") :].split(","):
                        key, _, val = part.partition("=")
                        if key == "from":
                            values.append(val)
                for value in values:
                    value = value.strip('"')
                    if value.isdigit() or value.lower() in stages or value == "scratch":
                        continue
                    line, pos = locate(number, value)
                    uses.append(ImageUse(line, pos, pos + len(value), value, value, instr))
    return uses


def render(text: str, uses: list[ImageUse], replace: Callable[[ImageUse], str]) -> str:
    """The Dockerfile with each use's token replaced by ``replace(use)``; lines kept."""
    lines = text.split("\n")
    by_line: dict[int, list[ImageUse]] = {}
    for use in uses:
        by_line.setdefault(use.line, []).append(use)
    for number, items in by_line.items():
        line = lines[number - 1]
        for use in sorted(items, key=lambda u: u.start, reverse=True):
            line = line[: use.start] + replace(use) + line[use.end :]
        lines[number - 1] = line
    return "\n".join(lines)
