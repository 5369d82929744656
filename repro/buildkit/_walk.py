r"""The file walk behind FileSync.DiffCopy: which entries of a local dir are sent, in what order.

BuildKit asks the client for a local directory with gRPC metadata ``include-patterns``,
``exclude-patterns`` (the parsed .dockerignore) and ``followpaths``.  The Go client wraps
the directory in tonistiigi/fsutil's ``NewFilterFS`` and sends whatever its ``Walk``
yields; this module reproduces that walk so the receiver sees the same entries in the same
order.  The semantics (and their quirks) follow, from the sources they were read in:

* moby/patternmatcher ``patternmatcher.go`` -- patterns are cleaned (``filepath.Clean``),
  a leading ``!`` marks an exception, each pattern is checked with
  ``filepath.Match(p, ".")`` (which reads only as far as the match goes: ``zzz*[a-]``
  passes, ``[a-]`` does not) and then compiled: ``**`` spans any number of segments,
  ``*`` and ``?`` never cross ``/``, and a pattern is one of four kinds (exact, prefix
  ``a/**``, suffix ``**/a``, regexp).  Later patterns win; a match on a parent dir is a
  match.  The regexp kind is built exactly as patternmatcher builds its Go regexp
  source, which is then translated to Python, so Go's regexp meanings carry over:
  ``|``, ``{`` and ``}`` are never escaped (a quirk of patternmatcher's escape table)
  and act as alternation and counted repetition, ``foo\bar`` holds a word boundary,
  ``[[:alpha:]]`` is a POSIX class, ``[!a]`` is not a negation, a byte that is not
  UTF-8 is U+FFFD, and a pattern Go's regexp rejects fails only when evaluated
  (Unicode classes ``\pL`` are the one thing not translated: they fail too).
* moby/patternmatcher ``ignorefile/ignorefile.go`` -- the .dockerignore reader.
* tonistiigi/fsutil ``filter.go`` -- the walk applies the include and exclude matchers
  with ``MatchesUsingParentResults`` (per-pattern results inherited from the parent
  dir), prunes a dir only when a cheap prefix test proves nothing below it can be sent,
  and sends the parent dirs of an entry lazily, just before the entry.
* tonistiigi/fsutil ``followlinks.go`` -- ``followpaths`` are resolved through symlinks
  into extra include patterns before the walk.
* tonistiigi/fsutil ``fs.go``/``stat.go``/``stat_unix.go`` -- ``filepath.WalkDir`` order
  (pre-order, names sorted bytewise), ``lstat`` only, hard links named by the first
  sent path with the same inode, ``os.FileMode`` bits with the socket bit cleared.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.errors import ContextError

__all__ = [
    "Entry",
    "MatchInfo",
    "Pattern",
    "PatternMatcher",
    "fsutil_stat_mode",
    "go_clean",
    "go_file_mode",
    "parse_dockerignore",
    "resolve_followpaths",
    "walk",
]

# ----------------------------------------------------------------------------------------
# Go's path helpers (Unix flavour)

# unicode.IsSpace: what Go's strings.TrimSpace strips (Python's str.strip also strips
# \x1c-\x1f, which Go keeps).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _trim_space(s: str) -> str:
    return s.strip(_GO_SPACE)


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on Unix: the shortest lexically equal path."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def _go_join(*elems: str) -> str:
    """Go's ``filepath.Join``: join the non-empty elements with ``/`` and clean."""
    parts = [e for e in elems if e]
    return go_clean("/".join(parts)) if parts else ""


def _go_dir(path: str) -> str:
    return go_clean(path[: path.rfind("/") + 1])


def _go_base(path: str) -> str:
    if path == "":
        return "."
    path = path.rstrip("/")
    if path == "":
        return "/"
    return path[path.rfind("/") + 1 :]


# ----------------------------------------------------------------------------------------
# filepath.Match (validation, and followpaths' wildcard components)
#
# Go's Match works on UTF-8 bytes and reports a malformed pattern only where it looks:
# each star-separated chunk is checked whole when it is tried, but a chunk that fails
# to match ends the match before the chunks after it are read.  So patternmatcher's
# check, ``filepath.Match(p, ".")``, refuses ``[a-]`` but accepts ``zzz*[a-]`` (the
# chunk ``zzz`` fails on "." first).  This is a port of that behaviour on bytes.


class _BadPattern(Exception):
    """filepath.ErrBadPattern."""


def _py_class(ranges: Sequence[tuple[int, int]], negated: bool) -> str:
    """A Python regex for a class of code point ranges (a negated class matches newline)."""
    if not ranges:  # e.g. only reversed ranges: a negated class takes any one character
        return "(?s:.)" if negated else "(?!)"
    body = "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges
    )
    return ("[^" if negated else "[") + body + "]"


def _class_char(cp: int) -> str:
    return f"\\U{cp:08x}"


_RUNE_ERROR = 0xFFFD


