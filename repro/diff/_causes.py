"""The table of known causes of non-reproducible images, and how each is recognised.

Each rule is a Cause (what it is, the repro setting and the build change that fix
it) plus a predicate over one differing path: its name, what about it changed
(content, mode, type, link, ...), the first bytes of both sides and, for content
changes, the two extracted files (archives inside the image are opened to see which
of their members' fields differ). Rules are tried in order and every match is
reported, best first, so a ``.pyc`` holding a build path gets both causes.

The causes follow the families of the reproducible-builds.org documentation
(``family``: timestamps, archives, build_path, randomness, locales, timezones,
stable_outputs, system_images, version_information) where a family applies to
images, plus image-specific ones (``image``: modes under the umask, owners,
hard links, files present in one build only, package-manager databases). When no
rule matches, ``describe_unknown`` says what is known: the file's type, which part
differs and how much, whether it looks random, and the closest hint.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import math
import re
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

# --- the causes ----------------------------------------------------------------------

TIMESTAMP_IN_CONTENT = Cause(
    "timestamp-in-content",
    "a build-time timestamp written into the file",
    "derive dates from SOURCE_DATE_EPOCH (date -u -d @$SOURCE_DATE_EPOCH), or do not record them",
    family="timestamps",
)
PYC = Cause(
    "pyc",
    "Python bytecode records the source file's mtime",
    "compile with SOURCE_DATE_EPOCH set (py_compile then uses checked hashes: "
    "--invalidation-mode checked-hash), or PYTHONDONTWRITEBYTECODE=1 and no __pycache__",
    setting='[normalise] presets = ["python"] (drops __pycache__)',
    family="timestamps",
)
VAR_LOG = Cause(
    "var-log",
    "a log file written during the build",
    "delete it in the same RUN step (rm -f /var/log/*.log ...), or send logs to stdout",
    setting='[normalise] truncate = ["/var/log/**/*.log"]',
    family="image",
)
DPKG_APT = Cause(
    "dpkg-apt",
    "dpkg/apt databases, caches or logs",
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old "
    "/var/log/dpkg.log /var/log/apt/* in the same RUN; pin the snapshot archive",
    setting='[normalise] presets = ["debian"]',
    family="system_images",
)
APK = Cause(
    "apk",
    "apk's installed database, scripts.tar or cache",
    "apk add --no-cache; with SOURCE_DATE_EPOCH set, apk-tools >= 2.14 writes stable "
    "timestamps; otherwise normalise lib/apk/db/scripts.tar",
    setting='[normalise] presets = ["alpine"]',
    family="system_images",
)
LDCONFIG = Cause(
    "ldconfig-aux-cache",
    "ldconfig's aux-cache records file mtimes and inodes",
    "rm -f /var/cache/ldconfig/aux-cache after ldconfig runs",
    setting='[normalise] presets = ["debian"] (or drop = ["/var/cache/ldconfig/aux-cache"])',
    family="system_images",
)
SHADOW = Cause(
    "shadow-date",
    "/etc/shadow records the day a password last changed",
    "set SOURCE_DATE_EPOCH before useradd/passwd (shadow >= 4.6 honours it), "
    "or rewrite field 3 to the epoch day",
    setting="[normalise] shadow = true",
    family="system_images",
)
GZIP_HEADER = Cause(
    "gzip-header",
    "a gzip header holds a file name and mtime (the compressed data is the same)",
    "compress with gzip -n (no name, no timestamp), "
    "or set SOURCE_DATE_EPOCH for tools that honour it",
    family="archives",
)
FILE_ORDER = Cause(
    "file-order",
    "entries are in a different order in the layer tar",
    "sort directory listings in the build (find ... | sort), or let repro normalise the layer",
    setting="normalisation on (the default) writes layers in sorted order",
    family="archives",
)
UMASK_MODE = Cause(
    "umask-mode",
    "permission bits depend on the umask or on the context's file modes",
    "set modes explicitly: COPY --chmod=0644, or chmod in the RUN step; umask 022",
    setting='[normalise] umask = "022"',
    family="image",
)
MTIME_ONLY = Cause(
    "mtime",
    "a file's modification time differs (older than SOURCE_DATE_EPOCH, so not clamped)",
    "touch -d @$SOURCE_DATE_EPOCH the files you unpack or fetch, "
    "or keep the times their source carries",
    family="timestamps",
)
OWNER_CHANGE = Cause(
    "owner",
    "file ownership differs between builds",
    "set owners explicitly: COPY --chown=, chown in the RUN step",
    family="archives",
)
BUILD_PATH = Cause(
    "build-path",
    "an absolute build path (a temporary or per-build directory) is embedded in the file",
    "build in a fixed directory (WORKDIR /src, not mktemp -d), use -ffile-prefix-map / -trimpath",
    family="build_path",
)
HOSTNAME = Cause(
    "hostname",
    "the build host's name is written into the file",
    "do not record $(hostname) at build time; set it at run time",
    family="version_information",
)
RANDOM_DATA = Cause(
    "random-data",
    "random bytes (keys, salts, tokens) generated at build time",
    "generate them at first start instead, or derive them from a fixed seed",
    family="randomness",
)
COMPRESSION = Cause(
    "compression",
    "the layer's compressed bytes differ but its content is the same",
    "pin the compressor and level (or accept with --accept same-content)",
    setting="normalisation on (the default) recompresses every layer the same way",
    family="image",
)
CONFIG_CREATED = Cause(
    "config-created",
    "the image config records creation times",
    "set SOURCE_DATE_EPOCH (repro build does) so created/history times are the epoch",
    setting="[normalise] created (default: the recipe's source_date_epoch)",
    family="timestamps",
)
ANNOTATIONS = Cause(
    "annotations",
    "manifest or index annotations differ",
    "do not stamp build times or build ids into annotations",
    family="image",
)
XATTR_CHANGE = Cause(
    "xattrs",
    "extended attributes differ (security.capability, SELinux labels)",
    "set capabilities explicitly with setcap in the build; build on hosts with the same LSM",
    family="image",
)
TIMEZONE = Cause(
    "timezone",
    "times printed in the build's local timezone (they differ by whole hours)",
    "print times in UTC (date -u, TZ=UTC in the RUN step, or ENV TZ=UTC)",
    family="timezones",
)
LOCALE = Cause(
    "locale",
    "output depends on the locale (its name, or number and date formats)",
    "run the tool with LC_ALL=C.UTF-8 (or ENV LC_ALL=C.UTF-8)",
    family="locales",
)
LOCALE_SORT = Cause(
    "locale-sort",
    "the same lines sorted differently under a different locale (collation)",
    "sort with LC_ALL=C (LC_ALL=C sort), or set LC_ALL=C.UTF-8 for the step",
    family="locales",
)
RANDOM_ORDER = Cause(
    "random-order",
    "the same lines in a different order (hash or directory order, parallel output)",
    "sort what is written (... | LC_ALL=C sort); for Python set PYTHONHASHSEED=0, "
    "for Perl PERL_HASH_SEED=0",
    family="stable_outputs",
)
ARCHIVE_MEMBER_TIMES = Cause(
    "archive-member-times",
    "an archive inside the image (tar, zip, jar) whose members differ only in their times",
    "create it with tar --mtime=@$SOURCE_DATE_EPOCH --clamp-mtime (or touch the files "
    "first); zip: strip-nondeterminism, or touch -d @$SOURCE_DATE_EPOCH before zip",
    family="archives",
)
ARCHIVE_MEMBER_ORDER = Cause(
    "archive-member-order",
    "an archive inside the image holds the same members in a different order",
    "tar --sort=name, or feed a sorted list (find . | LC_ALL=C sort | tar -T - --no-recursion)",
    family="archives",
)
ARCHIVE_MEMBER_OWNER = Cause(
    "archive-member-owner",
    "an archive inside the image records different owners (uid/gid/user names)",
    "tar --owner=0 --group=0 --numeric-owner",
    family="archives",
)
CPIO_METADATA = Cause(
    "cpio-metadata",
    "a cpio archive (initramfs) whose members differ in times or inode numbers",
    "build it from a sorted list with mtimes clamped (touch -d @$SOURCE_DATE_EPOCH), "
    "and --reproducible (GNU cpio) to renumber inodes",
    family="system_images",
)
FILESYSTEM_IMAGE = Cause(
    "filesystem-image",
    "a filesystem image whose UUID, volume id or superblock times are new each build",
    "mke2fs -U <fixed uuid> -E hash_seed=<uuid> with SOURCE_DATE_EPOCH (e2fsprogs >= 1.47), "
    "mkfs.vfat -i <id> --invariant, make_ext4fs -T $SOURCE_DATE_EPOCH",
    family="system_images",
)
HARDLINK_VS_COPY = Cause(
    "hardlink-vs-copy",
    "a file is a hard link in one build and a separate copy in the other",
    "create it the same way every time (ln, or cp with no -l fallback); "
    "do not depend on whether two paths share a filesystem",
    family="image",
)
SYMLINK_TARGET = Cause(
    "symlink-target",
    "a symbolic link points to a different target in each build",
    "point links at fixed paths, not at timestamped or temporary ones",
    family="image",
)
FILE_SET = Cause(
    "file-set",
    "a path exists in one build only (a lock, temporary or conditionally written file)",
    "delete temporary and lock files in the step that makes them; "
    "make conditional steps deterministic",
    family="image",
)
MACHINE_ID = Cause(
    "machine-id",
    "/etc/machine-id (or D-Bus's copy) generated at build time",
    "leave it empty in the image (: > /etc/machine-id); systemd fills it at first boot",
    setting='[normalise] truncate = ["/etc/machine-id", "/var/lib/dbus/machine-id"]',
    family="randomness",
)
SSH_HOST_KEYS = Cause(
    "ssh-host-keys",
    "SSH host keys generated when openssh-server was installed",
    "rm -f /etc/ssh/ssh_host_* in the same RUN; generate them at first start (ssh-keygen -A)",
    setting='[normalise] drop = ["/etc/ssh/ssh_host_*"]',
    family="randomness",
)
CACHE_WITH_TIMES = Cause(
    "cache-with-times",
    "a generated cache that records times (fontconfig, gdk-pixbuf, gio, icon or mime caches)",
    "regenerate it with SOURCE_DATE_EPOCH set (fontconfig >= 2.13 honours it) "
    "or remove it and let it be rebuilt at run time",
    setting='[normalise] drop = ["/var/cache/fontconfig/**"] (or the cache\'s path)',
    family="system_images",
)
UUID_IN_CONTENT = Cause(
    "uuid",
    "a UUID generated at build time is written into the file",
    "use a fixed UUID, derive it from the content (uuid v5), or generate it at first start",
    family="randomness",
)
GETTEXT_DATE = Cause(
    "gettext-date",
    "gettext catalogues record POT-Creation-Date / PO-Revision-Date",
    "do not regenerate .pot files in the build (or msgmerge --no-location with fixed dates)",
    family="system_images",
)
DERIVED_CHECKSUMS = Cause(
    "derived-checksums",
    "a checksum list whose sums differ because the files it lists differ",
    "fix the files it lists (see their causes); the sums follow",
    family="image",
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
    TIMEZONE,
    LOCALE,
    LOCALE_SORT,
    RANDOM_ORDER,
    ARCHIVE_MEMBER_TIMES,
    ARCHIVE_MEMBER_ORDER,
    ARCHIVE_MEMBER_OWNER,
    CPIO_METADATA,
    FILESYSTEM_IMAGE,
    HARDLINK_VS_COPY,
    SYMLINK_TARGET,
    FILE_SET,
    MACHINE_ID,
    SSH_HOST_KEYS,
    CACHE_WITH_TIMES,
    UUID_IN_CONTENT,
    GETTEXT_DATE,
    DERIVED_CHECKSUMS,
)
UNCLASSIFIED = "unclassified"


# What BuildKit names RUN containers unless BUILDKIT_SANDBOX_HOSTNAME says otherwise.
DEFAULT_SANDBOX_HOSTNAME = "buildkitsandbox"
# repro verify names its two builds' sandboxes with this prefix (see repro.verify).
VERIFY_HOSTNAME_PREFIX = "repro-verify-"
# Files larger than this are not read whole or opened as archives (their heads are
# still looked at): the rules stay within a few times this much memory.
MAX_ARCHIVE_BYTES = 16 * 1024 * 1024


@dataclass
class Hints:
    """What the caller knows about the two builds (verify knows its hostnames, paths
    and the variations it applied: {"locale": ("C.UTF-8", "fr_FR.UTF-8"), ...})."""

    hostnames: tuple[str, ...] = ()
    build_paths: tuple[str, ...] = ()
    variations: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def varied(self, name: str) -> tuple[str, ...]:
        """The values a variation took in the two builds, or () if it was not applied."""
        return next((values for key, values in self.variations if key == name), ())


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
    type1: str = ""  # file, hardlink, symlink, dir, ... ("" when absent)
    type2: str = ""
    link1: str = ""
    link2: str = ""
    size1: int = 0
    size2: int = 0
    file1: Path | None = None  # the extracted files, when both sides were extracted
    file2: Path | None = None
    # What the rules worked out once about this path (whole contents, archive fields).
    memo: dict[str, object] = field(default_factory=dict, repr=False, compare=False)


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
_CLOCK = re.compile(rb"\b(\d\d):(\d\d)(?::(\d\d))?\b")
_BUILD_PATH_RE = re.compile(
    rb"(/tmp/buildkit[-\w]*|/var/lib/(docker|buildkit|containerd)/|/tmp/tmp[.\w]{6,}"
    rb"|/tmp/repro-verify)"
)
_UUID = re.compile(
    rb"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_CHECKSUM_LINE = re.compile(rb"^([0-9a-fA-F]{32,128})[ \t]+\*?\S", re.M)
_GETTEXT = re.compile(rb"(POT-Creation-Date|PO-Revision-Date):[^\n\\]*")
_DECIMAL = re.compile(rb"\d[.,]\d")


def _changed_matches(pattern: re.Pattern[bytes], a: bytes, b: bytes) -> bool:
    """The pattern occurs on both sides and what it matches differs."""
    ma = [m.group(0) for m in pattern.finditer(a)]
    mb = [m.group(0) for m in pattern.finditer(b)]
    return bool(ma) and bool(mb) and ma != mb


def _content(change: PathChange) -> bool:
    return CONTENT in change.changes


def _full(change: PathChange, side: int) -> bytes:
    """A side's whole content when it was extracted and is small, else its head."""
    key = f"full{side}"
    if key in change.memo:
        return change.memo[key]  # type: ignore[return-value]
    path = change.file1 if side == 1 else change.file2
    data = change.head1 if side == 1 else change.head2
    if path is not None:
        try:
            if path.stat().st_size <= MAX_ARCHIVE_BYTES:
                data = path.read_bytes()
        except OSError:
            pass
    change.memo[key] = data
    return data


