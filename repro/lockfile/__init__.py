"""The lock file as a model: `repro.lock` parsed into typed, frozen entries.

    from repro.lockfile import Lock
    lock = Lock.from_toml(tomllib.loads(text))     # LockInvalid if malformed
    lock.bases["recipe:debian12"].platform_digest("amd64")
    data = lock.to_toml()                          # what `repro lock` writes

`Lock.from_toml` checks everything a lock can say by itself: known keys only,
well-formed digests, a base's `digest` agreeing with its `platforms`, pins with a
name and a version, a non-negative integer epoch. Whether a lock agrees with its
recipe (the recipe name, the epoch the recipe fixes, where a `recipe:` base may be
published) needs the recipe, and is checked by `repro.lock.lock_problem`, which
reads every lock through this model.

The module is named `lockfile` so that `repro.lock` (resolution and orchestration)
and the file `repro.lock` are not one name for three things.
"""

from repro.lockfile._model import (
    INDEX_MEDIA_TYPES,
    LOCK_HEADER,
    LOCK_VERSION,
    TOP_KEYS,
    BaseEntry,
    DownloadEntry,
    GitEntry,
    Lock,
    LockInvalid,
    PackageSetEntry,
    dump_toml,
)

__all__ = [
    "INDEX_MEDIA_TYPES",
    "LOCK_HEADER",
    "LOCK_VERSION",
    "TOP_KEYS",
    "BaseEntry",
    "DownloadEntry",
    "GitEntry",
    "Lock",
    "LockInvalid",
    "PackageSetEntry",
    "dump_toml",
]
