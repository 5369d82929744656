"""Attestations in a registry, beside the image they are about (never in its index).

Each signed statement is stored twice over, on the per-platform manifest digest D:

- as an OCI 1.1 referrer: a manifest with `subject` = D, `artifactType` = the Sigstore
  bundle media type, the empty config, and the bundle as its one layer (what cosign 3
  writes). A registry with the referrers API lists it under /referrers/D. One
  without (a 404 from that probe: distribution 2.8, GHCR, Docker Hub) gets the
  distribution spec's fallback: an image index under the tag `sha256-<hex of D>`
  listing every referrer, which clients maintain;
- unless `legacy=False`, in cosign 2's form: a manifest under the tag
  `sha256-<hex of D>.att` whose layers are the DSSE envelopes
  (`application/vnd.dsse.envelope.v1+json`, annotated with the predicate type).

Both tags are shared by every writer (a verifier, later a rebuilder), so an update
reads the tag, merges, and writes with If-Match on the ETag it read. distribution
2.8 ignores If-Match, so after a write the tag is read again once `settle` has
passed, and the merge is repeated if an entry of ours (or one we had seen) is gone.
A writer that read before our write finishes its own write within the settle time
(it is a read, a merge and a PUT, like ours; we wait at least twice as long as ours
took), so a second read then sees any write that could have dropped ours: no
statement is lost unless another writer's read-merge-write is more than twice as
slow as ours. A registry that honours If-Match needs none of this, and is not
harmed by it.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from repro.attest._dsse import (
    BUNDLE_MEDIA_TYPE,
    DSSE_MEDIA_TYPE,
    Envelope,
    EnvelopeError,
    bundle,
    canonical_json,
    envelope_from_bundle,
    sign_statement,
)
from repro.attest._keys import Signer
from repro.attest._statements import iter_subject_digests
from repro.errors import InputError, RegistryError
from repro.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_EMPTY,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
)
from repro.registry import ManifestChanged, ManifestNotFound, Reference, Registry, parse_reference

EMPTY_CONFIG = b"{}"
EMPTY_DESCRIPTOR = {
    "mediaType": MEDIA_TYPE_OCI_EMPTY,
    "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
    "size": len(EMPTY_CONFIG),
}
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
BUNDLE_CONTENT = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
MAX_ATTESTATION = 16 * 1024 * 1024
DEFAULT_SETTLE = 0.1  # seconds, at least; see the module docstring
MAX_ROUNDS = 20


def fallback_tag(digest: str) -> str:
    """The distribution spec's referrers tag for a digest: `sha256-<hex>`."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}"


def legacy_tag(digest: str) -> str:
    """cosign 2's attestation tag: `sha256-<hex>.att`."""
    return fallback_tag(digest) + ".att"


@dataclass
class AttachResult:
    """What `attach_statements` stored."""

    image: str
    digest: str
    referrers: list[str] = field(default_factory=list)  # referrer manifest digests
    path: str = ""  # "referrers" (API) or "tag-fallback"
    legacy: str = ""  # the .att tag written, if any
    rounds: dict[str, int] = field(default_factory=dict)  # tag -> writes needed

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "digest": self.digest,
            "referrers": self.referrers,
            "path": self.path,
            "legacy": self.legacy,
            "rounds": self.rounds,
        }


def _as_repo(repo: Reference | str) -> Reference:
    ref = repo if isinstance(repo, Reference) else parse_reference(repo)
    return ref.with_tag(None).with_digest(None)


