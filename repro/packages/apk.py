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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from repro.packages._common import Closure, Pin, ResolveError
from repro.packages.installed import InstalledPackage

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


def _pv(name: str, version: str) -> str:
    return f"{name} {version}"


def resolve_apk(
    index: ApkIndex,
    requested: Sequence[str],
    *,
    assume_installed: Iterable[str] = (),
    label: str = "",
    installed: Mapping[str, InstalledPackage] | None = None,
) -> Closure:
    """The full closure of `requested` (``name`` or ``name=version``, ``name>=v``…).

    With `installed` (the base image's ``lib/apk/db/installed``), what the base has
    satisfies a dependency at the version it has, and so do its ``p:`` provides
    (``so:``, ``cmd:``, ``name=version``); it is not pinned again. A dependency the
    base's version does not satisfy upgrades it (and the base's packages the upgrade
    leaves unsatisfied), as ``apk add`` would; one that would need a downgrade is an
    error naming the chain and both versions. A ``!name`` conflict between a chosen
    package and one of the base's is an error.
    """
    where = f"{label}: " if label else ""
    chosen: dict[str, ApkPackage] = {}
    provided: dict[str, list[tuple[ApkPackage, str]]] = {}
    assumed = set(assume_installed)
    base: dict[str, InstalledPackage] = dict(installed or {})
    base_provides: dict[str, list[tuple[InstalledPackage, str]]] = {}
    base_depends: dict[str, list[Dep]] = {}
    for have in base.values():
        for token in have.provides.split():
            prov = parse_dep(token)
            base_provides.setdefault(prov.name, []).append((have, prov.version))
        base_depends[have.name] = [parse_dep(t) for t in have.depends.split()]

    def ok(dep: Dep, version: str) -> bool:
        return not dep.op or bool(version and satisfies(version, dep.op, dep.version))

    def kept(name: str) -> InstalledPackage | None:
        """The base's package `name`, unless the closure replaces it."""
        return None if name in chosen else base.get(name)

    def kept_providers(name: str) -> list[tuple[InstalledPackage, str]]:
        return [(p, v) for p, v in base_provides.get(name, []) if p.name not in chosen]

    def satisfied(dep: Dep) -> bool:
        if dep.name in assumed:
            return True
        pkg = chosen.get(dep.name)
        if pkg is not None and ok(dep, pkg.version):
            return True
        if any(ok(dep, v) for _p, v in provided.get(dep.name, [])):
            return True
        have = kept(dep.name)
        if have is not None and ok(dep, have.version):
            return True
        return any(ok(dep, v) for _p, v in kept_providers(dep.name))

    def conflict_of(pkg: ApkPackage) -> str:
        names = (pkg.name, *[p.name for p in pkg.provides])
        for dep in pkg.depends:
            if not dep.conflict:
                continue
            other = chosen.get(dep.name)
            if other is not None and other.name != pkg.name and ok(dep, other.version):
                return f"{pkg.name} {pkg.version} conflicts with {other.name} {other.version}"
            have = kept(dep.name)
            if have is not None and have.name != pkg.name and ok(dep, have.version):
                return (
                    f"{pkg.name} {pkg.version} conflicts with {have.name} {have.version} "
                    "in the base"
                )
            for prov, version in kept_providers(dep.name):
                if prov.name != pkg.name and (not dep.op or ok(dep, version)):
                    return (
                        f"{pkg.name} {pkg.version} conflicts with {dep.name} "
                        f"(provided by {prov.name} {prov.version} in the base)"
                    )
        for other in chosen.values():
            for dep in other.depends:
                if (
                    dep.conflict
                    and dep.name in names
                    and (dep.name != pkg.name or ok(dep, pkg.version))
                ):
                    return f"{other.name} {other.version} conflicts with {pkg.name} {pkg.version}"
        for have_name, deps in base_depends.items():
            if have_name in chosen or have_name == pkg.name:
                continue
            for dep in deps:
                if (
                    dep.conflict
                    and dep.name in names
                    and (dep.name != pkg.name or ok(dep, pkg.version))
                ):
                    have = base[have_name]
                    return (
                        f"{have.name} {have.version} in the base conflicts with "
                        f"{pkg.name} {pkg.version}"
                    )
        return ""

    def newer_than_base(pkg: ApkPackage) -> bool:
        """apk upgrades what the base has; it never downgrades it silently."""
        have = kept(pkg.name)
        return have is None or compare_versions(pkg.version, have.version) > 0

    def candidate(dep: Dep) -> ApkPackage | None:
        if dep.name in chosen:
            return None
        for pkg in index.versions(dep.name):
            if ok(dep, pkg.version) and newer_than_base(pkg) and not conflict_of(pkg):
                return pkg
        if kept(dep.name) is not None:
            return None
        providers = [(p, v) for p, v in index.providers.get(dep.name, []) if ok(dep, v)]
        for p, _ in providers:
            if chosen.get(p.name) is p:
                return p
        providers.sort(key=lambda pv: (-pv[0].priority, pv[0].name, _newest_first(pv[0].version)))
        for p, _ in providers:
            if p.name not in chosen and newer_than_base(p) and not conflict_of(p):
                return p
        return None

    def missing(dep: Dep, chain: list[str]) -> ResolveError:
        path = " -> ".join([*chain, str(dep)])
        if dep.name in chosen:
            have = chosen[dep.name]
            return ResolveError(
                f"{where}unsatisfiable: {path}, but {have.name} {have.version} is already chosen"
            )
        in_base = kept(dep.name)
        if in_base is not None:
            known = [p.version for p in index.versions(dep.name)]
            fitting = [v for v in known if ok(dep, v)]
            if fitting:
                return ResolveError(
                    f"{where}would downgrade the base: {path}, but the base has "
                    f"{_pv(in_base.name, in_base.version)} and the repositories offer only "
                    f"{fitting[0]} (apk upgrades, it does not downgrade; lock against "
                    "another base or another branch)"
                )
            offered = ", ".join(known[:3]) or "none"
            return ResolveError(
                f"{where}unsatisfiable: {path}, but the base has "
                f"{_pv(in_base.name, in_base.version)} (the repositories offer {offered})"
            )
        if dep.name in index.packages or dep.name in index.providers:
            versions = (
                ", ".join(p.version for p in index.versions(dep.name)[:3]) or "providers only"
            )
            conflict = next(
                (c for c in (conflict_of(p) for p in index.versions(dep.name)) if c), ""
            )
            if not conflict and not index.versions(dep.name):
                for p, pv in index.providers.get(dep.name, []):
                    older = kept(p.name)
                    if older is not None and ok(dep, pv) and not newer_than_base(p):
                        return ResolveError(
                            f"{where}would downgrade the base: {path}, but the base has "
                            f"{_pv(older.name, older.version)} and the repositories offer only "
                            f"{p.version}"
                        )
            detail = f"conflict: {conflict}" if conflict else f"available: {versions}"
            return ResolveError(f"{where}unsatisfiable: {path} ({detail})")
        close = difflib.get_close_matches(dep.name, list(index.packages), n=3, cutoff=0.75)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return ResolveError(f"{where}no package {dep.name!r}: {path}{hint}")

    def choose(pkg: ApkPackage) -> list[tuple[list[Dep], list[str]]]:
        """Choose `pkg`; for an upgrade of the base's package, the base's packages that
        the new version leaves unsatisfied, each to be upgraded in turn."""
        replaced = kept(pkg.name)
        chosen[pkg.name] = pkg
        for prov in pkg.provides:
            provided.setdefault(prov.name, []).append((pkg, prov.version))
        if replaced is None:
            return []
        broken: list[tuple[list[Dep], list[str]]] = []
        for other_name, deps in sorted(base_depends.items()):
            if kept(other_name) is None:
                continue
            other = base[other_name]
            for dep in deps:
                if not dep.conflict and not satisfied(dep):
                    why = f"{other.name} {other.version} (in the base) needs {dep}"
                    broken.append(([Dep(other.name, ">", other.version)], [why]))
                    break
        return broken

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
                in_base = kept(dep.name)
                if in_base is not None and ok(dep, in_base.version):
                    raise ResolveError(
                        f"{where}conflict: {chain[-1] if chain else '?'} conflicts with "
                        f"{in_base.name} {in_base.version} in the base (via {' -> '.join(chain)})"
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
            for more, why in choose(pkg):
                queue.append((more, [*chain, pkg.name, *why]))
            queue.append((pkg.depends, [*chain, pkg.name]))
    return Closure([p.pin() for p in sorted(chosen.values(), key=lambda p: p.name)])
