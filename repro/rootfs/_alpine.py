"""An Alpine root filesystem from locked .apk files: the tree, apk's database, the effects.

The packages (read and checked by `repro.rootfs._apk`) are unpacked in name order into
one `Tree`, with the same rules as .debs (conflicts, escapes, loops and device nodes
refused; ``prefer`` settles a conflict). Alpine does not merge /usr. No install script
runs. Then, as ``apk add`` leaves a fresh root:

- ``lib/apk/db/installed``: one stanza per package, in name order, with the fields apk
  writes in its order (``C: P: V: A: S: I: T: U: L:``, then ``o: m: t: c: k: D: p: i:``
  where the package has them, ``r: q:``), then per directory ``F:`` (``M:uid:gid:mode``
  when not root 0755) and per file or link ``R:`` (``a:uid:gid:mode`` when not root
  0644) and ``Z:``, the Q1 SHA-1 of its bytes (of its target, for a link);
- ``lib/apk/db/scripts.tar`` (the install scripts, as ``name-version.C.post-install``,
  which apk runs on upgrade or removal) and ``lib/apk/db/triggers``;
- ``etc/apk/world`` (the set's requested names), ``etc/apk/arch``. No
  ``etc/apk/repositories``: no mirror host is written into an image;
- the effects of the install scripts repro knows (`KNOWN`); others are reported;
- ``etc/passwd`` and ``etc/group`` when no package ships them, and the ``nonroot``
  user (65532) repro adds to every base; ``/tmp`` 1777.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from repro.errors import InputError
from repro.oci import Platform
from repro.rootfs._apk import ApkFile
from repro.rootfs._deb import DIR, HARDLINK, SYMLINK
from repro.rootfs._tree import RootfsError, Tree

NONROOT_UID = 65532
NONROOT = "nonroot"
NOLOGIN = "/sbin/nologin"
BUSYBOX_PATHS = "etc/busybox-paths.d/busybox"
INSTALL_SCRIPTS = (".pre-install", ".post-install")

# Packages whose install scripts repro has read, and what it does for a fresh install.
KNOWN: dict[str, str] = {
    "busybox": "busybox --install -s: a link to /bin/busybox at each path the package "
    f"lists in /{BUSYBOX_PATHS} where nothing else is",
}


# Alpine architecture names -> OCI platforms (architecture, variant).
PLATFORMS = {
    "x86_64": ("amd64", None),
    "aarch64": ("arm64", None),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v6"),
    "x86": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "loongarch64": ("loong64", None),
}


def alpine_platform(architecture: str) -> Platform:
    try:
        arch, variant = PLATFORMS[architecture]
    except KeyError:
        raise InputError(f"unsupported Alpine architecture {architecture!r}") from None
    return Platform(architecture=arch, os="linux", variant=variant)


@dataclass
class AlpineEffects:
    unreproduced: dict[str, list[str]] = field(default_factory=dict)
    links: int = 0  # busybox applet links made


# --- install scripts' effects ------------------------------------------------------------


def busybox_links(tree: Tree, package: ApkFile) -> int | None:
    """``busybox --install -s``: absolute links to /bin/busybox, never over a file. From
    the list the package ships (busybox cannot be run here); None without a list."""
    node = tree.get(BUSYBOX_PATHS)
    if node is None or node.owner != package.name:
        return None
    made = 0
    for line in node.content().decode("utf-8", "replace").splitlines():
        path = line.strip().lstrip("/")
        if not path or path.startswith("#") or ".." in path.split("/"):
            continue
        if tree.exists(path):
            continue
        tree.put_symlink(path, "/bin/busybox")
        made += 1
    return made


def accounts(tree: Tree) -> None:
    """root when no package ships the files, and nonroot 65532, as for every base."""
    if not tree.exists("etc/passwd"):
        tree.put_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    if not tree.exists("etc/group"):
        tree.put_file("etc/group", b"root:x:0:root\n")
    user = f"{NONROOT}:x:{NONROOT_UID}:{NONROOT_UID}:{NONROOT}:/home/{NONROOT}:{NOLOGIN}"
    for path, line in (
        ("etc/passwd", user),
        ("etc/group", f"{NONROOT}:x:{NONROOT_UID}:"),
    ):
        node = tree.get(path)
        if node is None or node.kind != "file":
            raise RootfsError(f"{tree.label}: /{path} is not a file")
        text = node.content().decode("utf-8", "replace")
        if any(x.split(":", 1)[0] == NONROOT for x in text.splitlines()):
            continue
        body = (text if text.endswith("\n") or not text else text + "\n") + line + "\n"
        tree.put_file(path, body.encode(), mode=node.mode, uid=node.uid, gid=node.gid)
    tree.put_dir("home")
    tree.put_dir(f"home/{NONROOT}", 0o700, uid=NONROOT_UID, gid=NONROOT_UID)


def apply(tree: Tree, packages: Sequence[ApkFile]) -> AlpineEffects:
    effects = AlpineEffects()
    for package in packages:
        scripts = [s.lstrip(".") for s in INSTALL_SCRIPTS if s in package.control_files]
        if package.name == "busybox":
            made = busybox_links(tree, package)
            if made is None:
                effects.unreproduced[package.name] = scripts or ["post-install"]
            else:
                effects.links = made
            continue
        if scripts and package.name not in KNOWN:
            effects.unreproduced[package.name] = scripts
    accounts(tree)
    return effects


# --- apk's database --------------------------------------------------------------------


def _acl(field_name: str, uid: int, gid: int, mode: int) -> str:
    return f"{field_name}:{uid}:{gid}:{mode:o}\n"


def installed_stanza(package: ApkFile, lost: set[str]) -> str:
    """The package's stanza of lib/apk/db/installed (see the module doc)."""
    info = package.info
    out = [
        f"C:{package.checksum}\n",
        f"P:{package.name}\n",
        f"V:{package.version}\n",
        f"A:{info('arch')}\n",
        f"S:{package.file_size}\n",
        f"I:{info('size') or 0}\n",
        f"T:{info('pkgdesc')}\n",
        f"U:{info('url')}\n",
        f"L:{info('license')}\n",
    ]
    for letter, key in (
        ("o", "origin"),
        ("m", "maintainer"),
        ("t", "builddate"),
        ("c", "commit"),
        ("k", "provider_priority"),
    ):
        if info(key):
            out.append(f"{letter}:{info(key)}\n")
    for letter, key in (("D", "depend"), ("p", "provides"), ("i", "install_if"), ("r", "replaces")):
        values = " ".join(v for value in package.infos(key) for v in value.split())
        if values:
            out.append(f"{letter}:{values}\n")
    if info("replaces_priority"):
        out.append(f"q:{info('replaces_priority')}\n")
    # Directories in archive order, each with the files directly in it.
    dirs: dict[str, list[str]] = {}
    for entry in package.entries:
        if entry.name == "." or entry.name in lost:
            continue
        if entry.kind == DIR:
            if entry.name not in dirs:
                dirs[entry.name] = []
                if (entry.uid, entry.gid, entry.mode) != (0, 0, 0o755):
                    dirs[entry.name].append(_acl("M", entry.uid, entry.gid, entry.mode))
            continue
        parent, _, base = entry.name.rpartition("/")
        lines = dirs.setdefault(parent, [])
        lines.append(f"R:{base}\n")
        mode = 0o777 if entry.kind == SYMLINK else entry.mode
        if (entry.uid, entry.gid, mode) != (0, 0, 0o644):
            lines.append(_acl("a", entry.uid, entry.gid, mode))
        digest = package.digests.get(entry.linkname if entry.kind == HARDLINK else entry.name)
        if digest:
            lines.append(f"Z:{digest}\n")
    for name, lines in dirs.items():
        out.append(f"F:{name}\n")
        out.extend(lines)
    return "".join(out) + "\n"