def _push_bytes(registry: Registry, repo: Reference, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.push_blob(repo, digest, len(data), io.BytesIO(data))
    return {"digest": digest, "size": len(data)}


def check_subjects(statements: Sequence[Mapping[str, Any]], digest: str) -> None:
    """Every statement must name `digest` among its subjects (else: bad input)."""
    for i, doc in enumerate(statements):
        subjects = list(iter_subject_digests(doc))
        if digest not in subjects:
            named = subjects[0] if subjects else "nothing"
            raise InputError(
                f"statement {i + 1} ({doc.get('predicateType', '?')}) is about {named}, "
                f"not the image {digest}"
            )


def sign_statements(statements: Sequence[Mapping[str, Any]], key: Signer) -> list[Envelope]:
    return [sign_statement(doc, key) for doc in statements]


def attach_statements(
    registry: Registry,
    repo: Reference | str,
    manifest_digest: str,
    statements: Sequence[Mapping[str, Any]],
    key: Signer,
    *,
    legacy: bool = True,
    settle: float = DEFAULT_SETTLE,
) -> AttachResult:
    """Sign `statements` with `key` and store them on `repo@manifest_digest`."""
    check_subjects(statements, manifest_digest)
    return attach_envelopes(
        registry,
        repo,
        manifest_digest,
        sign_statements(statements, key),
        key,
        legacy=legacy,
        settle=settle,
    )


def attach_envelopes(
    registry: Registry,
    repo: Reference | str,
    manifest_digest: str,
    envelopes: Sequence[Envelope],
    key: Signer,
    *,
    legacy: bool = True,
    settle: float = DEFAULT_SETTLE,
) -> AttachResult:
    """Store signed envelopes (as bundles, referrers and, with `legacy`, cosign 2's
    `.att`) on `repo@manifest_digest`."""
    ref = _as_repo(repo)
    image = registry.resolve(ref.with_digest(manifest_digest))
    if image.is_index:
        raise InputError(
            f"{ref.name}@{manifest_digest} is an index: attest each platform's manifest"
        )
    subject = {"mediaType": image.media_type, "digest": image.digest, "size": image.size}
    result = AttachResult(image=ref.name, digest=manifest_digest)
    # Side by side: the empty config, the referrers probe, and each statement's blobs
    # and manifest. A referrer manifest names the empty config, which the registry
    # checks when the manifest arrives: each waits for the config before its PUT.
    with ThreadPoolExecutor(max_workers=min(6, 2 + len(envelopes))) as pool:
        config = pool.submit(_push_bytes, registry, ref, EMPTY_CONFIG)
        probe = pool.submit(registry.referrers, ref, manifest_digest)
        futures = [
            pool.submit(_store_one, registry, ref, e, key, subject, legacy, config.result)
            for e in envelopes
        ]
        stored = [f.result() for f in futures]
        config.result()
        has_referrers_api = probe.result() is not None
    entries = [entry for entry, _layer in stored]
    layers = [layer for _entry, layer in stored if layer is not None]
    result.referrers = [str(entry["digest"]) for entry in entries]

    jobs: list[Callable[[], None]] = []
    if not has_referrers_api:
        result.path = "tag-fallback"
        tag = fallback_tag(manifest_digest)
        jobs.append(
            lambda: result.rounds.__setitem__(
                tag, _update_tag(registry, ref, tag, _merge_index(entries), settle)
            )
        )
    else:
        result.path = "referrers"  # the registry indexes the subject itself
    if legacy:
        result.legacy = legacy_tag(manifest_digest)
        att = result.legacy
        jobs.append(
            lambda: result.rounds.__setitem__(
                att, _update_tag(registry, ref, att, _merge_att(registry, ref, layers), settle)
            )
        )
    _run_all(jobs)
    return result


def _store_one(
    registry: Registry,
    ref: Reference,
    envelope: Envelope,
    key: Signer,
    subject: Mapping[str, Any],
    legacy: bool,
    config_pushed: Callable[[], object],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Push one envelope's bundle and referrer manifest (and its `.att` layer blob);
    returns the fallback index entry and the `.att` layer descriptor."""
    predicate_type = str(envelope.statement().get("predicateType", ""))
    bundle_bytes = canonical_json(bundle(envelope, key))
    layer = {"mediaType": BUNDLE_MEDIA_TYPE, **_push_bytes(registry, ref, bundle_bytes)}
    annotations = {BUNDLE_CONTENT: "dsse-envelope", BUNDLE_PREDICATE: predicate_type}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": EMPTY_DESCRIPTOR,
        "layers": [layer],
        "subject": dict(subject),
        "annotations": annotations,
    }
    data = canonical_json(manifest)
    config_pushed()
    digest = registry.put_manifest(
        ref, "sha256:" + hashlib.sha256(data).hexdigest(), data, MEDIA_TYPE_OCI_MANIFEST
    )
    entry = {
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "digest": digest,
        "size": len(data),
        "artifactType": BUNDLE_MEDIA_TYPE,
        "annotations": annotations,
    }
    if not legacy:
        return entry, None
    dsse = {"mediaType": DSSE_MEDIA_TYPE, **_push_bytes(registry, ref, envelope.to_bytes())}
    dsse["annotations"] = {COSIGN_SIGNATURE: "", "predicateType": predicate_type}
    return entry, dsse


def _run_all(jobs: Sequence[Callable[[], None]]) -> None:
    """Run the tag updates side by side (each mostly waits out `settle`)."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs[1:]]
    for thread in threads:
        thread.start()
    if jobs:
        run(jobs[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# A merge takes the tag's current document (or None) and returns
# (the document to write, or None when nothing is missing; digests that must be there).
Merge = Callable[[dict[str, Any] | None], tuple[bytes | None, str, set[str]]]


def _update_tag(registry: Registry, repo: Reference, tag: str, merge: Merge, settle: float) -> int:
    """Read-merge-write `tag` until a read after `settle` shows every entry we need;
    returns how many writes it took."""
    writes = 0
    for _round in range(MAX_ROUNDS):
        started = time.monotonic()
        try:
            data, _media_type, _digest, etag = registry.get_manifest_with_etag(repo.with_tag(tag))
            current: dict[str, Any] | None = json.loads(data)
        except ManifestNotFound:
            current, etag = None, None
        except ValueError:
            current, etag = None, None  # not JSON: replaced by a good one
        new, media_type, _needed = merge(current)
        if new is None:
            if writes:
                return writes  # our write survived a full settle
            # Everything was there already: nothing to write, nothing to wait for.
            return 0
        try:
            registry.put_manifest(repo, tag, new, media_type, if_match=etag)
        except ManifestChanged:
            time.sleep(random.uniform(0.01, 0.05))
            continue
        writes += 1
        # Another writer's read-merge-write takes about as long as ours did: wait
        # twice that (at least `settle`) before checking that our entries survived.
        window = time.monotonic() - started
        time.sleep(max(settle, 2 * window) + random.uniform(0, settle / 4))
    raise RegistryError(
        f"registry {repo.host}: {repo.name}:{tag} kept changing; gave up after {MAX_ROUNDS} tries"
    )


def _descriptors(doc: Mapping[str, Any] | None, key: str) -> list[dict[str, Any]]:
    items = (doc or {}).get(key)
    return [dict(x) for x in items if isinstance(x, Mapping)] if isinstance(items, list) else []


def _merge_index(entries: Sequence[Mapping[str, Any]]) -> Merge:
    def merge(current: dict[str, Any] | None) -> tuple[bytes | None, str, set[str]]:
        have = _descriptors(current, "manifests")
        seen = {str(d.get("digest")) for d in have}
        missing = [dict(e) for e in entries if e["digest"] not in seen]
        needed = {str(e["digest"]) for e in entries}
        if (
            not missing
            and current is not None
            and current.get("mediaType") == (MEDIA_TYPE_OCI_INDEX)
        ):
            return None, MEDIA_TYPE_OCI_INDEX, needed
        doc = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": sorted(have + missing, key=lambda d: str(d.get("digest"))),
        }
        return canonical_json(doc), MEDIA_TYPE_OCI_INDEX, needed

    return merge


def _merge_att(registry: Registry, repo: Reference, layers: Sequence[Mapping[str, Any]]) -> Merge:
    def merge(current: dict[str, Any] | None) -> tuple[bytes | None, str, set[str]]:
        have = _descriptors(current, "layers")
        seen = {str(d.get("digest")) for d in have}
        missing = [dict(x) for x in layers if x["digest"] not in seen]
        needed = {str(x["digest"]) for x in layers}
        if not missing and current is not None:
            return None, MEDIA_TYPE_OCI_MANIFEST, needed
        all_layers = sorted(have + missing, key=lambda d: str(d.get("digest")))
        # cosign's config: an empty image whose diff_ids are the layers (uncompressed).
        config_doc = {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in all_layers]},
        }
        config = _push_bytes(registry, repo, canonical_json(config_doc))
        doc = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, **config},
            "layers": all_layers,
        }
        return canonical_json(doc), MEDIA_TYPE_OCI_MANIFEST, needed

    return merge


