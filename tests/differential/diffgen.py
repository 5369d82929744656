"""Seeded random inputs for the differential tests: build contexts, .dockerignore files
and Dockerfiles, each from its own ``random.Random(seed)`` so a seed names one case.

Everything is small on purpose (a few dozen files of a few bytes, a busybox or scratch
base) so that one case builds in about a second with repro and with buildx.
"""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path

# Names chosen to hit what path code gets wrong: spaces, dots, unicode (NFC and not),
# characters that are operators somewhere (glob, regexp, shell, Dockerfile), a BOM.
NAMES = [
    "a",
    "b",
    "c.txt",
    "app.log",
    "x.tmp",
    "with space",
    "two  spaces",
    "trail.",
    ".hidden",
    "..dots",
    "é",
    "nai\u0308ve.txt",
    "日本語",
    "☺",
    "x{2}",
    "xx1",
    "a|b",
    "[x]",
    "zz-",
    "zzz]",
    "-dash",
    "UPPER",
    "node_modules",
    "build",
    "src",
    "keep.me",
    "a*b",
    "q?",
    "\ufeffbom",
    "back\\slash",
    "#hash",
    "!bang",
    "tilde~",
    "dollar$x",
    "paren(1)",
    "plus+",
    "caret^",
    "comma,x",
    "not\udcffutf8",  # the byte 0xff: file names are bytes
]
FILE_MODES = [0o644, 0o644, 0o644, 0o755, 0o600, 0o640, 0o444, 0o700, 0o4755, 0o2755, 0o000]
DIR_MODES = [0o755, 0o755, 0o755, 0o700, 0o775, 0o1777, 0o2755, 0o555]


@dataclass
class Context:
    """A generated build context: what was made, for reproducers."""

    entries: dict[str, str] = field(default_factory=dict)  # path -> kind description

    def describe(self) -> str:
        return "\n".join(f"  {path!r}: {kind}" for path, kind in sorted(self.entries.items()))


def _name(rng: random.Random, taken: set[str]) -> str:
    base = rng.choice(NAMES)
    name = base
    while name in taken:
        name = f"{base}{rng.randrange(10)}"
    taken.add(name)
    return name


def make_context(rng: random.Random, root: Path, files: int = 40, max_depth: int = 5) -> Context:
    """Fill ``root`` with about ``files`` entries: files of several modes, dirs (some
    empty, some deep), symlinks (relative, absolute, dangling, to dirs), hard links,
    fifos and sockets."""
    ctx = Context()
    root.mkdir(parents=True, exist_ok=True)
    dirs: list[str] = [""]
    taken: dict[str, set[str]] = {"": set()}
    regular: list[str] = []
    made_dirs: list[tuple[str, int]] = []
    for _ in range(files):
        parent = rng.choice(dirs)
        depth = parent.count("/") + 1 if parent else 0
        name = _name(rng, taken[parent])
        rel = f"{parent}/{name}" if parent else name
        path = root / rel
        roll = rng.random()
        if roll < 0.25 and depth < max_depth:
            path.mkdir()
            mode = rng.choice(DIR_MODES)
            made_dirs.append((rel, mode))
            dirs.append(rel)
            taken[rel] = set()
            ctx.entries[rel] = f"dir {mode:o}"
            if rng.random() < 0.3:  # a chain of single dirs: a deep tree
                first = _name(rng, taken[rel])
                chain = f"{rel}/{first}"
                for _ in range(rng.randrange(1, 4)):
                    chain += "/" + rng.choice(["d", "deep", "é", "x y"])
                (root / chain).mkdir(parents=True, exist_ok=True)
                (root / chain / "leaf").write_bytes(rng.randbytes(rng.randrange(1, 20)))
                ctx.entries[chain + "/leaf"] = "file 644"
        elif roll < 0.35:
            target = rng.choice(
                ["../" * depth + (rng.choice(regular) if regular else "a"), "/etc/passwd",
                 "missing", ".", "..", rng.choice(NAMES)]
            )
            os.symlink(target, path)
            ctx.entries[rel] = f"symlink -> {target!r}"
        elif roll < 0.37:
            # a fifo, or a socket (fsutil sends it as an empty file); a socket's path
            # must fit in sun_path
            if rng.random() < 0.5 or len(os.fsencode(path)) > 100:
                os.mkfifo(path, 0o640)
                ctx.entries[rel] = "fifo"
            else:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.bind(os.fsencode(path))
                ctx.entries[rel] = "socket"
        elif roll < 0.42 and regular:
            src = rng.choice(regular)
            os.link(root / src, path)
            ctx.entries[rel] = f"hardlink to {src!r}"
        else:
            path.write_bytes(rng.randbytes(rng.randrange(0, 64)))
            mode = rng.choice(FILE_MODES)
            os.chmod(path, mode)
            regular.append(rel)
            ctx.entries[rel] = f"file {mode:o}"
    for rel, mode in reversed(made_dirs):  # children first: a 555 dir must stay writable
        os.chmod(root / rel, mode)
    return ctx


