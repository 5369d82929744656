"""The OCI exporter's options, sent explicitly so that BuildKit's defaults cannot move a digest.

BuildKit changes its exporter defaults between releases: v0.31 made OCI media types
the default of the image exporters, tied to "compatibility version" 30, and says a
build may name the compatibility version it wants so that a newer BuildKit keeps the
older behaviour. repro therefore never relies on a default for what shapes the
export:

- ``oci-mediatypes=true``: OCI media types for manifests, index and layers (the OCI
  exporter's default on every BuildKit repro supports; now stated, not assumed).
- ``rewrite-timestamp=true``: file times clamped to SOURCE_DATE_EPOCH, when the
  caller asks (`repro build` does only for a raw export, ``--normalise off``: the
  normaliser clamps the times itself, and BuildKit's rewrite recompresses every new
  layer once more, serially, on every export).
- ``compatibility-version``: only for a BuildKit that reports a version that knows
  it (v0.31 or newer). Older ones would keep it as an unknown attribute at best,
  and the Docker Engine's embedded BuildKit may not report its version at all
  (Debian's Docker 26.1 reports ``v0.0.0+unknown``), so it is not sent there.
  (Tried by hand on that engine, BuildKit v0.13: the attribute is accepted and
  ignored, and the raw export of recipes/hello has the same digest with or without
  it, and with or without ``oci-mediatypes=true``.)

Normalisation (repro.normalise) rewrites the layers and JSON into one canonical form
anyway; pinning the options keeps the raw export (``--normalise off``) and the
base-layer reuse stable too. The options sent are returned with the build result and
kept in the build record (repro.records) for the provenance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PINNED_ATTRS: Mapping[str, str] = {"oci-mediatypes": "true"}
COMPATIBILITY_VERSION = "30"
# The first BuildKit release that takes `compatibility-version` with value 30.
COMPATIBILITY_SINCE = (0, 31)

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?")


def supports_compatibility_version(buildkit_version: str) -> bool:
    """Whether a BuildKit reporting `buildkit_version` (e.g. ``v0.31.1``) knows the option."""
    match = _VERSION.match(buildkit_version.strip())
    if not match:
        return False
    version = (int(match.group(1)), int(match.group(2)))
    return version != (0, 0) and version >= COMPATIBILITY_SINCE


def exporter_attrs(
    buildkit_version: str = "",
    *,
    rewrite_timestamp: bool = True,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The OCI exporter's attributes for a build on a BuildKit of `buildkit_version`.

    `extra` (e.g. ``compression=zstd``) is applied last and may override the pins.
    """
    attrs = dict(PINNED_ATTRS)
    if rewrite_timestamp:
        attrs["rewrite-timestamp"] = "true"
    if supports_compatibility_version(buildkit_version):
        attrs["compatibility-version"] = COMPATIBILITY_VERSION
    attrs.update(extra or {})
    return attrs