# --- reading them back -----------------------------------------------------------------


@dataclass
class Found:
    """One stored attestation: where it was found and its envelope (or why not)."""

    source: str  # "referrers", "tag-fallback" or "legacy"
    where: str  # the referrer manifest or .att layer digest
    envelope: Envelope | None
    hint: str = ""  # the bundle's public key hint
    problem: str = ""


def _blob(registry: Registry, repo: Reference, descriptor: Mapping[str, Any]) -> bytes:
    size = descriptor.get("size")
    if not isinstance(size, int) or size < 0 or size > MAX_ATTESTATION:
        raise RegistryError(f"attestation blob {descriptor.get('digest')} has size {size!r}")
    out = io.BytesIO()
    registry.get_blob(repo, str(descriptor.get("digest")), out, size)
    return out.getvalue()


def _from_referrer(
    registry: Registry, repo: Reference, entry: Descriptor, digest: str, source: str
) -> Found:
    try:
        data, _mt, _d = registry.get_manifest(repo.with_digest(entry.digest))
        manifest = json.loads(data)
        subject = manifest.get("subject") or {}
        if subject.get("digest") != digest:
            return Found(
                source,
                entry.digest,
                None,
                problem=f"referrer's subject is {subject.get('digest')}, not {digest}",
            )
        layers = manifest.get("layers") or []
        if not layers:
            return Found(source, entry.digest, None, problem="referrer has no layers")
        doc = json.loads(_blob(registry, repo, layers[0]))
        envelope = envelope_from_bundle(doc)
        hint = (doc.get("verificationMaterial") or {}).get("publicKey", {}).get("hint", "")
        return Found(source, entry.digest, envelope, hint=str(hint))
    except (ValueError, AttributeError, EnvelopeError, InputError, RegistryError) as exc:
        # One attestation that cannot be read (a blob gone, bad bytes) is listed as
        # such; the others are still checked.
        return Found(source, entry.digest, None, problem=f"unreadable: {exc}")


