"""Publishing recipes: the exact bytes `repro build` wrote, pushed to each recipe's
repository and tags.

`repro publish` does not build. It pushes the OCI layout a build left at
``out/<name>`` (or a layout given per recipe), so what reaches the registry is the
image whose digest the build printed and `repro verify` checked; a recipe without a
build output is one line asking for `repro build` (exit 2). When this machine has the
build's record (repro.records) and it names another lock than the recipe's current
one, publishing is refused too: the output is older than the lock.

Each image goes up through the registry client (repro.registry): blobs the registry
lacks only, mounted from the recipe's base repositories when they live on the same
registry, in resumable chunks; then the manifests by digest, children before the
index; then the recipe's tags. A failed publish moves no tag. Recipes are published
in build-graph order, bases before the recipes that build on them.

The result (`Publication`, one per recipe) is what attestations need: the repository,
the top digest (an index for multi-platform recipes), the digest of each platform's
manifest, the lock's path and sha256, and the build record (builder, BuildKit
version, exporter options). `publish_recipes(..., attach=callback)` calls the
callback for each recipe once its image is in the registry by digest and before its
tags move: attestations attached there are in place before anyone pulls by tag, and
a callback that raises stops the publish with that recipe's tags unmoved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.config import RepoConfig, load_repo_config
from repro.errors import InputError
from repro.recipe import Recipe

if TYPE_CHECKING:
    from repro.registry import Registry


@dataclass
class Publication:
    """One recipe's image as published."""

    recipe: str
    repository: str  # host/repository
    digest: str  # the top manifest: an index for multi-platform recipes
    media_type: str
    tags: list[str]
    platforms: dict[str, str]  # platform -> image manifest digest
    layout: str  # the OCI layout pushed
    lock: dict[str, str]  # {"path": ..., "digest": "sha256:..."} of the recipe's repro.lock
    build: dict[str, Any] | None = None  # the build record (repro.records), if any
    counters: dict[str, int] = field(default_factory=dict)  # repro.registry.PushCounters
    seconds: float = 0.0

    @property
    def reference(self) -> str:
        """`host/repository@digest`."""
        return f"{self.repository}@{self.digest}"

    @property
    def references(self) -> list[str]:
        """`host/repository:tag` for each tag."""
        return [f"{self.repository}:{t}" for t in self.tags]

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "repository": self.repository,
            "reference": self.reference,
            "digest": self.digest,
            "media_type": self.media_type,
            "tags": list(self.tags),
            "references": self.references,
            "platforms": dict(self.platforms),
            "layout": self.layout,
            "lock": dict(self.lock),
            "build": self.build,
            "pushed": dict(self.counters),
            "seconds": self.seconds,
        }


Attach = Callable[[Publication, "Registry"], None]


# --- where a recipe goes ---------------------------------------------------------------


def publish_repository(recipe_name: str, recipe: Recipe | None, repo: RepoConfig) -> str:
    """`host/repository` a recipe is published to: its [publish] repository, else
    ``<registry>/<name>`` from repro.toml."""
    repository = recipe.publish.repository if recipe else ""
    if repository:
        return repository
    if not repo.registry:
        raise InputError(
            f"recipe:{recipe_name} needs a place to be published: set [publish] "
            f"repository in its recipe.toml or registry in {repo.root / 'repro.toml'}"
        )
    return f"{repo.registry}/{recipe_name}"


def publish_tags(recipe: Recipe | None) -> tuple[str, ...]:
    return tuple(recipe.publish.tags) if recipe and recipe.publish.tags else ("latest",)


def publish_reference(recipe_name: str, recipe: Recipe | None, repo: RepoConfig) -> str:
    """`host/repository:tag` with the recipe's first tag: where dependants pull it from."""
    return f"{publish_repository(recipe_name, recipe, repo)}:{publish_tags(recipe)[0]}"


def push_recipe_image(
    recipe: Recipe,
    output: str,
    repo: RepoConfig | None = None,
    registry: Registry | None = None,
) -> str:
    """Push a built recipe's OCI layout (``oci:DIR``) to where its dependants pull it
    (its first tag); returns the image digest. `repro build --all` uses this for
    recipes that others build on, with its shared `registry` client."""
    import contextlib

    from repro.oci import OCILayout
    from repro.registry import Registry

    kind, _, path = output.partition(":")
    if kind != "oci":
        raise InputError(f"{recipe.name}: a base recipe must be built to an oci: layout to push")
    repo = repo or load_repo_config(recipe.directory.parent)
    client = contextlib.nullcontext(registry) if registry is not None else Registry()
    with client as registry:
        pushed = registry.push_image(
            OCILayout(path),
            publish_repository(recipe.name, recipe, repo),
            publish_tags(recipe)[:1],
            mount_from=_base_repositories(recipe, repo, _read_lock(recipe)),
        )
    return pushed.digest


# --- publishing -------------------------------------------------------------------------


