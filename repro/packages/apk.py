"""Alpine ``APKINDEX``: parsing, apk's version order, and dependency closures.

An index stanza has ``P:`` name, ``V:`` version, ``A:`` arch, ``C:`` checksum,
``D:`` dependencies (``name``, ``name>=1.2``, ``so:libc.musl-x86_64.so.1``, ``!name``
for a conflict), ``p:`` provides (``cmd:sh``, ``so:libz.so.1=1.3``) and ``k:``
provider priority. The resolver is breadth-first and deterministic: a real package
of the name first, else the chosen provider, else the provider with the highest
priority, then by name.
"""

from __future__ import annotations

import difflib
import functools
import io
import re
import tarfile
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from repro.packages._common import Closure, Pin, ResolveError

if TYPE_CHECKING:
    from repro.packages.trust import ApkTrust

# --- versions ---------------------------------------------------------------------------

_SUFFIX_RANK = {
    "alpha": -4,
    "beta": -3,
    "pre": -2,
    "rc": -1,
    "cvs": 1,
    "svn": 2,
    "git": 3,
    "hg": 4,
    "p": 5,
}
_VERSION_RE = re.compile(
    r"^(?P<nums>\d+(?:\.\d+)*)(?P<letter>[a-z]?)(?P<suffixes>(?:_[a-z]+\d*)*)(?:-r(?P<rev>\d+))?$"
)


@functools.lru_cache(maxsize=65536)
def version_key(version: str) -> tuple[object, ...]:
    m = _VERSION_RE.match(version)
    if not m:  # an invalid version sorts by its text, below every valid one
        return ((-1,), 0, ((0, 0),), 0, version)
    nums = tuple(int(n) for n in m.group("nums").split("."))
    letter = ord(m.group("letter")) if m.group("letter") else 0
    suffixes = []
    for part in m.group("suffixes").split("_")[1:]:
        sm = re.match(r"([a-z]+)(\d*)", part)
        assert sm is not None
        suffixes.append((_SUFFIX_RANK.get(sm.group(1), 0), int(sm.group(2) or 0)))
    suffixes.append((0, 0))  # the release itself: above pre-releases, below _p
    return (nums, letter, tuple(suffixes), int(m.group("rev") or 0), "")


def _newest_first(version: str) -> tuple[object, ...]:
    """A sort key putting higher versions first."""
    return tuple(_Neg(x) for x in (version_key(version),))


@functools.total_ordering
class _Neg:
    def __init__(self, value: object) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Neg) and self.value == other.value

    def __lt__(self, other: _Neg) -> bool:
        return bool(other.value < self.value)  # type: ignore[operator]

    def __hash__(self) -> int:
        return hash(self.value)


def compare_versions(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)  # type: ignore[operator]


def satisfies(version: str, op: str, wanted: str) -> bool:
    if op == "~":  # fuzzy: the same version prefix
        return (
            version == wanted
            or version.startswith(wanted + ".")
            or version.startswith(wanted + "-")
        )
    c = compare_versions(version, wanted)
    return {"=": c == 0, "<": c < 0, ">": c > 0, "<=": c <= 0, ">=": c >= 0}[op]


@dataclass(frozen=True)
class Dep:
    name: str
    op: str = ""
    version: str = ""
    conflict: bool = False

    def __str__(self) -> str:
        return f"{'!' if self.conflict else ''}{self.name}{self.op}{self.version}"


_DEP_RE = re.compile(r"^(!?)([^<>=~!]+)(?:(>=|<=|=|<|>|~=|~)(.+))?$")


def parse_dep(token: str) -> Dep:
    m = _DEP_RE.match(token.strip())
    if not m:
        raise ResolveError(f"bad apk dependency {token!r}")
    op = m.group(3) or ""
    return Dep(m.group(2), "~" if op == "~=" else op, m.group(4) or "", bool(m.group(1)))


# --- the index -----------------------------------------------------------------------------