def _timestamp_in_content(change: PathChange) -> bool:
    if not _content(change):
        return False
    return any(_changed_matches(r, change.head1, change.head2) for r in _TIME_RES)


def _gunzip(data: bytes, limit: int = 4 * MAX_ARCHIVE_BYTES) -> bytes | None:
    """The decompressed members of gzip data, or None if it is not gzip or would
    unpack to more than `limit` bytes (a small bomb must not cost memory)."""
    out = bytearray()
    try:
        while data[:2] == b"\x1f\x8b":
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit or d.unconsumed_tail:
                return None
            if not d.eof:
                return None  # truncated
            data = d.unused_data
    except zlib.error:
        return None
    return bytes(out) if out or not data else None


def _gzip_header(change: PathChange) -> bool:
    a, b = change.head1, change.head2
    if not _content(change) or a[:2] != b"\x1f\x8b" or b[:2] != b"\x1f\x8b":
        return False
    # Bytes 4..8 are the mtime, and FNAME (flag 0x08) means a file name follows.
    if not (a[4:8] != b[4:8] or bool(a[3] & 0x08) or bool(b[3] & 0x08)):
        return False
    # With both files at hand: only when the compressed payload is the same.
    if change.file1 is not None and change.file2 is not None:
        da, db = _gunzip(_full(change, 1)), _gunzip(_full(change, 2))
        return da is not None and da == db
    return True


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


