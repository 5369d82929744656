"""The statements for one recipe's image, in one call: what publish and verify use.

statements = recipe_statements(registry, image, digest, recipe, facts=facts,
                               comparison=Comparison.from_verify(result))
attach_statements(registry, image, digest, statements, key)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repro.attest._sbom import sbom_document, sbom_statement
from repro.attest._statements import BuildFacts, Comparison, lock_digest, provenance, reproduced
from repro.attest._store import attach_statements
from repro.errors import InputError


def recipe_statements(
    registry: Any,
    image: str,
    manifest_digest: str,
    recipe: Any,
    *,
    lock: Mapping[str, Any] | None = None,
    facts: BuildFacts | None = None,
    comparison: Comparison | None = None,
    sbom: bool = True,
    builder_id: str = "",
) -> list[dict[str, Any]]:
    """Provenance, then the SBOM (unless `sbom=False`), then a "reproduced" statement
    when a comparison is given, all about `image@manifest_digest` built from `recipe`."""
    from repro.lock import read_lock

    data = lock if lock is not None else read_lock(recipe)
    if not data:
        raise InputError(f"recipe {recipe.name} has no lock: run repro lock")
    digest_of_lock = lock_digest(recipe.lock_file)
    facts = facts or BuildFacts()
    if builder_id and not facts.builder_id:
        facts.builder_id = builder_id
    out = [provenance(image, manifest_digest, recipe, data, digest_of_lock, facts)]
    if sbom:
        document = sbom_document(image, manifest_digest, recipe, data, registry=registry)
        out.append(sbom_statement(image, manifest_digest, document))
    if comparison is not None:
        out.append(
            reproduced(
                image,
                manifest_digest,
                recipe,
                digest_of_lock,
                comparison,
                builder_id=facts.builder_id,
            )
        )
    return out


def publication_attacher(
    recipes: Mapping[str, Any],
    signer: Any,
    *,
    legacy: bool = True,
    sbom: bool = True,
    builder_id: str = "",
    verified: Mapping[str, Any] | None = None,
) -> Any:
    """The `attach` callback of `repro.publish.publish_recipes`: for each platform
    manifest of a published recipe, sign provenance (with the build record's BuildKit
    version and exporter options) and the SBOM, and attach them, before the tags move.
    With `verified` (recipe name -> repro.verify.VerifyResult), a signed "reproduced"
    statement of that verification goes with them."""

    def attach(publication: Any, registry: Any) -> None:
        recipe = recipes[publication.recipe]
        facts = BuildFacts.from_record(publication.build, builder_id)
        result = (verified or {}).get(publication.recipe)
        comparison = Comparison.from_verify(result) if result is not None else None
        for digest in sorted(set(publication.platforms.values())):
            statements = recipe_statements(
                registry,
                publication.repository,
                digest,
                recipe,
                facts=facts,
                sbom=sbom,
                comparison=comparison,
            )
            attach_statements(
                registry, publication.repository, digest, statements, signer, legacy=legacy
            )

    return attach