def publish_recipes(
    selected: Sequence[Recipe],
    everything: Sequence[Recipe] | None = None,
    *,
    outputs: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    attach: Attach | None = None,
    on_published: Callable[[Publication], None] | None = None,
) -> list[Publication]:
    """Publish `selected` in build-graph order (over `everything`, default `selected`).

    `outputs` maps a recipe name to its build output (``oci:DIR``; default
    ``oci:out/<name>``). `attach(publication, registry)` runs for each recipe once its
    image is in the registry by digest, before its tags move. `on_published` is
    called after each recipe (for progress lines). Every layout is checked before
    anything is pushed, so bad input fails with nothing published.
    """
    from repro.graph import levels
    from repro.registry import Registry

    names = {r.name for r in selected}
    by_name = {r.name: r for r in (everything or selected)}
    by_name.update({r.name: r for r in selected})
    ordered = [by_name[n] for level in levels(list(by_name.values()), only=names) for n in level]
    plans = [_plan(recipe, (outputs or {}).get(recipe.name)) for recipe in ordered]
    own = registry is None
    client = registry or Registry()
    try:
        out = []
        for plan in plans:
            publication = _publish_one(plan, client, attach)
            if on_published is not None:
                on_published(publication)
            out.append(publication)
        return out
    finally:
        if own:
            client.close()


@dataclass
class _Plan:
    recipe: Recipe
    layout: Path
    repository: str
    tags: tuple[str, ...]
    lock: dict[str, str]
    build: dict[str, Any] | None
    mount_from: list[str]


def _plan(recipe: Recipe, output: str | None) -> _Plan:
    """Check one recipe's build output and work out where it goes (no network)."""
    from repro import oci
    from repro.build import default_output
    from repro.records import file_digest, read_build_record

    output = output or default_output(recipe)
    kind, _, raw = output.partition(":")
    if kind != "oci" or not raw:
        raise InputError(f"{recipe.name}: publish needs an OCI layout (oci:DIR), not {output}")
    path = Path(raw)
    if not (path / oci.OCI_LAYOUT_FILE).is_file():
        raise InputError(
            f"{recipe.name}: no build output at {path}; run `repro build {recipe.name}` first"
        )
    layout = oci.OCILayout(path)
    layout.check_layout_file()
    top = layout.top_descriptor()
    layout.verify()  # every blob present with its size; digests are checked as they go up
    repo = load_repo_config(recipe.directory.parent)
    lock_digest = file_digest(recipe.lock_file)
    record = read_build_record(top.digest)
    if record is not None:
        built_from = (record.get("lock") or {}).get("digest")
        if record.get("recipe") == recipe.name and built_from and built_from != lock_digest:
            raise InputError(
                f"{recipe.name}: {path} was built from another repro.lock than "
                f"{_shown(recipe.lock_file)}; run `repro build {recipe.name}` again"
            )
    return _Plan(
        recipe=recipe,
        layout=path,
        repository=publish_repository(recipe.name, recipe, repo),
        tags=publish_tags(recipe),
        lock={"path": _shown(recipe.lock_file), "digest": lock_digest},
        build=record,
        mount_from=_base_repositories(recipe, repo, _read_lock(recipe)),
    )


def _publish_one(plan: _Plan, client: Registry, attach: Attach | None) -> Publication:
    from repro import oci

    started = time.monotonic()
    layout = oci.OCILayout(plan.layout)
    publication: Publication | None = None

    def before_tags(pushed: Any) -> None:
        nonlocal publication
        publication = _publication(plan, pushed, started)
        if attach is not None:
            attach(publication, client)

    pushed = client.push_image(
        layout,
        plan.repository,
        plan.tags,
        mount_from=plan.mount_from,
        before_tags=before_tags,
    )
    return _publication(plan, pushed, started)


def _publication(plan: _Plan, pushed: Any, started: float) -> Publication:
    return Publication(
        recipe=plan.recipe.name,
        repository=pushed.repository,
        digest=pushed.digest,
        media_type=pushed.media_type,
        tags=list(plan.tags),
        platforms=dict(pushed.manifests),
        layout=str(plan.layout),
        lock=dict(plan.lock),
        build=plan.build,
        counters=pushed.counters.to_json(),
        seconds=round(time.monotonic() - started, 3),
    )


def _read_lock(recipe: Recipe) -> dict[str, Any]:
    from repro.lock import read_lock

    try:
        return read_lock(recipe) or {}
    except InputError:
        return {}


def _base_repositories(recipe: Recipe, repo: RepoConfig, lock: Mapping[str, Any]) -> list[str]:
    """Repository paths of the recipe's locked bases: where its base layers already are,
    so they can be mounted instead of uploaded (used only on the same registry)."""
    from repro.registry import parse_reference

    target = parse_reference(publish_repository(recipe.name, recipe, repo))
    out: list[str] = []
    for ref, entry in (lock.get("bases") or {}).items():
        image = entry.get("image") if isinstance(entry, Mapping) else None
        if not image and ref.startswith("recipe:"):
            continue
        try:
            parsed = parse_reference(str(image or ref))
        except InputError:
            continue
        if parsed.host == target.host and parsed.repository not in out:
            out.append(parsed.repository)
    return out


def _shown(path: Path) -> str:
    """`path` relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def publish_verified(
    run: Any,
    recipes: Sequence[Recipe],
    kept: Path,
    *,
    everything: Sequence[Recipe] | None = None,
    attach: Attach | None = None,
    on_published: Callable[[Publication], None] | None = None,
) -> list[Publication]:
    """Publish what `repro verify` proved: the first build of each recipe, kept under
    `kept` (verify's `keep`), and only when every recipe of the run is reproducible at
    its acceptance level; a run with any failure publishes nothing (InputError)."""
    failed = [r.recipe for r in run.results if not r.reproducible(run.accept)]
    if failed:
        raise InputError(
            f"not published: {', '.join(failed)} did not verify; nothing was pushed"
        )
    outputs = {r.name: f"oci:{kept / f'{r.name}-a'}" for r in recipes}
    return publish_recipes(
        recipes, everything, outputs=outputs, attach=attach, on_published=on_published
    )
