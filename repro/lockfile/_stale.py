"""When a lock cannot be used: missing, stale, edited, or behind its base; and the
change list between two locks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro.config import load_repo_config
from repro.errors import ReproError, StaleLock
from repro.lockfile._inputs import base_platform_digest, inputs_digest
from repro.lockfile._io import read_lock
from repro.lockfile._model import LOCK_VERSION, Lock, LockInvalid
from repro.recipe import Base, Recipe


def short_pin(digest: str) -> str:
    """A digest cut short for change lists: `sha256:0123456789ab…`."""
    return digest[:19] + "…" if digest.startswith("sha256:") and len(digest) > 20 else digest


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What moved between two locks, as ``kind:name old -> new`` items."""
    old = old or {}
    out: list[str] = []

    def moved(label: str, a: str | None, b: str | None) -> None:
        if a == b:
            return
        out.append(
            f"{label} {a if a is not None else '(new)'} -> {b if b is not None else '(removed)'}"
        )

    ob, nb = old.get("bases", {}), new.get("bases", {})
    for ref in sorted(set(ob) | set(nb)):
        a, b = ob.get(ref), nb.get(ref)
        moved(
            f"base:{ref}",
            short_pin(a["digest"]) if a else None,
            short_pin(b["digest"]) if b else None,
        )
    op, np_ = old.get("packages", {}), new.get("packages", {})
    for kind in sorted(set(op) | set(np_)):
        for name in sorted(set(op.get(kind, {})) | set(np_.get(kind, {}))):
            a_pins = {
                p["name"]: p["version"] for p in op.get(kind, {}).get(name, {}).get("package", [])
            }
            b_pins = {
                p["name"]: p["version"] for p in np_.get(kind, {}).get(name, {}).get("package", [])
            }
            for pkg in sorted(set(a_pins) | set(b_pins)):
                moved(f"{kind}:{pkg}", a_pins.get(pkg), b_pins.get(pkg))
    for section, key, label in (("downloads", "sha256", "download"), ("git", "commit", "git")):
        oa, na = old.get(section, {}), new.get(section, {})
        for name in sorted(set(oa) | set(na)):
            a, b = oa.get(name), na.get(name)
            va = a.get(key) if a else None
            vb = b.get(key) if b else None
            if key == "commit":
                va, vb = (va[:12] if va else None), (vb[:12] if vb else None)
            else:
                va, vb = (short_pin(va) if va else None), (short_pin(vb) if vb else None)
            moved(f"{label}:{name}", va, vb)
    moved(
        "epoch",
        str(old["source_date_epoch"]) if "source_date_epoch" in old else None,
        str(new["source_date_epoch"]) if "source_date_epoch" in new else None,
    )
    return out


def lock_problem(recipe: Recipe, data: Mapping[str, Any] | None) -> str:
    """Why a lock cannot be used for a build ("" when it can)."""
    if data is None:
        return f"{recipe.name}: no repro.lock"
    if data.get("version") != LOCK_VERSION:
        return f"{recipe.name}: repro.lock is from another version of repro"
    if data.get("inputs") != inputs_digest(recipe):
        return f"{recipe.name}: repro.lock is stale (recipe.toml changed since it was locked)"
    problem = lock_inconsistency(recipe, data)
    if problem:
        return f"{recipe.name}: repro.lock {problem}; run repro lock --update (do not edit it)"
    for s in recipe.packages:
        entry = data.get("packages", {}).get(s.kind, {}).get(s.name) or {}
        recorded = entry.get("base_manifest")
        base = entry.get("base", "")
        if not recorded or not base:
            continue
        base_entry = data.get("bases", {}).get(base)
        current = base_platform_digest(base_entry, s.architecture)[1] if base_entry else ""
        if current != recorded:
            return (
                f"{recipe.name}: repro.lock is stale (package set {s.kind}.{s.name} was "
                f"resolved against another image of {base})"
            )
    return ""


def lock_inconsistency(recipe: Recipe, data: Mapping[str, Any]) -> str:
    """What in a lock disagrees with itself or its recipe ("" when nothing): a lock is
    written by repro, so any of these means it was edited or damaged. The lock's own
    consistency is the model's (`repro.lockfile.Lock.from_toml`); its agreement with
    the recipe is checked here."""
    try:
        lock = Lock.from_toml(data)
    except LockInvalid as exc:
        return exc.message
    if lock.recipe != recipe.name:
        return f"is for recipe {lock.recipe!r}, not {recipe.name!r}"
    epoch = lock.source_date_epoch
    if recipe.source_date_epoch is not None and epoch != recipe.source_date_epoch:
        return f"says source_date_epoch = {epoch} but recipe.toml says {recipe.source_date_epoch}"
    for ref, entry in lock.bases.items():
        name = Base(ref).recipe
        if (
            name is not None
            and entry.image
            and not entry.image.startswith(_publish_prefix(recipe, name))
        ):
            return f"pins recipe:{name} to an image outside its publish repository"
    return ""


def _publish_prefix(recipe: Recipe, name: str) -> str:
    """Where a recipe base's image may come from: its publish repository, as locked."""
    try:
        repo = load_repo_config(recipe.directory.parent)
        others = {name: load_recipe_or_none(recipe.directory.parent / name)}
        from repro.publish import publish_reference

        ref = publish_reference(name, others[name], repo)
    except ReproError:
        return ""
    return ref.rsplit(":", 1)[0]


def load_recipe_or_none(directory: Path) -> Recipe | None:
    from repro.recipe import load_recipe

    try:
        return load_recipe(directory)
    except ReproError:
        return None


def require_lock(recipe: Recipe, built: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The recipe's lock, checked; None for a recipe with nothing to lock and no lock."""
    data = read_lock(recipe)
    if data is None and not recipe.needs_lock:
        from repro.lock import check_from_lines

        check_from_lines(recipe)
        return None
    problem = lock_problem(recipe, data)
    if problem:
        raise StaleLock(f"{problem}: run repro lock")
    assert data is not None
    for base in recipe.bases:
        if base.recipe and built and base.recipe in built:
            locked = data.get("bases", {}).get(base.ref, {}).get("digest")
            if locked != built[base.recipe]:
                raise StaleLock(
                    f"{recipe.name}: base recipe:{base.recipe} was rebuilt as "
                    f"{short_pin(built[base.recipe])} but the lock has {short_pin(str(locked))}: "
                    "run repro lock"
                )
    return data