# ----------------------------------------------------------------------------------------
# .dockerignore


def _segments(ctx: Context) -> list[list[str]]:
    return [p.split("/") for p in ctx.entries]


def _globify(rng: random.Random, name: str) -> str:
    """A pattern for one path segment built from ``name`` with Docker's operators."""
    out = []
    for ch in name:
        roll = rng.random()
        if ch in "*?[]\\" and roll < 0.6:
            out.append("\\" + ch)  # escaped: matches the character itself
        elif roll < 0.06:
            out.append("?")
        elif roll < 0.1:
            lo = min(ch, "a")
            out.append(f"[{lo}-{max(ch, 'z')}]" if ch not in "\\-]^" else "?")
        elif roll < 0.12:
            out.append(f"[^{'q' if ch != 'q' else 'r'}]")
        elif roll < 0.13:
            out.append(f"[!{'q' if ch != 'q' else 'r'}]")
        elif roll < 0.15 and ch not in "\\-]^[":
            out.append(f"[{ch}\\-]")
        elif roll < 0.17:
            out.append(ch + "{1}")  # a Go regexp count, since patternmatcher passes "{"
        else:
            out.append(ch)
    text = "".join(out)
    roll = rng.random()
    if roll < 0.15:
        cut = rng.randrange(len(text) + 1)
        text = text[:cut] + "*"
    elif roll < 0.2:
        text = "*" + text[rng.randrange(len(text) + 1) :]
    return text


SPECIAL_LINES = [
    "*.log|*.tmp",  # alternation (issue 11)
    "x{2}*",  # counted repetition (issue 11)
    "zzz*[a-]",  # accepted by filepath.Match's partial check (issue 11)
    "zzz*[]a]",
    "**/*.txt",
    "**",
    "!**/keep.me",
    "*/",
    "a{,2}",
    "}x{",
    "node_modules/**",
    "/build",
    "./src/../src",
    "*[[:alpha:]]",
    "\\#hash",
    "\\!bang",
]


def make_dockerignore(rng: random.Random, ctx: Context) -> str:
    """A .dockerignore for ``ctx``: patterns derived from its paths, exceptions,
    comments, blank lines, padding, a BOM (first line or later), CRLF line ends."""
    segs = _segments(ctx) or [["a"]]
    lines: list[str] = []
    for _ in range(rng.randrange(2, 9)):
        roll = rng.random()
        if roll < 0.1:
            lines.append("# " + rng.choice(NAMES))
            continue
        if roll < 0.15:
            lines.append(rng.choice(["", "   ", "\t"]))
            continue
        if roll < 0.3:
            line = rng.choice(SPECIAL_LINES)
        else:
            parts = rng.choice(segs)
            parts = parts[: rng.randrange(1, len(parts) + 1)]
            pats = [_globify(rng, p) for p in parts]
            if rng.random() < 0.2:
                pats.insert(0, "**")
            if rng.random() < 0.1:
                pats.append("**")
            line = "/".join(pats)
            if rng.random() < 0.15:
                line = "/" + line
            if rng.random() < 0.1:
                line += "/"
            if rng.random() < 0.08:
                other = _globify(rng, rng.choice(rng.choice(segs)))
                line = f"{line}|{other}"
        if rng.random() < 0.25:
            line = "!" + rng.choice(["", " "]) + line
        if rng.random() < 0.1:
            line = rng.choice(["  ", "\t"]) + line + rng.choice([" ", "\t "])
        lines.append(line)
    newline = rng.choice(["\n", "\n", "\r\n"])
    text = newline.join(lines) + rng.choice([newline, ""])
    if rng.random() < 0.2:
        text = "\ufeff" + text
    if rng.random() < 0.15 and len(lines) > 1:
        index = rng.randrange(1, len(lines))
        lines[index] = "\ufeff" + lines[index].lstrip("!")
        text = newline.join(lines) + newline
    return text


# ----------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class DockerfileCase:
    """A generated Dockerfile as blocks (each a list of lines, without line ends)."""

    blocks: list[list[str]]
    newline: str = "\n"
    bom: bool = False
    broken: str = ""  # what was broken on purpose ("" when BuildKit should build it)

    def text(self, blocks: list[list[str]] | None = None) -> str:
        lines = [line for block in (self.blocks if blocks is None else blocks) for line in block]
        body = self.newline.join(lines) + self.newline
        return ("\ufeff" if self.bom else "") + body


