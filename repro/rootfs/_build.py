"""``repro build`` of a [rootfs] recipe: locked packages in, a one-layer OCI image out.

1. The lock must be current (as for every build); its package set is the closure.
2. Each .deb is fetched by its locked sha256 into the checked cache
   (`repro.packages.download.fetch_pinned`: retried, never a wrong or partial file).
3. Each is read (`_deb`), without running anything, on every core.
4. They are unpacked in name order into one tree (`_tree`): merged /usr, conflicts,
   escapes, loops and device nodes refused.
5. The effects of their maintainer scripts are made (`_effects`), and the dpkg
   database written (`_dpkg`).
6. The tree becomes one canonical layer, and the image's config, manifest and index
   are written (`_image`) into a staging directory beside the output, which replaces
   the output only when everything succeeded (`oci.replace_output`).

repro writes this image itself instead of having BuildKit assemble it: there is
nothing to run, so no engine is needed; the digest depends only on the .debs, the
recipe and the epoch (not on a builder's version, snapshotter or compressor); and it
is faster than any tool that runs maintainer scripts.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from repro import oci
from repro.errors import InputError, ReproError
from repro.rootfs._deb import DebPackage, read_deb
from repro.rootfs._tree import RootfsError, Tree

if TYPE_CHECKING:
    from repro.build import RecipeResult
    from repro.recipe import PackageSet, Recipe

FETCH_JOBS = 8


def _parse_output(value: str) -> tuple[str, Path]:
    kind, sep, path = value.partition(":")
    if not sep or kind not in ("oci", "oci-archive") or not path:
        raise InputError(f"--output {value!r}: expected oci:DIR or oci-archive:FILE")
    return kind, Path(path)


def _package_set(recipe: Recipe) -> PackageSet:
    assert recipe.rootfs is not None
    for s in recipe.packages:
        if s.kind in ("apt", "apk") and s.name == recipe.rootfs.packages and s.rootfs:
            return s
    raise InputError(f"{recipe.name}: [rootfs] names no package set")  # checked when parsed


def fetch_packages(
    pins: Sequence[dict[str, Any]], source: Any, jobs: int = FETCH_JOBS
) -> tuple[list[Path], int]:
    """The cached .deb of every pin, obtained if needed from the mirror or, when the
    mirror lacks it (or with --offline), the vault (`repro.vault.obtain`); and how
    many were not in the cache."""
    from repro.packages.download import cached_path
    from repro.vault import obtain

    missing = sum(1 for p in pins if not cached_path(str(p.get("sha256", ""))).is_file())
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(pins)))) as pool:
        futures = [pool.submit(obtain, pin, source) for pin in pins]
        try:
            paths = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return paths, missing


def read_packages(
    paths: Sequence[Path], labels: Sequence[str], checksums: Sequence[str] | None = None
) -> list[DebPackage]:
    """Read every .deb (or, with their locked C: `checksums`, every .apk: checked
    against them) on every core (decompression releases the GIL)."""
    jobs = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures: list[Future[DebPackage]]
        if checksums is not None:
            from repro.rootfs._apk import read_apk

            futures = [
                pool.submit(read_apk, p, checksum, label)
                for p, checksum, label in zip(paths, checksums, labels, strict=True)
            ]
        else:
            futures = [
                pool.submit(read_deb, p, label) for p, label in zip(paths, labels, strict=True)
            ]
        out: list[DebPackage] = []
        error: BaseException | None = None
        for f in futures:
            try:
                out.append(f.result())
            except BaseException as exc:  # noqa: BLE001 - the first is raised below
                error = error or exc
        if error is not None:
            for package in out:
                package.close()
            raise error
    return out


def assemble(
    packages: Sequence[DebPackage],
    *,
    epoch: int,
    architecture: str,
    merged_usr: bool = True,
    prefer: Sequence[str] = (),
    label: str = "",
) -> tuple[Tree, Any]:
    """Unpack, reproduce the scripts' effects, write the dpkg database: the finished tree."""
    from repro.rootfs._dpkg import write_database
    from repro.rootfs._effects import apply

    ordered = sorted(packages, key=lambda p: (p.name, p.architecture))
    tree = Tree.unpack(
        ordered,
        epoch=epoch,
        merged_usr=merged_usr,
        architecture=architecture,
        prefer=prefer,
        label=label,
    )
    effects = apply(tree, ordered, epoch)
    write_database(tree, ordered, effects.db, architecture, tree.replaced)
    tmp = tree.get("tmp", follow=False)
    if tmp is None:
        tree.put_dir("tmp", 0o1777)
    tree.check_links()
    return tree, effects


