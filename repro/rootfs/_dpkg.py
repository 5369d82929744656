"""The dpkg database of a root filesystem, written as dpkg would leave it after installing.

Under ``var/lib/dpkg``:

- ``status``: one paragraph per package, sorted by name, ``Status: install ok
  installed``, the package's control fields in dpkg's own field order (the fields dpkg
  knows first, in its order; any others after them in the order of the control file),
  ``Conffiles`` with the md5sum of each conffile as unpacked;
- ``info/<pkg>.list`` (``/.`` then every path of the package's data.tar, in archive
  order, as the package names it: ``/bin/bash`` even on merged /usr), the control
  archive's other members as ``info/<pkg>.<member>`` (md5sums, conffiles, maintainer
  scripts, triggers, shlibs, symbols, templates), ``<pkg>:<arch>`` for ``Multi-Arch:
  same`` packages, and ``info/format``;
- ``triggers/``: ``File`` (file-trigger interests), one file per explicit trigger
  naming the interested packages, an empty ``Unincorp``;
- ``diversions`` and ``alternatives/<name>`` as dpkg-divert and update-alternatives
  write them (filled by repro.rootfs._effects), ``arch``.

So that dpkg, dpkg-query and apt-get in a later image know every package, every file
and every trigger exactly as if dpkg had installed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from repro.rootfs._deb import FILE, DebPackage, md5_hex
from repro.rootfs._tree import Tree

ADMIN = "var/lib/dpkg"

# dpkg's order of the fields it knows (lib/dpkg/parse.c, fieldinfos), as written to
# the status file. Others follow in the order the control file has them.
FIELD_ORDER = (
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
)
_KNOWN = {name.lower(): name for name in FIELD_ORDER}
# Control fields that describe the .deb in an archive, not an installed package.
_NOT_IN_STATUS = {"filename", "size", "md5sum", "sha256", "sha1", "msdos-filename"}
STATUS_LINE = "install ok installed"


@dataclass
class Diversion:
    path: str  # "/bin/sh"
    divert_to: str  # "/bin/sh.distrib"
    package: str


@dataclass
class Alternative:
    """One update-alternatives group: a master link, slaves, and its choices."""

    name: str
    link: str
    slaves: list[tuple[str, str]] = field(default_factory=list)  # (name, link)
    # choice path -> (priority, {slave name: path})
    choices: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)

    def best(self) -> str:
        """The choice auto mode selects: highest priority, then the first registered."""
        return max(self.choices, key=lambda c: self.choices[c][0])

    def admin_file(self) -> bytes:
        lines = ["auto", self.link]
        for name, link in self.slaves:
            lines += [name, link]
        lines.append("")
        for path, (priority, slave_paths) in self.choices.items():
            lines += [path, str(priority)]
            lines += [slave_paths.get(name, "") for name, _ in self.slaves]
        lines.append("")
        return ("\n".join(lines) + "\n").encode()


@dataclass
class Database:
    """What the effects add to the dpkg database besides the packages themselves."""

    diversions: list[Diversion] = field(default_factory=list)
    alternatives: dict[str, Alternative] = field(default_factory=dict)

    def divert(self, path: str, divert_to: str, package: str) -> None:
        self.diversions.append(Diversion(path, divert_to, package))


def conffiles(package: DebPackage) -> list[str]:
    data = package.control_files.get("conffiles", (b"", 0))[0].decode("utf-8", "replace")
    out = []
    for line in data.splitlines():
        line = line.strip()
        if line.startswith("remove-on-upgrade "):
            continue  # a flag for dpkg on upgrade, not a conffile of this version
        if line:
            out.append(line)
    return out


def status_paragraph(package: DebPackage, tree: Tree) -> str:
    """The package's paragraph in var/lib/dpkg/status."""
    by_name: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for f in package.fields:
        lower = f.name.lower()
        if lower in _NOT_IN_STATUS or lower == "status":
            continue
        if lower in _KNOWN:
            by_name[_KNOWN[lower]] = f.value
        else:
            extra.append((f.name, f.value))
    if by_name.get("Essential", "").lower() != "yes":
        by_name.pop("Essential", None)
    if by_name.get("Protected", "").lower() != "yes":
        by_name.pop("Protected", None)
    by_name["Status"] = STATUS_LINE
    files = conffiles(package)
    if files:
        lines: list[str] = []
        for path in files:
            entry = next((e for e in package.entries if "/" + e.name == path), None)
            digest = (
                md5_hex(package.read(entry))
                if entry is not None and entry.kind == FILE
                else "newconffile"
            )
            lines.append(f" {path} {digest}")
        by_name["Conffiles"] = "\n" + "\n".join(lines)
    out = []
    for name in FIELD_ORDER:
        if name in by_name:
            out.append(_field(name, by_name[name]))
    out += [_field(name, value) for name, value in extra]
    return "".join(out)


