"""`repro rebuild`: what a third party runs to check a published image.

1. Read the image's provenance (signed by one of `keys` when keys are given).
2. Check the recipe in `--source DIR` against it: the directory's tree digest and
   its lock's digest must be the ones the provenance records, so the rebuild is of
   the same inputs (a checkout at any path).
3. Build it with the caller's own BuildKit, with no cache, into a temporary layout.
4. Compare with the published image (repro.diff): identical, same content, or the
   differences with their causes.
5. With a signing key, attach the rebuilder's own "reproduced" statement beside the
   publisher's, whatever the verdict: the policy counts only `identical` ones.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.attest._keys import PublicKey, Signer
from repro.attest._statements import (
    Comparison,
    default_builder_id,
    lock_digest,
    reproduced,
    statement_kind,
    tree_digest,
)
from repro.attest._store import AttachResult, attach_statements, find_attestations
from repro.attest._verify import platform_manifest
from repro.errors import InputError, NotVerified
from repro.registry import Registry


@dataclass
class RebuildResult:
    image: str
    digest: str  # the published platform manifest
    rebuilt: str  # what the rebuild produced
    verdict: str
    publisher: str  # the provenance's builder id
    report: Any = None  # repro.diff.DiffReport when the images differ
    attached: AttachResult | None = None

    def to_json(self) -> dict[str, Any]:
        from repro.diff import present

        return {
            "image": self.image,
            "digest": self.digest,
            "rebuilt": self.rebuilt,
            "verdict": self.verdict,
            "publisher": self.publisher,
            "report": json.loads(present.to_json(self.report)) if self.report else None,
            "attached": self.attached.to_json() if self.attached else None,
        }


def _provenance(
    registry: Registry, repo: Any, digest: str, keys: Sequence[PublicKey]
) -> dict[str, Any]:
    problems = []
    for found in find_attestations(registry, repo, digest):
        if found.envelope is None:
            continue
        if keys and found.envelope.verified_by(list(keys)) is None:
            problems.append("a provenance statement not signed by the given key(s)")
            continue
        try:
            doc = found.envelope.statement()
        except ValueError:
            continue
        if statement_kind(doc) == "provenance":
            return doc
    detail = f" ({problems[0]})" if problems else ""
    raise NotVerified(f"{repo.name}@{digest} has no readable provenance{detail}")


def check_source(source: Path, provenance: dict[str, Any]) -> Any:
    """The recipe in `source`, if its tree and lock are the ones the provenance names."""
    from repro.recipe import load_recipe

    params = provenance["predicate"]["buildDefinition"]["externalParameters"]
    want_tree = "sha256:" + str(params.get("recipe", {}).get("digest", {}).get("sha256", ""))
    want_lock = "sha256:" + str(params.get("lock", {}).get("digest", {}).get("sha256", ""))
    if not (source / "recipe.toml").is_file():
        raise InputError("is not a recipe directory (no recipe.toml)", file=str(source))
    have_tree = tree_digest(source)
    if have_tree != want_tree:
        raise InputError(
            f"is not the recipe the image was built from: tree {have_tree[:19]}…, "
            f"provenance says {want_tree[:19]}…",
            file=str(source),
        )
    have_lock = lock_digest(source / "repro.lock")
    if have_lock != want_lock:
        raise InputError(
            f"has another lock: {have_lock[:19]}…, provenance says {want_lock[:19]}…",
            file=str(source),
        )
    return load_recipe(source)


def rebuild(
    registry: Registry,
    ref: str,
    source: Path,
    *,
    keys: Sequence[PublicKey] = (),
    builder: str | None = None,
    sign: Signer | None = None,
    builder_id: str = "",
    legacy: bool = True,
    platform: str = "linux/amd64",
    keep: Path | None = None,
) -> RebuildResult:
    """Rebuild the image `ref` from `source` and compare (see the module docstring)."""
    from repro.build import build_recipe
    from repro.diff import IDENTICAL, Options, compare, open_source

    repo, digest = platform_manifest(registry, ref, platform)
    provenance = _provenance(registry, repo, digest, keys)
    recipe = check_source(source, provenance)
    publisher = str(provenance["predicate"].get("runDetails", {}).get("builder", {}).get("id", ""))
    work = Path(tempfile.mkdtemp(prefix="repro-rebuild-"))
    try:
        output = keep if keep is not None else work / "image"
        result = build_recipe(
            recipe,
            output=f"oci:{output}",
            no_cache=True,
            builder=builder,
            progress="quiet",
            remember=keep is not None,  # else the image is deleted below
        )
        report = None
        verdict = IDENTICAL
        if result.digest != digest:
            with (
                open_source(f"docker://{repo.name}@{digest}") as theirs,
                open_source(f"oci:{output}") as mine,
            ):
                report = compare(theirs, mine, Options())
            verdict = report.verdict
        outcome = RebuildResult(
            image=repo.name,
            digest=digest,
            rebuilt=result.digest,
            verdict=verdict,
            publisher=publisher,
            report=report,
        )
        if sign is not None:
            comparison = Comparison(
                verdict=verdict,
                builds=[
                    {
                        "label": "published",
                        "digest": digest,
                        "builder": publisher,
                        "builder_version": "",
                    },
                    {
                        "label": "rebuild",
                        "digest": result.digest,
                        "builder": result.builder,
                        "builder_version": result.builder_version,
                    },
                ],
                report_digest=_report_digest(outcome.report),
            )
            statement = reproduced(
                repo.name,
                digest,
                recipe,
                lock_digest(recipe.lock_file),
                comparison,
                builder_id=builder_id or default_builder_id(),
            )
            outcome.attached = attach_statements(
                registry, repo, digest, [statement], sign, legacy=legacy
            )
        return outcome
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report_digest(report: Any) -> str:
    if report is None:
        return ""
    import hashlib

    from repro.diff import present

    return "sha256:" + hashlib.sha256(present.to_json(report).encode()).hexdigest()
