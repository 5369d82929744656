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

    _model   the typed entries (`Lock.from_toml`/`to_toml`) and the file's text
    _inputs  what a lock is made from: the recipe's declarations, digested
    _io      reading and writing lock files
    _stale   when a lock cannot be used (`lock_problem`), and change lists

Resolution (turning declarations into pins) is `repro.lock`; rendering a pinned
Dockerfile and the source policy are `repro.lock` too, next to `repro.dockerfile`.

The module is named `lockfile` so that `repro.lock` (resolution and orchestration)
and the file `repro.lock` are not one name for three things.
"""

from repro.lockfile._inputs import (
    base_platform_digest,
    download_spec,
    git_spec,
    inputs_digest,
    package_set_base,
    package_set_spec,
    platform_matches,
    release_suites,
)
from repro.lockfile._io import dump_lock, read_lock, write_lock
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
from repro.lockfile._stale import (
    changes,
    load_recipe_or_none,
    lock_inconsistency,
    lock_problem,
    require_lock,
    short_pin,
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
    "base_platform_digest",
    "changes",
    "download_spec",
    "dump_lock",
    "dump_toml",
    "git_spec",
    "inputs_digest",
    "load_recipe_or_none",
    "lock_inconsistency",
    "lock_problem",
    "package_set_base",
    "package_set_spec",
    "platform_matches",
    "read_lock",
    "release_suites",
    "require_lock",
    "short_pin",
    "write_lock",
]