@dataclass
class ApkPackage:
    name: str
    version: str
    arch: str
    checksum: str
    size: int
    depends: list[Dep]
    provides: list[Dep]
    priority: int
    origin: str = ""
    fields: dict[str, str] = field(default_factory=dict, repr=False)

    def pin(self) -> Pin:
        return Pin(
            name=self.name,
            version=self.version,
            architecture=self.arch,
            checksum=self.checksum,
            filename=f"{self.name}-{self.version}.apk",
            size=self.size,
            origin=self.origin,
        )


class ApkIndex:
    def __init__(self) -> None:
        self.packages: dict[str, list[ApkPackage]] = {}
        self.providers: dict[str, list[tuple[ApkPackage, str]]] = {}

    def add(self, text: str, origin: str = "") -> int:
        count = 0
        for stanza in text.split("\n\n"):
            f: dict[str, str] = {}
            for line in stanza.splitlines():
                if len(line) > 2 and line[1] == ":":
                    f[line[0]] = line[2:]
            if "P" not in f or "V" not in f:
                continue
            pkg = ApkPackage(
                name=f["P"],
                version=f["V"],
                arch=f.get("A", ""),
                checksum=f.get("C", ""),
                size=int(f.get("S", "0") or 0),
                depends=[parse_dep(t) for t in f.get("D", "").split()],
                provides=[parse_dep(t) for t in f.get("p", "").split()],
                priority=int(f.get("k", "0") or 0),
                origin=origin,
                fields=f,
            )
            self.packages.setdefault(pkg.name, []).append(pkg)
            for prov in pkg.provides:
                self.providers.setdefault(prov.name, []).append((pkg, prov.version))
            count += 1
        return count

    def versions(self, name: str) -> list[ApkPackage]:
        return sorted(
            self.packages.get(name, []), key=lambda p: version_key(p.version), reverse=True
        )


def parse_apkindex_archive(data: bytes) -> str:
    """The APKINDEX text inside an ``APKINDEX.tar.gz`` (signature and description skipped)."""
    # The file is gzip streams concatenated (signature, then the index): read them all.
    import gzip

    raw = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", ignore_zeros=True) as tar:
        for member in tar:
            if member.name == "APKINDEX" and member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                return f.read().decode("utf-8", "replace")
    raise ResolveError("APKINDEX.tar.gz has no APKINDEX file")


_PARSED: dict[tuple[str, ...], ApkIndex] = {}
_LOCK = threading.Lock()


def load_apk_index(
    mirror: str,
    branch: str,
    repositories: Sequence[str],
    arch: str,
    *,
    trust: ApkTrust | None = None,
) -> ApkIndex:
    """The merged index of ``MIRROR/BRANCH/REPO/ARCH/APKINDEX.tar.gz`` for each repository.

    Each index is read only once its signature checks out against the keys `trust`
    names (``repro.packages.trust.apk_trust(set, repo)``; default: /etc/apk/keys and
    /usr/share/apk/keys), and only the part the signature covers is read.
    """
    import httpx

    from repro.errors import MirrorError
    from repro.packages.apksign import verify_apkindex
    from repro.packages.trust import default_apk_trust

    trust = trust or default_apk_trust()
    key = (mirror, branch, *repositories, arch, repr(trust))
    with _LOCK:
        if key in _PARSED:
            return _PARSED[key]
    index = ApkIndex()
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        for repo in repositories:
            path = f"/{branch}/{repo}/{arch}/APKINDEX.tar.gz"
            try:
                response = client.get(mirror + path)
            except httpx.HTTPError as exc:
                raise MirrorError(f"mirror unreachable: {type(exc).__name__} for {path}") from None
            if response.status_code != 200:
                raise MirrorError(f"mirror answered HTTP {response.status_code} for {path}")
            signed = verify_apkindex(response.content, path.lstrip("/"), trust)
            index.add(parse_apkindex_archive(signed), f"{branch}/{repo}")
    with _LOCK:
        _PARSED[key] = index
    return index


# --- resolving --------------------------------------------------------------------------------


