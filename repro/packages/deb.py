"""Debian ``Packages`` indexes: parsing, version comparison, and dependency closures.

Parsing is lazy: only Package, Version, Architecture and Provides are read up front
(to answer "which packages could satisfy this name"); the rest of a stanza is parsed
when the resolver reaches it. Versions compare with Debian's algorithm (epoch,
upstream, revision; ``~`` sorts before everything, letters before other symbols).

The resolver is greedy, breadth-first and deterministic, like apt's first pass: for each
dependency group (``Depends`` and ``Pre-Depends``, alternatives with ``|``) it keeps
a group already satisfied by what is chosen, else takes the first alternative that
can be satisfied, a real package at its newest acceptable version or a provider of a
virtual package (the one already chosen, else the first by name). ``Conflicts`` and
``Breaks`` between chosen packages are errors naming both; a missing or
unsatisfiable dependency is an error naming the chain that led to it.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from repro.packages._common import Closure, Pin, ResolveError
from repro.packages.installed import InstalledPackage

# --- versions ------------------------------------------------------------------


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch) if epoch.isdigit() else 0, upstream, revision


@functools.lru_cache(maxsize=65536)
def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version `a` is lower than, equal to or higher than `b`."""
    if a == b:
        return 0
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def satisfies(version: str, op: str, wanted: str) -> bool:
    c = compare_versions(version, wanted)
    if op in ("<<", "<"):
        return c < 0 if op == "<<" else c <= 0
    if op == "<=":
        return c <= 0
    if op == "=":
        return c == 0
    if op == ">=":
        return c >= 0
    if op in (">>", ">"):
        return c > 0 if op == ">>" else c >= 0
    raise ValueError(f"unknown version relation {op!r}")


# --- relations -------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    name: str
    op: str = ""
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.op} {self.version})" if self.op else self.name


_REL = re.compile(r"^\s*([^\s(:\[<]+)(?::[a-z0-9-]+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?")


def parse_relations(text: str, arch: str = "amd64") -> list[list[Relation]]:
    """``a (>= 1) | b, c [amd64]`` → [[a>=1, b], [c]]; arch-restricted entries filtered."""
    groups: list[list[Relation]] = []
    for group in text.split(","):
        alternatives: list[Relation] = []
        for alt in group.split("|"):
            alt = alt.strip()
            if not alt:
                continue
            arch_list = re.search(r"\[([^\]]*)\]", alt)
            if arch_list:
                archs = arch_list.group(1).split()
                negated = all(a.startswith("!") for a in archs)
                if negated and f"!{arch}" in archs:
                    continue
                if not negated and arch not in archs:
                    continue
            m = _REL.match(alt)
            if m:
                alternatives.append(Relation(m.group(1), m.group(2) or "", m.group(3) or ""))
        if alternatives:
            groups.append(alternatives)
    return groups


# --- the index -------------------------------------------------------------------