def _script_tar(packages: Sequence[ApkFile]) -> bytes:
    """lib/apk/db/scripts.tar: every package's scripts, as apk keeps them."""
    raw = b""
    for package in packages:
        for name, (data, _mode) in sorted(package.control_files.items()):
            info = tarfile.TarInfo(f"{package.name}-{package.version}.{package.checksum}{name}")
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            raw += info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)
    return raw + b"\0" * 1024 if raw else b""


def write_database(
    tree: Tree,
    packages: Sequence[ApkFile],
    world: Sequence[str],
    architecture: str,
) -> None:
    installed = "".join(
        installed_stanza(p, tree.replaced.get(p.name, set())) for p in packages
    )
    tree.put_dir("lib/apk/db")
    tree.put_file("lib/apk/db/installed", installed.encode())
    scripts = _script_tar(packages)
    if scripts:
        tree.put_file("lib/apk/db/scripts.tar", scripts)
    triggers = "".join(
        f"{p.checksum} {' '.join(p.info('triggers').split())}\n"
        for p in packages
        if p.info("triggers")
    )
    tree.put_file("lib/apk/db/triggers", triggers.encode())
    tree.put_dir("etc/apk")
    tree.put_file("etc/apk/world", "".join(f"{w}\n" for w in sorted(set(world))).encode())
    tree.put_file("etc/apk/arch", f"{architecture}\n".encode())


def assemble_apk(
    packages: Sequence[ApkFile],
    *,
    epoch: int,
    architecture: str,
    world: Sequence[str],
    prefer: Sequence[str] = (),
    label: str = "",
) -> tuple[Tree, AlpineEffects]:
    """Unpack, make the known scripts' effects, write apk's database: the finished tree."""
    ordered = sorted(packages, key=lambda p: p.name)
    tree = Tree.unpack(
        ordered,
        epoch=epoch,
        merged_usr=False,
        architecture=architecture,
        prefer=prefer,
        label=label,
    )
    effects = apply(tree, ordered)
    write_database(tree, ordered, world, architecture)
    if tree.get("tmp", follow=False) is None:
        tree.put_dir("tmp", 0o1777)
    tree.check_links()
    return tree, effects


__all__ = ["KNOWN", "AlpineEffects", "assemble_apk", "installed_stanza", "write_database"]
