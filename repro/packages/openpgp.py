"""Checking the OpenPGP signature of a Debian suite's ``InRelease`` or ``Release``.

gpgv, Debian's own verifier (apt runs it too), does the cryptography: it is run with
an empty home directory, the configured keyrings only, and ``--status-fd``, and its
status lines decide, as apt's do: any ``BADSIG`` refuses the file; otherwise at
least one good signature (``GOODSIG`` with ``VALIDSIG``) from an allowed key with a
strong digest is needed. ``NO_PUBKEY`` beside a good signature is fine (the Debian
archive signs with the keys of several releases at once).

A clearsigned ``InRelease`` is split here, strictly (one signed part, ``Hash:``
headers only, dash-escaping undone, trailing blanks dropped as the cleartext rules
say), and gpgv checks the detached signature over exactly the text that is then
read: nothing around the signed part, and no second signed part, can slip hashes in.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from repro.errors import EnvironmentError_, KeyringError, SignatureError
from repro.packages.trust import DEBIAN_KEYRING, DebTrust

_BEGIN_MESSAGE = "-----BEGIN PGP SIGNED MESSAGE-----"
_BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"
_END_SIGNATURE = "-----END PGP SIGNATURE-----"
_WEAK_DIGESTS = {1: "MD5", 2: "SHA1", 3: "RIPEMD160"}
_EXPIRED_HINT = "allow_expired = true accepts it for a snapshot mirror"


def split_clearsigned(data: bytes, path: str) -> tuple[bytes, bytes]:
    """The signed text of a clearsigned file (as signed: no final newline) and its
    ASCII-armored signature. Text before or after the signed part is left out."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise SignatureError(f"{path}: not a clearsigned file (not UTF-8 text)") from None
    lines = [line.rstrip("\r") for line in lines]
    starts = [i for i, line in enumerate(lines) if line.rstrip(" \t") == _BEGIN_MESSAGE]
    if not starts:
        raise SignatureError(f"{path}: not a clearsigned file (no {_BEGIN_MESSAGE} line)")
    if len(starts) > 1:
        raise SignatureError(f"{path}: more than one signed part: refused")
    i = starts[0] + 1
    while i < len(lines) and lines[i].strip():
        if not lines[i].startswith("Hash:"):
            raise SignatureError(f"{path}: malformed clearsigned file (header {lines[i][:40]!r})")
        i += 1
    i += 1
    body: list[str] = []
    while i < len(lines) and lines[i].rstrip(" \t") != _BEGIN_SIGNATURE:
        line = lines[i]
        if line.startswith("- "):
            line = line[2:]
        elif line.startswith("-"):
            raise SignatureError(f"{path}: malformed clearsigned file (line {i + 1})")
        body.append(line.rstrip(" \t"))
        i += 1
    end = next((j for j in range(i, len(lines)) if lines[j].rstrip(" \t") == _END_SIGNATURE), None)
    if i >= len(lines) or end is None:
        raise SignatureError(f"{path}: malformed clearsigned file (no complete signature)")
    signature = "\n".join(lines[i : end + 1]) + "\n"
    return "\n".join(body).encode(), signature.encode()


@dataclass
class _Sig:
    """One signature as gpgv's status lines describe it."""

    status: str = ""  # GOODSIG BADSIG EXPSIG EXPKEYSIG REVKEYSIG ERRSIG
    keyid: str = ""
    fingerprint: str = ""  # VALIDSIG: the signing (sub)key
    primary: str = ""  # VALIDSIG: its primary key
    hash_algo: int = 0
    error: str = ""  # ERRSIG's reason code (9: no public key)
    valid: bool = False  # a VALIDSIG line came


_SIG_STATUSES = ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "ERRSIG")


