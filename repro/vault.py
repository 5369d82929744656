"""The package vault: every locked package kept in the registry, next to the images.

Mirrors drop versions (Debian's point releases replace them; Wolfi withdraws
packages after a year; the snapshot archive is rate-limited), so a lock alone does
not keep a recipe buildable. ``repro vault push`` stores each package a lock names in
an OCI registry, and builds fall back to it when the mirror no longer has a version.

Layout, in the vault repository (``vault`` in ``recipes/repro.toml``, default
``<registry>/vault``):

- every package file is a blob whose digest is the package's own sha256, the one the
  lock records: content-addressed and shared by every recipe and set that locks it;
- each locked closure is one OCI image manifest (schema 2, ``artifactType``
  ``application/vnd.repro.vault.apt.v1`` or ``…apk.v1``, the empty config), whose
  layers are the package files, each with media type ``application/octet-stream`` and
  its file name in ``org.opencontainers.image.title`` (as ``oras push`` writes files,
  the layout apt-transport-oci reads), plus annotations naming the recipe and set;
- the manifest is tagged ``<kind>-<first 32 hex of the closure's digest>``, so a
  registry's garbage collection keeps every closure ever pushed, and pushing the
  same closure again writes nothing.

``obtain(pin, …)`` gives the local file of a locked package: the checked cache, else
the mirror, else the vault (``offline``: cache and vault only).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.config import RepoConfig
from repro.errors import (
    InputError,
    NotInVault,  # noqa: F401 - defined in errors, re-exported here
    RegistryError,
    ReproError,
)
from repro.packages.download import (
    PackageGone,
    apt_package_url,
    cached_ok,
    cached_path,
    fetch_pinned,
    mirrors_for_suites,
)
from repro.packages.fetch import MirrorError
from repro.recipe import PACKAGE_CONTEXT, PackageSet, Recipe

ARTIFACT_TYPE = "application/vnd.repro.vault.{kind}.v1"
PACKAGE_MEDIA_TYPE = "application/octet-stream"
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
ANNOTATION_TITLE = "org.opencontainers.image.title"
UPLOADS = 4  # blobs pushed at a time




def vault_repository(repo: RepoConfig) -> str:
    if repo.vault:
        return repo.vault
    if not repo.registry:
        raise InputError(f"no vault: set vault (or registry) in {repo.root / 'repro.toml'}")
    return f"{repo.registry}/vault"


def file_name(kind: str, pin: Mapping[str, Any]) -> str:
    if kind == "apk":
        return f"{pin['name']}-{pin['version']}.apk"
    version = str(pin["version"]).replace(":", "%3a")
    return f"{pin['name']}_{version}_{pin.get('architecture') or 'all'}.deb"


def closure_tag(kind: str, pins: Sequence[Mapping[str, Any]]) -> str:
    text = "\n".join(f"{p['name']} {p['version']} {p.get('sha256', '')}" for p in pins)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _digest(pin: Mapping[str, Any]) -> str:
    sha = str(pin.get("sha256", "")).removeprefix("sha256:")
    if len(sha) != 64:
        raise InputError(f"{pin.get('name')} {pin.get('version')}: the lock has no sha256")
    return "sha256:" + sha


# --- getting one package --------------------------------------------------------------


@dataclass
class Source:
    """Where the packages of one locked set come from."""

    kind: str
    mirrors: Mapping[str, str]  # suite -> base URL (apt); {"": base URL} (apk)
    vault: str = ""  # the vault repository, "" when there is none
    offline: bool = False
    client: Any = None  # a repro.registry.Registry for the vault
    architecture: str = ""  # apk: the set's, which names the mirror's directory


def set_source(
    recipe: Recipe,
    s: PackageSet,
    entry: Mapping[str, Any],
    repo: RepoConfig,
    *,
    offline: bool = False,
    client: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Source:
    from repro.lock import release_suites

    env = dict(os.environ if environ is None else environ)
    mirrors: dict[str, str] = {}
    if not offline and s.kind == "apt":
        suites = tuple(entry.get("suites") or release_suites(s, repo, env))
        mirrors = mirrors_for_suites(s.mirror, suites, s.components, repo=repo, environ=env)
    elif not offline and s.kind == "apk":
        from repro.config import mirror_url

        mirrors = {"": mirror_url(s.mirror, repo=repo, environ=env)}
    try:
        vault = vault_repository(repo)
    except InputError:
        vault = ""
    return Source(s.kind, mirrors, vault, offline, client, s.architecture)


def package_url(source: Source, pin: Mapping[str, Any]) -> str:
    """Where a locked package is on its mirror: a pool path (apt), or
    ``<branch>/<repository>/<arch>/<name>-<version>.apk`` (apk)."""
    origin, filename = str(pin.get("origin", "")), str(pin["filename"])
    if source.kind == "apk":
        from repro.packages.apkfetch import apk_package_url

        return apk_package_url(source.mirrors[""], origin, source.architecture, filename)
    return apt_package_url(source.mirrors, origin, filename)


def obtain(pin: Mapping[str, Any], source: Source) -> Path:
    """The local, checked file of a locked package: cache, mirror, then vault."""
    digest = _digest(pin)
    label = f"{source.kind}:{pin['name']} {pin['version']}"
    cached = cached_ok(digest)
    if cached is not None:
        return cached
    gone = ""
    if not source.offline and source.mirrors and pin.get("filename"):
        url = package_url(source, pin)
        try:
            return fetch_pinned(url, digest, int(pin.get("size", 0)), label)
        except PackageGone:
            gone = f"no longer in {pin.get('origin') or 'its suite'}"
        except MirrorError as exc:
            # A mirror that is down (after retries): the vault may still have it.
            gone = f"not to be had from its mirror ({exc.message.partition(': ')[2]})"
    if source.vault and source.client is not None:
        path = _from_vault(source, digest, int(pin.get("size", 0)))
        if path is not None:
            return path
    why = gone or ("offline, and not in the local cache" if source.offline else "not found")
    raise NotInVault(
        f"{label} is {why} and not in the vault"
        + (f" {source.vault}" if source.vault else "")
        + "; run repro vault push where it is cached, or repro lock --update"
    )


def _from_vault(source: Source, digest: str, size: int) -> Path | None:
    target = cached_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not source.client.blob_exists(source.vault, digest):
            return None
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".vault-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                # The registry client checks the bytes against the digest (the package's
                # locked sha256) before returning.
                source.client.get_blob(source.vault, digest, out, size or None)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except RegistryError:
        return None
    return target


# --- pushing -----------------------------------------------------------------------------


@dataclass
class PushResult:
    recipe: str
    sets: list[str] = field(default_factory=list)
    packages: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    manifests: list[str] = field(default_factory=list)  # vault@digest of each closure

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def push_recipe(
    recipe: Recipe,
    lock: Mapping[str, Any],
    repo: RepoConfig,
    client: Any,
    *,
    on_package: Callable[[str], None] | None = None,
) -> PushResult:
    """Store every package of the recipe's lock in the vault (only what it lacks)."""
    vault = vault_repository(repo)
    result = PushResult(recipe.name)
    for s in recipe.packages:
        entry = lock.get("packages", {}).get(s.kind, {}).get(s.name) or {}
        pins = list(entry.get("package", []))
        if not pins:
            continue
        source = set_source(recipe, s, entry, repo, client=client)
        source.vault = ""  # the vault is where they go, not where they come from

        def store(
            pin: Mapping[str, Any], source: Source = source, kind: str = s.kind
        ) -> tuple[dict[str, Any], int]:
            digest, size = _digest(pin), int(pin.get("size", 0))
            uploaded = 0
            if not client.blob_exists(vault, digest):
                path = obtain(pin, source)
                size = path.stat().st_size
                with open(path, "rb") as fh:
                    client.push_blob(vault, digest, size, fh)
                uploaded = size
                if on_package:
                    on_package(f"{kind}:{pin['name']} {pin['version']}")
            layer = {
                "mediaType": PACKAGE_MEDIA_TYPE,
                "digest": digest,
                "size": size or cached_path(digest).stat().st_size,
                "annotations": {ANNOTATION_TITLE: file_name(kind, pin)},
            }
            return layer, uploaded

        # Several uploads at once, as skopeo does: one stream leaves the loopback
        # registry and the disk half idle.
        with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
            done = list(pool.map(store, pins))
        layers = [layer for layer, _ in done]
        result.packages += len(pins)
        result.uploaded += sum(1 for _, n in done if n)
        result.uploaded_bytes += sum(n for _, n in done)
        result.manifests.append(_put_closure(client, vault, s, recipe, pins, layers))
        result.sets.append(s.key)
    return result