def _decode_rune(b: bytes, i: int) -> tuple[int, int]:
    """Go's utf8.DecodeRune at ``b[i]``: (code point, width); (RuneError, 1) if invalid."""
    lead = b[i]
    if lead < 0x80:
        return lead, 1
    width = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4
    if lead > 0xF4 or lead < 0xC2:
        return _RUNE_ERROR, 1
    try:
        return ord(b[i : i + width].decode("utf-8")), width
    except UnicodeDecodeError:
        return _RUNE_ERROR, 1


def _scan_chunk(p: bytes) -> tuple[bool, bytes, bytes]:
    """filepath's scanChunk: (leading star?, the chunk up to the next star, the rest)."""
    star = False
    while p[:1] == b"*":
        p = p[1:]
        star = True
    in_range = False
    i = 0
    while i < len(p):
        c = p[i]
        if c == 0x5C:  # backslash: skips the next byte
            if i + 1 < len(p):
                i += 1
        elif c == 0x5B:
            in_range = True
        elif c == 0x5D:
            in_range = False
        elif c == 0x2A and not in_range:
            return star, p[:i], p[i:]
        i += 1
    return star, p, b""


def _get_esc(chunk: bytes) -> tuple[int, bytes]:
    """filepath's getEsc: one possibly escaped character inside a class."""
    if not chunk or chunk[0] in b"-]":
        raise _BadPattern("syntax error in pattern")
    if chunk[0] == 0x5C:
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern("syntax error in pattern")
    r, n = _decode_rune(chunk, 0)
    if r == _RUNE_ERROR and n == 1:
        raise _BadPattern("syntax error in pattern")
    chunk = chunk[n:]
    if not chunk:
        raise _BadPattern("syntax error in pattern")
    return r, chunk


def _match_chunk(chunk: bytes, s: bytes) -> bytes | None:
    """filepath's matchChunk: the rest of ``s`` after ``chunk`` matched, or None.

    After the match has failed the chunk is still read to the end, for its syntax.
    """
    failed = False
    while chunk:
        failed = failed or not s
        c = chunk[0]
        if c == 0x5B:  # [
            r = 0
            if not failed:
                r, n = _decode_rune(s, 0)
                s = s[n:]
            chunk = chunk[1:]
            negated = chunk[:1] == b"^"
            if negated:
                chunk = chunk[1:]
            match = False
            count = 0
            while True:
                if chunk[:1] == b"]" and count > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == 0x2D:  # -
                    hi, chunk = _get_esc(chunk[1:])
                match = match or lo <= r <= hi
                count += 1
            failed = failed or match == negated
        elif c == 0x3F:  # ?
            if not failed:
                failed = s[0] == 0x2F
                s = s[_decode_rune(s, 0)[1] :]
            chunk = chunk[1:]
        else:
            if c == 0x5C:
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern("syntax error in pattern")
            if not failed:
                failed = chunk[0] != s[0]
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def _filepath_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)`` on Unix; raises _BadPattern where Go errs."""
    p = os.fsencode(pattern)
    s = os.fsencode(name)
    while p:
        star, chunk, p = _scan_chunk(p)
        if star and not chunk:
            return b"/" not in s  # a trailing star matches the rest of this segment
        t = _match_chunk(chunk, s)
        if t is not None and (not t or p):
            s = t
            continue
        if star:
            found = None
            i = 0
            while i < len(s) and s[i] != 0x2F:
                t = _match_chunk(chunk, s[i + 1 :])
                if t is not None:
                    if not p and t:
                        i += 1
                        continue
                    found = t
                    break
                i += 1
            if found is not None:
                s = found
                continue
        return False
    return not s


def _go_match(pattern: str, name: str) -> bool:
    """``filepath.Match`` with the error ignored, as fsutil's followlinks uses it."""
    try:
        return _filepath_match(pattern, name)
    except _BadPattern:
        return False


def _contains_wildcards(name: str) -> bool:
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 1
        elif ch in "*?[":
            return True
        i += 1
    return False


# ----------------------------------------------------------------------------------------
# Go's regexp (RE2 syntax, Perl flags), the subset patternmatcher's output can contain


class _RegexError(Exception):
    """What Go's regexp.Compile would reject (or what this translation does not support)."""


_PERL_CLASSES = {
    "d": ((0x30, 0x39),),
    "s": ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)),
    "w": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
}
_POSIX_CLASSES = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_C_ESCAPES = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_OCTAL = "01234567"
_MAX_RUNE = 0x10FFFF
_ANCHORS = frozenset({"^", r"\A", r"\Z", r"\b", r"\B"})


def _complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return out


def _unhex(c: str) -> int:
    return int(c, 16) if c and c in "0123456789abcdefABCDEF" else -1


