"""The image references a Dockerfile reads, and rewriting them to locked digests.

Images are named by ``FROM``, ``COPY/ADD --from=``, ``RUN --mount=…,from=`` and the
``# syntax=`` parser directive (the frontend image). A name
that is an earlier stage (or a stage index) is not an image. ``$VAR`` in a ``FROM`` is
expanded from the ``ARG`` defaults before the first ``FROM`` (and from given args).
Rendering replaces each image name in place, so line numbers stay the same and every
other byte (CRLF line ends, a byte-order mark) is the user's.

Instructions are found as BuildKit's parser finds them (:func:`instructions`): after
the parser directives and a byte-order mark, with the ``# escape=`` character for
continuations, skipping comment and blank lines inside a continuation, and never inside
a heredoc's body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from repro.errors import RecipeError

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$", re.ASCII)
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_BOM = "\ufeff"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ImageUse:
    """One place a Dockerfile names an image."""

    line: int  # 1-based line of the token
    start: int  # offset of the token in that line (a first-line BOM counts)
    end: int
    written: str  # the token as written
    image: str  # after ARG expansion
    instruction: str  # FROM, COPY, ADD, RUN


@dataclass(frozen=True)
class Instruction:
    """One instruction as BuildKit's parser sees it."""

    line: int  # 1-based line where it starts
    lines: tuple[int, ...]  # the physical lines it is made of (no comments, no heredocs)
    text: str  # those lines joined, continuation characters removed


def _physical(text: str) -> list[str]:
    """The lines as BuildKit reads them: split at LF, with one CR before the LF dropped
    (the text keeps both; renders write the user's bytes back)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def directives(text: str) -> tuple[dict[str, tuple[int, str]], int]:
    """The parser directives (lower-case name -> (line, value)) and how many lines they
    take. They are read, after a byte-order mark, while each line is one; the first
    other line (a comment, a blank line, an instruction, a directive BuildKit does not
    know) ends them."""
    found: dict[str, tuple[int, str]] = {}
    count = 0
    for number, raw in enumerate(_physical(text), 1):
        line = raw.removeprefix(_BOM) if number == 1 else raw
        m = _DIRECTIVE.match(line.lstrip(" \t"))
        if not m:
            break
        name = m.group(1).lower()
        if name not in _KNOWN_DIRECTIVES:
            break
        if name in found:
            raise RecipeError(f"only one {name} parser directive can be used", line=number)
        found[name] = (number, m.group(2))
        count = number
    return found, count


def escape_char(text: str, file: Path | str = "Dockerfile") -> str:
    """The escape character: a backslash unless ``# escape=`` says a backtick."""
    try:
        found, _ = directives(text)
    except RecipeError as exc:
        raise RecipeError(exc.message, file=str(file), line=exc.line) from None
    if "escape" not in found:
        return "\\"
    line, value = found["escape"]
    if value not in ("`", "\\"):
        raise RecipeError(
            f"invalid escape token {value!r} does not match ` or \\", file=str(file), line=line
        )
    return value