def _put_closure(
    client: Any,
    vault: str,
    s: PackageSet,
    recipe: Recipe,
    pins: Sequence[Mapping[str, Any]],
    layers: list[dict[str, Any]],
) -> str:
    from repro import oci

    config_digest = oci.sha256_digest(EMPTY_CONFIG)
    if not client.blob_exists(vault, config_digest):
        client.push_blob(vault, config_digest, len(EMPTY_CONFIG), io.BytesIO(EMPTY_CONFIG))
    manifest = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE.format(kind=s.kind),
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": 2},
            "layers": layers,
            "annotations": {
                "org.opencontainers.image.created": "1970-01-01T00:00:00Z",
                "dev.repro.vault.set": f"{recipe.name}/{s.key}",
            },
        }
    )
    digest = oci.sha256_digest(manifest)
    tag = closure_tag(s.kind, pins)
    try:
        if client.resolve(f"{vault}:{tag}").digest == digest:
            return f"{vault}@{digest}"
    except ReproError:
        pass  # not there yet
    client.put_manifest(vault, tag, manifest, oci.MEDIA_TYPE_OCI_MANIFEST)
    return f"{vault}@{digest}"


# --- the build's package context ---------------------------------------------------------

CONTEXT_NAME = PACKAGE_CONTEXT


