"""The exception hierarchy. Every message is a user-facing, one-line sentence.

ReproError
├── InputError            bad input from the user: exit code 2
│   ├── RecipeError       a recipe file is wrong (carries file and line)
│   ├── ContextError      a build context or Dockerfile is missing or unreadable
│   ├── KeyringError      a configured keyring or key directory is missing or unreadable
│   ├── StaleLock         a recipe's lock is missing, stale, or edited
│   ├── ResolveError      a package set cannot be resolved
│   ├── NoPackageDatabase an image has no package database of the kind needed
│   ├── PackageGone       a locked package is no longer on its mirror
│   │   (NotInVault: nor in the vault)
│   ├── SigningKeyError   a signing or verification key is wrong, or locked without a passphrase
│   └── DebError          a package file is not valid, or holds what a rootfs must not
│       ├── ApkFileError  an .apk is not valid, or does not match its index
│       └── RootfsError   packages cannot make one root filesystem
├── EnvironmentError_     the environment is broken or missing a part: exit code 2
│   ├── BuilderError      no BuildKit, unreachable, too old, wrong image store
│   └── RegistryError     registry unreachable, refused, or sent bad data
│       ├── DigestMismatch  a blob's bytes do not match its digest
│       └── MirrorError     a package mirror unreachable, or sent what does not check out
│           └── SignatureError  an index unsigned, or its signature not trusted
├── BuildFailed           BuildKit ran the build and it failed: exit code 1
├── UnpinnedPackages      the built image holds packages the lock does not pin: exit 1
├── NotVerified           attestations missing, badly signed or short of the policy: exit code 1
└── Cancelled             the user interrupted: exit code 130
"""

from __future__ import annotations


class ReproError(Exception):
    """Base of all errors repro reports to the user."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.file:
            shown = _shown_path(self.file)
            where = f"{shown}:{self.line}: " if self.line else f"{shown}: "
        return f"{where}{self.message}"


def _shown_path(file: str) -> str:
    """A file as the user would type it: relative to the working directory when it is
    under it (recipes/hello/Dockerfile), else as given; one form for every error."""
    import os

    try:
        absolute = os.path.abspath(file)
        here = os.getcwd()
    except OSError:
        return file
    if absolute.startswith(here + os.sep):
        return os.path.relpath(absolute, here)
    return file


class InputError(ReproError):
    """The user's input is wrong."""


class RecipeError(InputError):
    """A recipe file is malformed or names something that does not exist."""


class ContextError(InputError):
    """A build context, Dockerfile or secret source is missing or unreadable."""


class KeyringError(InputError):
    """A keyring or key directory that the configuration names is missing or unreadable."""


class SigningKeyError(InputError):
    """A key file is missing, not an ECDSA P-256 key, or encrypted without a passphrase."""


class EnvironmentError_(ReproError):  # noqa: N801 - avoid shadowing the builtin
    """A part of the environment (builder, registry, tool) is missing or broken."""


class BuilderError(EnvironmentError_):
    """BuildKit is missing, unreachable, too old, or lacks a needed feature."""


class RegistryError(EnvironmentError_):
    """A registry could not be reached or refused a request."""


class DigestMismatch(RegistryError):
    """Bytes read from somewhere do not match the digest that names them."""


class TransferInterrupted(RegistryError):
    """The connection was lost while a manifest's or blob's bytes were arriving (the
    request itself was answered): fetching it again may well work."""


class MirrorError(RegistryError):
    """A mirror could not be reached or sent something that does not check out."""


class SignatureError(MirrorError):
    """A mirror's index is unsigned, or its signature does not verify against the keys
    configured for it (messages name the mirror-relative file and the key)."""


class StaleLock(InputError):
    """A recipe's lock is missing or does not match the recipe."""


class ResolveError(InputError):
    """A package set cannot be resolved (missing package, conflict, unsatisfiable)."""


class NoPackageDatabase(InputError):
    """The image has no package database of the kind a package set needs."""


class PackageGone(InputError):
    """A locked package is no longer on its mirror."""


class NotInVault(InputError):
    """A locked package is neither on its mirror nor in the vault."""


class DebError(InputError):
    """A package is not a valid .deb, or holds something a root filesystem must not."""


class ApkFileError(DebError):
    """A package file is not a valid .apk, or does not match what the index says."""


class RootfsError(DebError):
    """The packages cannot make one root filesystem (conflict, escape, loop, device)."""


class UnpinnedPackages(ReproError):
    """The built image's packages do not match the lock."""

    exit_code = 1


class BuildFailed(ReproError):
    """BuildKit ran the build and a step failed (the log says which).

    ``source_snippet`` is buildx's picture of the failing Dockerfile lines, when
    BuildKit said where the step came from ("" otherwise)."""

    exit_code = 1
    source_snippet = ""


class NotVerified(ReproError):
    """Attestations were found wanting: none, a bad signature, a subject that is not the
    image, or fewer agreeing builders than the policy asks for."""

    exit_code = 1


class Cancelled(ReproError):
    """The user interrupted the work; BuildKit was told to cancel."""

    exit_code = 130