def resolve_apk(
    index: ApkIndex,
    requested: Sequence[str],
    *,
    assume_installed: Iterable[str] = (),
    label: str = "",
) -> Closure:
    """The full closure of `requested` (``name`` or ``name=version``, ``name>=v``…)."""
    where = f"{label}: " if label else ""
    chosen: dict[str, ApkPackage] = {}
    provided: dict[str, list[tuple[ApkPackage, str]]] = {}
    assumed = set(assume_installed)

    def ok(dep: Dep, version: str) -> bool:
        return not dep.op or bool(version and satisfies(version, dep.op, dep.version))

    def satisfied(dep: Dep) -> bool:
        if dep.name in assumed:
            return True
        pkg = chosen.get(dep.name)
        if pkg is not None and ok(dep, pkg.version):
            return True
        return any(ok(dep, v) for _p, v in provided.get(dep.name, []))

    def conflict_of(pkg: ApkPackage) -> str:
        for dep in pkg.depends:
            if dep.conflict:
                other = chosen.get(dep.name)
                if other is not None and ok(dep, other.version):
                    return f"{pkg.name} {pkg.version} conflicts with {other.name} {other.version}"
        for other in chosen.values():
            for dep in other.depends:
                names = (pkg.name, *[p.name for p in pkg.provides])
                if (
                    dep.conflict
                    and dep.name in names
                    and (dep.name != pkg.name or ok(dep, pkg.version))
                ):
                    return f"{other.name} {other.version} conflicts with {pkg.name} {pkg.version}"
        return ""

    def candidate(dep: Dep) -> ApkPackage | None:
        if dep.name in chosen:
            return None
        for pkg in index.versions(dep.name):
            if ok(dep, pkg.version) and not conflict_of(pkg):
                return pkg
        providers = [(p, v) for p, v in index.providers.get(dep.name, []) if ok(dep, v)]
        for p, _ in providers:
            if chosen.get(p.name) is p:
                return p
        providers.sort(key=lambda pv: (-pv[0].priority, pv[0].name, _newest_first(pv[0].version)))
        for p, _ in providers:
            if p.name not in chosen and not conflict_of(p):
                return p
        return None

    def missing(dep: Dep, chain: list[str]) -> ResolveError:
        path = " -> ".join([*chain, str(dep)])
        if dep.name in chosen:
            have = chosen[dep.name]
            return ResolveError(
                f"{where}unsatisfiable: {path}, but {have.name} {have.version} is already chosen"
            )
        if dep.name in index.packages or dep.name in index.providers:
            versions = (
                ", ".join(p.version for p in index.versions(dep.name)[:3]) or "providers only"
            )
            conflict = next(
                (c for c in (conflict_of(p) for p in index.versions(dep.name)) if c), ""
            )
            detail = f"conflict: {conflict}" if conflict else f"available: {versions}"
            return ResolveError(f"{where}unsatisfiable: {path} ({detail})")
        close = difflib.get_close_matches(dep.name, list(index.packages), n=3, cutoff=0.75)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return ResolveError(f"{where}no package {dep.name!r}: {path}{hint}")

    queue: deque[tuple[list[Dep], list[str]]] = deque(([parse_dep(r)], []) for r in requested)
    while queue:
        deps, chain = queue.popleft()
        for dep in deps:
            if dep.conflict:
                other = chosen.get(dep.name)
                if other is not None and ok(dep, other.version):
                    raise ResolveError(
                        f"{where}conflict: {chain[-1] if chain else '?'} conflicts with "
                        f"{other.name} {other.version} (via {' -> '.join(chain)})"
                    )
                continue
            if satisfied(dep):
                continue
            pkg = candidate(dep)
            if pkg is None:
                raise missing(dep, chain)
            conflict = conflict_of(pkg)
            if conflict:
                raise ResolveError(
                    f"{where}conflict: {conflict} (via {' -> '.join([*chain, pkg.name])})"
                )
            chosen[pkg.name] = pkg
            for prov in pkg.provides:
                provided.setdefault(prov.name, []).append((pkg, prov.version))
            queue.append((pkg.depends, [*chain, pkg.name]))
    return Closure([p.pin() for p in sorted(chosen.values(), key=lambda p: p.name)])