def _clock_seconds(data: bytes) -> list[tuple[int, int]]:
    """(minutes of the day, seconds) of every hh:mm[:ss] in the data."""
    out = []
    for m in _CLOCK.finditer(data):
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hh < 24 and mm < 60 and ss < 61:
            out.append((hh * 60 + mm, ss))
    return out


def _timezone(change: PathChange) -> bool:
    """Clock times that differ by whole quarter hours, to the second: the same
    instant printed in two timezones."""
    if not _content(change):
        return False
    ta, tb = _clock_seconds(change.head1), _clock_seconds(change.head2)
    if not ta or len(ta) != len(tb) or ta == tb:
        return False
    pairs = zip(ta, tb, strict=True)
    return all(sa == sb and (ma - mb) % 15 == 0 for (ma, sa), (mb, sb) in pairs)


def _locale(change: PathChange) -> bool:
    if not _content(change):
        return False
    a, b = change.head1, change.head2
    names = [v.encode() for v in change.hints.varied("locale") if v]
    if any(n in a or n in b for n in names) and a != b:
        return True
    # Numbers that differ only in the decimal separator (1.5 vs 1,5).
    da, db = _DECIMAL.findall(a), _DECIMAL.findall(b)
    return bool(da) and da != db and a.replace(b",", b".") == b.replace(b",", b".")