class DebPackage:
    """One stanza: name, version and architecture read; the rest parsed on demand."""

    __slots__ = ("name", "version", "architecture", "origin", "_text", "_start", "_end", "_fields")

    def __init__(
        self,
        name: str,
        version: str,
        architecture: str,
        origin: str,
        text: str,
        start: int = 0,
        end: int | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.architecture = architecture
        self.origin = origin
        self._text = text
        self._start = start
        self._end = len(text) if end is None else end
        self._fields: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"DebPackage({self.name!r}, {self.version!r}, {self.architecture!r})"

    def fields(self) -> dict[str, str]:
        if self._fields is None:
            out: dict[str, str] = {}
            last = ""
            for line in self._text[self._start : self._end].split("\n"):
                if line[:1] in (" ", "\t"):
                    if last:
                        out[last] += "\n" + line
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    last = key
                    out[key] = value.strip()
            self._fields = out
        return self._fields

    def get(self, key: str) -> str:
        return self.fields().get(key, "")

    def pin(self) -> Pin:
        f = self.fields()
        size = f.get("Size", "0")
        return Pin(
            name=self.name,
            version=self.version,
            architecture=self.architecture,
            sha256=f.get("SHA256", ""),
            filename=f.get("Filename", ""),
            size=int(size) if size.isdigit() else 0,
            origin=self.origin,
        )


class DebIndex:
    """One or more Packages files merged: every version of every package, and providers."""

    def __init__(self, architecture: str = "amd64") -> None:
        self.architecture = architecture
        self.packages: dict[str, list[DebPackage]] = {}
        self._provides_raw: list[tuple[DebPackage, str]] = []
        self._provides: dict[str, list[tuple[DebPackage, str]]] | None = None

    def add(self, text: str, origin: str = "") -> int:
        """Parse a Packages file's text into the index; returns the number of stanzas.

        One pass of ``str.find`` over the text, no per-line work: a stanza is kept as
        offsets into the shared text and parsed in full only if the resolver needs it.
        """
        count = 0
        arch_ok = (self.architecture, "all")
        packages = self.packages
        provides = self._provides_raw
        find = text.find
        startswith = text.startswith
        n = len(text)
        pos = 0
        while pos < n:
            end = find("\n\n", pos)
            if end < 0:
                end = n
            if not startswith("Package: ", pos):
                if text[pos] == "\n":  # extra blank lines between stanzas
                    pos += 1
                else:
                    pos = end + 2
                continue
            le = find("\n", pos, end)
            if le < 0:
                le = end
            v = find("\nVersion: ", pos, end)
            if v < 0:
                pos = end + 2
                continue
            ve = find("\n", v + 10, end)
            version = text[v + 10 : ve if ve >= 0 else end]
            arch = ""
            a = find("\nArchitecture: ", pos, end)
            if a >= 0:
                ae = find("\n", a + 15, end)
                arch = text[a + 15 : ae if ae >= 0 else end]
                if arch not in arch_ok:
                    pos = end + 2
                    continue
            name = text[pos + 9 : le]
            pkg = DebPackage(name, version, arch, origin, text, pos, end)
            if name in packages:
                packages[name].append(pkg)
            else:
                packages[name] = [pkg]
            pr = find("\nProvides: ", pos, end)
            if pr >= 0:
                pe = find("\n", pr + 11, end)
                provides.append((pkg, text[pr + 11 : pe if pe >= 0 else end]))
            count += 1
            pos = end + 2
        self._provides = None
        return count

    def providers(self, name: str) -> list[tuple[DebPackage, str]]:
        """(package, provided version or "") for each package that Provides `name`."""
        if self._provides is None:
            table: dict[str, list[tuple[DebPackage, str]]] = {}
            for pkg, text in self._provides_raw:
                for group in parse_relations(text, self.architecture):
                    for rel in group:
                        table.setdefault(rel.name, []).append((pkg, rel.version))
            self._provides = table
        return self._provides.get(name, [])

    def versions(self, name: str) -> list[DebPackage]:
        """Every version of `name`, newest first."""
        found = self.packages.get(name, [])
        if len(found) < 2:
            return list(found)

        def newest_first(x: DebPackage, y: DebPackage) -> int:
            return compare_versions(y.version, x.version)

        return sorted(found, key=functools.cmp_to_key(newest_first))

    def close_names(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, list(self.packages), n=3, cutoff=0.75)


# --- resolving ---------------------------------------------------------------------


def _pv(pkg: DebPackage) -> str:
    return f"{pkg.name} {pkg.version}"


def _fmt_chain(chain: Sequence[str]) -> str:
    return " -> ".join(chain)


class _Resolver:
    def __init__(
        self,
        index: DebIndex,
        assume_installed: Iterable[str],
        assume_essential: bool,
        label: str,
        installed: Mapping[str, InstalledPackage] | None = None,
        providers_by_priority: bool = False,
        recommends: bool = False,
    ) -> None:
        self.index = index
        self.label = label
        self.providers_by_priority = providers_by_priority
        self.recommends = recommends
        self.chosen: dict[str, DebPackage] = {}
        self.provided: dict[str, list[tuple[DebPackage, str]]] = {}
        self.assumed = set(assume_installed)
        # With the base's package database, nothing is assumed by priority: what the
        # base has (at the version it has) is what satisfies a dependency.
        self.assume_essential = assume_essential and installed is None
        arch = index.architecture
        self.installed = {
            n: p for n, p in (installed or {}).items() if p.architecture in (arch, "all", "")
        }
        self.installed_provides: dict[str, list[tuple[InstalledPackage, str]]] = {}
        self.installed_breaks: list[tuple[InstalledPackage, Relation]] = []
        for pkg in self.installed.values():
            for group in parse_relations(pkg.provides, arch):
                for rel in group:
                    self.installed_provides.setdefault(rel.name, []).append((pkg, rel.version))
            for group in parse_relations(pkg.breaks, arch):
                self.installed_breaks.extend((pkg, rel) for rel in group)
        self.upgrades: dict[str, str] = {}  # name -> the base's version it replaces

    def kept(self, name: str) -> InstalledPackage | None:
        """The base's package `name`, if installed and not replaced by a choice."""
        return None if name in self.chosen else self.installed.get(name)

    def is_assumed(self, name: str) -> bool:
        if name in self.assumed:
            return True
        if self.assume_essential:
            for pkg in self.index.packages.get(name, []):
                if pkg.get("Essential") == "yes":
                    return True
        return False

    def satisfied(self, rel: Relation) -> bool:
        if self.is_assumed(rel.name):
            return True
        pkg = self.chosen.get(rel.name)
        if pkg is not None and (not rel.op or satisfies(pkg.version, rel.op, rel.version)):
            return True
        for _provider, pv in self.provided.get(rel.name, []):
            if not rel.op or (pv and satisfies(pv, rel.op, rel.version)):
                return True
        have = self.kept(rel.name)
        if have is not None and (not rel.op or satisfies(have.version, rel.op, rel.version)):
            return True
        for provider, pv in self.installed_provides.get(rel.name, []):
            if provider.name in self.chosen:
                continue
            if not rel.op or (pv and satisfies(pv, rel.op, rel.version)):
                return True
        return False

    def candidate(self, rel: Relation) -> DebPackage | None:
        """The package to choose for `rel`, or None if nothing can satisfy it."""
        if rel.name in self.chosen:
            return None  # chosen at a version that does not satisfy rel
        have = self.kept(rel.name)
        for pkg in self.index.versions(rel.name):
            ok = not rel.op or satisfies(pkg.version, rel.op, rel.version)
            if have is not None and compare_versions(pkg.version, have.version) <= 0:
                ok = False  # apt upgrades what the base has; it never downgrades silently
            if ok and not self.conflicts_with_chosen(pkg):
                return pkg
        if have is not None:
            return None
        providers = [
            (pkg, pv)
            for pkg, pv in self.index.providers(rel.name)
            if not rel.op or (pv and satisfies(pv, rel.op, rel.version))
        ]
        if providers:
            for pkg, _pv in providers:
                if self.chosen.get(pkg.name) is pkg:
                    return pkg
            names = sorted({p.name for p, _ in providers})
            if self.providers_by_priority:
                # As apt does: a provider of higher Priority first (required before
                # optional), so that `awk` is mawk in a base built from nothing.
                rank = {p.name: _priority_rank(p.get("Priority")) for p, _ in providers}
                names.sort(key=lambda n: rank[n])
            for name in names:
                for pkg in self.index.versions(name):
                    if (
                        name not in self.chosen
                        and any(p is pkg for p, _ in providers)
                        and not self.conflicts_with_chosen(pkg)
                    ):
                        return pkg
        return None

    def conflicts_with_chosen(self, pkg: DebPackage) -> str:
        """A sentence if `pkg` conflicts with (or breaks, or is broken by) a chosen package."""
        arch = self.index.architecture
        for kind in ("Conflicts", "Breaks"):
            for group in parse_relations(pkg.get(kind), arch):
                for rel in group:
                    other = self.chosen.get(rel.name)
                    if other is None or other.name == pkg.name:
                        continue
                    if not rel.op or satisfies(other.version, rel.op, rel.version):
                        return f"{_pv(pkg)} {kind.lower()} with {_pv(other)}"
        for other in self.chosen.values():
            if other.name == pkg.name:
                continue
            for kind in ("Conflicts", "Breaks"):
                for group in parse_relations(other.get(kind), arch):
                    for rel in group:
                        if rel.name != pkg.name:
                            continue
                        if not rel.op or satisfies(pkg.version, rel.op, rel.version):
                            return f"{_pv(other)} {kind.lower()} with {_pv(pkg)}"
        if self.installed:
            for kind in ("Conflicts", "Breaks"):
                for group in parse_relations(pkg.get(kind), arch):
                    for rel in group:
                        have = self.kept(rel.name)
                        if have is None or have.name == pkg.name:
                            continue
                        if not rel.op or satisfies(have.version, rel.op, rel.version):
                            return (
                                f"{_pv(pkg)} {kind.lower()} with {have.name} {have.version} "
                                "in the base"
                            )
            for have, rel in self.installed_breaks:
                if rel.name != pkg.name or have.name in self.chosen or have.name == pkg.name:
                    continue
                if not rel.op or satisfies(pkg.version, rel.op, rel.version):
                    return f"{have.name} {have.version} in the base breaks {_pv(pkg)}"
        return ""

    def choose(self, pkg: DebPackage) -> list[tuple[list[list[Relation]], str]]:
        """Choose `pkg`; for an upgrade of the base's package, the base's packages that
        the new version leaves unsatisfied, each as (relation to upgrade it, why)."""
        replaced = self.installed.get(pkg.name)
        self.chosen[pkg.name] = pkg
        for group in parse_relations(pkg.get("Provides"), self.index.architecture):
            for rel in group:
                self.provided.setdefault(rel.name, []).append((pkg, rel.version))
        if replaced is None:
            return []
        self.upgrades[pkg.name] = replaced.version
        broken: list[tuple[list[list[Relation]], str]] = []
        arch = self.index.architecture
        for other in self.installed.values():
            if other.name in self.chosen or pkg.name not in other.depends:
                continue
            for group in parse_relations(other.depends, arch):
                if any(rel.name == pkg.name for rel in group) and not any(
                    self.satisfied(rel) for rel in group
                ):
                    why = f"{other.name} {other.version} (in the base) needs " + " | ".join(
                        str(r) for r in group
                    )
                    broken.append(([[Relation(other.name, ">>", other.version)]], why))
                    break
        return broken

    def missing(self, rel: Relation, chain: list[str]) -> ResolveError:
        where = f"{self.label}: " if self.label else ""
        path = _fmt_chain([*chain, str(rel)])
        if rel.name in self.chosen:
            have = self.chosen[rel.name]
            return ResolveError(
                f"{where}unsatisfiable: {path}, but {have.name} {have.version} is already chosen"
            )
        base = self.kept(rel.name)
        if base is not None:
            known = [p.version for p in self.index.versions(rel.name)]
            fitting = [v for v in known if not rel.op or satisfies(v, rel.op, rel.version)]
            if fitting:
                return ResolveError(
                    f"{where}would downgrade the base: {path}, but the base has "
                    f"{base.name} {base.version} and the suites offer only {fitting[0]}"
                    " (add the suite the base's version comes from, such as "
                    "<release>-updates or <release>-security, or lock against an older base)"
                )
            offered = ", ".join(known[:3]) or "none"
            return ResolveError(
                f"{where}unsatisfiable: {path}, but the base has {base.name} {base.version} "
                f"(the suites offer {offered})"
            )
        if self.index.versions(rel.name) or self.index.providers(rel.name):
            versions = ", ".join(p.version for p in self.index.versions(rel.name)[:3])
            conflict = ""
            for pkg in self.index.versions(rel.name):
                conflict = self.conflicts_with_chosen(pkg)
                if conflict:
                    break
            detail = (
                f"conflict: {conflict}"
                if conflict
                else f"available: {versions or 'only providers that do not match'}"
            )
            return ResolveError(f"{where}unsatisfiable: {path} ({detail})")
        close = self.index.close_names(rel.name)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return ResolveError(f"{where}no package {rel.name!r}: {path}{hint}")

    def resolve(self, requested: Sequence[str]) -> list[DebPackage]:
        # Breadth-first: the requested names are chosen before any dependency, and a
        # shallower choice before a deeper one (as apt marks what was asked for first).
        # An optional group (Recommends, with recommends=True) that nothing can
        # satisfy is left out, as apt leaves out a recommendation it cannot install.
        queue: deque[tuple[list[list[Relation]], list[str], bool]] = deque(
            ([[_parse_request(req)]], [], False) for req in requested
        )
        while queue:
            groups, chain, optional = queue.popleft()
            for group in groups:
                if any(self.satisfied(rel) for rel in group):
                    continue
                pkg = None
                for rel in group:
                    pkg = self.candidate(rel)
                    if pkg is not None:
                        break
                if pkg is None:
                    if optional:
                        continue
                    raise self.missing(group[0], chain)
                conflict = self.conflicts_with_chosen(pkg)
                if conflict:
                    if optional:
                        continue
                    where = f"{self.label}: " if self.label else ""
                    raise ResolveError(
                        f"{where}conflict: {conflict} (via {_fmt_chain([*chain, pkg.name])})"
                    )
                for broken, why in self.choose(pkg):
                    queue.append((broken, [*chain, pkg.name, why], False))
                deps = parse_relations(
                    ", ".join(x for x in (pkg.get("Pre-Depends"), pkg.get("Depends")) if x),
                    self.index.architecture,
                )
                queue.append((deps, [*chain, pkg.name], False))
                if self.recommends and pkg.get("Recommends"):
                    wanted = parse_relations(pkg.get("Recommends"), self.index.architecture)
                    queue.append((wanted, [*chain, pkg.name], True))
        return sorted(self.chosen.values(), key=lambda p: p.name)


_PRIORITIES = ("required", "important", "standard", "optional", "extra")


def _priority_rank(priority: str) -> int:
    """Where a ``Priority`` value sorts: required first, unknown or missing last."""
    try:
        return _PRIORITIES.index(priority.strip())
    except ValueError:
        return len(_PRIORITIES)


def _parse_request(text: str) -> Relation:
    """``name``, ``name=version`` or ``name (>= 1.0)``."""
    name, eq, version = text.partition("=")
    if eq and "(" not in text:
        return Relation(name.strip(), "=", version.strip())
    groups = parse_relations(text)
    if len(groups) != 1 or len(groups[0]) != 1:
        raise ResolveError(f"package request {text!r}: expected NAME, NAME=VERSION or NAME (OP V)")
    return groups[0][0]


def resolve(
    index: DebIndex,
    requested: Sequence[str],
    *,
    assume_installed: Iterable[str] = (),
    assume_essential: bool = True,
    label: str = "",
    installed: Mapping[str, InstalledPackage] | None = None,
    providers_by_priority: bool = False,
    recommends: bool = False,
) -> Closure:
    """The full dependency closure of `requested` (names, ``name=version`` or relations).

    With `installed` (the base image's package database), what the base has at a
    version that satisfies a dependency is not pinned again; a dependency the base's
    version does not satisfy upgrades it (and the base's packages that the upgrade
    leaves unsatisfied), and one that would need a downgrade is an error naming the
    chain and both versions, as apt would refuse it.

    `providers_by_priority`: among several providers of a virtual package, prefer the
    one of highest ``Priority`` (then the first by name), as apt does; off by default,
    so that existing locks keep their choices.

    `recommends`: follow ``Recommends`` too, as ``apt-get install`` does without
    ``--no-install-recommends`` (a recommendation that cannot be met is left out).
    """
    chosen = _Resolver(
        index,
        assume_installed,
        assume_essential,
        label,
        installed,
        providers_by_priority,
        recommends,
    ).resolve(requested)
    return Closure([p.pin() for p in chosen])


def index_from_texts(texts: Mapping[str, str], architecture: str = "amd64") -> DebIndex:
    index = DebIndex(architecture)
    for origin, text in texts.items():
        index.add(text, origin)
    return index
