"""What a lock is made from: the digest of a recipe's declarations, and the
spec digests that tell whether a pin may be kept."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from repro.config import RepoConfig
from repro.errors import InputError, RecipeError
from repro.lockfile._model import LOCK_VERSION
from repro.recipe import Download, GitInput, PackageSet, Recipe


def _sha(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _package_spec(s: PackageSet) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "packages": list(s.packages),
        "suites": list(s.suites),
        "components": list(s.components),
        "architecture": s.architecture,
        "mirror": s.mirror,
        "assume_installed": list(s.assume_installed),
    }
    # Only when given, so that locks made before these keys existed stay current.
    if s.release:
        spec["release"] = s.release
    if s.base:
        spec["base"] = s.base
    if s.recommends:
        spec["recommends"] = True
    if s.rootfs:  # a [rootfs] set (repro.rootfs); absent otherwise, so older locks stay current
        spec["rootfs"] = dict(s.rootfs)
    return spec


# Debian and Alpine architecture names -> OCI platforms.
_ARCH_PLATFORMS = {
    "amd64": "linux/amd64",
    "x86_64": "linux/amd64",
    "arm64": "linux/arm64",
    "aarch64": "linux/arm64",
    "armhf": "linux/arm/v7",
    "armv7": "linux/arm/v7",
    "armel": "linux/arm/v5",
    "i386": "linux/386",
    "x86": "linux/386",
    "ppc64el": "linux/ppc64le",
    "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x",
    "riscv64": "linux/riscv64",
}


def package_set_base(recipe: Recipe, s: PackageSet) -> str:
    """The declared base a package set installs on ("" when the recipe has none)."""
    if s.base:
        return s.base
    if len(recipe.bases) == 1:
        return recipe.bases[0].ref
    if not recipe.bases:
        return ""
    raise RecipeError(
        f"package set {s.kind}.{s.name}: the recipe has {len(recipe.bases)} bases; say which "
        'one the packages are installed on with base = "…"',
        file=str(recipe.file),
        line=s.line,
    )


def base_platform_digest(entry: Mapping[str, Any], architecture: str) -> tuple[str, str]:
    """(platform, manifest digest) of a locked base for a package architecture."""
    want = _ARCH_PLATFORMS.get(architecture, f"linux/{architecture}")
    for platform, digest in sorted(entry.get("platforms", {}).items()):
        if platform_matches(platform, want):
            return platform, str(digest)
    return want, ""


def release_suites(s: PackageSet, repo: RepoConfig, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The suites of a package set: as declared, or those of its release that the
    machine's apt sources configure (release, -updates, -security; never -backports)."""
    if not s.release:
        return s.suites
    from repro.config import machine_apt_sources

    configured = "REPRO_MIRROR_" + s.mirror.upper() in environ or s.mirror in repo.mirrors
    if s.mirror == "apt" and not configured:
        found: list[str] = []
        for source in machine_apt_sources():
            if all(c in source.components for c in s.components):
                for suite in source.suites:
                    if (suite == s.release or suite.startswith(s.release + "-")) and (
                        not suite.endswith("-backports") and suite not in found
                    ):
                        found.append(suite)
        if s.release not in found:
            raise InputError(
                f"package set {s.kind}.{s.name}: no apt source of this machine serves "
                f"{s.release} {' '.join(s.components)}"
            )
        order = {s.release: 0, f"{s.release}-updates": 1, f"{s.release}-security": 2}
        return tuple(sorted(found, key=lambda x: (order.get(x, 3), x)))
    return (s.release, f"{s.release}-updates")


def _download_spec(d: Download) -> dict[str, Any]:
    return {"url": d.url, "mirror": d.mirror, "path": d.path}


def _git_spec(g: GitInput) -> dict[str, Any]:
    return {"url": g.url, "ref": g.ref}


def inputs_digest(recipe: Recipe) -> str:
    """A digest of everything in the recipe that the lock pins."""
    return _sha(
        {
            "version": LOCK_VERSION,
            "bases": [b.ref for b in recipe.bases],
            "packages": {s.key: _package_spec(s) for s in recipe.packages},
            "downloads": {d.name: _download_spec(d) for d in recipe.downloads},
            "git": {g.name: _git_spec(g) for g in recipe.git},
            "epoch": recipe.epoch_policy
            if recipe.source_date_epoch is None
            else recipe.source_date_epoch,
            "platforms": list(recipe.platforms),
        }
    )


def package_set_spec(s: PackageSet) -> str:
    """The digest of a package set's declaration: a pin is kept while it is unchanged."""
    return _sha(_package_spec(s))


def download_spec(d: Download) -> str:
    return _sha(_download_spec(d))


def git_spec(g: GitInput) -> str:
    return _sha(_git_spec(g))


def platform_matches(have: str, want: str) -> bool:
    """Whether a locked platform `have` serves `want` (`os/arch`, variant optional)."""
    return have == want or (want.count("/") == 1 and have.startswith(want + "/"))