def _shell_words(line: str) -> list[str]:
    """Words split at blanks, quotes kept (as BuildKit's raw-quotes lexer finds them)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    for ch in line:
        if quote:
            word.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            word.append(ch)
            quote = ch
        elif ch in " \t":
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    return words


def _heredocs(line: str) -> list[tuple[str, bool]]:
    """The heredocs a RUN/COPY/ADD line opens: (terminator, leading tabs stripped)."""
    out = []
    for word in _shell_words(line):
        m = _HEREDOC_WORD.match(word)
        if not m or not m.group(3):
            continue
        name = m.group(3)
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
            name = name[1:-1]
        out.append((name, m.group(2) == "-"))
    return out


def _can_hold_heredocs(line: str) -> bool:
    """RUN, COPY and ADD (also after ONBUILD) in shell form open heredocs; the JSON form
    does not."""
    words = line.split(None, 1)
    if words and words[0].upper() == "ONBUILD":
        words = words[1].split(None, 1) if len(words) > 1 else []
    if not words or words[0].upper() not in _HEREDOC_INSTRUCTIONS:
        return False
    rest = words[1] if len(words) > 1 else ""
    try:
        value = json.loads(rest)
    except ValueError:
        return True
    return not (isinstance(value, list) and all(isinstance(v, str) for v in value))


def instructions(text: str, file: Path | str = "Dockerfile") -> list[Instruction]:
    """Every instruction, split as BuildKit's parser splits them.

    A byte-order mark at the start is dropped; directives, comments and blank lines are
    skipped; a line ending in the escape character (blanks after it allowed) continues
    on the next line, skipping comment and blank lines in between; the bodies of the
    heredocs that a RUN, COPY or ADD opens are not instructions (a line starting with
    ``FROM`` in one is content).
    """
    escape = escape_char(text, file)
    _, skip = directives(text)
    lines = _physical(text)
    lines[0] = lines[0].removeprefix(_BOM)
    continued = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    i = skip
    while i < len(lines):
        first = lines[i].lstrip(" \t")
        start = i + 1
        i += 1
        if not first or first.startswith("#"):
            continue
        used = [start]
        parts = [continued.sub("", first)]
        ended = not continued.search(first)
        while not ended and i < len(lines):
            raw = lines[i]
            i += 1
            if raw.lstrip(" \t").startswith("#") or not raw.strip(" \t"):
                continue
            used.append(i)
            ended = not continued.search(raw)
            parts.append(continued.sub("", raw))
        joined = "".join(parts)
        if "<<" in joined and _can_hold_heredocs(joined):
            for name, chomp in _heredocs(joined):
                while i < len(lines):
                    body = lines[i]
                    i += 1
                    if (body.lstrip("\t") if chomp else body) == name:
                        break
                else:
                    raise RecipeError("unterminated heredoc", file=str(file), line=start)
        out.append(Instruction(start, tuple(used), joined))
    return out


def expand(word: str, args: Mapping[str, str], escape: str = "\\") -> str:
    """``word`` with quotes, escapes and ``$V``, ``${V}``, ``${V:-x}``, ``${V-x}``,
    ``${V:+x}``, ``${V+x}``, ``${V:?x}``, ``${V?x}`` processed as BuildKit's shell lexer
    does for ``FROM``. A bare ``$V`` or ``${V}`` that is not set raises KeyError(V)."""
    out: list[str] = []
    i, n = 0, len(word)
    quote = ""
    while i < n:
        ch = word[i]
        if ch == escape and quote != "'" and i + 1 < n:
            out.append(word[i + 1])
            i += 2
        elif ch in "'\"" and quote in ("", ch):
            quote = "" if quote else ch
            i += 1
        elif ch == "$" and quote != "'" and i + 1 < n:
            value, i = _variable(word, i + 1, args, escape)
            out.append(value)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _variable(word: str, i: int, args: Mapping[str, str], escape: str) -> tuple[str, int]:
    """The value of the variable reference after the ``$`` at ``word[i-1]``, and the end."""
    if word[i] != "{":
        m = _NAME.match(word, i)
        if not m:
            return "$", i
        if m.group() not in args:
            raise KeyError(m.group())
        return args[m.group()], m.end()
    m = _NAME.match(word, i + 1)
    if not m:
        raise ValueError(f"bad substitution in {word!r}")
    name, j = m.group(), m.end()
    if word.startswith("}", j):
        if name not in args:
            raise KeyError(name)
        return args[name], j + 1
    colon = word.startswith(":", j)
    j += colon
    op = word[j : j + 1]
    if op not in ("-", "+", "?"):
        raise ValueError(f"unsupported modifier in {word!r}")
    depth, k = 1, j + 1
    while k < len(word):  # the word runs to the matching "}"
        if word[k] == escape:
            k += 2
            continue
        if word.startswith("${", k):
            depth += 1
            k += 1
        elif word[k] == "}":
            depth -= 1
            if depth == 0:
                break
        k += 1
    if k >= len(word):
        raise ValueError(f"missing '}}' in {word!r}")
    inner = word[j + 1 : k]
    value = args.get(name)
    is_set = value is not None and (value != "" or not colon)
    if op == "-":
        result = value if is_set and value is not None else expand(inner, args, escape)
    elif op == "+":
        result = expand(inner, args, escape) if is_set else ""
    elif not is_set or value is None:
        raise ValueError(f"{name}: {inner or 'parameter null or not set'}")
    else:
        result = value
    return result, k + 1


def image_uses(
    text: str, file: Path | str = "Dockerfile", build_args: Mapping[str, str] | None = None
) -> list[ImageUse]:
    """Every image reference in a Dockerfile, in order."""
    uses: list[ImageUse] = []
    stages: set[str] = set()
    global_args: dict[str, str] = {}
    seen_from = False
    physical = text.split("\n")
    escape = escape_char(text, file)
    found, _ = directives(text)
    # `# syntax=IMAGE` names the frontend image, an image source too.
    if "syntax" in found:
        number, value = found["syntax"]
        value = value.split(" ", 1)[0]  # BuildKit takes the first word (the rest: options)
        pos = physical[number - 1].find(value, physical[number - 1].index("="))
        uses.append(ImageUse(number, pos, pos + len(value), value, value, "syntax"))

    def locate(ins: Instruction, token: str, after: int = 0) -> tuple[int, int]:
        # find the token on the physical lines of this instruction
        for n in ins.lines:
            pos = physical[n - 1].find(token, after if n == ins.line else 0)
            if pos >= 0:
                return n, pos
        return ins.line, 0

    for ins in instructions(text, file):
        words = ins.text.split()
        if not words:
            continue
        instr = words[0].upper()
        if instr == "ARG" and not seen_from:
            for word in words[1:]:
                name, eq, default = word.partition("=")
                if build_args and name in build_args:
                    global_args[name] = build_args[name]
                elif eq:
                    try:
                        global_args[name] = expand(default, global_args, escape)
                    except (KeyError, ValueError):
                        global_args[name] = default.strip('"').strip("'")
            continue
        if instr == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                raise RecipeError("FROM names no image", file=str(file), line=ins.line)
            token = rest[0]
            try:
                image = expand(token, global_args, escape)
            except KeyError as exc:
                raise RecipeError(
                    f"FROM {token}: ${exc.args[0]} has no default in an ARG before the first FROM",
                    file=str(file),
                    line=ins.line,
                ) from None
            except ValueError as exc:
                raise RecipeError(f"FROM {token}: {exc}", file=str(file), line=ins.line) from None
            if not image:
                raise RecipeError(
                    f"base name ({token}) should not be blank", file=str(file), line=ins.line
                )
            stage = rest[2].lower() if len(rest) >= 3 and rest[1].upper() == "AS" else ""
            # stage names are kept lower-cased, but BuildKit looks a FROM word up as
            # written: "FROM Build" after "AS build" names an image (and an invalid one)
            if image not in stages and image != "scratch":
                line, pos = locate(ins, token, len(words[0]))
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
                    # COPY/ADD --from take a stage index too; a mount's from= does not
                    # (BuildKit pulls an image named "1")
                    index = value.isdigit() and word.startswith("--from=")
                    if index or value.lower() in stages or value == "scratch":
                        continue
                    line, pos = locate(ins, value)
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