def _re2_escape(s: str, i: int) -> tuple[int, int]:
    """Go regexp/syntax parseEscape at ``s[i] == "\\\\"``: (code point, end)."""
    n = len(s)
    if i + 1 >= n:
        raise _RegexError("trailing backslash at end of expression")
    c = s[i + 1]
    i += 2
    if c.isascii() and not c.isalnum():
        return ord(c), i  # escaped punctuation is itself
    if c in _OCTAL and (c == "0" or (i < n and s[i] in _OCTAL)):
        r = ord(c) - 0x30
        for _ in range(2):
            if i < n and s[i] in _OCTAL:
                r = r * 8 + ord(s[i]) - 0x30
                i += 1
        return r, i
    if c == "x" and i < n:
        if s[i] == "{":
            end = s.find("}", i + 1)
            digits = s[i + 1 : end] if end >= 0 else ""
            if digits and all(_unhex(d) >= 0 for d in digits) and int(digits, 16) <= _MAX_RUNE:
                return int(digits, 16), end + 1
        elif i + 1 < n and _unhex(s[i]) >= 0 and _unhex(s[i + 1]) >= 0:
            return int(s[i : i + 2], 16), i + 2
    if c in _C_ESCAPES:
        return _C_ESCAPES[c], i
    raise _RegexError(f"invalid escape sequence: \\{c}")