def build_rootfs(
    recipe: Recipe,
    *,
    output: str | None = None,
    progress: str = "auto",
    stream: TextIO | None = None,
    offline: bool = False,
) -> RecipeResult:
    """Build a [rootfs] recipe into an OCI layout or archive (see the module doc)."""
    from repro import __version__
    from repro.build import RecipeResult, default_output
    from repro.config import load_repo_config
    from repro.devbase import go_platform
    from repro.lock import require_lock
    from repro.rootfs._image import ImageConfig, write_image, write_layer

    started = time.monotonic()
    err = stream or sys.stderr
    say = (
        (lambda text: print(f"{recipe.name}: {text}", file=err))
        if progress != "quiet"
        else (lambda text: None)
    )
    spec = recipe.rootfs
    assert spec is not None
    kind, dest = _parse_output(output or default_output(recipe))
    oci.check_output_target(kind, dest)
    lock = require_lock(recipe)
    assert lock is not None  # a [rootfs] recipe always has packages to lock
    s = _package_set(recipe)
    if s.kind == "apk":
        from repro.rootfs._alpine import alpine_platform

        platform = alpine_platform(s.architecture)
    else:
        platform = go_platform(s.architecture)
    if recipe.platforms and not all(platform.matches(p) for p in recipe.platforms):
        raise InputError(
            f"{recipe.name}: platforms {', '.join(recipe.platforms)}: a [rootfs] recipe is "
            f"for the architecture of its packages ({platform})"
        )
    epoch = int(lock["source_date_epoch"])
    set_kind = s.kind  # apt (Debian) or apk (Alpine: repro.rootfs._alpine)
    pins = lock.get("packages", {}).get(set_kind, {}).get(s.name, {}).get("package", [])
    if not pins:
        raise InputError(
            f"{recipe.name}: repro.lock has no packages for {set_kind}:{s.name}: run repro lock"
        )
    from repro.registry import Registry
    from repro.vault import set_source

    entry = lock.get("packages", {}).get(set_kind, {}).get(s.name, {})
    repo = load_repo_config(recipe.directory.parent)
    with Registry() as client:
        source = set_source(recipe, s, entry, repo, offline=offline, client=client)
        paths, downloaded = fetch_packages(pins, source)
    say(f"{len(pins)} packages ({downloaded} downloaded)")
    packages = read_packages(
        paths,
        [f"{set_kind}:{p['name']} {p['version']}" for p in pins],
        [str(p.get("checksum", "")) for p in pins] if set_kind == "apk" else None,
    )
    staging: Path | None = None
    try:
        for pin, package in zip(pins, packages, strict=True):
            if (package.name, package.version) != (pin["name"], pin["version"]):
                raise RootfsError(
                    f"{set_kind}:{pin['name']} {pin['version']}: the package file says it is "
                    f"{package.name} {package.version}"
                )
        tree: Tree
        effects: Any
        if set_kind == "apk":
            from repro.rootfs._alpine import assemble_apk

            tree, effects = assemble_apk(
                packages,  # type: ignore[arg-type]
                epoch=epoch,
                architecture=s.architecture,
                world=s.packages,
                prefer=spec.prefer,
                label=recipe.name,
            )
        else:
            tree, effects = assemble(
                packages,
                epoch=epoch,
                architecture=s.architecture,
                merged_usr=spec.merged_usr,
                prefer=spec.prefer,
                label=recipe.name,
            )
        staging = oci.staging_dir_beside(dest, "rootfs")
        layout = oci.OCILayout.create(staging / "layout")
        options = recipe.normalise.options(epoch)
        layer = write_layer(tree, layout, options)
        config = ImageConfig(
            platform=platform,
            env=spec.environment(),
            cmd=spec.cmd,
            entrypoint=spec.entrypoint,
            user=spec.user,
            workdir=spec.workdir,
            labels=recipe.labels,
            created_by=(
                f"repro rootfs: {len(packages)} packages of {set_kind}:{s.name} ({spec.variant})"
            ),
        )
        manifest, config_descriptor = write_image(layout, layer, config, options.created_time)
        # The images built on this one take its layer from the shelf, not from BuildKit.
        oci.shelve(layout, [layer.descriptor])
        if kind == "oci":
            oci.replace_output("oci", staging / "layout", dest)
        else:
            oci.check_output_target(kind, dest)
            oci.write_oci_archive(layout, dest)
    finally:
        for package in packages:
            package.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    for name, scripts in sorted(effects.unreproduced.items()):
        print(
            f"repro: warning: {recipe.name}: {name}: "
            f"{'install' if set_kind == 'apk' else 'maintainer'} scripts not run and their "
            f"effects not reproduced ({', '.join(scripts)})",
            file=err,
        )
    say(
        f"{layer.entries} entries, layer {oci.short_digest(layer.descriptor.digest)} "
        f"({layer.descriptor.size / 1e6:.1f} MB)"
    )
    return RecipeResult(
        recipe=recipe.name,
        digest=manifest.digest,
        config_digest=config_descriptor.digest,
        output=f"{kind}:{dest}",
        seconds=round(time.monotonic() - started, 3),
        builder="repro",
        builder_version=__version__,
        source_date_epoch=epoch,
        raw_digest=manifest.digest,
        rootfs={
            "packages": len(packages),
            "downloaded": downloaded,
            "layer": layer.descriptor.digest,
            "diff_id": layer.diff_id,
            "entries": layer.entries,
            "unreproduced": effects.unreproduced,
            "changes": [c.to_json() for c in layer.changes],
        },
    )


__all__ = ["ReproError", "assemble", "build_rootfs", "fetch_packages", "read_packages"]
