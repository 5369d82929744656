"""The build's .dockerignore, checked before the build so that a bad pattern is one line
naming the file and line (exit 2), not a failed build.

Which file: BuildKit's Dockerfile frontend reads ``<Dockerfile name>.dockerignore``
beside the Dockerfile when there is one, else ``.dockerignore`` at the context's root.
The frontend parses it (moby/patternmatcher's ignorefile) and hands the patterns to the
client's file walk (repro.buildkit._walk), where Docker refuses them: a pattern
``filepath.Match`` calls malformed is refused when the walk starts; one that only Go's
regexp refuses (``[z-a]``) fails when the walk first evaluates it, so a build whose
walk never reaches it succeeds, as with buildx.
"""

from __future__ import annotations

import re
from pathlib import Path

from repro.buildkit import PatternMatcher, parse_dockerignore
from repro.errors import ContextError

_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def ignore_file(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file BuildKit would read for this context and Dockerfile, if any."""
    beside = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if beside.is_file():
        return beside
    root = context / ".dockerignore"
    return root if root.is_file() else None


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, pattern as the walk receives it) for each pattern line.

    The patterns reach the walk through the build definition, whose JSON encoding
    turns each byte that is not UTF-8 into U+FFFD: so does this.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ContextError(f"cannot read: {exc.strerror}", file=str(path)) from None
    text = _NOT_UTF8.sub("\ufffd", text)
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        # parsed as a second line: only the file's first line loses a byte-order mark
        first = line.removeprefix("\ufeff") if number == 1 else line
        for pattern in parse_dockerignore("\n" + first):
            out.append((number, pattern))
    return out


def check(context: Path, dockerfile: Path) -> None:
    """Refuse, naming ``.dockerignore:N``, a pattern Docker refuses before its walk."""
    path = ignore_file(context, dockerfile)
    if path is None:
        return
    for number, pattern in _lines(path):
        try:
            PatternMatcher([pattern])
        except ContextError as exc:
            raise ContextError(exc.message, file=str(path), line=number) from None


def locate(message: str, context: Path, dockerfile: Path) -> ContextError | None:
    """A build failure caused by a pattern the walk could not evaluate, as an input error
    naming the line of the ignore file it came from (None when it is not one)."""
    start = message.find("invalid pattern ")
    path = ignore_file(context, dockerfile)
    if start < 0 or path is None:
        return None
    for number, pattern in _lines(path):
        try:
            compiled = PatternMatcher([pattern]).patterns
        except ContextError:
            continue
        for p in compiled:  # the walk names a pattern as it was compiled (cleaned)
            shown = ("!" if p.exclusion else "") + p.text
            if message.startswith(f"invalid pattern {shown!r}: ", start):
                return ContextError(message[start:], file=str(path), line=number)
    return None
