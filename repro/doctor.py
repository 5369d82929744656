"""``repro doctor``: what was found, what is missing, and the sentence that fixes it."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import ReproError

DEV_ENV_FIX = 'eval "$(scripts/dev-env up)"'
# The two remedies for a Docker Engine with the classic image store (docs/ci.md):
# switch the engine to the containerd store, or build in a BuildKit container.
CLASSIC_STORE_FIX = (
    'set {"features": {"containerd-snapshotter": true}} in /etc/docker/daemon.json and '
    "restart dockerd (what the repro action does on ubuntu-24.04 runners), or run "
    "BuildKit in a container and pass --builder docker-container://NAME (docs/ci.md)"
)


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


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(x or 0) for x in m.groups()) if m else ()


def _docker_facts(socket_path: str) -> dict[str, Any]:
    from repro.buildkit import docker_request

    facts: dict[str, Any] = {}
    status, body = docker_request(socket_path, "GET", "/version")
    if status == 200:
        version = json.loads(body)
        facts["engine_version"] = version.get("Version", "")
        facts["api_version"] = version.get("ApiVersion", "")
    status, body = docker_request(socket_path, "GET", "/info")
    if status == 200:
        info = json.loads(body)
        driver_status = info.get("DriverStatus") or []
        facts["containerd_store"] = any(
            "io.containerd.snapshotter" in str(v) for pair in driver_status for v in pair
        )
        facts["storage_driver"] = info.get("Driver", "")
    return facts


def check_builder(builder: str | None) -> tuple[list[Check], dict[str, Any]]:
    """Reach the builder and judge it: version, image store, rewrite-timestamp."""
    from repro.buildkit import Control, connect, find_builder

    checks: list[Check] = []
    facts: dict[str, Any] = {}
    try:
        address = find_builder(builder)
    except ReproError as exc:
        return [Check("builder", False, str(exc), DEV_ENV_FIX)], facts
    facts["builder"] = str(address)
    facts["builder_source"] = address.source
    try:
        with connect(builder) as conn:
            if address.kind == "docker-container":
                from repro.buildkit import buildctl_version

                facts["buildctl"] = buildctl_version(address.engine, address.target)
                facts["docker_engine"] = address.engine
            info = Control(conn.channel, address).info(timeout=10)
            facts["buildkit_version"] = info.version
            facts["workers"] = [
                {"id": w.id, "platforms": w.platforms, "snapshotter": w.snapshotter}
                for w in info.workers
            ]
            if conn.is_docker:
                facts.update(_docker_facts(address.target))
    except ReproError as exc:
        return [Check("builder", False, f"{address}: {exc}", DEV_ENV_FIX)], facts

    where = f"{address} (from {address.source})"
    if "engine_version" in facts:
        engine = facts["engine_version"]
        checks.append(
            Check("builder", True, f"Docker Engine {engine} with embedded BuildKit at {where}")
        )
        new_enough = _version_tuple(engine) >= (26,)
        checks.append(
            Check(
                "rewrite-timestamp",
                new_enough,
                "available (Docker Engine 26+ embeds BuildKit 0.13+)"
                if new_enough
                else f"Docker Engine {engine} embeds a BuildKit older than v0.13",
                "use Docker Engine 26 or newer, or a standalone buildkitd v0.13+; " + DEV_ENV_FIX,
            )
        )
        store = bool(facts.get("containerd_store"))
        checks.append(
            Check(
                "image store",
                store,
                "containerd image store (the oci exporter is available)"
                if store
                else f"classic storage driver {facts.get('storage_driver', '?')}: "
                "the oci exporter is refused",
                CLASSIC_STORE_FIX,
            )
        )
    elif address.kind == "docker-container":
        version = info.version or "unknown"
        checks.append(
            Check(
                "builder",
                True,
                f"BuildKit {version} in container {address.target} on the Docker Engine at "
                f"{address.engine} ({where}); the engine's image store does not matter",
            )
        )
        ok = _version_tuple(version) >= (0, 13) if _version_tuple(version) else False
        checks.append(
            Check(
                "rewrite-timestamp",
                ok,
                "available (BuildKit v0.13+)" if ok else f"BuildKit {version} is older than v0.13",
                "run a moby/buildkit image of v0.13 or newer in the container",
            )
        )
    else:
        version = info.version or "unknown"
        checks.append(Check("builder", True, f"buildkitd {version} at {where}"))
        ok = _version_tuple(version) >= (0, 13) if _version_tuple(version) else False
        checks.append(
            Check(
                "rewrite-timestamp",
                ok,
                "available (BuildKit v0.13+)" if ok else f"BuildKit {version} is older than v0.13",
                "upgrade buildkitd to v0.13 or newer",
            )
        )
    if not info.workers:
        checks.append(Check("workers", False, "the builder reports no workers", DEV_ENV_FIX))
    else:
        plats = sorted({p for w in info.workers for p in w.platforms})
        checks.append(
            Check("workers", True, f"{len(info.workers)} worker(s); platforms {', '.join(plats)}")
        )
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
