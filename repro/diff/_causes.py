"""The table of known causes of non-reproducible images, and how each is recognised.

Each rule is a Cause (what it is, the known fix) plus a predicate over one differing
path: its name, what about it changed (content, mode, mtime, ...), and, for content
changes, the first bytes of both sides. Rules are tried in order; every match is
reported, so a ``.pyc`` under a build path gets both causes. When nothing matches,
the path gets no cause and the report says "unknown".
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from repro.diff._tree import Cause

CONTENT = "content"
MODE = "mode"
OWNER = "owner"
MTIME = "mtime"
LINK = "link"
XATTRS = "xattrs"
TYPE = "type"
ORDER = "order"
ADDED = "added"
REMOVED = "removed"

TIMESTAMP_IN_CONTENT = Cause(
    "timestamp-in-content",
    "a build-time timestamp written into the file",
    "derive dates from SOURCE_DATE_EPOCH (date -u -d @$SOURCE_DATE_EPOCH), or do not record them",
)
PYC = Cause(
    "pyc",
    "Python bytecode records the source file's mtime",
    "compile with SOURCE_DATE_EPOCH set (py_compile then uses checked hashes: "
    "--invalidation-mode checked-hash), or PYTHONDONTWRITEBYTECODE=1 and no __pycache__",
)
VAR_LOG = Cause(
    "var-log",
    "a log file written during the build",
    "delete it in the same RUN step (rm -f /var/log/*.log ...), or send logs to stdout",
)
DPKG_APT = Cause(
    "dpkg-apt",
    "dpkg/apt databases, caches or logs",
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old "
    "/var/log/dpkg.log /var/log/apt/* in the same RUN; pin the snapshot archive",
)
APK = Cause(
    "apk",
    "apk's installed database, scripts.tar or cache",
    "apk add --no-cache; with SOURCE_DATE_EPOCH set, apk-tools >= 2.14 writes stable "
    "timestamps; otherwise normalise lib/apk/db/scripts.tar",
)
LDCONFIG = Cause(
    "ldconfig-aux-cache",
    "ldconfig's aux-cache records file mtimes and inodes",
    "rm -f /var/cache/ldconfig/aux-cache after ldconfig runs",
)
SHADOW = Cause(
    "shadow-date",
    "/etc/shadow records the day a password last changed",
    "set SOURCE_DATE_EPOCH before useradd/passwd (shadow >= 4.6 honours it), "
    "or rewrite field 3 to the epoch day",
)
GZIP_HEADER = Cause(
    "gzip-header",
    "a gzip header holds a file name and mtime",
    "compress with gzip -n (no name, no timestamp), "
    "or set SOURCE_DATE_EPOCH for tools that honour it",
)
FILE_ORDER = Cause(
    "file-order",
    "entries are in a different order in the layer tar",
    "sort directory listings in the build (find ... | sort), or let repro normalise the layer",
)
UMASK_MODE = Cause(
    "umask-mode",
    "permission bits depend on the umask or on the context's file modes",
    "set modes explicitly: COPY --chmod=0644, or chmod in the RUN step; umask 022",
)
MTIME_ONLY = Cause(
    "mtime",
    "a file's modification time differs",
    "build with SOURCE_DATE_EPOCH and rewrite-timestamp (repro build does), "
    "or touch -d @$SOURCE_DATE_EPOCH",
)
OWNER_CHANGE = Cause(
    "owner",
    "file ownership differs between builds",
    "set owners explicitly: COPY --chown=, chown in the RUN step",
)
BUILD_PATH = Cause(
    "build-path",
    "an absolute build path is embedded in the file",
    "build in a fixed directory (WORKDIR /src), use -ffile-prefix-map / -trimpath",
)
HOSTNAME = Cause(
    "hostname",
    "the build host's name is written into the file",
    "do not record $(hostname) at build time; set it at run time",
)
RANDOM_DATA = Cause(
    "random-data",
    "random bytes (keys, salts, UUIDs, machine-id) generated at build time",
    "generate them at first start instead, or derive them from a fixed seed",
)
COMPRESSION = Cause(
    "compression",
    "the layer's compressed bytes differ but its content is the same",
    "pin the compressor and level (or accept with --accept same-content)",
)
CONFIG_CREATED = Cause(
    "config-created",
    "the image config records creation times",
    "set SOURCE_DATE_EPOCH (repro build does) so created/history times are the epoch",
)
ANNOTATIONS = Cause(
    "annotations",
    "manifest or index annotations differ",
    "do not stamp build times or build ids into annotations",
)
XATTR_CHANGE = Cause(
    "xattrs",
    "extended attributes differ (security.capability, SELinux labels)",
    "set capabilities explicitly with setcap in the build; build on hosts with the same LSM",
)

ALL_CAUSES: tuple[Cause, ...] = (
    TIMESTAMP_IN_CONTENT,
    PYC,
    VAR_LOG,
    DPKG_APT,
    APK,
    LDCONFIG,
    SHADOW,
    GZIP_HEADER,
    FILE_ORDER,
    UMASK_MODE,
    MTIME_ONLY,
    OWNER_CHANGE,
    BUILD_PATH,
    HOSTNAME,
    RANDOM_DATA,
    COMPRESSION,
    CONFIG_CREATED,
    ANNOTATIONS,
    XATTR_CHANGE,
)


# What BuildKit names RUN containers unless BUILDKIT_SANDBOX_HOSTNAME says otherwise.
DEFAULT_SANDBOX_HOSTNAME = "buildkitsandbox"
# repro verify names its two builds' sandboxes with this prefix (see repro.verify).
VERIFY_HOSTNAME_PREFIX = "repro-verify-"


@dataclass
class Hints:
    """What the caller knows about the two builds (verify knows its hostnames and paths)."""

    hostnames: tuple[str, ...] = ()
    build_paths: tuple[str, ...] = ()


@dataclass
class PathChange:
    """What a rule sees of one differing path."""

    path: str  # without a leading "/"
    changes: Sequence[str]
    mode1: int | None = None
    mode2: int | None = None
    head1: bytes = b""  # the first bytes of each side's content (bounded)
    head2: bytes = b""
    hints: Hints = field(default_factory=Hints)


def _glob(*patterns: str) -> Callable[[PathChange], bool]:
    def match(change: PathChange) -> bool:
        return any(fnmatch.fnmatchcase(change.path, p) for p in patterns)

    return match


# Dates and times as tools print them: ISO 8601, `date`'s default, RFC 2822,
# and epoch seconds of this century.
_TIME_RES = [
    re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?"),
    re.compile(rb"\d\d:\d\d:\d\d"),
    re.compile(rb"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun)\b.{0,20}\b\d{4}\b"),
    re.compile(rb"\b1[5-9]\d{8}\b"),
]
_BUILD_PATH_RE = re.compile(
    rb"(/tmp/buildkit[-\w]*|/var/lib/(docker|buildkit|containerd)/|/tmp/tmp\w{6,}|/tmp/repro-verify)"
)


def _changed_matches(pattern: re.Pattern[bytes], a: bytes, b: bytes) -> bool:
    """The pattern occurs on both sides and what it matches differs."""
    ma = [m.group(0) for m in pattern.finditer(a)]
    mb = [m.group(0) for m in pattern.finditer(b)]
    return bool(ma) and bool(mb) and ma != mb


def _content(change: PathChange) -> bool:
    return CONTENT in change.changes


def _timestamp_in_content(change: PathChange) -> bool:
    if not _content(change):
        return False
    return any(_changed_matches(r, change.head1, change.head2) for r in _TIME_RES)


def _gzip_header(change: PathChange) -> bool:
    a, b = change.head1, change.head2
    if not _content(change) or a[:2] != b"\x1f\x8b" or b[:2] != b"\x1f\x8b":
        return False
    # Bytes 4..8 are the mtime, and FNAME (flag 0x08) means a file name follows.
    return a[4:8] != b[4:8] or bool(a[3] & 0x08) or bool(b[3] & 0x08)


def _umask_mode(change: PathChange) -> bool:
    if MODE not in change.changes or change.mode1 is None or change.mode2 is None:
        return False
    # Only group/other bits differ: the signature of a different umask.
    return ((change.mode1 ^ change.mode2) & 0o7777 & ~0o077) == 0


def _build_path(change: PathChange) -> bool:
    if not _content(change):
        return False
    a, b = change.head1, change.head2
    for p in change.hints.build_paths:
        if p and (p.encode() in a or p.encode() in b):
            return True
    return _changed_matches(_BUILD_PATH_RE, a, b)


def _hostname(change: PathChange) -> bool:
    if change.path in ("etc/hostname", "etc/hosts"):
        return True
    if not _content(change):
        return False
    known = (*change.hints.hostnames, DEFAULT_SANDBOX_HOSTNAME, VERIFY_HOSTNAME_PREFIX)
    names = [h.encode() for h in known if h]
    return any(n in change.head1 or n in change.head2 for n in names)


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte."""
    if not data:
        return 0.0
    counts = [0] * 256
    for byte in data:
        counts[byte] += 1
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts if c)


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ", b"PK\x03\x04")
_TOKEN_FILE = re.compile(rb"\s*[0-9a-fA-F][0-9a-fA-F-]{5,}\s*\Z")
_HEX_TOKEN = re.compile(rb"\b[0-9a-fA-F]{16,}\b|\b[A-Za-z0-9+/]{22,}={0,2}")


