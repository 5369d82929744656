"""Signed attestations on the per-platform manifest: provenance, "reproduced", SBOM.

    from repro.attest import attach_statements, load_private_key, provenance
    key = load_private_key("repro.key")
    attach_statements(registry, "127.0.0.1:5000/repro/hello", digest, [statement], key)

- `_statements`: in-toto Statement v1 with SLSA provenance v1 (`provenance`) and
  the ArtifactEquivalence-shaped "reproduced" claim (`reproduced`, `Comparison`);
- `_sbom`: an SPDX 2.3 document from the lock, and `check_sbom` against the image;
- `_keys`, `_dsse`: ECDSA P-256 keys, DSSE envelopes, Sigstore bundles v0.3;
- `_store`: referrers / tag-schema fallback / cosign 2 `.att` in a registry;
- `_verify`: finding and checking them, and the `builders>=K` policy.

The formats and where each field comes from are in docs/attestations.md.
"""

from repro.attest._dsse import (
    BUNDLE_MEDIA_TYPE,
    DSSE_MEDIA_TYPE,
    Envelope,
    bundle,
    pae,
    sign_statement,
)
from repro.attest._keys import (
    PASSWORD_ENV,
    PrivateKey,
    PublicKey,
    Signer,
    generate,
    load_private_key,
    load_public_key,
)
from repro.attest._rebuild import RebuildResult, rebuild
from repro.attest._recipe import publication_attacher, recipe_statements
from repro.attest._sbom import SbomCheck, check_sbom, sbom_document, sbom_statement
from repro.attest._statements import (
    BUILD_TYPE,
    REPRODUCED_TYPE,
    SLSA_PROVENANCE_V1,
    SPDX_DOCUMENT,
    BuildFacts,
    Comparison,
    default_builder_id,
    lock_digest,
    provenance,
    recipe_source,
    reproduced,
    tree_digest,
)
from repro.attest._store import (
    AttachResult,
    attach_envelopes,
    attach_statements,
    fallback_tag,
    find_attestations,
    legacy_tag,
)
from repro.attest._verify import Outcome, parse_policy, platform_manifest, verify_image

__all__ = [
    "BUILD_TYPE",
    "BUNDLE_MEDIA_TYPE",
    "DSSE_MEDIA_TYPE",
    "PASSWORD_ENV",
    "REPRODUCED_TYPE",
    "SLSA_PROVENANCE_V1",
    "SPDX_DOCUMENT",
    "AttachResult",
    "BuildFacts",
    "Comparison",
    "Envelope",
    "Outcome",
    "PrivateKey",
    "PublicKey",
    "RebuildResult",
    "SbomCheck",
    "Signer",
    "attach_envelopes",
    "attach_statements",
    "bundle",
    "check_sbom",
    "default_builder_id",
    "fallback_tag",
    "find_attestations",
    "generate",
    "legacy_tag",
    "load_private_key",
    "load_public_key",
    "lock_digest",
    "pae",
    "rebuild",
    "parse_policy",
    "platform_manifest",
    "provenance",
    "recipe_source",
    "publication_attacher",
    "recipe_statements",
    "reproduced",
    "sbom_document",
    "sbom_statement",
    "sign_statement",
    "tree_digest",
    "verify_image",
]