def _field(name: str, value: str) -> str:
    if value.startswith("\n"):
        return f"{name}:{value}\n"
    return f"{name}: {value}\n"


def status_file(packages: Iterable[DebPackage], tree: Tree) -> bytes:
    ordered = sorted(packages, key=lambda p: (p.name, p.architecture))
    return "\n".join(status_paragraph(p, tree) for p in ordered).encode() + b"\n"


def file_list(package: DebPackage, replaced: Iterable[str] = ()) -> bytes:
    """info/<pkg>.list: the package's paths as it names them, in archive order."""
    gone = set(replaced)
    lines = []
    seen: set[str] = set()
    for entry in package.entries:
        path = "/." if entry.name == "." else "/" + entry.name
        if entry.name in gone or path in seen:
            continue
        seen.add(path)
        lines.append(path)
    if "/." not in seen:
        lines.insert(0, "/.")
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class TriggerInterest:
    name: str  # a trigger name, or an absolute path for a file trigger
    package: str  # the db name of the interested package
    noawait: bool


def trigger_interests(package: DebPackage) -> list[TriggerInterest]:
    data = package.control_files.get("triggers", (b"", 0))[0].decode("utf-8", "replace")
    out = []
    for line in data.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) != 2 or not words[0].startswith("interest"):
            continue  # activate* lines act at install time; nothing stays in the database
        directive, name = words
        out.append(TriggerInterest(name, package.db_name, directive == "interest-noawait"))
    return out


def write_database(
    tree: Tree,
    packages: Sequence[DebPackage],
    db: Database,
    architecture: str,
    replaced: dict[str, set[str]],
) -> None:
    """Write var/lib/dpkg into the tree."""
    for sub in ("", "/info", "/triggers", "/updates", "/parts", "/alternatives"):
        tree.put_dir(ADMIN + sub)
    tree.put_file(f"{ADMIN}/status", status_file(packages, tree))
    tree.put_file(f"{ADMIN}/arch", f"{architecture}\n".encode())
    tree.put_file(f"{ADMIN}/info/format", b"1\n")
    for package in packages:
        base = f"{ADMIN}/info/{package.db_name}"
        tree.put_file(base + ".list", file_list(package, replaced.get(package.name, ())))
        for member, (data, mode) in sorted(package.control_files.items()):
            tree.put_file(f"{base}.{member}", data, mode=mode or 0o644)
    file_triggers: list[str] = []
    explicit: dict[str, list[str]] = {}
    for package in packages:
        for t in trigger_interests(package):
            who = t.package + ("/noawait" if t.noawait else "")
            if t.name.startswith("/"):
                file_triggers.append(f"{t.name} {who}")
            else:
                explicit.setdefault(t.name, []).append(who)
    if file_triggers:
        tree.put_file(f"{ADMIN}/triggers/File", ("\n".join(sorted(file_triggers)) + "\n").encode())
    for name, interested in sorted(explicit.items()):
        text = "\n".join(sorted(interested)) + "\n"
        tree.put_file(f"{ADMIN}/triggers/{name}", text.encode())
    tree.put_file(f"{ADMIN}/triggers/Unincorp", b"")
    if db.diversions:
        # dpkg keeps its newest diversion first.
        text = "".join(f"{d.path}\n{d.divert_to}\n{d.package}\n" for d in reversed(db.diversions))
        tree.put_file(f"{ADMIN}/diversions", text.encode())
    for name, alternative in sorted(db.alternatives.items()):
        tree.put_file(f"{ADMIN}/alternatives/{name}", alternative.admin_file())