def _re2_class(s: str, i: int) -> tuple[str, int]:
    """Go regexp/syntax parseClass at ``s[i] == "["``: (Python regex, end)."""
    n = len(s)
    i += 1
    negated = i < n and s[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while first or i >= n or s[i] != "]":
        if i >= n:
            raise _RegexError("missing closing ]")
        first = False
        if s.startswith("[:", i):
            end = s.find(":]", i + 2)
            if end >= 0:
                name = s[i + 2 : end]
                posix = _POSIX_CLASSES.get(name.removeprefix("^"))
                if posix is None:
                    raise _RegexError(f"invalid character class range: [:{name}:]")
                ranges.extend(_complement(posix) if name.startswith("^") else posix)
                i = end + 2
                continue
        if s[i] == "\\" and i + 1 < n:
            if s[i + 1] in "pP":
                raise _RegexError("Unicode classes (\\p, \\P) are not supported")
            perl = _PERL_CLASSES.get(s[i + 1].lower())
            if perl is not None:
                ranges.extend(_complement(perl) if s[i + 1].isupper() else perl)
                i += 2
                continue
        lo, i = _re2_class_char(s, i)
        hi = lo
        if i + 1 < n and s[i] == "-" and s[i + 1] != "]":
            hi, i = _re2_class_char(s, i + 1)
            if hi < lo:
                raise _RegexError("invalid character class range")
        ranges.append((lo, hi))
    return _py_class(ranges, negated), i + 1


def _re2_class_char(s: str, i: int) -> tuple[int, int]:
    if s[i] == "\\":
        return _re2_escape(s, i)
    return ord(s[i]), i + 1


def _parse_int(s: str, i: int) -> tuple[int, int] | None:
    """Go regexp/syntax parseInt at ``s[i]``: (value or -1 when too big, end) or None."""
    n = len(s)
    if i >= n or not "0" <= s[i] <= "9":
        return None
    if s[i] == "0" and i + 1 < n and "0" <= s[i + 1] <= "9":
        return None  # leading zeros are not a count
    j = i
    while j < n and "0" <= s[j] <= "9":
        j += 1
    digits = s[i:j]
    return (int(digits) if len(digits) <= 8 else -1), j


def _parse_repeat(s: str, i: int) -> tuple[int, int, int] | None:
    """Go regexp/syntax parseRepeat at ``s[i] == "{"``: (min, max, end) or None when the
    text is not a count (then ``{`` is a literal).  max is -1 for ``{n,}``; min is -1
    when a number is too big."""
    got = _parse_int(s, i + 1)
    if got is None:
        return None
    lo, j = got
    if j >= len(s):
        return None
    if s[j] != ",":
        hi = lo
    else:
        j += 1
        if j >= len(s):
            return None
        if s[j] == "}":
            hi = -1
        else:
            got = _parse_int(s, j)
            if got is None:
                return None
            hi, j = got
            if hi < 0:
                lo = -1
    if j >= len(s) or s[j] != "}":
        return None
    return lo, hi, j + 1


_MAX_REPEAT = 1000


def _re2_to_python(s: str) -> str:
    """Translate the Go regexp ``s`` into an equivalent Python one (for ``re.ASCII``).

    Covers what patternmatcher can emit: literals, ``.``, ``^``, ``$``, groups,
    alternation ``|``, ``*``, ``+``, ``?``, counted repetition ``{n}``, ``{n,}``,
    ``{n,m}`` (each lazy with a trailing ``?``; a ``{`` that does not start a count is a
    literal), classes with ranges, POSIX and Perl classes, and RE2's escapes; raises
    _RegexError where Go's regexp.Compile fails.  Unicode classes (``\\pL``) are not
    supported and raise too.  The result is meant for ``re.search``: like Go's
    MatchString it is not anchored unless ``^`` says so.
    """
    # One frame per open group: the finished alternatives and the current concatenation.
    frames: list[tuple[list[str], list[str]]] = [([], [])]
    last_was_repeat = False
    i, n = 0, len(s)

    def repeat(suffix: str) -> None:
        atoms = frames[-1][1]
        if last_was_repeat:
            raise _RegexError("invalid nested repetition operator")
        if not atoms:  # nothing, or right after "(" or "|"
            raise _RegexError("missing argument to repetition operator")
        atom = atoms[-1]
        # Python refuses to repeat an anchor, Go does not: wrap those.
        atoms[-1] = f"(?:{atom}){suffix}" if atom in _ANCHORS else atom + suffix

    while i < n:
        c = s[i]
        atoms = frames[-1][1]
        if c in "*+?":
            q = c
            i += 1
            if i < n and s[i] == "?":
                q += "?"
                i += 1
            repeat(q)
            last_was_repeat = True
            continue
        if c == "{":
            counted = _parse_repeat(s, i)
            if counted is not None:
                lo, hi, end = counted
                if lo < 0 or lo > _MAX_REPEAT or hi > _MAX_REPEAT or 0 <= hi < lo:
                    raise _RegexError(f"invalid repeat count: {s[i:end]}")
                q = f"{{{lo}}}" if lo == hi else f"{{{lo},}}" if hi < 0 else f"{{{lo},{hi}}}"
                i = end
                if i < n and s[i] == "?":
                    q += "?"
                    i += 1
                repeat(q)
                last_was_repeat = True
                continue
            atoms.append(r"\{")
            i += 1
            last_was_repeat = False
            continue
        last_was_repeat = False
        if c == "\\":
            d = s[i + 1] if i + 1 < n else ""
            if d in ("A", "z", "b", "B"):
                atoms.append({"A": r"\A", "z": r"\Z", "b": r"\b", "B": r"\B"}[d])
                i += 2
            elif d == "Q":
                end = s.find(r"\E", i + 2)
                literal = s[i + 2 :] if end < 0 else s[i + 2 : end]
                atoms.extend(re.escape(ch) for ch in literal)
                i = n if end < 0 else end + 2
            elif d in ("C", "p", "P"):
                raise _RegexError(f"\\{d} is not supported")
            elif d.lower() in _PERL_CLASSES:
                perl = _PERL_CLASSES[d.lower()]
                atoms.append(_py_class(_complement(perl) if d.isupper() else perl, False))
                i += 2
            else:
                cp, i = _re2_escape(s, i)
                atoms.append(re.escape(chr(cp)))
        elif c == "[":
            cls, i = _re2_class(s, i)
            atoms.append(cls)
        elif c == "(":
            if s.startswith("(?", i):
                raise _RegexError("group flags are not supported")
            frames.append(([], []))
            i += 1
        elif c == "|":
            alternatives, current = frames[-1]
            alternatives.append("".join(current))
            current.clear()
            i += 1
        elif c == ")":
            if len(frames) == 1:
                raise _RegexError("unexpected )")
            alternatives, current = frames.pop()
            alternatives.append("".join(current))
            frames[-1][1].append(f"(?:{'|'.join(alternatives)})")
            i += 1
        elif c == "\ufffd":
            # Go matches text as UTF-8: U+FFFD also matches each byte that is not UTF-8
            # (a surrogate escape here)
            atoms.append("[\ufffd\udc80-\udcff]")
            i += 1
        else:
            atoms.append({".": ".", "^": "^", "$": r"\Z"}.get(c) or re.escape(c))
            i += 1
    if len(frames) > 1:
        raise _RegexError("missing closing )")
    alternatives, current = frames[0]
    return "|".join([*alternatives, "".join(current)])


# ----------------------------------------------------------------------------------------
# patterns

_EXACT, _PREFIX, _SUFFIX, _REGEXP, _BROKEN = range(5)
# What patternmatcher escapes before handing the pattern to Go's regexp.  Its table is
# meant to hold ".+()|{}$", but it is a bitmap of 8 bytes indexed by ``c % 8`` with bit
# ``c / 8``, and ``1 << (c / 8)`` is 0 in a byte for ``c >= 64``: so "|", "{" and "}"
# are never escaped and reach the regexp as alternation and counted repetition.
_REGEX_ESCAPED = set(".+()$")
_PATTERN_CHARS = set("*[]?^\\")  # fsutil's patternChars on Unix
MatchInfo = tuple[bool, ...]
"""Per-pattern "this pattern matched the dir" results, passed from a dir to its entries."""


def _docker_compile(p: str) -> tuple[int, str]:
    """patternmatcher's compile, exactly: the match kind and (for _REGEXP) the Go regexp.

    Like Docker's, this knows nothing of character classes: ``*``, ``?`` and escapes are
    rewritten inside them too, and Go's regexp parses whatever results.
    """
    kind = _EXACT
    out = ["^"]
    # Go's text/scanner, which reads the pattern, skips a byte-order mark at its start
    # (a later line of a .dockerignore keeps one): it is not part of the regexp.
    i, n, step = (1 if p.startswith("\ufeff") else 0), len(p), 0
    while i < n:
        ch = p[i]
        i += 1
        if ch == "*":
            if i < n and p[i] == "*":
                i += 1
                if i < n and p[i] == "/":
                    i += 1
                if i == n:
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        out.append(".*")
                        kind = _REGEXP
                else:
                    out.append("(.*/)?")
                    kind = _REGEXP
                if step == 0:
                    kind = _SUFFIX
            else:
                out.append("[^/]*")
                kind = _REGEXP
        elif ch == "?":
            out.append("[^/]")
            kind = _REGEXP
        elif ch in _REGEX_ESCAPED:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + p[i])
                i += 1
                kind = _REGEXP
            else:
                out.append("\\")
        elif ch in "[]":
            out.append(ch)
            kind = _REGEXP
        elif "\udc80" <= ch <= "\udcff":
            out.append("\ufffd")  # text/scanner reads a byte that is not UTF-8 as U+FFFD
        else:
            out.append(ch)
        step += 1
    if kind != _REGEXP:
        return kind, ""
    out.append("$")
    return kind, "".join(out)


