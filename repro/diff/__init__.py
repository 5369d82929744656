"""Image-aware diff: pair what differs between two images, down to the file.

Public API::

    with open_source("oci:out/a") as a, open_source("oci-archive:b.tar") as b:
        report = compare(a, b, Options())       # a DiffReport; report.tree is None if identical
    print(present.text(report))                 # or present.to_json / html_report / markdown

`verify_present` renders `repro.verify` results over the same tree.

The comparison builds one difference tree (``_tree``); presenters (``present``)
render it; the cause table (``_causes``) names known causes and their fixes.
"""

from __future__ import annotations

from repro.diff import _present as present
from repro.diff import _present_verify as verify_present
from repro.diff._causes import (
    ALL_CAUSES,
    DEFAULT_SANDBOX_HOSTNAME,
    VERIFY_HOSTNAME_PREFIX,
    Hints,
    PathChange,
    classify,
)
from repro.diff._compare import Options, compare
from repro.diff._layers import Limits, open_tar
from repro.diff._sources import ImageSource, open_source
from repro.diff._tree import (
    DIFFERENT,
    IDENTICAL,
    SAME_CONTENT,
    Cause,
    Difference,
    DiffReport,
    Finding,
    PlatformVerdict,
    Verdict,
)


def diff(spec1: str, spec2: str, options: Options | None = None) -> DiffReport:
    """Compare the images two specs name (oci:DIR, oci-archive:FILE, or a path)."""
    with open_source(spec1) as a, open_source(spec2) as b:
        return compare(a, b, options)


__all__ = [
    "ALL_CAUSES",
    "DIFFERENT",
    "Verdict",
    "IDENTICAL",
    "SAME_CONTENT",
    "DEFAULT_SANDBOX_HOSTNAME",
    "VERIFY_HOSTNAME_PREFIX",
    "Cause",
    "DiffReport",
    "Difference",
    "Finding",
    "Hints",
    "ImageSource",
    "Limits",
    "Options",
    "PathChange",
    "PlatformVerdict",
    "classify",
    "compare",
    "diff",
    "open_source",
    "open_tar",
    "present",
    "verify_present",
]
