"""``repro.lock``: every input of a recipe pinned, and how a build uses the pins.

A lock (TOML, written with tomli-w, keys in a stable order so a change is a small
diff) holds:

- ``inputs``: a digest of the recipe's declarations it was made from (bases,
  package sets, downloads, git inputs, epoch policy, platforms). When the recipe's
  declarations change, the lock is stale and ``repro build`` refuses it.
- ``source_date_epoch``: the epoch the build uses (fixed, from git, or set when locking).
- ``[bases."REF"]``: each base's digest (index or manifest) and per-platform
  manifest digests; a ``recipe:NAME`` base records the image it was built as.
- ``[packages.apt.NAME]``: the full dependency closure at exact versions, each with
  the sha256 and pool path from the index.
- ``[downloads.NAME]``: sha256 and size; ``[git.NAME]``: the commit id.

No mirror host name is written: package and download entries name mirrors by the
recipe's mirror name and carry paths relative to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.config import RepoConfig, load_repo_config, mirror_url
from repro.errors import (
    InputError,
    RecipeError,
    ReproError,
    StaleLock,  # noqa: F401 - defined in errors, re-exported here
)
from repro.recipe import Base, Download, GitInput, PackageSet, Recipe

LOCK_VERSION = 1
LOCK_HEADER = "# Written by `repro lock`; do not edit. `repro lock --update` moves the pins.\n"




# --- what a lock is made from -----------------------------------------------------


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
        if _platform_match(platform, want):
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


# --- reading and writing ------------------------------------------------------------


def read_lock(recipe: Recipe) -> dict[str, Any] | None:
    file = recipe.lock_file
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc}", file=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        from repro.config import toml_error

        bad = toml_error(exc, file, text)
        raise RecipeError(
            f"{bad.message} (a lock is written by repro lock: run repro lock --update)",
            file=str(file),
            line=bad.line,
        ) from None
    return data


def dump_lock(data: Mapping[str, Any]) -> str:
    import tomli_w

    return LOCK_HEADER + tomli_w.dumps(_sorted(data))


_TOP_ORDER = ("version", "recipe", "inputs", "source_date_epoch")


def _sorted(value: Any, top: bool = True) -> Any:
    if isinstance(value, Mapping) and top:
        first = [k for k in _TOP_ORDER if k in value]
        rest = sorted(k for k in value if k not in _TOP_ORDER)
        return {k: _sorted(value[k], False) for k in first + rest}
    if isinstance(value, Mapping):
        return {k: _sorted(value[k], False) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v, False) for v in value]
    return value


def write_lock(recipe: Recipe, data: Mapping[str, Any]) -> None:
    from repro.oci import atomic_write_bytes

    atomic_write_bytes(recipe.lock_file, dump_lock(data).encode())


# --- resolving ------------------------------------------------------------------------


@dataclass
class Resolver:
    """Resolves declarations to pins; one registry client shared by all threads."""

    repo: RepoConfig
    registry: Any = None  # repro.registry.Registry, created on first use
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    built: dict[str, str] = field(default_factory=dict)  # recipe name -> image digest

    def client(self) -> Any:
        if self.registry is None:
            from repro.registry import Registry

            self.registry = Registry()
        return self.registry

    # bases

    def publish_ref(self, recipe_name: str, recipe: Recipe | None = None) -> str:
        """Where recipe:NAME is pulled from: its publish repository and first tag."""
        from repro.publish import publish_reference

        return publish_reference(recipe_name, recipe, self.repo)

    def resolve_image(self, ref: str, platforms: Sequence[str]) -> dict[str, Any]:
        from repro import oci

        client = self.client()
        data, media_type, digest = client.get_manifest(ref)
        doc = oci.parse_json_document(data, f"manifest {ref}")
        per_platform: dict[str, str] = {}
        if media_type in (oci.MEDIA_TYPE_OCI_INDEX, oci.MEDIA_TYPE_DOCKER_MANIFEST_LIST):
            for child in oci.manifest_children(doc, media_type, f"index {ref}"):
                if child.platform is None or child.is_attestation:
                    continue
                if child.platform.os == "unknown":
                    continue
                per_platform.setdefault(str(child.platform), child.digest)
        else:
            config = doc.get("config") or {}
            config_digest = config.get("digest", "")
            import io

            buf = io.BytesIO()
            name = ref.rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0]
            client.get_blob(name, config_digest, buf, config.get("size"))
            cfg = oci.parse_json_document(buf.getvalue(), f"config of {ref}")
            plat = oci.Platform.from_json(cfg, f"config of {ref}")
            per_platform[str(plat)] = digest
        missing = [p for p in platforms if not any(_platform_match(k, p) for k in per_platform)]
        if missing:
            raise InputError(
                f"base {ref} has no image for {', '.join(missing)} "
                f"(it has {', '.join(sorted(per_platform)) or 'none'})"
            )
        return {"digest": digest, "media_type": media_type, "platforms": per_platform}

    def resolve_base(
        self, base: Base, recipes: Mapping[str, Recipe], platforms: Sequence[str]
    ) -> dict[str, Any]:
        name = base.recipe
        if name is None:
            return self.resolve_image(base.ref, platforms)
        if name not in recipes:
            raise InputError(f"base recipe:{name} is not a recipe of this repository")
        ref = self.publish_ref(name, recipes[name])
        if name in self.built:
            image = ref.rsplit(":", 1)[0]
            entry = self.resolve_image(f"{image}@{self.built[name]}", platforms)
        else:
            try:
                entry = self.resolve_image(ref, platforms)
            except ReproError as exc:
                if "not found" not in str(exc):
                    raise
                raise InputError(
                    f"base recipe:{name} has no image at {ref} yet: build it first "
                    f"(repro build --all builds bases and pushes them)"
                ) from None
        entry["image"] = ref.rsplit(":", 1)[0]
        return entry

    # packages

    def installed_db(self, s: PackageSet, ref: str, entry: Mapping[str, Any]) -> Any:
        """The package database of the base `ref` (locked as `entry`) for the set's
        architecture: (platform, manifest digest, InstalledDb or None)."""
        from repro.packages.installed import from_registry

        platform, manifest = base_platform_digest(entry, s.architecture)
        if not manifest:
            raise InputError(
                f"package set {s.kind}.{s.name}: base {ref} has no image for {platform} "
                f"(architecture {s.architecture})"
            )
        image = entry.get("image") or image_name(ref)
        db = from_registry(self.client(), image, manifest)
        return platform, manifest, db

    def resolve_packages(
        self, s: PackageSet, base: str = "", base_entry: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        label = f"{s.kind}:{s.name}"
        result: dict[str, Any] = {"spec": _sha(_package_spec(s))}
        installed = None
        if base and base_entry is not None:
            _platform, manifest, db = self.installed_db(s, base, base_entry)
            want = "dpkg" if s.kind == "apt" else "apk"
            if db is None or db.kind != want:
                if not s.assume_installed:
                    where = "var/lib/dpkg/status" if want == "dpkg" else "lib/apk/db/installed"
                    raise InputError(
                        f"package set {s.kind}.{s.name}: base {base} has no {want} package "
                        f"database ({where}); set assume_installed to resolve without it"
                    )
            else:
                installed = db.packages
                result["base"] = base
                result["base_manifest"] = manifest
                result["base_db"] = db.layer
        if s.kind == "apt" and s.rootfs:
            # A root filesystem's set: nothing assumed installed, per-suite mirrors.
            from repro.rootfs import resolve_rootfs_set

            closure = resolve_rootfs_set(s, self.repo, self.environ, label)
        elif s.kind == "apt":
            from repro.packages.deb import resolve
            from repro.packages.download import mirrors_for_suites
            from repro.packages.fetch import load_deb_index_from
            from repro.packages.trust import deb_trust

            suites = release_suites(s, self.repo, self.environ)
            mirrors = mirrors_for_suites(
                s.mirror, suites, s.components, repo=self.repo, environ=self.environ
            )
            trusts = {
                suite: deb_trust(s, self.repo, self.environ, suite=suite) for suite in suites
            }
            index = load_deb_index_from(mirrors, s.components, s.architecture, trusts=trusts)
            closure = resolve(
                index,
                s.packages,
                assume_installed=s.assume_installed,
                label=label,
                installed=installed,
                recommends=s.recommends,
            )
            if s.release:
                result["suites"] = list(suites)
        else:
            from repro.packages.apk import load_apk_index, resolve_apk
            from repro.packages.trust import apk_trust

            mirror = mirror_url(s.mirror, repo=self.repo, environ=self.environ)
            apk_index = load_apk_index(
                mirror, s.suites[0], s.components, s.architecture, trust=apk_trust(s, self.repo)
            )
            closure = resolve_apk(
                apk_index,
                s.packages,
                assume_installed=s.assume_installed,
                label=label,
                installed=installed,  # the base's lib/apk/db/installed, version-aware
            )
            from repro.packages.apkfetch import pin_apk_files

            # The index has no sha256 of a package file: download each once (into the
            # cache), check it against the signed C: chain, record its sha256 and size.
            closure.pins = pin_apk_files(closure.pins, mirror, s.architecture, label)
        result["package"] = [p.to_toml() for p in closure.sorted()]
        return result

    # downloads and git

    def resolve_download(self, d: Download) -> dict[str, Any]:
        import httpx

        url = download_url(d, self.repo, self.environ)
        h = hashlib.sha256()
        size = 0
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=120) as response:
                if response.status_code != 200:
                    raise InputError(
                        f"download {d.name}: HTTP {response.status_code} for {_redact(d)}"
                    )
                for chunk in response.iter_bytes(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
        except httpx.HTTPError as exc:
            raise InputError(f"download {d.name}: {type(exc).__name__} for {_redact(d)}") from None
        return {"spec": _sha(_download_spec(d)), "sha256": "sha256:" + h.hexdigest(), "size": size}

    def resolve_git(self, g: GitInput) -> dict[str, Any]:
        try:
            out = subprocess.run(
                ["git", "ls-remote", "--", g.url, g.ref, f"{g.ref}^{{}}"],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(f"git {g.name}: cannot run git ls-remote: {exc}") from None
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["failed"])[-1]
            raise InputError(f"git {g.name}: {last}")
        commits: dict[str, str] = {}
        for line in out.stdout.splitlines():
            sha, _, name = line.partition("\t")
            commits[name] = sha
        peeled = [v for k, v in commits.items() if k.endswith("^{}")]
        commit = peeled[0] if peeled else next(iter(commits.values()), "")
        if not commit:
            if len(g.ref) == 40 and all(c in "0123456789abcdef" for c in g.ref):
                commit = g.ref
            else:
                raise InputError(f"git {g.name}: no ref {g.ref!r} in the repository")
        return {"spec": _sha(_git_spec(g)), "ref": g.ref, "commit": commit}

    # epoch

    def resolve_epoch(self, recipe: Recipe, previous: int | None) -> int:
        if recipe.source_date_epoch is not None:
            return recipe.source_date_epoch
        if recipe.epoch_policy == "git":
            try:
                out = subprocess.run(
                    ["git", "log", "-1", "--format=%ct", "--", "."],
                    cwd=recipe.directory,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            except OSError as exc:
                raise InputError(f'source_date_epoch = "git": cannot run git: {exc}') from None
            value = out.stdout.strip()
            if out.returncode != 0 or not value.isdigit():
                raise InputError(
                    f'source_date_epoch = "git": no commit touches {recipe.directory} yet'
                )
            return int(value)
        return previous if previous is not None else int(time.time())


def download_url(d: Download, repo: RepoConfig, environ: Mapping[str, str] | None = None) -> str:
    if d.url:
        return d.url
    return mirror_url(d.mirror, repo=repo, environ=environ) + "/" + d.path.lstrip("/")


def image_name(ref: str) -> str:
    """``host/repo:tag`` or ``host/repo@sha256:…`` -> ``host/repo``."""
    from repro.registry import parse_reference

    return parse_reference(ref).name


def _redact(d: Download) -> str:
    return d.url if d.url else f"mirror {d.mirror}: {d.path}"


def _platform_match(have: str, want: str) -> bool:
    return have == want or (want.count("/") == 1 and have.startswith(want + "/"))


def _run_tasks(
    tasks: Sequence[tuple[str, str, Callable[[], dict[str, Any]]]], jobs: int
) -> dict[tuple[str, str], dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    if len(tasks) == 1:  # no pool for one resolution (the caller may already run many)
        section, key, fn = tasks[0]
        results[(section, key)] = fn()
    elif tasks:
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks)))) as pool:
            futures = [(section, key, pool.submit(fn)) for section, key, fn in tasks]
            for section, key, future in futures:
                results[(section, key)] = future.result()
    return results


def lock_recipe(
    recipe: Recipe,
    resolver: Resolver,
    recipes: Mapping[str, Recipe],
    previous: Mapping[str, Any] | None = None,
    *,
    update: bool = False,
    jobs: int = 8,
    refresh: Iterable[str] = (),
) -> dict[str, Any]:
    """The lock for `recipe`; entries of `previous` whose declaration is unchanged are kept
    unless `update`."""
    check_from_lines(recipe)
    refresh = set(refresh)
    old = previous or {}
    keep = not update and old.get("version") == LOCK_VERSION
    data: dict[str, Any] = {
        "version": LOCK_VERSION,
        "recipe": recipe.name,
        "inputs": inputs_digest(recipe),
    }
    old_bases = old.get("bases", {}) if keep else {}
    base_tasks: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
    for base in recipe.bases:
        fresh = base.ref in refresh or (base.recipe and base.recipe in resolver.built)
        if base.ref in old_bases and not fresh:
            continue
        base_tasks.append(
            ("bases", base.ref, lambda b=base: resolver.resolve_base(b, recipes, recipe.platforms))  # type: ignore[misc]
        )
    # Bases first: a package set is resolved against its base's package database.
    results = _run_tasks(base_tasks, jobs)
    base_entries = {
        b.ref: results.get(("bases", b.ref), old_bases.get(b.ref)) for b in recipe.bases
    }

    tasks: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []
    old_sets = old.get("packages", {}) if keep else {}
    for s in recipe.packages:
        base_ref = package_set_base(recipe, s)
        base_entry = base_entries.get(base_ref) if base_ref else None
        prev = old_sets.get(s.kind, {}).get(s.name)
        if prev and prev.get("spec") == _sha(_package_spec(s)):
            moved = (
                base_entry is not None
                and "base_manifest" in prev
                and (base_platform_digest(base_entry, s.architecture)[1] != prev["base_manifest"])
            )
            if not moved:
                continue
        tasks.append(
            (
                "packages",
                s.key,
                lambda s=s, r=base_ref, e=base_entry: resolver.resolve_packages(s, r, e),  # type: ignore[misc]
            )
        )
    old_downloads = old.get("downloads", {}) if keep else {}
    for d in recipe.downloads:
        prev = old_downloads.get(d.name)
        if prev and prev.get("spec") == _sha(_download_spec(d)):
            continue
        tasks.append(("downloads", d.name, lambda d=d: resolver.resolve_download(d)))  # type: ignore[misc]
    old_git = old.get("git", {}) if keep else {}
    for g in recipe.git:
        prev = old_git.get(g.name)
        if prev and prev.get("spec") == _sha(_git_spec(g)):
            continue
        tasks.append(("git", g.name, lambda g=g: resolver.resolve_git(g)))  # type: ignore[misc]
    results.update(_run_tasks(tasks, jobs))

    def pick(section: str, key: str, prev: Any) -> Any:
        return results.get((section, key), prev)

    if recipe.bases:
        data["bases"] = base_entries
    if recipe.packages:
        packages: dict[str, dict[str, Any]] = {}
        for s in recipe.packages:
            packages.setdefault(s.kind, {})[s.name] = pick(
                "packages", s.key, old_sets.get(s.kind, {}).get(s.name)
            )
        data["packages"] = packages
    for section, items in (("downloads", recipe.downloads), ("git", recipe.git)):
        if items:
            prev_section = old.get(section, {}) if keep else {}
            data[section] = {
                i.name: pick(section, i.name, prev_section.get(i.name))
                for i in items  # type: ignore[attr-defined]
            }
    prev_epoch = (
        old.get("source_date_epoch") if isinstance(old.get("source_date_epoch"), int) else None
    )
    data["source_date_epoch"] = resolver.resolve_epoch(recipe, prev_epoch)
    if recipe.epoch_policy == "lock" and update and prev_epoch is not None:
        # "lock": the epoch moves only when some other pin moves.
        data["source_date_epoch"] = prev_epoch
        moved = [c for c in changes(old, data) if not c.startswith("epoch")]
        if moved:
            data["source_date_epoch"] = int(time.time())
    return data


# --- comparing -------------------------------------------------------------------------


def _short(digest: str) -> str:
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
        moved(f"base:{ref}", _short(a["digest"]) if a else None, _short(b["digest"]) if b else None)
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
                va, vb = (_short(va) if va else None), (_short(vb) if vb else None)
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
    problem = _lock_inconsistency(recipe, data)
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


_TOP_KEYS = {"version", "recipe", "inputs", "source_date_epoch", "bases", "packages"}
_TOP_KEYS |= {"downloads", "git"}


def _is_digest(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith("sha256:"):
        return False
    hex_part = value[7:]
    return len(hex_part) == 64 and all(c in "0123456789abcdef" for c in hex_part)


def _lock_inconsistency(recipe: Recipe, data: Mapping[str, Any]) -> str:
    """What in a lock disagrees with itself or its recipe ("" when nothing): a lock is
    written by repro, so any of these means it was edited or damaged."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        return f"has an unknown key {unknown[0]!r}"
    if data.get("recipe") != recipe.name:
        return f"is for recipe {data.get('recipe')!r}, not {recipe.name!r}"
    epoch = data.get("source_date_epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return "has no valid source_date_epoch"
    if recipe.source_date_epoch is not None and epoch != recipe.source_date_epoch:
        return (
            f"says source_date_epoch = {epoch} but recipe.toml says {recipe.source_date_epoch}"
        )
    for ref, entry in (data.get("bases") or {}).items():
        if not isinstance(entry, Mapping) or not _is_digest(entry.get("digest")):
            return f"has no valid digest for base {ref}"
        platforms = entry.get("platforms") or {}
        if not isinstance(platforms, Mapping) or not all(
            _is_digest(d) for d in platforms.values()
        ):
            return f"has an invalid platform digest for base {ref}"
        is_index = entry.get("media_type") in (
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        if platforms and not is_index and set(platforms.values()) != {entry["digest"]}:
            return f"disagrees with itself on base {ref} (digest vs platforms)"
        name = Base(ref).recipe
        if name is not None and "image" in entry and not str(entry["image"]).startswith(
            _publish_prefix(recipe, name)
        ):
            return f"pins recipe:{name} to an image outside its publish repository"
    return ""


def _publish_prefix(recipe: Recipe, name: str) -> str:
    """Where a recipe base's image may come from: its publish repository, as locked."""
    try:
        repo = load_repo_config(recipe.directory.parent)
        others = {name: load_recipe_or_none(recipe.directory.parent / name)}
        ref = Resolver(repo).publish_ref(name, others[name])
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
                    f"{_short(built[base.recipe])} but the lock has {_short(str(locked))}: "
                    "run repro lock"
                )
    return data


# --- the Dockerfile and the build ---------------------------------------------------------


def _same_image(written: str, declared: str) -> bool:
    if written == declared:
        return True
    if declared.startswith("recipe:") or written.startswith("recipe:"):
        return False
    from repro.registry import parse_reference

    try:
        a, b = parse_reference(written), parse_reference(declared)
    except InputError:
        return False
    return (a.host, a.repository, a.tag or "latest") == (b.host, b.repository, b.tag or "latest")


def read_dockerfile(recipe: Recipe) -> str:
    """The recipe's Dockerfile as text; one line naming the file when it is not."""
    try:
        data = recipe.dockerfile.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise RecipeError(f"cannot read: {reason}", file=str(recipe.dockerfile)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(
            f"not UTF-8 text (byte {exc.start}); a Dockerfile must be text",
            file=str(recipe.dockerfile),
            line=line,
        ) from None
    if not any(
        ln.strip() and not ln.lstrip().startswith("#") for ln in text.lstrip("\ufeff").splitlines()
    ):
        raise RecipeError("the Dockerfile is empty (no instruction)", file=str(recipe.dockerfile))
    return text


def check_from_lines(recipe: Recipe, build_args: Mapping[str, str] | None = None) -> list[Any]:
    """Every image the Dockerfile names must be a declared base (or, in a recipe with
    nothing to lock, already pinned by digest)."""
    from repro.dockerfile import image_uses

    if recipe.rootfs is not None:  # no Dockerfile: a root filesystem made of packages
        return []
    text = read_dockerfile(recipe)
    args = {**recipe.args, **(build_args or {})}
    from repro.vault import CONTEXT_NAME

    # The locked packages' context is served by repro itself, not an image.
    contexts = {CONTEXT_NAME} if recipe.packages else set()
    uses = [u for u in image_uses(text, recipe.dockerfile, args) if u.image not in contexts]
    for use in uses:
        if any(_same_image(use.image, b.ref) for b in recipe.bases):
            continue
        if "@sha256:" in use.image and not recipe.needs_lock:
            continue
        raise RecipeError(
            f"{use.instruction} {use.image}: not a declared base; add it to bases in "
            f"{recipe.file.name} (with a tag) and run repro lock",
            file=str(recipe.dockerfile),
            line=use.line,
        )
    return uses


def render_dockerfile(
    recipe: Recipe, data: Mapping[str, Any] | None, build_args: Mapping[str, str] | None = None
) -> str | None:
    """The Dockerfile with every base replaced by its locked digest (None: no change)."""
    from repro.dockerfile import render

    uses = check_from_lines(recipe, build_args)
    if not data or not uses:
        return None
    bases = data.get("bases", {})

    def pinned(use: Any) -> str:
        for base in recipe.bases:
            if _same_image(use.image, base.ref):
                entry = bases.get(base.ref)
                if not entry:
                    raise StaleLock(
                        f"{recipe.name}: base {base.ref} is not in repro.lock: run repro lock"
                    )
                image = entry.get("image") or base.ref
                return f"{image}@{entry['digest']}"
        return str(use.written)

    text = read_dockerfile(recipe)
    return render(text, uses, pinned)


def _arg_name(*parts: str) -> str:
    return "_".join(p.upper().replace("-", "_").replace(".", "_") for p in parts)


def lock_build_args(
    recipe: Recipe, data: Mapping[str, Any] | None, repo: RepoConfig | None = None
) -> dict[str, str]:
    """Build args that hand the pins to the Dockerfile (see docs/recipes.md)."""
    if not data:
        return {}
    args: dict[str, str] = {}
    for kind, sets in data.get("packages", {}).items():
        for name, entry in sets.items():
            pins = entry.get("package", [])
            sep = "=" if kind == "apt" else "="
            args[_arg_name("REPRO", kind, name)] = " ".join(
                f"{p['name']}{sep}{p['version']}" for p in pins
            )
    for d in recipe.downloads:
        entry = data.get("downloads", {}).get(d.name, {})
        args[_arg_name("REPRO_DOWNLOAD", d.name, "SHA256")] = entry.get("sha256", "")
        if repo is not None:
            try:
                args[_arg_name("REPRO_DOWNLOAD", d.name, "URL")] = download_url(d, repo)
            except InputError:
                pass
    for g in recipe.git:
        entry = data.get("git", {}).get(g.name, {})
        args[_arg_name("REPRO_GIT", g.name, "URL")] = g.url
        args[_arg_name("REPRO_GIT", g.name, "COMMIT")] = entry.get("commit", "")
    return args


# --- many recipes ---------------------------------------------------------------------------


@dataclass
class LockOutcome:
    recipe: str
    status: str  # "created", "updated", "current", "stale", "missing", "changed"
    changes: list[str] = field(default_factory=list)
    written: bool = False


def lock_all(
    recipes: Sequence[Recipe],
    all_recipes: Mapping[str, Recipe],
    *,
    update: bool = False,
    check: bool = False,
    resolver: Resolver | None = None,
    recipes_dir: Path | None = None,
    jobs: int = 8,
) -> list[LockOutcome]:
    """Lock recipes in build-graph order, independent ones concurrently.

    Plain: create missing locks, re-lock stale ones (keeping unchanged pins).
    `update`: re-resolve everything and write what moved. `check`: re-resolve,
    write nothing, report missing, stale or moved locks.
    """
    from repro.graph import levels

    if resolver is None:
        first = recipes[0] if recipes else None
        root = recipes_dir or (first.directory.parent if first else Path("recipes"))
        resolver = Resolver(load_repo_config(root))
    wanted = {r.name for r in recipes}
    outcomes: dict[str, LockOutcome] = {}

    def one(recipe: Recipe) -> LockOutcome:
        old = read_lock(recipe)
        problem = lock_problem(recipe, old)
        refresh = []
        if not update and not check and not problem and old is not None:
            # A recipe base rebuilt (and pushed) since: re-pin it, keep the rest.
            for base in recipe.bases:
                if base.recipe:
                    now = resolver.resolve_base(base, all_recipes, recipe.platforms)
                    if now["digest"] != old.get("bases", {}).get(base.ref, {}).get("digest"):
                        refresh.append(base.ref)
            if not refresh:
                check_from_lines(recipe)
                return LockOutcome(recipe.name, "current")
        # A lock that disagrees with itself or its recipe was edited or damaged:
        # nothing in it is kept.
        damaged = old is not None and old.get("version") == LOCK_VERSION and bool(
            _lock_inconsistency(recipe, old)
        )
        new = lock_recipe(
            recipe,
            resolver,
            all_recipes,
            None if damaged else old,
            update=update or check,
            jobs=jobs,
            refresh=refresh,
        )
        moved = changes(old, new) if old else []
        if check:
            status = (
                "missing"
                if old is None
                else ("stale" if problem else ("changed" if moved else "current"))
            )
            return LockOutcome(recipe.name, status, moved)
        if old is not None and dump_lock(old) == dump_lock(new):
            return LockOutcome(recipe.name, "current")
        write_lock(recipe, new)
        return LockOutcome(recipe.name, "created" if old is None else "updated", moved, True)

    for level in levels(list(all_recipes.values()), only=wanted):
        todo = [all_recipes[n] for n in level if n in wanted]
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo) or 1))) as pool:
            for recipe, outcome in zip(todo, pool.map(one, todo), strict=True):
                outcomes[recipe.name] = outcome
    return [outcomes[r.name] for r in sorted(recipes, key=lambda r: r.name) if r.name in outcomes]