def _random_data(change: PathChange) -> bool:
    a, b = change.head1, change.head2
    if not _content(change) or not a or not b:
        return False
    if a.startswith(_COMPRESSED_MAGIC) or b.startswith(_COMPRESSED_MAGIC):
        return False
    # Raw random bytes: near 8 bits/byte (short samples cannot reach 8, so scale).
    shortest = min(len(a), len(b))
    limit = min(7.0, math.log2(shortest) - 0.8)
    if shortest >= 32 and entropy(a) >= limit and entropy(b) >= limit:
        return True
    # A small file that is just a number or token ($RANDOM, a seed, a UUID).
    if len(a) <= 256 and len(b) <= 256 and _TOKEN_FILE.match(a) and _TOKEN_FILE.match(b):
        return True
    # Random tokens in text: hex or base64 runs that differ (keys, UUIDs, machine-id).
    return _changed_matches(_HEX_TOKEN, a, b)


RULES: tuple[tuple[Cause, Callable[[PathChange], bool]], ...] = (
    (PYC, _glob("*.pyc", "*.pyo")),
    (VAR_LOG, _glob("var/log/*")),
    (
        DPKG_APT,
        _glob(
            "var/lib/dpkg/*",
            "var/lib/apt/*",
            "var/cache/apt/*",
            "var/cache/debconf/*",
            "var/log/apt/*",
            "var/log/dpkg.log",
        ),
    ),
    (APK, _glob("lib/apk/db/*", "var/cache/apk/*", "etc/apk/world")),
    (LDCONFIG, _glob("var/cache/ldconfig/aux-cache", "etc/ld.so.cache")),
    (SHADOW, _glob("etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-")),
    (GZIP_HEADER, _gzip_header),
    (FILE_ORDER, lambda c: ORDER in c.changes),
    (UMASK_MODE, _umask_mode),
    (OWNER_CHANGE, lambda c: OWNER in c.changes),
    (XATTR_CHANGE, lambda c: XATTRS in c.changes),
    (HOSTNAME, _hostname),
    (BUILD_PATH, _build_path),
    (TIMESTAMP_IN_CONTENT, _timestamp_in_content),
    (MTIME_ONLY, lambda c: list(c.changes) == [MTIME]),
)


def classify(change: PathChange) -> list[Cause]:
    """Every known cause that explains this path's difference, best first."""
    found = [cause for cause, match in RULES if match(change)]
    # Random data is the explanation of last resort: only when nothing else fits.
    content_causes = {c.id for c in found} - {FILE_ORDER.id, MTIME_ONLY.id, UMASK_MODE.id}
    if not content_causes and _random_data(change):
        found.append(RANDOM_DATA)
    return found
