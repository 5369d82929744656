"""``repro doctor``: what was found, what is missing, and the sentence that fixes it."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import ReproError

DEV_ENV_FIX = 'eval "$(scripts/dev-env up)"'


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.optional for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks], "facts": self.facts}


def check_builder(builder: str | None) -> tuple[list[Check], dict[str, Any]]:
    """Reach the builder and judge it with the rules a build's preflight applies
    (`repro.buildkit._assess`): version, rewrite-timestamp, image store, workers."""
    from repro.buildkit import assess_builder, connect, find_builder, judge_builder

    facts: dict[str, Any] = {}
    try:
        address = find_builder(builder)
    except ReproError as exc:
        return [Check("builder", False, str(exc), DEV_ENV_FIX)], facts
    facts["builder"] = str(address)
    facts["builder_source"] = address.source
    try:
        with connect(builder) as conn:
            found = assess_builder(conn)
    except ReproError as exc:
        return [Check("builder", False, f"{address}: {exc}", DEV_ENV_FIX)], facts
    facts.update(found.facts())
    checks = []
    for finding in judge_builder(found):
        detail = finding.detail
        if finding.name == "builder":
            detail += f" (from {address.source})"
        checks.append(Check(finding.name, finding.ok, detail, finding.fix))
    return checks, facts


def check_registry(recipes_dir: Path | None = None) -> tuple[Check, dict[str, Any]]:
    """The registry the recipes publish to (``registry`` in recipes/repro.toml, else
    $REPRO_REGISTRY), asked through the registry client's own URL rules. Without
    one, an optional check: only publishing and recipe: bases need it."""
    import httpx

    from repro.config import load_repo_config
    from repro.errors import ReproError
    from repro.registry import Registry

    where = "REPRO_REGISTRY"
    addr = ""
    try:
        repo = load_repo_config(recipes_dir or Path("recipes"))
        if repo.registry:
            addr, where = repo.registry, str(repo.root / "repro.toml")
    except ReproError as exc:
        return Check("registry", False, str(exc), "fix the file it names"), {}
    addr = addr or os.environ.get("REPRO_REGISTRY", "")
    if not addr:
        return (
            Check(
                "registry",
                True,
                "none configured (publishing and recipe: bases need one)",
                "set registry in recipes/repro.toml",
                optional=True,
            ),
            {},
        )
    host = addr.split("/", 1)[0]
    with Registry() as client:
        url = client.base_url(host) + "/"
    try:
        resp = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return Check(
            "registry",
            False,
            f"{host} (from {where}) unreachable: {type(exc).__name__}",
            DEV_ENV_FIX,
        ), {"registry": addr}
    ok = resp.status_code in (200, 401)
    api = resp.headers.get("Docker-Distribution-API-Version", "")
    detail = (
        f"{host} (from {where}) answers the distribution API {api}".strip()
        if ok
        else f"{host} (from {where}): HTTP {resp.status_code}"
    )
    return Check("registry", ok, detail, DEV_ENV_FIX), {"registry": addr}


def check_diffoscope() -> tuple[Check, dict[str, Any]]:
    from importlib import metadata

    try:
        version = metadata.version("diffoscope")
    except metadata.PackageNotFoundError:
        return Check("diffoscope", False, "not installed", "pip install diffoscope"), {}
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("diffoscope")
    exe = str(beside) if beside.exists() else shutil.which("diffoscope")
    detail = f"diffoscope {version}" + (f" ({exe})" if exe else " (module only; not on PATH)")
    return Check("diffoscope", True, detail), {"diffoscope_version": version}


def diagnose(builder: str | None = None, recipes_dir: Path | None = None) -> Report:
    report = Report()
    checks, facts = check_builder(builder)
    report.checks += checks
    report.facts.update(facts)
    for check, more in (check_registry(recipes_dir), check_diffoscope()):
        report.checks.append(check)
        report.facts.update(more)
    return report