def _same_lines_reordered(change: PathChange) -> bool:
    if not _content(change):
        return False
    a, b = _full(change, 1), _full(change, 2)
    if not a or not b or b"\0" in a[:4096] or b"\0" in b[:4096]:
        return False
    la, lb = a.splitlines(), b.splitlines()
    return len(la) > 1 and la != lb and Counter(la) == Counter(lb)


def _collated(lines: list[bytes]) -> bool:
    """Sorted by bytes (the C locale) or case-insensitively (as most locales collate)."""
    return lines == sorted(lines) or lines == sorted(lines, key=lambda x: (x.lower(), x))


def _locale_sort(change: PathChange) -> bool:
    """Reordered lines, each side sorted under some collation, with the locale varied."""
    if not change.hints.varied("locale") or not _same_lines_reordered(change):
        return False
    return _collated(_full(change, 1).splitlines()) and _collated(_full(change, 2).splitlines())


def _uuid(change: PathChange) -> bool:
    return _content(change) and _changed_matches(_UUID, change.head1, change.head2)


def _checksums(change: PathChange) -> bool:
    if not _content(change):
        return False
    a, b = change.head1, change.head2
    sa, sb = _CHECKSUM_LINE.findall(a), _CHECKSUM_LINE.findall(b)
    if not sa or len(sa) != len(sb) or sa == sb:
        return False
    # The lines name the same files; only the sums differ.
    return _CHECKSUM_LINE.sub(b"", a) == _CHECKSUM_LINE.sub(b"", b)