def find_attestations(registry: Registry, repo: Reference | str, digest: str) -> list[Found]:
    """Every attestation stored on `repo@digest`: referrers (API, else the fallback
    tag), then cosign 2's `.att` layers."""
    ref = _as_repo(repo)
    found: list[Found] = []
    listed = registry.referrers(ref, digest, BUNDLE_MEDIA_TYPE)
    source = "referrers"
    if listed is None:
        source = "tag-fallback"
        listed = []
        try:
            data, _mt, _d = registry.get_manifest(ref.with_tag(fallback_tag(digest)))
            for i, item in enumerate(json.loads(data).get("manifests") or []):
                listed.append(Descriptor.from_json(item, f"{fallback_tag(digest)} manifests[{i}]"))
        except ManifestNotFound:
            pass
        except (ValueError, AttributeError):
            found.append(Found(source, fallback_tag(digest), None, problem="not an index"))
    for entry in listed:
        if entry.extra.get("artifactType", BUNDLE_MEDIA_TYPE) != BUNDLE_MEDIA_TYPE:
            continue
        found.append(_from_referrer(registry, ref, entry, digest, source))
    try:
        data, _mt, _d = registry.get_manifest(ref.with_tag(legacy_tag(digest)))
        layers = json.loads(data).get("layers") or []
    except ManifestNotFound:
        layers = []
    except (ValueError, AttributeError):
        layers = []
        found.append(Found("legacy", legacy_tag(digest), None, problem="not a manifest"))
    for layer in _only_dsse(layers):
        try:
            envelope = Envelope.from_json(json.loads(_blob(registry, ref, layer)))
            found.append(Found("legacy", str(layer.get("digest")), envelope))
        except (ValueError, EnvelopeError, RegistryError) as exc:
            found.append(
                Found("legacy", str(layer.get("digest")), None, problem=f"unreadable: {exc}")
            )
    return found


def _only_dsse(layers: Iterable[Any]) -> list[Mapping[str, Any]]:
    return [x for x in layers if isinstance(x, Mapping) and x.get("mediaType") == DSSE_MEDIA_TYPE]
