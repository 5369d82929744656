"""Throwaway keys that sign fixture mirrors the way real archives are signed.

- ``GpgKey``: an OpenPGP key made by gpg in a temporary GNUPGHOME; ``keyring`` is its
  public key exported as a binary keyring, for gpgv. It clearsigns (InRelease) and
  makes detached signatures (Release.gpg).
- ``ApkKey``: an RSA key made with cryptography; ``sign_index`` turns an
  ``APKINDEX.tar.gz`` into a signed one (a gzip stream holding a tar of
  ``.SIGN.RSA256.<name>``, then the index), and ``keys_dir`` holds the public key
  under that name, as /etc/apk/keys would.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


class GpgKey:
    def __init__(
        self, directory: Path, name: str = "repro test", *, faked_time: str = "", expire: str = ""
    ):
        """A new key; `faked_time` (gpg's --faked-system-time, e.g. "20200101T000000")
        makes it, and its signatures, in the past; `expire` is gpg's expiry ("1y")."""
        # gpg-agent's socket lives in GNUPGHOME: keep its path short.
        self.home = Path(tempfile.mkdtemp(prefix="repro-gpg-"))
        self.faked_time = faked_time
        self.keyring = Path(directory) / f"{name.replace(' ', '-')}.gpg"
        uid = f"{name} <{name.replace(' ', '-')}@repro.invalid>"
        self._gpg("--quick-gen-key", uid, "ed25519", "sign", expire or "never")
        self.keyring.write_bytes(self._gpg("--export", uid))
        listing = self._gpg("--with-colons", "--list-keys", uid).decode()
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self.keyid = self.fingerprint[-16:]

    def _gpg(self, *args: str, data: bytes = b"") -> bytes:
        extra = [f"--faked-system-time={self.faked_time}!"] if self.faked_time else []
        done = subprocess.run(
            [
                "gpg",
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *extra,
                *args,
            ],
            input=data,
            capture_output=True,
            env={**os.environ, "GNUPGHOME": str(self.home), "LC_ALL": "C"},
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"gpg {' '.join(args)}: {done.stderr.decode()[-500:]}")
        return done.stdout

    def clearsign(self, text: bytes) -> bytes:
        return self._gpg("--clearsign", "--digest-algo", "SHA256", data=text)

    def detach_sign(self, data: bytes) -> bytes:
        return self._gpg("--detach-sign", "--armor", "--digest-algo", "SHA256", data=data)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)


def release_text(suite: str, files: dict[str, bytes], **fields: str) -> bytes:
    """A Release file for `suite` listing `files` (path -> bytes) in its SHA256 section."""
    import hashlib

    head = f"Origin: Repro\nSuite: {suite}\nCodename: {suite}\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in fields.items())
    body = "SHA256:\n" + "".join(
        f" {hashlib.sha256(data).hexdigest()} {len(data)} {path}\n"
        for path, data in sorted(files.items())
    )
    return (head + body).encode()


class ApkKey:
    def __init__(self, directory: Path, name: str = "repro-test-0001.rsa.pub"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.name = name
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys_dir = Path(directory)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        (self.keys_dir / name).write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def signature(self, data: bytes, digest: str = "sha256") -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        algorithm = hashes.SHA1() if digest == "sha1" else hashes.SHA256()
        return self.private.sign(data, padding.PKCS1v15(), algorithm)

    def sign_index(self, index: bytes, digest: str = "sha256", name: str = "") -> bytes:
        """`index` (a gzip stream) with a signature stream before it, as abuild-sign makes."""
        kind = "RSA" if digest == "sha1" else "RSA256"
        return (
            signature_stream(f".SIGN.{kind}.{name or self.name}", self.signature(index, digest))
            + index
        )


def signature_stream(entry: str, signature: bytes) -> bytes:
    """A gzip stream holding a tar of one file and no end-of-archive blocks (apk reads on
    past the signature into the index, so the tar must not end there)."""
    info = tarfile.TarInfo(entry)
    info.size = len(signature)
    info.mode = 0o644
    raw = info.tobuf(format=tarfile.USTAR_FORMAT) + signature
    raw += b"\0" * (-len(raw) % 512)
    return gzip.compress(raw, mtime=0)


def apkindex_archive(text: str) -> bytes:
    """An unsigned APKINDEX.tar.gz (DESCRIPTION and APKINDEX)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("DESCRIPTION", b"test"), ("APKINDEX", text.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())