def _gettext(change: PathChange) -> bool:
    return _content(change) and _changed_matches(_GETTEXT, change.head1, change.head2)


# --- archives inside the image -----------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One member of an archive found inside the image, as far as causes care."""

    name: str
    mtime: object  # seconds, or for zip the DOS time and the "UT" extra field's mtime
    owner: tuple[object, ...]
    mode: int
    content: bytes  # a digest of the data (or a link target), to tell content from metadata
    inode: int = 0


def _tar_members(data: bytes) -> list[Member] | None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            out = []
            for m in tar:
                f = tar.extractfile(m) if m.isreg() else None
                body = hashlib.sha256(f.read()).digest() if f is not None else m.linkname.encode()
                out.append(Member(m.name, m.mtime, (m.uid, m.gid, m.uname, m.gname), m.mode, body))
            return out
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return None


def _zip_unix_mtime(extra: bytes) -> int | None:
    """The mtime of Info-ZIP's extended timestamp field ("UT", 0x5455), if present."""
    pos = 0
    while pos + 4 <= len(extra):
        tag = int.from_bytes(extra[pos : pos + 2], "little")
        size = int.from_bytes(extra[pos + 2 : pos + 4], "little")
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            return int.from_bytes(body[1:5], "little")
        pos += 4 + size
    return None


def _zip_members(data: bytes) -> list[Member] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            # zipfile reads a member up to its declared size: bound the total first.
            if sum(i.file_size for i in infos) > 4 * MAX_ARCHIVE_BYTES:
                return None
            return [
                Member(
                    i.filename,
                    (i.date_time, _zip_unix_mtime(i.extra)),
                    (i.create_system,),
                    i.external_attr,
                    hashlib.sha256(z.read(i.filename)).digest(),
                )
                for i in infos
            ]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, NotImplementedError):
        return None


def _cpio_members(data: bytes) -> list[Member] | None:
    """Members of a cpio archive in the "newc" (070701) or "crc" (070702) format."""
    out: list[Member] = []
    pos = 0
    while pos + 110 <= len(data):
        magic = data[pos : pos + 6]
        if magic not in (b"070701", b"070702"):
            return None
        try:
            fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            return None
        ino, mode, uid, gid, _nlink, mtime, size = fields[:7]
        namesize = fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode("utf-8", "replace")
        body_start = name_start + namesize + (-(110 + namesize) % 4)
        body = hashlib.sha256(data[body_start : body_start + size]).digest()
        pos = body_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out.append(Member(name, mtime, (uid, gid), mode, body, ino))
    return out if out else None