class Pattern:
    """One compiled pattern: ``text`` is cleaned and has no ``!``; ``exclusion`` is the ``!``.

    ``match(path)`` says whether the pattern matches ``path`` itself (not its parents).  A
    pattern valid for filepath.Match but not for Go's regexp (``[z-a]``, ``foo\\main``)
    is accepted, and its ``match`` raises ContextError: patternmatcher compiles lazily, so
    the walk fails only if it ever evaluates the pattern.
    """

    __slots__ = ("text", "exclusion", "kind", "regex", "match")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        shown = ("!" if exclusion else "") + text
        try:
            _filepath_match(text, ".")  # patternmatcher.New's check
        except _BadPattern as exc:
            raise ContextError(f"invalid pattern {shown!r}: {exc}") from None
        self.kind, self.regex = _docker_compile(text)
        self.match: Callable[[str], bool]
        try:
            self.match = self._matcher()
        except (_RegexError, re.error) as exc:
            message = f"invalid pattern {shown!r}: {exc}"
            self.kind = _BROKEN

            def broken(path: str) -> bool:
                raise ContextError(message)

            self.match = broken

    def _matcher(self) -> Callable[[str], bool]:
        text = self.text
        if self.kind == _EXACT:

            def exact(path: str) -> bool:
                return path == text

            return exact
        if self.kind == _PREFIX:
            prefix = text[:-2]

            def prefix_match(path: str) -> bool:
                return path.startswith(prefix)

            return prefix_match
        if self.kind == _SUFFIX:
            # Go cuts two bytes: after a byte-order mark that is not "**" (text/scanner
            # skipped the mark when it chose the kind), and the rest rarely matches.
            suffix = os.fsdecode(os.fsencode(text)[2:])
            bare = suffix[1:] if suffix.startswith("/") else None

            def suffix_match(path: str) -> bool:
                return path.endswith(suffix) or path == bare

            return suffix_match
        # search, not match: with "|" the "^" anchors only the first alternative
        rx_search = re.compile(_re2_to_python(self.regex), re.ASCII).search

        def regexp_match(path: str) -> bool:
            return rx_search(path) is not None

        return regexp_match

    def without_trailing_glob(self) -> str:
        """fsutil's patternWithoutTrailingGlob: drop a trailing ``/**``, then ``/*``."""
        t = self.text
        t = t.removesuffix("/**")
        return t.removesuffix("/*")

    def __repr__(self) -> str:
        return f"Pattern({'!' if self.exclusion else ''}{self.text!r})"