def parse_status(text: str) -> list[_Sig]:
    """gpgv's ``--status-fd`` output, one record per signature."""
    sigs: list[_Sig] = []
    current: _Sig | None = None
    for line in text.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        keyword, *args = line[9:].split()
        if keyword == "NEWSIG" or (
            keyword in _SIG_STATUSES and (current is None or current.status)
        ):
            current = _Sig()
            sigs.append(current)
        if current is None:
            continue
        if keyword in _SIG_STATUSES and args:
            current.status, current.keyid = keyword, args[0]
            if keyword == "ERRSIG" and len(args) > 5:
                current.error = args[5]
        elif keyword == "NO_PUBKEY" and args and not current.status:
            current.status, current.keyid, current.error = "ERRSIG", args[0], "9"
        elif keyword == "VALIDSIG" and len(args) >= 8:
            current.valid = True
            current.fingerprint = args[0].upper()
            current.hash_algo = int(args[7]) if args[7].isdigit() else 0
            current.primary = (args[9] if len(args) > 9 else args[0]).upper()
    return [s for s in sigs if s.status]


def _dearmor(text: str, what: str) -> bytes:
    """The binary packets of every ASCII-armored block in `text` (gpgv reads no armor)."""
    out = b""
    lines = text.replace("\r", "").split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("-----BEGIN PGP "):
            i += 1
            continue
        i += 1
        while i < len(lines) and lines[i].strip():  # armor headers
            i += 1
        data: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("-----END PGP "):
            if not lines[i].startswith("="):  # the CRC-24 line
                data.append(lines[i].strip())
            i += 1
        try:
            out += base64.b64decode("".join(data), validate=True)
        except ValueError:
            raise KeyringError(f"{what}: malformed ASCII-armored key block") from None
    if not out:
        raise KeyringError(f"{what}: no key in it")
    return out


def _keyring_files(trust: DebTrust, tmp: Path) -> list[str]:
    """Absolute paths gpgv can read: binary keyrings as they are, armored ones converted."""
    files: list[str] = []
    for n, keyring in enumerate(trust.keyrings):
        path = Path(keyring)
        try:
            head = path.read_bytes()[:64]
        except FileNotFoundError:
            hint = " (apt-get install debian-archive-keyring)" if keyring == DEBIAN_KEYRING else ""
            raise KeyringError(f"keyring {keyring} does not exist{hint}") from None
        except OSError as exc:
            raise KeyringError(f"keyring {keyring}: cannot read: {exc.strerror}") from None
        if head.lstrip().startswith(b"-----BEGIN PGP"):
            out = tmp / f"keyring-{n}.gpg"
            out.write_bytes(_dearmor(path.read_text(errors="replace"), f"keyring {keyring}"))
            files.append(str(out))
        else:
            files.append(str(path.resolve()))
    for n, block in enumerate(trust.inline):
        out = tmp / f"inline-{n}.gpg"
        out.write_bytes(_dearmor(block, "inline Signed-By key"))
        files.append(str(out))
    return files


def gpgv_path() -> str:
    found = shutil.which("gpgv") or shutil.which("gpgv2")
    if not found:
        raise EnvironmentError_(
            "gpgv is not installed: apt-get install gpgv (it checks Debian Release signatures)"
        )
    return found


