"""A build's inputs, fingerprinted: so that ``repro verify`` can take the image
``repro build`` already made from the same inputs as its first build, instead of
asking BuildKit for it again.

The fingerprint is a sha256 over everything repro sends BuildKit and everything it
does to the export afterwards:
- the Dockerfile BuildKit gets (bases rewritten to their locked digests), the build
  args it can see (an arg the Dockerfile never names has no effect, so verify's
  ``TZ``/``LANG`` variations do not count unless the Dockerfile reads them), labels,
  target, platforms, SOURCE_DATE_EPOCH, network mode, source policy, frontend and
  exporter options, whether the export is normalised;
- the lock's and the repository settings' bytes (the packages handed to the build
  and the bases are pinned there by digest);
- the recipe directory and the context, as a listing of every entry with its type,
  mode, owner, size, modification time and link target (the way git's index tells
  a file changed, without reading it: a file whose content changed keeps neither
  its size and its nanosecond mtime in practice, and a miss only costs a build);
- the builder's address and repro's own code (its version and its modules' sizes
  and mtimes, so that a development checkout's edits count).
Anything left out can only make two fingerprints differ when the builds would not,
never the other way, with one accepted exception: a file rewritten to other bytes
of the same size with its mtime put back. Builds with secrets are never
fingerprinted (a secret's value is not hashed anywhere).

An index under the build records (``builds/inputs/<fingerprint>.json``) maps a
fingerprint to the result of the last build that had it and where its image was
written; a reuse checks that the image is still there with that digest, and verify
then reads its blobs checking each against its digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repro.buildkit import BuildRequest
    from repro.recipe import Recipe

FINGERPRINT_VERSION = 1

# Build args BuildKit's Dockerfile frontend passes to RUN steps without an ARG line.
_PREDEFINED_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)


_identity_lock = threading.Lock()


def code_identity() -> str:
    """repro's version and its modules (relative path, size, mtime) as one digest.

    Computed once per process: the builds of a graph ask for it at the same moment,
    from their own threads, and a bare cache would let each of them walk the package."""
    with _identity_lock:
        return _code_identity()


@functools.lru_cache(maxsize=1)
def _code_identity() -> str:
    from repro import __version__

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith((".py", ".json", ".toml")):
                continue
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            rel = os.path.relpath(path, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def tree_listing(root: Path) -> str:
    """One digest for the entries under `root` (and `root` itself), by their metadata."""
    h = hashlib.sha256()

    def entry(path: str, rel: str) -> None:
        st = os.lstat(path)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        h.update(
            f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{size}\0"
            f"{st.st_mtime_ns}\0{target}\n".encode("utf-8", "surrogateescape")
        )

    top = str(root)
    if not os.path.lexists(top):
        return ""
    entry(top, ".")
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            entry(path, name if rel_dir == "." else os.path.join(rel_dir, name))
    return h.hexdigest()


def visible_args(dockerfile_text: str, args: Mapping[str, str]) -> dict[str, str]:
    """The build args a Dockerfile can see: those it names, the proxy ones, BuildKit's."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", dockerfile_text))
    return {
        k: v
        for k, v in args.items()
        if k in words or k in _PREDEFINED_ARGS or k.startswith("BUILDKIT_")
    }


def fingerprint(recipe: Recipe, request: BuildRequest, builder: str, normalise: bool) -> str:
    """The fingerprint of building `request` for `recipe` on `builder` (see above)."""
    dockerfile = request.dockerfile.read_bytes()
    text = dockerfile.decode("utf-8", "replace")
    directory = recipe.directory.resolve()
    context = request.context.resolve()
    source = (request.source_dockerfile or request.dockerfile).resolve()
    trees = {"recipe": tree_listing(directory)}
    if context != directory:
        trees["context"] = tree_listing(context)
    if not source.is_relative_to(directory) and not source.is_relative_to(context):
        trees["dockerfile"] = tree_listing(source)
    return _digest(
        recipe,
        {
            "builder": builder,
            "dockerfile": hashlib.sha256(dockerfile).hexdigest(),
            "args": visible_args(text, request.build_args),
            "labels": request.labels,
            "target": request.target,
            "platforms": request.platforms,
            "source_date_epoch": request.source_date_epoch,
            "network": request.network,
            "source_policy": request.source_policy,
            "frontend": request.extra_frontend_attrs,
            "exporter": request.exporter_attrs,
            "rewrite_timestamp": request.rewrite_timestamp,
            "normalise": normalise,
            "trees": trees,
        },
    )


def rootfs_fingerprint(recipe: Recipe) -> str:
    """The fingerprint of a [rootfs] recipe's build: no BuildKit, only the recipe (its
    recipe.toml says what to unpack), the lock (every package by sha256) and repro."""
    return _digest(recipe, {"rootfs": True, "trees": {"recipe": tree_listing(recipe.directory)}})


def _digest(recipe: Recipe, document: dict[str, Any]) -> str:
    from repro.records import file_digest

    document = {
        **document,
        "version": FINGERPRINT_VERSION,
        "repro": code_identity(),
        "lock": file_digest(recipe.lock_file),
        "settings": file_digest(recipe.directory.resolve().parent / "repro.toml"),
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


__all__ = ["code_identity", "fingerprint", "rootfs_fingerprint", "tree_listing", "visible_args"]