def _archive(data: bytes) -> tuple[str, list[Member]] | None:
    """The kind and members of the archive `data` is (gzip is opened first)."""
    if data[:2] == b"\x1f\x8b":
        inner = _gunzip(data)
        if inner is None:
            return None
        data = inner
    if data[:6] in (b"070701", b"070702"):
        members = _cpio_members(data)
        return ("cpio", members) if members is not None else None
    if data[:4] == b"PK\x03\x04":
        members = _zip_members(data)
        return ("zip", members) if members is not None else None
    if len(data) >= 512 and data[257:262] == b"ustar":
        members = _tar_members(data)
        return ("tar", members) if members is not None else None
    return None


def archive_fields(change: PathChange) -> tuple[str, set[str]] | None:
    """For an archive on both sides: its kind and which member fields differ
    (names, order, content, mtime, owner, mode, inode)."""
    if "archive" not in change.memo:
        change.memo["archive"] = _archive_fields(change)
    return change.memo["archive"]  # type: ignore[return-value]


def _archive_fields(change: PathChange) -> tuple[str, set[str]] | None:
    if not _content(change) or change.file1 is None or change.file2 is None:
        return None
    a, b = _archive(_full(change, 1)), _archive(_full(change, 2))
    if a is None or b is None or a[0] != b[0]:
        return None
    ma, mb = a[1], b[1]
    diff: set[str] = set()
    names_a, names_b = [m.name for m in ma], [m.name for m in mb]
    if sorted(names_a) != sorted(names_b):
        diff.add("names")
    elif names_a != names_b:
        diff.add("order")
    by_b = {m.name: m for m in mb}
    for m in ma:
        o = by_b.get(m.name)
        if o is None:
            continue
        for what in ("content", "mtime", "owner", "mode", "inode"):
            if getattr(m, what) != getattr(o, what):
                diff.add(what)
    return a[0], diff


def _archive_rule(
    *wanted: str, kinds: tuple[str, ...] = ("tar", "zip")
) -> Callable[[PathChange], bool]:
    """Archives whose members differ in some of `wanted` (and in nothing but metadata)."""

    def match(change: PathChange) -> bool:
        found = archive_fields(change)
        if found is None or found[0] not in kinds:
            return False
        diff = found[1]
        return bool(diff & set(wanted)) and not diff & {"names", "content"}

    return match


def _cpio(change: PathChange) -> bool:
    found = archive_fields(change)
    return found is not None and found[0] == "cpio" and bool(found[1] & {"mtime", "inode"})


def _filesystem_kind(data: bytes) -> str:
    if len(data) >= 1082 and data[1080:1082] == b"\x53\xef":
        return "ext2/3/4 filesystem"
    if (
        len(data) >= 512
        and data[510:512] == b"\x55\xaa"
        and (b"FAT" in data[54:62] or b"FAT32" in data[82:90])
    ):
        return "FAT filesystem"
    if data[:4] == b"hsqs":
        return "squashfs filesystem"
    if len(data) >= 32774 and data[32769:32774] == b"CD001":
        return "ISO 9660 filesystem"
    return ""


def _filesystem(change: PathChange) -> bool:
    return (
        _content(change)
        and bool(_filesystem_kind(change.head1))
        and _filesystem_kind(change.head1) == _filesystem_kind(change.head2)
    )


def _hardlink_vs_copy(change: PathChange) -> bool:
    return TYPE in change.changes and {change.type1, change.type2} == {"file", "hardlink"}


def _symlink_target(change: PathChange) -> bool:
    return LINK in change.changes and change.type1 == change.type2 == "symlink"


def _file_set(change: PathChange) -> bool:
    return ADDED in change.changes or REMOVED in change.changes


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


def _looks_random(a: bytes, b: bytes) -> bool:
    if not a or not b:
        return False
    if a.startswith(_COMPRESSED_MAGIC) or b.startswith(_COMPRESSED_MAGIC):
        return False
    # Raw random bytes: near 8 bits/byte (short samples cannot reach 8, so scale).
    shortest = min(len(a), len(b))
    limit = min(7.0, math.log2(shortest) - 0.8)
    return shortest >= 32 and entropy(a) >= limit and entropy(b) >= limit


