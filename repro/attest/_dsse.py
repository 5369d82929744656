"""DSSE envelopes and Sigstore bundles, written and checked by hand.

DSSE v1 signs the pre-authentication encoding (PAE) of the payload, never the
payload alone: `DSSEv1 <len(type)> <type> <len(body)> <body>`, so a signature over
one payload type cannot be replayed as another. The envelope is JSON with the body
in standard base64.

A Sigstore bundle v0.3 wraps one envelope with what verifies it: here a public key
hint (the key's fingerprint), since the key itself is given to the verifier out of
band; no transparency-log entry (signing with a key is offline). Keyless signing
would put a Fulcio certificate in `verificationMaterial` and a Rekor entry in
`tlogEntries` instead (docs/attestations.md).

Both formats are a handful of JSON fields; `securesystemslib`'s DSSE module and the
generated `sigstore-protobuf-specs` classes would add dependencies for no bytes we
do not already control (see docs/attestations.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from repro.attest._keys import PublicKey, Signer

PAYLOAD_TYPE_INTOTO = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


class EnvelopeError(ValueError):
    """An envelope or bundle is malformed (the message says how)."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of (type, body)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"{what} is not a base64 string")
    try:
        # DSSE allows either alphabet; accept URL-safe too, with or without padding.
        padded = text + "=" * (-len(text) % 4)
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": _b64(self.payload),
            "signatures": [{"keyid": k, "sig": _b64(s)} for k, s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, doc: object) -> Envelope:
        if not isinstance(doc, Mapping):
            raise EnvelopeError("the envelope is not a JSON object")
        payload_type = doc.get("payloadType")
        if not isinstance(payload_type, str):
            raise EnvelopeError("the envelope has no payloadType")
        payload = _unb64(doc.get("payload"), "the envelope's payload")
        raw = doc.get("signatures")
        if not isinstance(raw, list) or not raw:
            raise EnvelopeError("the envelope has no signatures")
        signatures = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping):
                raise EnvelopeError(f"signature {i} is not an object")
            keyid = item.get("keyid") or ""
            signatures.append((str(keyid), _unb64(item.get("sig"), f"signature {i}")))
        return cls(payload_type, payload, tuple(signatures))

    def verified_by(self, keys: list[PublicKey]) -> PublicKey | None:
        """The first of `keys` that made one of the signatures, or None."""
        message = pae(self.payload_type, self.payload)
        for _keyid, signature in self.signatures:
            for key in keys:
                if key.verify(signature, message):
                    return key
        return None

    def statement(self) -> dict[str, Any]:
        """The payload as an in-toto statement (a JSON object)."""
        if self.payload_type != PAYLOAD_TYPE_INTOTO:
            raise EnvelopeError(f"payload type {self.payload_type!r} is not in-toto")
        try:
            doc = json.loads(self.payload)
        except ValueError:
            raise EnvelopeError("the payload is not JSON") from None
        if not isinstance(doc, dict):
            raise EnvelopeError("the payload is not a JSON object")
        return doc


def canonical_json(doc: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same document always gives the same bytes."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_statement(statement: Mapping[str, Any], key: Signer) -> Envelope:
    """A DSSE envelope holding `statement`, signed with `key`. The keyid is left empty,
    as cosign writes it: go-securesystemslib skips a signature whose keyid differs
    from the verifier's, and the key is named in the bundle's hint instead."""
    payload = canonical_json(statement)
    signature = key.sign(pae(PAYLOAD_TYPE_INTOTO, payload))
    return Envelope(PAYLOAD_TYPE_INTOTO, payload, (("", signature),))


def bundle(envelope: Envelope, signer: Signer) -> dict[str, Any]:
    """A Sigstore bundle v0.3 for an envelope `signer` signed."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": signer.verification_material(),
        "dsseEnvelope": envelope.to_json(),
    }


def envelope_from_bundle(doc: object) -> Envelope:
    if not isinstance(doc, Mapping):
        raise EnvelopeError("the bundle is not a JSON object")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith(
        "application/vnd.dev.sigstore.bundle"
    ):
        raise EnvelopeError(f"not a Sigstore bundle (mediaType {media_type!r})")
    if "dsseEnvelope" not in doc:
        raise EnvelopeError("the bundle holds no DSSE envelope")
    return Envelope.from_json(doc["dsseEnvelope"])
