"""The root filesystem as a tree of nodes, filled from packages the way dpkg unpacks them.

Paths are image paths without a leading slash (``usr/bin/bash``); ``.`` is the root.
Packages are added one at a time, each entry in its archive's order:

- every parent directory is looked up through the tree, following symbolic links
  the way the kernel would inside the image (an absolute target starts at the image's
  root). That is how merged /usr works: ``bin`` is a link to ``usr/bin``, so a
  package's ``bin/bash`` lands at ``usr/bin/bash``, as with dpkg on a system that
  debootstrap or mmdebstrap set up. A link whose target climbs above the root with
  ``..`` is an escape and an error, as is a chain of links that never ends (a loop);
- a directory entry over a link to a directory keeps the link (dpkg does the same,
  and merged /usr depends on it);
- two packages may ship the same directory, or the same file, link or hard link
  with identical content and metadata. Anything else at one path is a conflict:
  an error naming the path and both packages, unless the recipe's ``prefer`` list
  names one of them, which then wins (and the path leaves the other's file list,
  as when dpkg replaces a file);
- device nodes are refused: a root filesystem made of packages has none (a
  container runtime provides /dev).

Nothing here touches the disk: file contents stay in the packages' spills until the
layer is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from repro.errors import RootfsError  # noqa: F401 - defined in errors, re-exported here
from repro.rootfs._deb import (
    BLOCK,
    CHAR,
    DIR,
    FIFO,
    FILE,
    HARDLINK,
    SYMLINK,
    DebPackage,
    Entry,
)

MAX_HOPS = 40  # as the kernel's ELOOP limit

# Directories that merged /usr turns into links, as debootstrap's setup_merged_usr and
# mmdebstrap's merged-usr hook make them: bin, sbin and lib always; the biarch library
# directories of the architecture only when a package ships something there (the
# usr-is-merged package removes the unused ones, so a debootstrapped system ends the
# same way).
MERGED_USR_DIRS = ("bin", "sbin", "lib")
BIARCH_DIRS = {
    "amd64": ("lib32", "lib64", "libx32"),
    "i386": ("lib64", "libx32"),
    "mips": ("lib32", "lib64"),
    "mipsel": ("lib32", "lib64"),
    "mips64el": ("lib32", "lib64", "libo32"),
    "ppc64el": ("lib64",),
    "s390x": ("lib32",),
    "arm64": (),
    "armhf": (),
    "armel": (),
    "riscv64": (),
}




@dataclass
class Node:
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    linkname: str = ""  # symlink: target as written; hard link: image path of its file
    owner: str = ""  # the package that put it here; "" for what repro made
    package: DebPackage | None = None
    entry: Entry | None = None
    data: bytes | None = None
    implicit: bool = False  # a parent directory no package listed (yet)
    _sha256: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        if self.kind != FILE:
            return 0
        if self.data is not None:
            return len(self.data)
        return self.entry.size if self.entry else 0

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.package is not None and self.entry is not None:
            return self.package.read(self.entry)
        return b""

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.content()).hexdigest()
        return self._sha256

    def same_as(self, other: Node) -> bool:
        """Same kind, metadata and content (what makes a path shared, not conflicting)."""
        if self.kind != other.kind:
            return False
        if self.kind == DIR:
            return True
        if (self.mode, self.uid, self.gid) != (other.mode, other.uid, other.gid):
            return False
        if self.kind in (SYMLINK, HARDLINK):
            return self.linkname == other.linkname
        if self.kind == FILE:
            return self.size == other.size and self.sha256() == other.sha256()
        return True


def _join(base: str, name: str) -> str:
    return name if base in ("", ".") else f"{base}/{name}"


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "."


class Tree:
    """The merged root filesystem."""

    def __init__(
        self, epoch: int, *, merged_usr: bool = True, architecture: str = "amd64", label: str = ""
    ) -> None:
        self.epoch = epoch
        self.label = label
        self.nodes: dict[str, Node] = {".": Node(DIR, 0o755, mtime=epoch)}
        # package name -> paths it ships (as it names them) that another package took over
        self.replaced: dict[str, set[str]] = {}
        self.biarch: tuple[str, ...] = ()
        self.merged_usr = merged_usr
        if merged_usr:
            for name in MERGED_USR_DIRS:
                self._merged_link(name)
            self.biarch = BIARCH_DIRS.get(architecture, ())

    @classmethod
    def unpack(
        cls,
        packages: Sequence[DebPackage],
        *,
        epoch: int,
        merged_usr: bool,
        architecture: str,
        prefer: Sequence[str] = (),
        label: str = "",
    ) -> Tree:
        """A tree with every package unpacked, in the given order; `prefer` must name
        packages of the set."""
        names = {p.name for p in packages}
        for name in prefer:
            if name not in names:
                raise RootfsError(
                    f"{label}: prefer names {name!r}, which is not in the package set"
                )
        tree = cls(epoch, merged_usr=merged_usr, architecture=architecture, label=label)
        for package in packages:
            tree.add_package(package, prefer)
        return tree

    def _merged_link(self, name: str) -> None:
        self.nodes[f"usr/{name}"] = Node(DIR, 0o755, mtime=self.epoch, implicit=True)
        self.nodes.setdefault("usr", Node(DIR, 0o755, mtime=self.epoch, implicit=True))
        self.nodes[name] = Node(SYMLINK, 0o777, mtime=self.epoch, linkname=f"usr/{name}")

    def _where(self) -> str:
        return f"{self.label}: " if self.label else ""

    # --- looking things up ---------------------------------------------------------

    def _follow(self, link: str, hops: int) -> tuple[str, int]:
        """The path a symlink at `link` points to (its own links resolved), and hops used."""
        node = self.nodes[link]
        target = node.linkname
        base = "." if target.startswith("/") else _parent(link)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if base == ".":
                    raise RootfsError(
                        f"{self._where()}/{link} -> {target} escapes the root "
                        f"({node.owner or 'repro'})"
                    )
                base = _parent(base)
                continue
            base = _join(base, part)
            nxt = self.nodes.get(base)
            if nxt is not None and nxt.kind == SYMLINK:
                hops += 1
                if hops > MAX_HOPS:
                    raise RootfsError(f"{self._where()}symbolic link loop at /{link} -> {target}")
                base, hops = self._follow(base, hops)
        return base, hops

    def physical(self, path: str, *, create: bool = False, owner: str = "") -> str:
        """Where `path` is in the tree: its parent directories resolved through links.

        With `create`, missing parents become directories (0755, root), as tar does.
        """
        if path == ".":
            return "."
        parts = path.split("/")
        current = "."
        hops = 0
        for i, part in enumerate(parts[:-1]):
            candidate = _join(current, part)
            node = self.nodes.get(candidate)
            if node is None and create and current == "." and part in self.biarch:
                self._merged_link(part)
                node = self.nodes[candidate]
            if node is None:
                if not create:
                    return _join(candidate, "/".join(parts[i + 1 :]))
                self.nodes[candidate] = Node(DIR, 0o755, mtime=self.epoch, implicit=True)
                current = candidate
                continue
            if node.kind == SYMLINK:
                hops += 1
                if hops > MAX_HOPS:
                    raise RootfsError(f"{self._where()}symbolic link loop at /{candidate}")
                resolved, hops = self._follow(candidate, hops)
                target = self.nodes.get(resolved)
                if target is None and create:
                    raise RootfsError(
                        f"{self._where()}/{path} ({owner}) is under /{candidate}, "
                        f"a link to /{resolved}, which does not exist"
                    )
                if target is not None and target.kind != DIR:
                    raise RootfsError(
                        f"{self._where()}/{path} ({owner}) is under /{candidate}, which is not "
                        "a directory"
                    )
                current = resolved
                continue
            if node.kind != DIR:
                raise RootfsError(
                    f"{self._where()}/{path} ({owner or 'repro'}) is under /{candidate}, which "
                    f"{node.owner or 'repro'} ships as a {node.kind}"
                )
            current = candidate
        if create and current == "." and parts[-1] in self.biarch and parts[-1] not in self.nodes:
            self._merged_link(parts[-1])
        return _join(current, parts[-1])

    def get(self, path: str, *, follow: bool = True) -> Node | None:
        """The node at `path` (through links, the last one too unless not `follow`)."""
        try:
            where = self.physical(path)
            node = self.nodes.get(where)
            hops = 0
            while follow and node is not None and node.kind == SYMLINK:
                hops += 1
                if hops > MAX_HOPS:
                    return None
                where, _ = self._follow(where, hops)
                node = self.nodes.get(where)
            return node
        except RootfsError:
            return None

    def realpath(self, path: str) -> str:
        """`path` with every link on it resolved, the last one too (dangling: as far as it goes)."""
        where = self.physical(path)
        node = self.nodes.get(where)
        hops = 0
        while node is not None and node.kind == SYMLINK and hops <= MAX_HOPS:
            where, hops = self._follow(where, hops + 1)
            node = self.nodes.get(where)
        return where

    def exists(self, path: str) -> bool:
        return self.get(path, follow=False) is not None

    def read(self, path: str) -> bytes:
        node = self.get(path)
        if node is None or node.kind != FILE:
            raise RootfsError(f"{self._where()}/{path} is not a file in the root filesystem")
        return node.content()

    def children(self, path: str) -> list[str]:
        """Names directly under a directory (through links), sorted."""
        base = self.physical(path) if path != "." else "."
        node = self.nodes.get(base)
        while node is not None and node.kind == SYMLINK:
            base, _ = self._follow(base, 0)
            node = self.nodes.get(base)
        prefix = "" if base == "." else base + "/"
        return sorted(
            p[len(prefix) :]
            for p in self.nodes
            if p.startswith(prefix) and p != base and "/" not in p[len(prefix) :] and p != "."
        )

    def __iter__(self) -> Iterator[tuple[str, Node]]:
        return iter(self.nodes.items())

    # --- repro's own additions --------------------------------------------------------

    def put(self, path: str, node: Node, *, replace: bool = False) -> str:
        """Add what repro makes (a maintainer script's effect); returns its tree path."""
        where = self.physical(path, create=True)
        old = self.nodes.get(where)
        if old is not None and not replace:
            if old.kind == DIR and node.kind == DIR:
                return where
            raise RootfsError(f"{self._where()}/{path} exists already ({old.owner or 'repro'})")
        node.mtime = min(node.mtime, self.epoch) if node.mtime else self.epoch
        self.nodes[where] = node
        return where

    def put_file(
        self, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> str:
        node = Node(FILE, mode, uid, gid, mtime, data=data)
        return self.put(path, node, replace=True)

    def put_dir(
        self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = 0
    ) -> str:
        """A directory (an existing one is kept as it is)."""
        where = self.physical(path, create=True)
        old = self.nodes.get(where)
        if old is not None:
            if old.kind == SYMLINK:
                resolved = self.get(where)
                if resolved is not None and resolved.kind == DIR:
                    return where
            if old.kind != DIR:
                raise RootfsError(f"{self._where()}/{path} exists and is not a directory")
            return where
        self.nodes[where] = Node(DIR, mode, uid, gid, min(mtime, self.epoch) or self.epoch)
        return where

    def put_symlink(self, path: str, target: str, mtime: int = 0) -> str:
        return self.put(path, Node(SYMLINK, 0o777, linkname=target, mtime=mtime), replace=True)

    # --- packages ----------------------------------------------------------------------

    def add_package(self, package: DebPackage, prefer: Sequence[str] = ()) -> None:
        """Unpack one package's entries into the tree (see the module doc for the rules)."""
        name = package.name
        for entry in package.entries:
            if entry.name == ".":
                continue
            if entry.kind in (CHAR, BLOCK):
                raise RootfsError(
                    f"{self._where()}{name} {package.version} ships a device node "
                    f"/{entry.name} ({entry.kind} {entry.devmajor},{entry.devminor}); "
                    "a root filesystem made of packages has none"
                )
            where = self.physical(entry.name, create=True, owner=name)
            node = Node(
                entry.kind,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.mtime,
                entry.linkname,
                owner=name,
                package=package,
                entry=entry,
            )
            if entry.kind == HARDLINK:
                target = self.physical(entry.linkname, owner=name)
                tnode = self.nodes.get(target)
                if tnode is None or tnode.kind != FILE or tnode.owner != name:
                    raise RootfsError(
                        f"{self._where()}{name} {package.version}: /{entry.name} is a hard link "
                        f"to /{entry.linkname}, which is not a file earlier in the package"
                    )
                node.linkname = target
            self._place(where, node, package, entry, prefer)

    def _place(
        self, where: str, node: Node, package: DebPackage, entry: Entry, prefer: Sequence[str]
    ) -> None:
        old = self.nodes.get(where)
        if old is None:
            self.nodes[where] = node
            return
        if old.implicit and node.kind == DIR:
            self.nodes[where] = node  # a package's own metadata for a directory tar made
            return
        if node.kind == DIR:
            if old.kind == DIR:
                if _wins(node.owner, old.owner, prefer):
                    self.nodes[where] = node
                return
            if old.kind == SYMLINK:
                resolved = self.get(where)
                if resolved is not None and resolved.kind == DIR:
                    return  # dpkg keeps a link to a directory (merged /usr)
        if old.kind != DIR and node.kind != DIR and old.same_as(node):
            return
        if old.kind != DIR and node.kind != DIR and old.owner and old.owner != node.owner:
            if _wins(node.owner, old.owner, prefer):
                self.nodes[where] = node
                lost = old.entry.name if old.entry is not None else where
                self.replaced.setdefault(old.owner, set()).add(lost)
                return
            if _wins(old.owner, node.owner, prefer):
                self.replaced.setdefault(node.owner, set()).add(entry.name)
                return
        what = "different content" if old.kind == node.kind else f"a {old.kind} and a {node.kind}"
        hint = (
            f'; say which one wins with [rootfs] prefer = ["{old.owner}"]'
            if old.owner and old.owner != node.owner and DIR not in (old.kind, node.kind)
            else ""
        )
        raise RootfsError(
            f"{self._where()}/{where} is shipped by both {old.owner or 'repro'} and "
            f"{node.owner} {package.version} with {what}{hint}"
        )

    # --- checks ---------------------------------------------------------------------

    def check_links(self) -> None:
        """Every symbolic link must resolve without a loop or an escape (dangling is fine)."""
        for path, node in sorted(self.nodes.items()):
            if node.kind != SYMLINK:
                continue
            current, hops = path, 0
            while True:
                current, hops = self._follow(current, hops + 1)
                nxt = self.nodes.get(current)
                if nxt is None or nxt.kind != SYMLINK:
                    break
                if hops > MAX_HOPS:
                    raise RootfsError(
                        f"{self._where()}symbolic link loop at /{path} -> {node.linkname} "
                        f"({node.owner or 'repro'})"
                    )


def _wins(candidate: str, other: str, prefer: Sequence[str]) -> bool:
    """Whether `candidate` is preferred over `other` by the recipe's prefer list."""
    if candidate not in prefer:
        return False
    return other not in prefer or prefer.index(candidate) < prefer.index(other)


__all__ = ["FIFO", "Node", "RootfsError", "Tree"]