def _random_data(change: PathChange) -> bool:
    a, b = change.head1, change.head2
    if not _content(change) or not a or not b:
        return False
    if _looks_random(a, b):
        return True
    if a.startswith(_COMPRESSED_MAGIC) or b.startswith(_COMPRESSED_MAGIC):
        return False
    # A small file that is just a number or token ($RANDOM, a seed, a UUID).
    if len(a) <= 256 and len(b) <= 256 and _TOKEN_FILE.match(a) and _TOKEN_FILE.match(b):
        return True
    # Random tokens in text: hex or base64 runs that differ (keys, UUIDs, machine-id).
    return _changed_matches(_HEX_TOKEN, a, b)


# Tried in order; the first match is the best explanation. Paths with a known owner
# come first, then the structure of the file (archives, filesystems), then what
# changed about the entry, then the shape of a content change.
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
    (MACHINE_ID, _glob("etc/machine-id", "var/lib/dbus/machine-id")),
    (SSH_HOST_KEYS, _glob("etc/ssh/ssh_host_*")),
    (
        CACHE_WITH_TIMES,
        _glob(
            "var/cache/fontconfig/*",
            "usr/lib/*/gdk-pixbuf-*/*/loaders.cache",
            "usr/lib/*/gio/modules/giomodule.cache",
            "usr/share/icons/*/icon-theme.cache",
            "usr/share/applications/mimeinfo.cache",
            "usr/lib/*/gtk-*/*/immodules.cache",
        ),
    ),
    (FILE_SET, _file_set),
    (HARDLINK_VS_COPY, _hardlink_vs_copy),
    (SYMLINK_TARGET, _symlink_target),
    (GZIP_HEADER, _gzip_header),
    (ARCHIVE_MEMBER_ORDER, _archive_rule("order")),
    (ARCHIVE_MEMBER_OWNER, _archive_rule("owner")),
    (ARCHIVE_MEMBER_TIMES, _archive_rule("mtime")),
    (CPIO_METADATA, _cpio),
    (FILESYSTEM_IMAGE, _filesystem),
    (FILE_ORDER, lambda c: ORDER in c.changes),
    (UMASK_MODE, _umask_mode),
    (OWNER_CHANGE, lambda c: OWNER in c.changes),
    (XATTR_CHANGE, lambda c: XATTRS in c.changes),
    (HOSTNAME, _hostname),
    (BUILD_PATH, _build_path),
    (GETTEXT_DATE, _gettext),
    (DERIVED_CHECKSUMS, _checksums),
    (UUID_IN_CONTENT, _uuid),
    (LOCALE_SORT, _locale_sort),
    (RANDOM_ORDER, _same_lines_reordered),
    (LOCALE, _locale),
    (TIMEZONE, _timezone),
    (TIMESTAMP_IN_CONTENT, _timestamp_in_content),
    (MTIME_ONLY, lambda c: list(c.changes) == [MTIME]),
)
# Causes that explain only metadata: a content change beside them still wants a cause.
_METADATA_ONLY = {FILE_ORDER.id, MTIME_ONLY.id, UMASK_MODE.id, OWNER_CHANGE.id, XATTR_CHANGE.id}
# A cause whose rule matched makes these later ones redundant for the same path.
_SUPERSEDES = {
    LOCALE_SORT.id: {RANDOM_ORDER.id},
    TIMEZONE.id: {TIMESTAMP_IN_CONTENT.id},
    GETTEXT_DATE.id: {TIMESTAMP_IN_CONTENT.id},
    UUID_IN_CONTENT.id: {RANDOM_DATA.id},
    HARDLINK_VS_COPY.id: {FILE_SET.id},
}


def classify(change: PathChange) -> list[Cause]:
    """Every cause that explains this path's difference, best first; never empty
    (when no rule matches, one `unclassified` cause says what is known)."""
    found = [cause for cause, match in RULES if match(change)]
    dropped = {x for c in found for x in _SUPERSEDES.get(c.id, ())}
    found = [c for c in found if c.id not in dropped]
    # Random data is the explanation of last resort: only when nothing else fits.
    content_causes = {c.id for c in found} - _METADATA_ONLY
    if not content_causes and _content(change) and _random_data(change):
        found.append(RANDOM_DATA)
    if not found or (_content(change) and not content_causes and RANDOM_DATA not in found):
        found.append(describe_unknown(change))
    return found


# --- when no rule matches ------------------------------------------------------------


