"""Is the built image what the lock says? Its package database against base + lock.

After a build, the image's package database is compared with its base's and the
lock's closures:

- a package installed (or changed) relative to the base that no package set pins at
  that version is *unpinned*: a ``Recommends`` that ``apt-get install`` pulled in
  without ``--no-install-recommends``, an ``apt-get install`` of a name outside the
  lock, a package from a source the lock does not know;
- a locked package that is not installed at its locked version is *not installed*:
  typically a Dockerfile that never uses its set's ``REPRO_APT_<NAME>`` build arg.

Either fails the build (exit 1) with one line naming the packages and the fix;
``--allow-unpinned`` makes it a warning. The JSON result lists both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from repro.errors import (
    UnpinnedPackages,  # noqa: F401 - defined in errors, re-exported here
)
from repro.recipe import Recipe


@dataclass
class Binding:
    checked: bool = False
    base: str = ""
    unpinned: list[str] = field(default_factory=list)  # "name version"
    not_installed: dict[str, list[str]] = field(default_factory=dict)  # set -> ["name version"]

    @property
    def ok(self) -> bool:
        return not self.unpinned and not self.not_installed

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "base": self.base,
            "unpinned": self.unpinned,
            "not_installed": self.not_installed,
        }

    def message(self, recipe: str) -> str:
        parts = []
        if self.unpinned:
            parts.append(
                f"{len(self.unpinned)} installed package(s) the lock does not pin: "
                f"{_few(self.unpinned)} (install only $REPRO_APT_<SET> with "
                "--no-install-recommends, or add them to a package set and run repro lock)"
            )
        for key, missing in sorted(self.not_installed.items()):
            var = "REPRO_" + key.upper().replace("-", "_").replace(".", "_")
            parts.append(
                f"package set {key}: {len(missing)} locked package(s) not installed: "
                f"{_few(missing)} (does the Dockerfile use ARG {var}?)"
            )
        return f"{recipe}: " + "; ".join(parts) + "; --allow-unpinned to build anyway"


def _few(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def checked_base(recipe: Recipe, lock: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(base ref, image name, platform manifest digest) the packages install on."""
    from repro.lock import base_platform_digest, image_name, package_set_base

    if recipe.packages:
        refs = {package_set_base(recipe, s) for s in recipe.packages}
        if len(refs) != 1:
            return None
        ref = refs.pop()
        arch = recipe.packages[0].architecture
    elif len(recipe.bases) == 1:
        ref, arch = recipe.bases[0].ref, "amd64"
    else:
        return None
    entry = lock.get("bases", {}).get(ref)
    if not ref or not entry:
        return None
    platforms = recipe.platforms or ("linux/amd64",)
    if len(platforms) != 1:
        return None
    _platform, manifest = base_platform_digest(entry, arch)
    if not manifest:
        return None
    return ref, entry.get("image") or image_name(ref), manifest


def check_image(recipe: Recipe, lock: Mapping[str, Any] | None, layout_path: object) -> Binding:
    """Compare the package database of the image in the OCI layout at `layout_path`
    (BuildKit's export, one platform) with its base's and the lock's."""
    from repro import oci
    from repro.packages.installed import from_layout, from_registry

    binding = Binding()
    if not lock:
        return binding
    where = checked_base(recipe, lock)
    if where is None:
        return binding
    ref, image, manifest = where
    from repro.registry import LazyRegistry

    # The client is made only if the base's manifest or database is not cached.
    with contextlib.closing(LazyRegistry()) as registry:
        base_db = from_registry(oci.CachedDocuments(registry.get), image, manifest)
    if base_db is None:
        return binding  # not a distribution image: nothing to compare with
    layout = oci.OCILayout(layout_path)  # type: ignore[arg-type]
    images = [d for d in layout.image_manifests() if not d.is_attestation]
    if len(images) != 1:
        return binding
    doc = layout.read_json(images[0])
    layers = [
        oci.Descriptor.from_json(d, f"built image layers[{i}]")
        for i, d in enumerate(doc.get("layers") or [])
    ]
    built = from_layout(layout, layers)
    binding.checked, binding.base = True, ref
    have = built.packages if built is not None and built.kind == base_db.kind else {}
    pinned: dict[str, set[str]] = {}
    for kind_sets in lock.get("packages", {}).values():
        for entry in kind_sets.values():
            for pin in entry.get("package", []):
                pinned.setdefault(pin["name"], set()).add(pin["version"])
    for name in sorted(have):
        pkg = have[name]
        before = base_db.packages.get(name)
        if before is not None and before.version == pkg.version:
            continue
        if pkg.version not in pinned.get(name, set()):
            binding.unpinned.append(f"{name} {pkg.version}")
    for s in recipe.packages:
        entry = lock.get("packages", {}).get(s.kind, {}).get(s.name) or {}
        missing = [
            f"{p['name']} {p['version']}"
            for p in entry.get("package", [])
            if have.get(p["name"]) is None or have[p["name"]].version != p["version"]
        ]
        if missing:
            binding.not_installed[s.key] = missing
    return binding