def render_change_line(outcome: LockOutcome) -> str:
    return f"[{outcome.recipe}] " + ", ".join(outcome.changes)


def iter_pins(data: Mapping[str, Any]) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    for kind, sets in data.get("packages", {}).items():
        for name, entry in sets.items():
            for pin in entry.get("package", []):
                yield kind, name, pin


@dataclass
class PinnedBuild:
    dockerfile: Path  # the user's, or a rendered copy with bases at their locked digests
    build_args: dict[str, str]
    source_date_epoch: int
    lock: dict[str, Any] | None
    # BuildKit source policy rules: deny every image but the locked digests (tags
    # that reach the build anyway are converted to them). Empty without a lock.
    source_policy: list[tuple[str, str, str, str]] = field(default_factory=list)


def source_policy(
    recipe: Recipe, data: Mapping[str, Any] | None
) -> list[tuple[str, str, str, str]]:
    """Rules for BuildKit's source policy engine (last matching ALLOW/DENY wins)."""
    import re

    from repro.registry import parse_reference

    if not data:
        return []
    rules: list[tuple[str, str, str, str]] = [("DENY", "docker-image://*", "WILDCARD", "")]
    for base in recipe.bases:
        entry = data.get("bases", {}).get(base.ref)
        if not entry:
            continue
        digest = entry["digest"]
        if base.recipe:
            name, tag = str(entry["image"]), ""
        else:
            ref = parse_reference(base.ref)
            name, tag = ref.name, ref.tag or "latest"
        if tag:
            rules.append(
                (
                    "CONVERT",
                    f"docker-image://{name}:{tag}",
                    # WILDCARD without wildcards is an exact match; EXACT itself does
                    # not match in Docker Engine 26's BuildKit (checked by the tests).
                    "WILDCARD",
                    f"docker-image://{name}:{tag}@{digest}",
                )
            )
        pattern = f"^docker-image://{re.escape(name)}(:[^@/]+)?@{re.escape(digest)}$"
        rules.append(("ALLOW", pattern, "REGEX", ""))
    return rules