def file_kind(data: bytes, path: str = "") -> str:
    """A short description of a file's type from its first bytes (and name)."""
    if not data:
        return "empty file"
    fs = _filesystem_kind(data)
    if fs:
        return fs + " image"
    magic = (
        (b"\x7fELF", "ELF binary"),
        (b"\x1f\x8b", "gzip data"),
        (b"\x28\xb5\x2f\xfd", "zstd data"),
        (b"BZh", "bzip2 data"),
        (b"\xfd7zXZ", "xz data"),
        (b"PK\x03\x04", "zip archive"),
        (b"070701", "cpio archive"),
        (b"070702", "cpio archive"),
        (b"SQLite format 3\0", "SQLite database"),
        (b"\x89PNG", "PNG image"),
        (b"!<arch>\n", "ar archive (static library or .deb)"),
    )
    for prefix, name in magic:
        if data.startswith(prefix):
            return name
    if len(data) >= 512 and data[257:262] == b"ustar":
        return "tar archive"
    if path.endswith((".pyc", ".pyo")):
        return "Python bytecode"
    sample = data[:4096]
    try:
        sample.decode("utf-8")
        text = b"\0" not in sample
    except UnicodeDecodeError as e:
        text = e.start > len(sample) - 4 and b"\0" not in sample
    return "text" if text else "binary data"


def _byte_shape(a: bytes, b: bytes) -> str:
    """How much of the content differs: bytes, runs and first offset."""
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if not diffs:
            return "the first 64 KiB are the same; the difference is further on"
        runs = 1 + sum(1 for x, y in zip(diffs, diffs[1:], strict=False) if y != x + 1)
        return (
            f"{len(diffs)} of {len(a)} bytes differ in {runs} run{'s' if runs > 1 else ''}, "
            f"the first at offset {diffs[0]}"
        )
    prefix = len(bytes(x for x, _ in zip(a, b, strict=False)))
    first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), prefix)
    return f"sizes {len(a)} and {len(b)} bytes, the first difference at offset {first}"


def _line_shape(a: bytes, b: bytes) -> str:
    la, lb = a.splitlines(), b.splitlines()
    changed = sum(1 for x, y in zip(la, lb, strict=False) if x != y) + abs(len(la) - len(lb))
    first = next(
        (i for i, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), min(len(la), len(lb))
    )
    return f"{changed} of {max(len(la), len(lb))} lines differ, the first at line {first + 1}"


def describe_unknown(change: PathChange) -> Cause:
    """What is known about a difference no rule explains, and the closest hint."""
    a, b = change.head1, change.head2
    parts: list[str] = []
    hint = "compare the two files with diffoscope (--report-dir has its full output)"
    if _content(change):
        kind = file_kind(a or b, change.path)
        parts.append(kind)
        parts.append(_line_shape(a, b) if kind == "text" else _byte_shape(a, b))
        found = archive_fields(change)
        if found is not None:
            what = ", ".join(sorted(found[1])) or "nothing parsed"
            parts.append(f"{found[0]} members differ in: {what}")
            hint = "an archive built in the image: see the archive-member-* causes"
        random_looking = _looks_random(a, b)
        parts.append(
            "the content looks random" if random_looking else "the content does not look random"
        )
        if random_looking:
            hint = RANDOM_DATA.fix
        elif kind == "ELF binary":
            hint = (
                "a compiled binary: build IDs, embedded paths (-ffile-prefix-map) or "
                "__DATE__/__TIME__ macros (SOURCE_DATE_EPOCH)"
            )
        elif kind.endswith("data") and a[:2] == b"\x1f\x8b":
            hint = "compressed data whose payload differs: decompress both and compare"
        elif kind == "text":
            hint = (
                "a generated text file: look for build times, paths, host or user names, "
                "and unordered output in the step that writes it"
            )
    else:
        parts.append("what differs: " + ", ".join(change.changes))
        if MODE in change.changes and change.mode1 is not None and change.mode2 is not None:
            parts.append(f"mode {change.mode1:04o} vs {change.mode2:04o}")
            hint = "set the mode explicitly (COPY --chmod, chmod in the RUN step)"
        if TYPE in change.changes:
            parts.append(f"type {change.type1 or '-'} vs {change.type2 or '-'}")
            hint = "make the step create the path the same way in every build"
    return Cause(UNCLASSIFIED, "; ".join(parts), hint, family="")