def run_gpgv(signature: bytes, data: bytes, trust: DebTrust) -> str:
    """gpgv's status output for a detached `signature` over `data`."""
    gpgv = gpgv_path()
    with tempfile.TemporaryDirectory(prefix="repro-gpgv-") as name:
        tmp = Path(name)
        home = tmp / "home"
        home.mkdir(mode=0o700)
        keyrings = _keyring_files(trust, tmp)
        (tmp / "sig").write_bytes(signature)
        (tmp / "data").write_bytes(data)
        command = [gpgv, "--homedir", str(home), "--status-fd", "1"]
        for keyring in keyrings:
            command += ["--keyring", keyring]
        command += [str(tmp / "sig"), str(tmp / "data")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GNUPG")}
        env["LC_ALL"] = "C"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EnvironmentError_(f"gpgv failed to run: {exc}") from None
    return done.stdout


def _allowed(sig: _Sig, fingerprints: tuple[str, ...]) -> bool:
    if not fingerprints:
        return True
    for fpr in fingerprints:
        if fpr.endswith("!"):
            if sig.fingerprint == fpr[:-1]:
                return True
        elif fpr in (sig.primary, sig.fingerprint):
            return True
    return False


def check_signatures(status: str, path: str, trust: DebTrust) -> str:
    """Decide on gpgv's status lines; the accepted signer's key id, or SignatureError."""
    sigs = parse_status(status)
    if not sigs:
        raise SignatureError(f"{path}: no OpenPGP signature in it")
    for sig in sigs:
        if sig.status == "BADSIG":
            raise SignatureError(f"{path}: bad signature (key {sig.keyid})")
    good = ("GOODSIG", "EXPSIG", "EXPKEYSIG") if trust.allow_expired else ("GOODSIG",)
    refusals: list[tuple[int, str]] = []
    for sig in sigs:
        key = sig.keyid
        if sig.status in good and sig.valid:
            if sig.hash_algo in _WEAK_DIGESTS:
                weak = _WEAK_DIGESTS[sig.hash_algo]
                refusals.append((4, f"{path}: signed with the weak digest {weak} (key {key})"))
            elif not _allowed(sig, trust.fingerprints):
                refusals.append((5, f"{path}: signed by key {key}, which Signed-By does not list"))
            else:
                return sig.fingerprint or key
        elif sig.status == "REVKEYSIG":
            refusals.append((1, f"{path}: signed by revoked key {key} ({trust.describe()})"))
        elif sig.status == "EXPKEYSIG":
            refusals.append(
                (2, f"{path}: signed by expired key {key} ({trust.describe()}); {_EXPIRED_HINT}")
            )
        elif sig.status == "EXPSIG":
            refusals.append((3, f"{path}: the signature by key {key} expired; {_EXPIRED_HINT}"))
        elif sig.status == "ERRSIG" and sig.error != "9":
            refusals.append(
                (6, f"{path}: cannot check the signature by key {key} (unsupported algorithm)")
            )
    if refusals:
        raise SignatureError(min(refusals)[1])
    unknown = ", ".join(dict.fromkeys(s.keyid for s in sigs if s.status == "ERRSIG"))
    many = "keys" if "," in unknown else "key"
    raise SignatureError(f"{path}: signed by unknown {many} {unknown} ({trust.describe()})")


def verify_detached(data: bytes, signature: bytes, path: str, trust: DebTrust) -> str:
    """Check `signature` (Release.gpg) over `data` (Release); the signer's fingerprint."""
    return check_signatures(run_gpgv(signature, data, trust), path, trust)


def verify_clearsigned(data: bytes, path: str, trust: DebTrust) -> str:
    """The signed text of a clearsigned file (InRelease), once its signature checks out."""
    text, signature = split_clearsigned(data, path)
    check_signatures(run_gpgv(signature, text, trust), path, trust)
    return text.decode("utf-8") + "\n"


def release_fields(text: str) -> dict[str, str]:
    """The single-line fields of a Release file (Suite, Codename, Valid-Until, …)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        if line[:1] in " \t":
            continue
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def check_release(
    text: str, suite: str, path: str, trust: DebTrust, now: dt.datetime | None = None
) -> None:
    """Refuse a signed Release that is out of date (Valid-Until past) or of another suite
    (a good signature over some other suite's Release, served in place of this one)."""
    fields = release_fields(text)
    names = {fields[k] for k in ("Suite", "Codename") if fields.get(k)}
    if names and suite not in names:
        raise SignatureError(f"{path}: signed for {' / '.join(sorted(names))}, not {suite}")
    valid_until = fields.get("Valid-Until")
    if not valid_until or trust.allow_expired:
        return
    try:
        until = email.utils.parsedate_to_datetime(valid_until)
    except (TypeError, ValueError):
        raise SignatureError(f"{path}: unreadable Valid-Until {valid_until!r}") from None
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    if until < now:
        raise SignatureError(
            f"{path}: expired on {until.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC (Valid-Until): "
            f"the mirror is out of date; {_EXPIRED_HINT}"
        )