def make_dockerfile(rng: random.Random, base: str) -> DockerfileCase:
    """A multi-stage Dockerfile on ``base`` (a tag in the local registry) and scratch
    covering parser directives, both escape characters, continuations with comments and
    empty lines, heredocs (with lines starting with FROM), ARG expansion forms, stage
    names and indexes, COPY --from, RUN --mount=from=, ONBUILD, CRLF and a BOM."""
    esc = rng.choice(["\\", "\\", "`"])
    blocks: list[list[str]] = []
    directives: list[str] = []
    if esc == "`":
        directives.append(rng.choice(["# escape=`", "#escape=`", "# ESCAPE = `"]))
    elif rng.random() < 0.3:
        directives.append("# escape=\\")
    if rng.random() < 0.3:
        directives.append("# unknown-directive=ignored")
    if directives:
        blocks.append(directives)
    blocks.append(["ARG BASE=" + base, "ARG UNSET", "ARG SETV=set"])
    base_ref = rng.choice(
        [base, "${BASE}", "$BASE", "${UNSET:-" + base + "}", "${BASE:-nothing}",
         "${SETV:+" + base + "}"]
    )
    first = rng.choice(["s0", "Build-Stage", "base"])
    blocks.append([f"FROM {base_ref} {rng.choice(['AS', 'as'])} {first}"])
    blocks.append(["ARG V=value", "RUN echo ${V:-d} ${V:+set} ${NOPE:-dflt} $V > /args"])
    blocks.append(
        [
            f"RUN echo one > /cont {esc}",
            "    # a comment inside the continuation",
            "",
            f"  && echo two >> /cont {esc}",
            "",
            "  && echo three >> /cont",
        ]
    )
    if rng.random() < 0.7:
        blocks.append(["COPY <<EOF /heredoc.txt", "line1", "FROM undeclared-image", "  x", "EOF"])
    if rng.random() < 0.7:
        blocks.append(["RUN cat <<EOF > /run-heredoc", "FROM inside-run", "EOF"])
    if rng.random() < 0.5:
        blocks.append(["ONBUILD RUN echo triggered > /onbuild"])
    blocks.append(["FROM scratch AS data", "COPY <<EOF /data.txt", "data", "EOF"])
    second = rng.choice(["final", "out"])
    from_first = rng.choice([first, first.upper(), "0"])
    # BuildKit lower-cases a stage's name, but not a FROM naming it: only the lower-case
    # spelling finds the stage (FROM Build-Stage is an image, and an invalid name)
    blocks.append([f"FROM {rng.choice([first.lower(), '${BASE}'])} AS {second}"])
    blocks.append(["COPY . /ctx/"])
    blocks.append([f"COPY --from={from_first} /cont /args /from-first/"])
    blocks.append([f"COPY --from={rng.choice(['data', '1'])} /data.txt /data.txt"])
    blocks.append(
        # a mount takes a stage by name only: from=1 would be the image "1"
        [f"RUN --mount=from={rng.choice(['data', 'data'])},target=/m cp /m/data.txt /mounted"]
    )
    if rng.random() < 0.5:  # an image (the base) named outside FROM: pinned by repro too
        blocks.append(
            rng.choice(
                [
                    [f"COPY --from={base} /bin/busybox /bb"],
                    [f"COPY {esc}", f"  --from={base} {esc}", "  /bin/busybox /bb"],
                    [f"RUN --mount=type=bind,from={base},target=/b ls /b/bin > /ls"],
                    [f"RUN --mount=from={base},target=/b {esc}", "  ls /b/etc > /ls"],
                ]
            )
        )
    if rng.random() < 0.4:
        blocks.append(["# a comment between instructions", ""])
    if rng.random() < 0.3:
        blocks.append([f"ENV E1=a {esc}", "    E2=b"])
    case = DockerfileCase(blocks, rng.choice(["\n", "\n", "\r\n"]), rng.random() < 0.25)
    if rng.random() < 0.2:
        _break(rng, case, directives)
    return case


# Mistakes BuildKit refuses: repro must refuse each too, as bad input naming the line.
BREAKAGES = {
    "unknown instruction": ["FOO bar"],
    "FROM with two words": ["FROM scratch extra"],
    "bad substitution": ["ARG A=${B"],
    "ONBUILD FROM": ["ONBUILD FROM scratch"],
    "unterminated heredoc": ["COPY <<EOF /x", "no terminator"],
}


FAILING_RUN = "failing RUN"  # builds, and a step fails: both show Dockerfile:N


def _break(rng: random.Random, case: DockerfileCase, directives: list[str]) -> None:
    kind = rng.choice([*BREAKAGES, "invalid escape directive", FAILING_RUN, FAILING_RUN])
    case.broken = kind
    if kind == FAILING_RUN:
        esc = "`" if any("`" in d for d in directives) else "\\"
        case.blocks.append(
            rng.choice(
                [
                    ["RUN echo failing && exit 3"],
                    [f"RUN echo failing {esc}", "  # a comment", f"  && false {esc}", "  && true"],
                    ["RUN <<EOF", "echo in a heredoc", "exit 4", "EOF"],
                ]
            )
        )
        return
    if kind == "invalid escape directive":
        if directives:
            case.blocks[0] = ["# escape=x"]
        else:
            case.blocks.insert(0, ["# escape=x"])
        return
    lines = BREAKAGES[kind]
    if kind == "unterminated heredoc":
        case.blocks.append(lines)  # at the end: nothing can terminate it
        return
    first_from = next(i for i, b in enumerate(case.blocks) if b[0].startswith("FROM "))
    case.blocks.insert(rng.randrange(first_from + 1, len(case.blocks) + 1), lines)
