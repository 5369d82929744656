"""The difference tree: what ``repro diff`` finds, before any presenter renders it.

Modelled on diffoscope's ``Difference``: a node names the two things compared
(``source1``/``source2``), may hold a unified diff or a comment, and has children.
repro adds a ``kind`` (image, platform, manifest, config, layer, path, ...) and the
causes it recognised, each with its known fix. Presenters (``_present``) walk this
tree; the comparison never knows how it will be shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Cause:
    """A known reason for a difference, and what to do about it.

    `setting` is the repro setting that fixes it without touching the Dockerfile
    (a ``[normalise]`` line in recipe.toml), when there is one; `fix` is the change to
    the build itself. `family` names the reproducible-builds.org documentation page
    the cause belongs to ("timestamps", "archives", ...; "image" for image-specific).
    """

    id: str
    title: str
    fix: str
    setting: str = ""
    family: str = ""

    def fixes(self) -> list[str]:
        """The fixes in the order a user should try them: repro setting first."""
        out = []
        if self.setting:
            out.append(f"recipe.toml: {self.setting}")
        out.append(f"Dockerfile: {self.fix}" if self.setting else self.fix)
        return out

    def to_json(self) -> dict[str, str]:
        out = {"id": self.id, "title": self.title, "fix": self.fix}
        if self.setting:
            out["setting"] = self.setting
        if self.family:
            out["family"] = self.family
        return out


@dataclass
class Difference:
    kind: str  # image | platform | manifest | config | layer | path | field | diffoscope
    source1: str
    source2: str
    comment: str = ""
    unified_diff: str | None = None
    causes: list[Cause] = field(default_factory=list)
    details: list[Difference] = field(default_factory=list)
    # For kind == "path": the path inside the layer, and what about it changed.
    path: str | None = None
    changes: list[str] = field(default_factory=list)
    # For kind == "layer": the layer's position in the second image (first if only there).
    layer: int | None = None

    def walk(self) -> Iterator[Difference]:
        yield self
        for child in self.details:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "source1": self.source1,
            "source2": self.source2,
        }
        if self.path is not None:
            out["path"] = self.path
        if self.changes:
            out["changes"] = list(self.changes)
        if self.layer is not None:
            out["layer"] = self.layer
        if self.comment:
            out["comment"] = self.comment
        if self.causes:
            out["causes"] = [c.to_json() for c in self.causes]
        if self.unified_diff is not None:
            out["unified_diff"] = self.unified_diff
        if self.details:
            out["details"] = [d.to_json() for d in self.details]
        return out


class Verdict(StrEnum):
    """How two images compare, from best to worst. A str: JSON and text show the value."""

    IDENTICAL = "identical"
    SAME_CONTENT = "same-content"
    DIFFERENT = "different"
    ONLY_IN_FIRST = "only-in-first"
    ONLY_IN_SECOND = "only-in-second"


IDENTICAL = Verdict.IDENTICAL
SAME_CONTENT = Verdict.SAME_CONTENT
DIFFERENT = Verdict.DIFFERENT


@dataclass
class PlatformVerdict:
    platform: str
    verdict: Verdict
    digest1: str | None
    digest2: str | None
    differing_layers: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "verdict": self.verdict,
            "digest1": self.digest1,
            "digest2": self.digest2,
            "differing_layers": list(self.differing_layers),
        }


@dataclass
class Finding:
    """One differing path, flattened from the tree for summaries."""

    platform: str
    layer: int
    path: str
    changes: list[str]
    causes: list[Cause]

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "layer": self.layer,
            "path": self.path,
            "changes": list(self.changes),
            "causes": [c.to_json() for c in self.causes],
        }


@dataclass
class DiffReport:
    source1: str
    source2: str
    digest1: str
    digest2: str
    platforms: list[PlatformVerdict]
    tree: Difference | None  # None when identical
    findings: list[Finding] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.tree is None

    @property
    def verdict(self) -> Verdict:
        """The worst verdict over all platforms."""
        if self.identical:
            return IDENTICAL
        verdicts = {p.verdict for p in self.platforms}
        if verdicts <= {IDENTICAL, SAME_CONTENT}:
            return SAME_CONTENT
        return DIFFERENT

    def causes(self) -> list[Cause]:
        """Every distinct cause in the tree, in first-seen order."""
        seen: dict[tuple[str, str], Cause] = {}
        if self.tree is not None:
            for node in self.tree.walk():
                for cause in node.causes:
                    # Unclassified differences each say something different.
                    key = (cause.id, cause.title if cause.id == "unclassified" else "")
                    seen.setdefault(key, cause)
        return list(seen.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "source1": self.source1,
            "source2": self.source2,
            "digest1": self.digest1,
            "digest2": self.digest2,
            "verdict": self.verdict,
            "platforms": [p.to_json() for p in self.platforms],
            "findings": [f.to_json() for f in self.findings],
            "causes": [c.to_json() for c in self.causes()],
            "tree": self.tree.to_json() if self.tree else None,
        }