def rendered_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repro" / "dockerfiles"


def apply_lock(
    recipe: Recipe, build_args: Mapping[str, str], built: Mapping[str, str] | None = None
) -> PinnedBuild:
    """What a build of `recipe` uses from its lock (StaleLock if the lock is not current).

    Build args: the lock's (``REPRO_APT_<SET>``, ``REPRO_DOWNLOAD_<NAME>_SHA256``, …),
    then the recipe's [args], then `build_args`. A rendered Dockerfile lives in a
    content-addressed cache directory under its original file name.
    """
    from repro.oci import atomic_write_bytes

    data = require_lock(recipe, built)
    repo = None
    try:
        repo = load_repo_config(recipe.directory.parent)
    except InputError:
        pass
    args = lock_build_args(recipe, data, repo)
    args.update(recipe.args)
    args.update(build_args)
    epoch = recipe.source_date_epoch
    if data is not None:
        epoch = int(data["source_date_epoch"])
    if epoch is None:  # unreachable: a git/lock policy needs a lock
        raise StaleLock(f"{recipe.name}: no epoch: run repro lock")
    dockerfile = recipe.dockerfile
    rendered = render_dockerfile(recipe, data, args)
    if rendered is not None:
        body = rendered.encode()
        digest = hashlib.sha256(body).hexdigest()
        dockerfile = rendered_dir() / digest / recipe.dockerfile.name
        if not dockerfile.is_file():
            dockerfile.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dockerfile, body)
        ignore = recipe.dockerfile.with_name(recipe.dockerfile.name + ".dockerignore")
        if ignore.is_file():
            atomic_write_bytes(dockerfile.with_name(ignore.name), ignore.read_bytes())
    return PinnedBuild(dockerfile, args, epoch, data, source_policy(recipe, data))


def vanished_pins(recipe: Recipe, data: Mapping[str, Any], repo: RepoConfig | None = None) -> str:
    """The first locked package no longer in its repository, as a sentence ("" if none)."""
    from repro.packages.download import mirrors_for_suites
    from repro.packages.fetch import load_deb_index_from
    from repro.packages.trust import deb_trust

    repo = repo or load_repo_config(recipe.directory.parent)
    for s in recipe.packages:
        if s.kind != "apt":
            continue
        entry = data.get("packages", {}).get("apt", {}).get(s.name, {})
        suites = tuple(entry.get("suites") or release_suites(s, repo, os.environ))
        mirrors = mirrors_for_suites(s.mirror, suites, s.components, repo=repo)
        trusts = {suite: deb_trust(s, repo, suite=suite) for suite in suites}
        index = load_deb_index_from(mirrors, s.components, s.architecture, trusts=trusts)
        for pin in entry.get("package", []):
            if not any(p.version == pin["version"] for p in index.packages.get(pin["name"], [])):
                where = pin.get("origin") or "/".join((suites[0], s.components[0]))
                return (
                    f"apt:{pin['name']} {pin['version']} is no longer in {where}; "
                    "run repro lock --update, or install it from the vault (repro vault push)"
                )
    return ""
