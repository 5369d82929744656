"""Which keys an archive's index must be signed by: the configuration, with defaults.

Debian (``apt`` package sets), the first that applies:

1. the package set's ``keyring = "path"`` (recipe.toml);
2. ``[signatures.MIRROR] keyring`` in recipes/repro.toml, for the set's mirror name;
3. the ``Signed-By`` of the machine's apt source the mirror was taken from (keyring
   paths, key fingerprints, or an inline key block), when it was taken from there;
4. ``/usr/share/keyrings/debian-archive-keyring.gpg`` (Debian's debian-archive-keyring).

Alpine (``apk`` package sets): the key directories searched by the key name an index
names, in order: the set's ``keys = "dir"``, ``[signatures.MIRROR] keys``, then
``/etc/apk/keys`` and ``/usr/share/apk/keys`` where they exist.

Nothing is ever downloaded: a key is trusted because the machine or the repository
holds it. ``trusted = true`` on a package set turns the check off (dangerous: anyone
who can answer for the mirror chooses the packages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from repro.config import APT_DIR, AptSource, machine_apt_sources, mirror_source

if TYPE_CHECKING:
    from repro.config import RepoConfig
    from repro.recipe import PackageSet

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APK_KEY_DIRS = ("/etc/apk/keys", "/usr/share/apk/keys")


@dataclass(frozen=True)
class DebTrust:
    """What a Debian Release file must be signed by."""

    keyrings: tuple[str, ...] = (DEBIAN_KEYRING,)  # absolute paths (binary or armored)
    inline: tuple[str, ...] = ()  # ASCII-armored key blocks (an inline Signed-By)
    fingerprints: tuple[str, ...] = ()  # Signed-By's: only these keys (FPR! = that subkey)
    allow_expired: bool = False  # a past Valid-Until, an expired key or signature
    trusted: bool = False  # no check at all (explicit configuration only)

    def describe(self) -> str:
        """For messages: "keyring /usr/share/keyrings/…gpg"."""
        names = [*self.keyrings, *(["inline Signed-By key"] if self.inline else [])]
        return ("keyring " if len(names) == 1 else "keyrings ") + ", ".join(names)


@dataclass(frozen=True)
class ApkTrust:
    """Where the public keys an Alpine index names are looked up."""

    key_dirs: tuple[str, ...] = ()  # absolute paths, searched in order
    required_dirs: tuple[str, ...] = ()  # the configured ones: missing is an error
    trusted: bool = False


def from_signed_by(values: tuple[str, ...], allow_expired: bool = False) -> DebTrust:
    """A DebTrust from an apt source's Signed-By (see config.AptSource.signed_by)."""
    keyrings: list[str] = []
    inline: list[str] = []
    fingerprints: list[str] = []
    for value in values:
        if value.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----"):
            inline.append(value)
        elif value.startswith("/"):
            keyrings.append(value)
        else:
            fingerprints.append(value.upper())
    if not keyrings and not inline:
        keyrings.append(DEBIAN_KEYRING)
    return DebTrust(tuple(keyrings), tuple(inline), tuple(fingerprints), allow_expired)


def deb_trust(
    s: PackageSet,
    repo: RepoConfig | None = None,
    environ: Mapping[str, str] | None = None,
    apt_dir: Path = APT_DIR,
    *,
    suite: str = "",
) -> DebTrust:
    """The keys an apt package set's Release files must be signed by (see the module doc);
    `suite` for one of several (each may come from its own apt source)."""
    if s.trusted:
        return DebTrust(keyrings=(), trusted=True)
    conf = repo.signatures.get(s.mirror) if repo else None
    allow_expired = s.allow_expired or bool(conf and conf.allow_expired)
    if s.keyring:
        return DebTrust((s.keyring,), allow_expired=allow_expired)
    if conf and conf.keyring:
        return DebTrust((conf.keyring,), allow_expired=allow_expired)
    suite = suite or (s.suites[0] if s.suites else s.release)
    _, source = mirror_source(
        s.mirror,
        suite=suite,
        components=s.components,
        repo=repo,
        environ=environ,
        apt_dir=apt_dir,
    )
    if source is not None and source.signed_by:
        return from_signed_by(source.signed_by, allow_expired)
    return DebTrust(allow_expired=allow_expired)


def default_deb_trust(mirror: str, suite: str, apt_dir: Path = APT_DIR) -> DebTrust:
    """For a caller that knows only the mirror URL: the Signed-By of the machine's apt
    source with that URL and suite, if there is one, else Debian's archive keyring."""
    source: AptSource | None = next(
        (
            s
            for s in machine_apt_sources(apt_dir)
            if s.uri == mirror.rstrip("/") and suite in s.suites
        ),
        None,
    )
    if source is not None and source.signed_by:
        return from_signed_by(source.signed_by)
    return DebTrust()


def apk_trust(s: PackageSet, repo: RepoConfig | None = None) -> ApkTrust:
    """The key directories an apk package set's indexes are checked against."""
    if s.trusted:
        return ApkTrust(trusted=True)
    conf = repo.signatures.get(s.mirror) if repo else None
    configured = tuple(d for d in (s.keys, conf.keys if conf else "") if d)
    return ApkTrust(configured + default_apk_dirs(), configured)


def default_apk_dirs() -> tuple[str, ...]:
    return tuple(d for d in APK_KEY_DIRS if Path(d).is_dir())


def default_apk_trust() -> ApkTrust:
    return ApkTrust(default_apk_dirs())