def uses_package_context(dockerfile_text: str) -> bool:
    """Does the Dockerfile mount the locked packages (``from=repro-apt``)?"""
    return f"from={CONTEXT_NAME}" in dockerfile_text.replace('"', "").replace("'", "")


def package_context(
    recipe: Recipe,
    lock: Mapping[str, Any],
    repo: RepoConfig,
    directory: Path,
    *,
    offline: bool = False,
) -> Path:
    """Lay out the locked packages for the build as ``<directory>/<set>/<file>``.

    Each file is hard-linked from the checked cache (copied across file systems),
    obtained from the mirror or the vault first if needed.
    """
    import shutil

    from repro.registry import Registry

    directory.mkdir(parents=True, exist_ok=True)
    with Registry() as client:
        for s in recipe.packages:
            entry = lock.get("packages", {}).get(s.kind, {}).get(s.name) or {}
            source = set_source(recipe, s, entry, repo, offline=offline, client=client)
            target = directory / s.name
            target.mkdir(exist_ok=True)
            for pin in entry.get("package", []):
                path = obtain(pin, source)
                dest = target / file_name(s.kind, pin)
                try:
                    os.link(path, dest)
                except OSError:
                    shutil.copyfile(path, dest)
    (directory / "repro-packages.json").write_text(
        json.dumps(
            {
                s.name: [
                    file_name(s.kind, p)
                    for p in (lock.get("packages", {}).get(s.kind, {}).get(s.name) or {}).get(
                        "package", []
                    )
                ]
                for s in recipe.packages
            },
            sort_keys=True,
            indent=1,
        )
    )
    return directory
