"""Signing keys: ECDSA P-256 pairs in PEM, the private half optionally encrypted.

`generate` writes a pair the way `repro keygen` does: the private key as PKCS#8 PEM
(encrypted with the passphrase when one is given), mode 0600, and the public key as
SubjectPublicKeyInfo PEM, which is also what `cosign verify-attestation --key` reads.
Both files are written to a temporary name and moved into place, so a failed keygen
leaves nothing behind.

The passphrase for an encrypted key comes from $REPRO_KEY_PASSWORD (or a prompt that
the CLI supplies); it is never logged or written anywhere.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from repro.errors import SigningKeyError

PASSWORD_ENV = "REPRO_KEY_PASSWORD"
MAX_KEY_FILE = 64 * 1024


def _fingerprint(public: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: names a key without showing it."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A key that checks signatures."""

    key: ec.EllipticCurvePublicKey
    source: str  # the file it came from, for messages

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.key)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Signer(Protocol):
    """What signs attestations: a key file here; a Fulcio certificate for a CI's OIDC
    identity in hosted CI (docs/attestations.md), behind the same two methods."""

    def sign(self, data: bytes) -> bytes:
        """An ECDSA P-256 / SHA-256 signature (DER) over `data`."""
        ...

    def verification_material(self) -> dict[str, Any]:
        """The Sigstore bundle's `verificationMaterial` for these signatures."""
        ...


@dataclass(frozen=True)
class PrivateKey:
    """A key that signs: ECDSA P-256 with SHA-256 (DER signatures, as DSSE and cosign use)."""

    key: ec.EllipticCurvePrivateKey
    source: str

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.source)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verification_material(self) -> dict[str, Any]:
        # The key itself reaches verifiers out of band; the bundle names it.
        return {"publicKey": {"hint": self.public.fingerprint}}


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            raise SigningKeyError(f"{what} is larger than any PEM key", file=str(path))
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"no such {what}", file=str(path)) from None
    except IsADirectoryError:
        raise SigningKeyError(f"{what} is a directory", file=str(path)) from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what}: {exc.strerror}", file=str(path)) from None


def _check_curve(key: object, path: Path, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not (
        isinstance(key.curve, ec.SECP256R1)
    ):
        raise SigningKeyError(f"{what} is not an ECDSA P-256 key", file=str(path))


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """A public key from a PEM file (SubjectPublicKeyInfo); a private key file is
    accepted too, and its public half used."""
    path = Path(path)
    data = _read(path, "public key file")
    try:
        key: object = serialization.load_pem_public_key(data)
    except ValueError:
        if b"PRIVATE KEY" in data:
            raise SigningKeyError(
                "is a private key; give the public key (.pub) to verify", file=str(path)
            ) from None
        raise SigningKeyError("is not a PEM public key", file=str(path)) from None
    _check_curve(key, path, "public key")
    return PublicKey(key, str(path))  # type: ignore[arg-type]


def load_private_key(
    path: str | os.PathLike[str],
    *,
    passphrase: Callable[[], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PrivateKey:
    """A private key from a PEM file. An encrypted key needs a passphrase: from
    $REPRO_KEY_PASSWORD, else from `passphrase()` (the CLI's prompt on a terminal)."""
    path = Path(path)
    env = os.environ if environ is None else environ
    data = _read(path, "private key file")
    if b"PRIVATE KEY" not in data:
        if b"PUBLIC KEY" in data:
            raise SigningKeyError("is a public key; sign with the private key", file=str(path))
        raise SigningKeyError("is not a PEM private key", file=str(path))
    encrypted = b"ENCRYPTED" in data
    password: str | None = None
    if encrypted:
        password = env.get(PASSWORD_ENV)
        if password is None and passphrase is not None:
            password = passphrase()
        if not password:
            raise SigningKeyError(
                f"is encrypted: set ${PASSWORD_ENV} to its passphrase", file=str(path)
            )
    try:
        key = serialization.load_pem_private_key(
            data, password=password.encode() if password is not None else None
        )
    except ValueError:
        if encrypted:
            raise SigningKeyError(
                "cannot be decrypted: wrong passphrase, or not a PEM private key", file=str(path)
            ) from None
        raise SigningKeyError("is not a PEM private key", file=str(path)) from None
    except TypeError:
        raise SigningKeyError("is not encrypted; unset the passphrase", file=str(path)) from None
    _check_curve(key, path, "private key")
    return PrivateKey(key, str(path))  # type: ignore[arg-type]


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away; set exactly these
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate(
    prefix: str | os.PathLike[str], *, password: str | None = None, force: bool = False
) -> tuple[Path, Path]:
    """Write `<prefix>.key` (private, 0600) and `<prefix>.pub`; returns both paths.
    Existing files are refused unless `force`."""
    base = Path(prefix)
    private_path = base.with_name(base.name + ".key")
    public_path = base.with_name(base.name + ".pub")
    if not force:
        for path in (private_path, public_path):
            if path.exists():
                raise SigningKeyError("exists already (--force replaces it)", file=str(path))
    if not base.parent.is_dir():
        raise SigningKeyError("no such directory", file=str(base.parent))
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _atomic_write(private_path, private_pem, 0o600)
    try:
        _atomic_write(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path
