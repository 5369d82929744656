"""Root filesystems made of packages: a recipe kind with no Dockerfile and no BuildKit.

A recipe with a ``[rootfs]`` table (`repro.rootfs._spec`) names a Debian package set
(or an Alpine one: `repro.rootfs._alpine`);
``repro lock`` resolves its closure with nothing assumed installed
(`resolve_rootfs_set`), and ``repro build`` unpacks the locked .debs into one canonical
layer with a dpkg database and the effects of their maintainer scripts, and writes the
OCI image itself (`build_rootfs`). See docs/rootfs.md.

    repro.rootfs._deb       reading a .deb (ar, control.tar, data.tar; gz, xz, zst)
    repro.rootfs._tree      unpacking into one tree: merged /usr, conflicts, escapes, loops
    repro.rootfs._effects   what maintainer scripts would have done (with _pam, _cacerts)
    repro.rootfs._dpkg      var/lib/dpkg: status, info/, triggers, diversions, alternatives
    repro.rootfs._image     the layer (repro's one canonical encoder), config, manifest
    repro.rootfs._build     the build: fetch, read, assemble, write, output
    repro.rootfs._apk       reading a .apk, its C: checksum chain checked down to each file
    repro.rootfs._alpine    an Alpine tree: apk's installed db, world, busybox's applet links
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repro.rootfs._apk import verify_apk
    from repro.rootfs._build import build_rootfs
    from repro.rootfs._select import resolve_rootfs_set
    from repro.rootfs._spec import RootfsSpec, check_recipe, parse_rootfs

__all__ = [
    "RootfsSpec",
    "build_rootfs",
    "check_recipe",
    "parse_rootfs",
    "resolve_rootfs_set",
    "verify_apk",
]


def __getattr__(name: str) -> Any:
    # Imported on use: recipes and locks import this package, and most builds never
    # need a .deb reader.
    if name == "build_rootfs":
        from repro.rootfs._build import build_rootfs

        return build_rootfs
    if name in ("RootfsSpec", "check_recipe", "parse_rootfs"):
        from repro.rootfs import _spec

        return getattr(_spec, name)
    if name == "verify_apk":
        from repro.rootfs._apk import verify_apk

        return verify_apk
    if name == "resolve_rootfs_set":
        from repro.rootfs._select import resolve_rootfs_set

        return resolve_rootfs_set
    raise AttributeError(name)
