"""``repro.lock``: resolving a recipe's declarations into pins, and how a build uses them.

The lock file itself (what it holds, reading, writing, checking, staleness, change
lists) is `repro.lockfile`; this module resolves: bases through the registry,
package sets against their base's package database, downloads and git refs, the
epoch (`Resolver`, `lock_recipe`, `lock_all`), and turns a lock into what a build
needs: the Dockerfile rendered with pinned bases, the source policy, build args
(`apply_lock`). The names `repro.lockfile` exports are re-exported here for callers.

No mirror host name is written: package and download entries name mirrors by the
recipe's mirror name and carry paths relative to it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.cachedir import touch
from repro.config import RepoConfig, load_repo_config, mirror_url
from repro.errors import (
    InputError,
    RecipeError,
    ReproError,
    StaleLock,  # noqa: F401 - defined in errors, re-exported here
)
from repro.lockfile import (  # noqa: F401 - re-exported: what callers of repro.lock use
    LOCK_VERSION,
    base_platform_digest,
    changes,
    download_spec,
    dump_lock,
    git_spec,
    inputs_digest,
    load_recipe_or_none,
    lock_inconsistency,
    lock_problem,
    package_set_base,
    package_set_spec,
    platform_matches,
    read_lock,
    release_suites,
    require_lock,
    short_pin,
    write_lock,
)
from repro.recipe import PACKAGE_CONTEXT, Base, Download, GitInput, PackageSet, Recipe

# --- what a lock is made from -----------------------------------------------------



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
        missing = [p for p in platforms if not any(platform_matches(k, p) for k in per_platform)]
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
        result: dict[str, Any] = {"spec": package_set_spec(s)}
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
        return {"spec": download_spec(d), "sha256": "sha256:" + h.hexdigest(), "size": size}

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
        return {"spec": git_spec(g), "ref": g.ref, "commit": commit}

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
        if prev and prev.get("spec") == package_set_spec(s):
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
        if prev and prev.get("spec") == download_spec(d):
            continue
        tasks.append(("downloads", d.name, lambda d=d: resolver.resolve_download(d)))  # type: ignore[misc]
    old_git = old.get("git", {}) if keep else {}
    for g in recipe.git:
        prev = old_git.get(g.name)
        if prev and prev.get("spec") == git_spec(g):
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
    # The locked packages' context is served by repro itself, not an image.
    contexts = {PACKAGE_CONTEXT} if recipe.packages else set()
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
            lock_inconsistency(recipe, old)
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
        # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile it is given, so
        # the rendered copy's directory holds the user's (or none): it is named by both
        # files' bytes, and builds of the same text with other ignore files never share it.
        ignore = recipe.dockerfile.with_name(recipe.dockerfile.name + ".dockerignore")
        ignore_bytes = ignore.read_bytes() if ignore.is_file() else None
        key = hashlib.sha256(body)
        if ignore_bytes is not None:
            key.update(b"\0" + hashlib.sha256(ignore_bytes).digest())
        dockerfile = rendered_dir() / key.hexdigest() / recipe.dockerfile.name
        if not dockerfile.is_file():
            dockerfile.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dockerfile, body)
        else:
            touch(dockerfile)  # used now: kept by `repro cache prune`
        if ignore_bytes is not None and not dockerfile.with_name(ignore.name).is_file():
            atomic_write_bytes(dockerfile.with_name(ignore.name), ignore_bytes)
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
