"""Checking the signature of an Alpine ``APKINDEX.tar.gz``.

A signed index is two gzip streams end to end. The first is a tar (without its
end-of-archive blocks) of one or more files named ``.SIGN.RSA.<keyname>`` (RSA
PKCS#1 v1.5 over SHA-1), ``.SIGN.RSA256.<keyname>`` (SHA-256) or
``.SIGN.RSA512.<keyname>`` (SHA-512); each holds a signature over the raw bytes of
the second gzip stream, the index proper (``DESCRIPTION`` and ``APKINDEX``). The key
name is the file name of the public key (``alpine-devel@lists.alpinelinux.org-
6165ee59.rsa.pub``), looked up in the configured key directories as apk looks it up
in ``/etc/apk/keys``.

Any signature that fails with a key we hold refuses the index; one that verifies
accepts it; only the second stream, the signed bytes, is read after that.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

from repro.errors import KeyringError, SignatureError
from repro.packages.trust import APK_KEY_DIRS, ApkTrust

_PREFIXES = {".SIGN.RSA.": "sha1", ".SIGN.RSA256.": "sha256", ".SIGN.RSA512.": "sha512"}


def split_signed_index(data: bytes, path: str) -> tuple[list[tuple[str, str, bytes]], bytes]:
    """The signatures of an index, as (key name, digest, signature), and the bytes they
    sign (the second gzip stream and everything after it)."""
    stream = zlib.decompressobj(wbits=31)  # one gzip member, no more
    try:
        first = stream.decompress(data)
    except zlib.error:
        raise SignatureError(f"{path}: not a gzip file") from None
    if not stream.eof:
        raise SignatureError(f"{path}: truncated gzip stream")
    signed = stream.unused_data
    signatures: list[tuple[str, str, bytes]] = []
    others = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(first or b"\0" * 1024), mode="r:") as tar:
            for member in tar:
                prefix = next((p for p in _PREFIXES if member.name.startswith(p)), "")
                if not prefix or not member.isfile():
                    others += 1
                    continue
                f = tar.extractfile(member)
                assert f is not None
                signatures.append((member.name[len(prefix) :], _PREFIXES[prefix], f.read()))
    except tarfile.TarError:
        raise SignatureError(f"{path}: the signature part is not a tar archive") from None
    if not signatures or others or not signed:
        raise SignatureError(f"{path}: not signed (no .SIGN.RSA signature before the index)")
    return signatures, signed


def _find_key(name: str, trust: ApkTrust) -> Path | None:
    if not name or "/" in name or name in (".", ".."):
        return None
    for directory in trust.key_dirs:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None


def _verify(key_file: Path, digest: str, signature: bytes, signed: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(key_file.read_bytes())
    except (ValueError, UnsupportedAlgorithm, OSError):
        raise KeyringError(f"{key_file}: not a public key in PEM form") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyringError(f"{key_file}: not an RSA public key")
    algorithm = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha512": hashes.SHA512()}
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm[digest])
    except InvalidSignature:
        return False
    return True


def verify_apkindex(data: bytes, path: str, trust: ApkTrust) -> bytes:
    """The signed part of an ``APKINDEX.tar.gz`` (a gzip stream holding APKINDEX), once a
    signature by a key in the key directories checks out. `path` is mirror-relative."""
    if trust.trusted:  # explicitly configured: nothing is checked
        try:
            return split_signed_index(data, path)[1]
        except SignatureError:
            return data
    for directory in trust.required_dirs:
        if not Path(directory).is_dir():
            raise KeyringError(f"key directory {directory} does not exist")
    signatures, signed = split_signed_index(data, path)
    good = ""
    for name, digest, signature in signatures:
        key_file = _find_key(name, trust)
        if key_file is None:
            continue
        if not _verify(key_file, digest, signature, signed):
            raise SignatureError(f"{path}: bad signature (key {name})")
        good = good or name
    if good:
        return signed
    names = ", ".join(dict.fromkeys(name for name, _, _ in signatures))
    if trust.key_dirs:
        where = ("key directory " if len(trust.key_dirs) == 1 else "key directories ") + ", ".join(
            trust.key_dirs
        )
    else:
        where = f'no key directory: {" and ".join(APK_KEY_DIRS)} do not exist; set keys = "DIR"'
    raise SignatureError(f"{path}: signed by unknown key {names} ({where})")
