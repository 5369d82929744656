"""`repro attest verify`: find an image's attestations, check them, apply a policy.

For each attestation found (repro.attest._store.find_attestations) it checks, in
order: the DSSE signature against the keys given (an envelope no key verifies is
listed and left out: it may be someone else's, or tampered with); the payload is an
in-toto Statement v1; its subject names the image's digest (a signed statement about
another image fails the verification); its predicate type and buildType are ones
repro reads.

The policy `builders>=K` then asks for K distinct builder identities
(`runDetails.builder.id`) that agree on the digest and the lock: the builder of a
provenance statement, and each verifier or rebuilder whose "reproduced" statement
says identical with every build at the image's digest, counted per lock digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from repro.attest._dsse import EnvelopeError
from repro.attest._keys import PublicKey
from repro.attest._statements import (
    STATEMENT_TYPE,
    iter_subject_digests,
    statement_kind,
)
from repro.attest._store import Found, find_attestations
from repro.errors import InputError
from repro.registry import Reference, Registry, parse_reference

_POLICY = re.compile(r"^\s*builders\s*>=\s*(\d+)\s*$")


def parse_policy(text: str) -> int:
    """`builders>=K` -> K (K >= 1)."""
    match = _POLICY.match(text)
    if not match or int(match.group(1)) < 1:
        raise InputError(f"--policy {text!r}: expected builders>=K with K at least 1")
    return int(match.group(1))


@dataclass
class Checked:
    """One attestation after checking."""

    source: str
    where: str
    kind: str = ""  # provenance | reproduced | sbom | other
    predicate_type: str = ""
    builder: str = ""
    lock: str = ""
    verdict: str = ""
    key: str = ""  # fingerprint of the key that verified it
    problem: str = ""  # why it does not count ("" when it does)
    fatal: bool = False  # signed by a given key, yet wrong: fails the verification

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", False)}


@dataclass
class Outcome:
    image: str
    digest: str
    required: int
    attestations: list[Checked] = field(default_factory=list)
    agreeing: dict[str, list[str]] = field(default_factory=dict)  # lock digest -> builders

    @property
    def verified_kinds(self) -> set[str]:
        return {a.kind for a in self.attestations if not a.problem}

    @property
    def best(self) -> tuple[str, list[str]]:
        if not self.agreeing:
            return "", []
        lock = max(sorted(self.agreeing), key=lambda k: len(self.agreeing[k]))
        return lock, self.agreeing[lock]

    @property
    def failures(self) -> list[str]:
        out = [f"{a.source} {a.where[:19]}: {a.problem}" for a in self.attestations if a.fatal]
        if not any(not a.problem for a in self.attestations):
            out.append("no attestation repro reads is signed by the given key(s)")
        elif "provenance" not in self.verified_kinds:
            out.append("no signed provenance statement")
        _lock, builders = self.best
        if len(builders) < self.required:
            out.append(
                f"policy builders>={self.required}: {len(builders)} builder(s) agree "
                f"on the digest and the lock"
            )
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        lock, builders = self.best
        return {
            "image": self.image,
            "digest": self.digest,
            "verified": self.ok,
            "policy": {"builders": self.required},
            "lock": lock,
            "builders": builders,
            "failures": self.failures,
            "attestations": [a.to_json() for a in self.attestations],
        }

    def text(self) -> str:
        lines = [f"{self.image}@{self.digest}"]
        for a in self.attestations:
            status = "ok" if not a.problem else ("FAIL" if a.fatal else "skipped")
            what = a.kind or "?"
            if a.builder:
                what += f" by {a.builder}"
            if a.verdict:
                what += f" ({a.verdict})"
            detail = f": {a.problem}" if a.problem else ""
            lines.append(f"  {status:7} {a.source:12} {what}{detail}")
        lock, builders = self.best
        lines.append(
            f"  builders agreeing on digest and lock {lock[:19] or '-'}: {len(builders)} "
            f"(policy builders>={self.required})"
        )
        if self.ok:
            lines.append("verified")
        else:
            lines.extend(f"NOT verified: {f}" for f in self.failures)
        return "\n".join(lines) + "\n"


def platform_manifest(
    registry: Registry, ref: Reference | str, platform: str = "linux/amd64"
) -> tuple[Reference, str]:
    """The repository and per-platform manifest digest that `ref` names (an index is
    resolved to `platform`'s manifest)."""
    import json

    from repro import oci

    ref = ref if isinstance(ref, Reference) else parse_reference(ref)
    data, media_type, digest = registry.get_manifest(ref)
    repo = ref.with_tag(None).with_digest(None)
    if media_type not in (oci.MEDIA_TYPE_OCI_INDEX, oci.MEDIA_TYPE_DOCKER_MANIFEST_LIST):
        return repo, digest
    for item in json.loads(data).get("manifests") or []:
        p = item.get("platform") or {}
        name = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
        if name == platform or name.startswith(platform + "/"):
            return repo, str(item["digest"])
    raise InputError(f"{ref} has no {platform} image")


def _check(found: Found, digest: str, keys: Sequence[PublicKey]) -> Checked:
    checked = Checked(found.source, found.where)
    if found.envelope is None:
        checked.problem = found.problem or "unreadable"
        checked.fatal = "subject" in checked.problem
        return checked
    key = found.envelope.verified_by(list(keys))
    hinted = any(found.hint and found.hint == k.fingerprint for k in keys)
    if key is None:
        checked.problem = "signature does not verify with the given key(s)"
        # A bundle that names one of our keys but does not verify was tampered with.
        checked.fatal = hinted
        return checked
    checked.key = key.fingerprint
    try:
        doc = found.envelope.statement()
    except EnvelopeError as exc:
        checked.problem, checked.fatal = str(exc), True
        return checked
    checked.predicate_type = str(doc.get("predicateType", ""))
    checked.kind = statement_kind(doc)
    if doc.get("_type") != STATEMENT_TYPE:
        # Signed, but a kind repro does not read (cosign 2 writes Statement v0.1).
        checked.problem = f"not an in-toto Statement v1 ({doc.get('_type')})"
        return checked
    subjects = list(iter_subject_digests(doc))
    if digest not in subjects:
        checked.problem = f"subject {subjects[0] if subjects else 'none'} does not match {digest}"
        checked.fatal = True
        return checked
    predicate = doc.get("predicate") if isinstance(doc.get("predicate"), Mapping) else {}
    assert isinstance(predicate, Mapping)
    run = predicate.get("runDetails") or {}
    definition = predicate.get("buildDefinition") or {}
    params = definition.get("externalParameters") or {}
    checked.builder = str((run.get("builder") or {}).get("id", ""))
    lock = (params.get("lock") or {}).get("digest", {}).get("sha256", "")
    checked.lock = f"sha256:{lock}" if lock else ""
    if checked.kind == "reproduced":
        levels = [
            (b.get("annotations") or {}).get("level")
            for b in run.get("byproducts") or []
            if isinstance(b, Mapping) and b.get("name") == "verdict"
        ]
        checked.verdict = str(levels[0]) if levels else ""
    if checked.kind == "other":
        checked.problem = f"predicate type {checked.predicate_type} is not one repro reads"
    return checked


def _agrees(checked: Checked, found: Found, digest: str) -> bool:
    """Whether this statement's builder counts for the policy."""
    if checked.problem or not checked.builder or not checked.lock:
        return False
    if checked.kind == "provenance":
        return True
    if checked.kind != "reproduced" or checked.verdict != "identical":
        return False
    assert found.envelope is not None
    deps = (
        found.envelope.statement()
        .get("predicate", {})
        .get("buildDefinition", {})
        .get("resolvedDependencies")
        or []
    )
    digests = {f"sha256:{d.get('digest', {}).get('sha256', '')}" for d in deps}
    return bool(digests) and digests == {digest}


def verify_image(
    registry: Registry,
    ref: Reference | str,
    keys: Sequence[PublicKey],
    *,
    required: int = 1,
    platform: str = "linux/amd64",
) -> Outcome:
    """Check every attestation of `ref`'s platform manifest against `keys` and the
    policy `builders>=required`."""
    repo, digest = platform_manifest(registry, ref, platform)
    outcome = Outcome(image=repo.name, digest=digest, required=required)
    seen: set[bytes] = set()
    for found in find_attestations(registry, repo, digest):
        if found.envelope is not None:
            # The same envelope stored as a referrer and in .att is one attestation.
            identity = hashlib.sha256(found.envelope.to_bytes()).digest()
            if identity in seen:
                continue
            seen.add(identity)
        checked = _check(found, digest, keys)
        outcome.attestations.append(checked)
        if _agrees(checked, found, digest):
            builders = outcome.agreeing.setdefault(checked.lock, [])
            if checked.builder not in builders:
                builders.append(checked.builder)
    return outcome