def _parent_dirs(path: str) -> list[str]:
    """The parent dirs of a clean relative path, outermost first: a/b/c -> [a, a/b]."""
    parent = _go_dir(path)
    if parent == ".":
        return []
    parts = parent.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class PatternMatcher:
    """A list of .dockerignore-style patterns, as moby/patternmatcher's PatternMatcher.

    Each input pattern is whitespace-trimmed (empty ones are dropped), cleaned, and a
    leading ``!`` makes it an exception.  A path matches when the last pattern that
    matches it (or one of its parent dirs) is not an exception.  Invalid patterns raise
    ContextError.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        compiled: list[Pattern] = []
        for raw in patterns:
            p = _trim_space(raw)
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise ContextError('invalid pattern "!": an exception needs a pattern')
                p = p[1:]
            compiled.append(Pattern(p, exclusion))
        self.patterns: tuple[Pattern, ...] = tuple(compiled)
        self.has_exclusions = any(p.exclusion for p in compiled)
        # fsutil's onlyPrefixIncludes / onlyPrefixExcludeExceptions, and the prefixes
        # its SkipDir test compares against.
        self._prefixes: dict[bool, tuple[str, ...]] = {}
        self._only_prefix: dict[bool, bool] = {}
        for exclusion in (False, True):
            stripped = [p.without_trailing_glob() for p in compiled if p.exclusion == exclusion]
            self._prefixes[exclusion] = tuple(s + "/" for s in stripped)
            self._only_prefix[exclusion] = not any(_PATTERN_CHARS.intersection(s) for s in stripped)

    def __repr__(self) -> str:
        return f"PatternMatcher({list(self.patterns)!r})"

    def matches(self, path: str) -> bool:
        """Whether ``path`` (``/``-separated, relative) is matched: patternmatcher's
        ``MatchesOrParentMatches``, where a pattern matching any parent dir matches."""
        matched = False
        parents: list[str] | None = None
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            m = pat.match(path)
            if not m:
                if parents is None:
                    parents = _parent_dirs(path)
                m = any(map(pat.match, parents))
            if m:
                matched = not pat.exclusion
        return matched

    def match_with_parent(self, path: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """patternmatcher's ``MatchesUsingParentResults``, which fsutil's walk uses.

        ``parent`` is the MatchInfo returned for the parent dir (None for a top-level
        entry).  A pattern that matched the parent matches; a pattern that cannot change
        the result so far is not evaluated and is recorded as not matching.  This differs
        from :meth:`matches` for some exception orders (``["a/b", "!a"]`` keeps ``a/b``
        excluded here), and the walk must use this one to send what fsutil sends.
        """
        matched = False
        info: list[bool] = []
        for i, pat in enumerate(self.patterns):
            m = parent[i] if parent else False
            if not m:
                if pat.exclusion != matched:
                    info.append(False)
                    continue
                m = pat.match(path)
                if not m and not parent:
                    m = any(map(pat.match, _parent_dirs(path)))
            info.append(m)
            if m:
                matched = not pat.exclusion
        return matched, tuple(info)

    def includes_may_match_below(self, dir_path: str) -> bool:
        """False when no (non-exception) pattern can match anything inside ``dir_path``.

        fsutil's include-side SkipDir test: only when every pattern is a plain path
        (after dropping a trailing ``/**`` or ``/*``) can it prove that, by a prefix test.
        """
        if not self._only_prefix[False]:
            return True
        below = dir_path + "/"
        return any(p.startswith(below) for p in self._prefixes[False])

    def exceptions_may_match_below(self, dir_path: str) -> bool:
        """False when no ``!`` pattern can re-include anything inside the excluded dir.

        fsutil's exclude-side SkipDir test, with the same prefix-only restriction.
        """
        if not self.has_exclusions:
            return False
        if not self._only_prefix[True]:
            return True
        below = dir_path + "/"
        return any(p.startswith(below) for p in self._prefixes[True])


def parse_dockerignore(text: str) -> list[str]:
    """The patterns of a .dockerignore, as moby/patternmatcher's ``ignorefile.ReadAll``.

    A UTF-8 BOM is dropped; a line starting with ``#`` (before any trimming) is a
    comment; each other line is trimmed of leading and trailing whitespace and skipped
    when empty; a ``!`` prefix is kept and the rest is trimmed again; the pattern is
    cleaned (``filepath.Clean``) and one leading ``/`` removed.  ``"!"`` alone is kept (it
    is rejected by PatternMatcher, as Docker rejects it).
    """
    out: list[str] = []
    for index, line in enumerate(text.split("\n")):
        if line.endswith("\r"):
            line = line[:-1]
        if index == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = _trim_space(line)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = _trim_space(pattern[1:])
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


# ----------------------------------------------------------------------------------------
# followpaths


class _SymlinkResolver:
    """fsutil's symlinkResolver, reading only inside ``root``."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.resolved: set[str] = set()

    def _abs(self, rel: str) -> bytes | None:
        rel = go_clean(rel)
        if rel in (".", "/") or rel == ".." or rel.startswith("../"):
            return None  # the root itself, or outside it: never a symlink here
        try:
            return self.root + b"/" + os.fsencode(rel)
        except UnicodeError:
            return None

    def _lstat(self, path: bytes) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        except OSError as exc:
            raise ContextError(f"cannot read {os.fsdecode(path)!r}: {exc.strerror}") from exc

    def _list_dir(self, rel: str) -> list[str] | None:
        rel = go_clean(rel)
        if rel in (".", "/"):
            path = self.root
        else:
            found = self._abs(rel)
            if found is None:
                return None
            st = self._lstat(found)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return None
            path = found
        try:
            return [os.fsdecode(name) for name in os.listdir(path)]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ContextError(f"cannot read {os.fsdecode(path)!r}: {exc.strerror}") from exc

    def read_symlink(self, rel: str, allow_wildcard: bool) -> list[str] | None:
        base = _go_base(rel)
        if allow_wildcard and _contains_wildcards(base):
            parent = _go_dir(rel)
            names = self._list_dir(parent)
            if names is None:
                return None
            out: list[str] = []
            for name in names:
                if _go_match(base, name):
                    out.extend(self.read_symlink(_go_join(parent, name), False) or ())
            return out or None
        path = self._abs(rel)
        if path is None:
            return None
        st = self._lstat(path)
        if st is None or not stat.S_ISLNK(st.st_mode):
            return None
        link = go_clean(os.fsdecode(os.readlink(path)))
        if link.startswith("/"):
            return [link]
        return [_go_join("/", _go_join(_go_dir(rel), link))]

    def append(self, p: str) -> None:
        p = _go_join(".", p)
        current = "."
        while True:
            first, _, p = p.partition("/")
            current = _go_join(current, first)
            targets = self.read_symlink(current, True)
            if (p == "" or targets is not None) and current in self.resolved:
                return
            if targets is not None:
                self.resolved.add(current)
                for target in targets:
                    self.append(_go_join(target, p))
                return
            if p == "":
                self.resolved.add(current)
                return


def _dedupe_paths(paths: Sequence[str]) -> list[str] | None:
    """fsutil's dedupePaths: drop a path right below the previous kept one; None if "."."""
    out: list[str] = []
    last = ""
    for p in paths:
        if p == ".":
            return None
        if p.startswith(last + "/"):
            continue
        out.append(p)
        last = p
    return out


def resolve_followpaths(root: Path | str, followpaths: Sequence[str]) -> list[str] | None:
    """fsutil's ``FollowLinks``: the include patterns that ``followpaths`` stand for.

    Each path is looked up component by component; a component that is a symlink is kept
    as a pattern itself and its target (an absolute target is taken relative to the root,
    a relative one is resolved lexically and can't climb above the root) is followed in
    turn, with the rest of the path.  A component with wildcards (``*?[``) is matched
    against the dir's names and every matching symlink is followed.  Paths need not
    exist.  Returns the sorted, deduplicated patterns, or None when one of them is the
    root itself (then nothing is filtered).
    """
    return _follow_links(_resolve_root(root), followpaths)


def _follow_links(root: bytes, followpaths: Sequence[str]) -> list[str] | None:
    resolver = _SymlinkResolver(root)
    for p in followpaths:
        resolver.append(p)
    return _dedupe_paths(sorted(resolver.resolved, key=os.fsencode))


# ----------------------------------------------------------------------------------------
# the walk


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry the walk sends.

    ``path`` is relative to the root, ``/``-separated, without a leading ``./``.  ``st`` is
    its ``lstat``.  ``linkname`` is a symlink's target ("" for anything else).
    ``hardlink`` is what fsutil puts in ``Stat.linkname`` for a non-symlink: for a
    non-directory with more than one link, the path of the first entry this walk yielded
    with the same inode ("" for the first one and for everything else).  An entry that is
    neither a dir, a regular file nor a symlink (fifo, socket, device) is yielded too,
    as fsutil sends it; see :func:`fsutil_stat_mode` for its mode.

    ``empty_content`` is fsutil's quirk for a regular file its walk sends but its
    ``Open`` refuses: the walk matches with ``MatchesUsingParentResults``, ``Open`` with
    ``MatchesOrParentMatches``, and with some orders of ``!`` patterns they disagree
    (include ``["a/a*", "!a"]`` sends ``a/a``; ``Open("a/a")`` says it is filtered).
    fsutil's sender then swallows the error and BuildKit receives the file with no bytes;
    send none for it to receive the same.
    """

    path: str
    st: os.stat_result
    linkname: str
    is_dir: bool
    is_file: bool
    is_symlink: bool
    hardlink: str = ""
    empty_content: bool = False


@dataclass(slots=True)
class _Frame:
    """A dir being walked: its sorted entries and the state its entries inherit."""

    rel: str
    prefix: str
    entries: list[os.DirEntry[bytes]]
    inc: MatchInfo | None
    exc: MatchInfo | None
    emitted: bool
    dirent: os.DirEntry[bytes] | None
    index: int = 0


def _resolve_root(root: Path | str | bytes) -> bytes:
    """fsutil's NewFS: the root with symlinks resolved; it must be a directory."""
    raw = os.fsencode(root)
    try:
        real = os.path.realpath(raw, strict=True)
        st = os.stat(real)
    except OSError as exc:
        raise ContextError(
            f"build context {os.fsdecode(raw)!r} cannot be read: {exc.strerror}"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ContextError(f"build context {os.fsdecode(raw)!r} is not a directory")
    return real


def _name(entry: os.DirEntry[bytes]) -> bytes:
    return entry.name


def _list(path: bytes, rel: str, filtered_out: bool) -> list[os.DirEntry[bytes]]:
    """A dir's entries sorted bytewise by name, as Go's os.ReadDir returns them."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []  # gone since it was listed: fsutil skips it
    except PermissionError as exc:
        if filtered_out:
            return []  # fsutil ignores EACCES on a dir it does not send itself
        raise ContextError(
            f"cannot read {rel or '.'!r} in the build context: {exc.strerror}"
        ) from exc
    except OSError as exc:
        raise ContextError(
            f"cannot read {rel or '.'!r} in the build context: {exc.strerror}"
        ) from exc
    entries.sort(key=_name)
    return entries


def walk(
    root: Path | str,
    *,
    include_patterns: Sequence[str] = (),
    exclude_patterns: Sequence[str] = (),
    followpaths: Sequence[str] = (),
) -> Iterator[Entry]:
    """The entries fsutil's filtered walk sends for ``root``, in its order.

    Depth-first pre-order, the root itself omitted, each dir's entries sorted bytewise by
    name (so ``a``, ``a/b``, ``a.txt``).  Symlinks are never followed.  Patterns are
    checked (ContextError) and followpaths resolved before this returns; the dirs are
    read as the iterator is consumed.

    * ``exclude_patterns``: an excluded entry is not sent; an excluded dir is not even
      read unless a ``!`` pattern might match inside it (fsutil's prefix test).
    * ``include_patterns``: only entries matching a pattern (or below a matching dir)
      are sent; a dir that doesn't match is read only if a pattern might match inside it.
    * ``followpaths``: resolved to include patterns (see :func:`resolve_followpaths`) and
      added to ``include_patterns``.

    A dir that is not sent itself is sent just before its first sent descendant, and
    never if it has none.
    """
    root_b = _resolve_root(root)
    include = list(include_patterns)
    if followpaths:
        targets = _follow_links(root_b, followpaths)
        if targets is not None:
            include = _dedupe_paths(include + targets) or []
    inc = PatternMatcher(include) if include else None
    exc = PatternMatcher(exclude_patterns) if exclude_patterns else None
    return _walk(root_b, inc, exc)


def _open_refused(rel: str, inc: PatternMatcher | None, exc: PatternMatcher | None) -> bool:
    """Whether fsutil's filterFS.Open would refuse ``rel`` (a pattern error refuses too)."""
    try:
        return (inc is not None and not inc.matches(rel)) or (exc is not None and exc.matches(rel))
    except ContextError:
        return True


def _walk(root: bytes, inc: PatternMatcher | None, exc: PatternMatcher | None) -> Iterator[Entry]:
    filtering = inc is not None or exc is not None
    # The walk's and Open's pattern checks can only disagree when there are exceptions.
    check_open = (inc is not None and inc.has_exclusions) or (
        exc is not None and exc.has_exclusions
    )
    fsdecode = os.fsdecode
    s_isdir, s_isreg, s_islnk = stat.S_ISDIR, stat.S_ISREG, stat.S_ISLNK
    first_path: dict[tuple[int, int], str] = {}

    def make(entry: os.DirEntry[bytes], rel: str) -> Entry | None:
        try:
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            linkname = hardlink = ""
            if s_islnk(mode):
                linkname = fsdecode(os.readlink(entry.path))
            elif st.st_nlink > 1 and not s_isdir(mode):
                key = (st.st_dev, st.st_ino)
                hardlink = first_path.setdefault(key, rel)
                if hardlink == rel:
                    hardlink = ""
        except (FileNotFoundError, NotADirectoryError):
            return None  # gone since its dir was read
        except OSError as err:
            raise ContextError(f"cannot read {rel!r} in the build context: {err.strerror}") from err
        is_file = s_isreg(mode)
        empty = check_open and is_file and _open_refused(rel, inc, exc)
        return Entry(rel, st, linkname, s_isdir(mode), is_file, s_islnk(mode), hardlink, empty)

    stack = [_Frame("", "", _list(root, "", False), None, None, True, None)]
    unemitted = 0  # frames on the stack whose dir has not been yielded
    while stack:
        frame = stack[-1]
        if frame.index >= len(frame.entries):
            stack.pop()
            if not frame.emitted:
                unemitted -= 1
            continue
        dirent = frame.entries[frame.index]
        frame.index += 1
        rel = frame.prefix + fsdecode(dirent.name)
        try:
            is_dir = dirent.is_dir(follow_symlinks=False)
        except OSError:
            continue
        skip = False
        inc_info = exc_info = None
        if filtering:
            if inc is not None:
                matched, inc_info = inc.match_with_parent(rel, frame.inc)
                if not matched:
                    if is_dir and not inc.includes_may_match_below(rel):
                        continue
                    skip = True
            if exc is not None:
                matched, exc_info = exc.match_with_parent(rel, frame.exc)
                if matched:
                    if is_dir and not exc.exceptions_may_match_below(rel):
                        continue
                    skip = True
        if not skip:
            if unemitted:
                for parent in stack:
                    if parent.emitted:
                        continue
                    assert parent.dirent is not None
                    parent.emitted = True
                    unemitted -= 1
                    made = make(parent.dirent, parent.rel)
                    if made is not None:
                        yield made
            made = make(dirent, rel)
            if made is None:
                continue
            yield made
        if is_dir:
            entries = _list(dirent.path, rel, skip)
            stack.append(_Frame(rel, rel + "/", entries, inc_info, exc_info, not skip, dirent))
            if skip:
                unemitted += 1


# ----------------------------------------------------------------------------------------
# modes

MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20

_TYPE_BITS = {
    stat.S_IFDIR: MODE_DIR,
    stat.S_IFLNK: MODE_SYMLINK,
    stat.S_IFBLK: MODE_DEVICE,
    stat.S_IFCHR: MODE_DEVICE | MODE_CHAR_DEVICE,
    stat.S_IFIFO: MODE_NAMED_PIPE,
    stat.S_IFSOCK: MODE_SOCKET,
}


def go_file_mode(st: os.stat_result) -> int:
    """Go's ``os.FileMode`` for an lstat result (as ``fi.Mode()`` computes it on Unix)."""
    m = st.st_mode
    mode = (m & 0o777) | _TYPE_BITS.get(stat.S_IFMT(m), 0)
    if m & stat.S_ISUID:
        mode |= MODE_SETUID
    if m & stat.S_ISGID:
        mode |= MODE_SETGID
    if m & stat.S_ISVTX:
        mode |= MODE_STICKY
    return mode


def fsutil_stat_mode(st: os.stat_result) -> int:
    """What fsutil puts in ``Stat.mode``: :func:`go_file_mode` with the socket bit cleared.

    (fsutil's mkstat clears it because archive/tar can't represent sockets; a socket then
    looks like an empty regular file whose content the receiver requests and the sender,
    failing to open it, sends as empty.)
    """
    return go_file_mode(st) & ~MODE_SOCKET
