"""One assessment of a builder: what it is, and whether it can make repro's images.

`gather(conn)` asks the builder (the Docker Engine's /version and /info, BuildKit's
Info over gRPC, buildctl in a container); `judge(assessment)` applies the rules,
a pure function. `Connection.preflight` refuses a builder with the first problem
`judge` finds; `repro doctor` shows every finding, passed or not. One set of rules,
so doctor never passes a builder that a build then refuses, or the other way round.

The rules:
- a Docker Engine must be 26 or newer (it embeds BuildKit v0.13, which has
  rewrite-timestamp) and use the containerd image store (the classic store refuses
  the oci exporter);
- a buildkitd, or BuildKit in a container, must be v0.13 or newer when it reports
  a version (Debian's Docker build reports `v0.0.0+unknown`; an unknown version is
  said, not refused);
- the builder must report at least one worker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from repro.errors import BuilderError

if TYPE_CHECKING:
    from repro.buildkit._connect import Connection
    from repro.buildkit._control import WorkerInfo

CLASSIC_STORE_FIX = (
    'set {"features": {"containerd-snapshotter": true}} in /etc/docker/daemon.json and '
    "restart dockerd (what the repro action does on ubuntu-24.04 runners), or run "
    "BuildKit in a container and pass --builder docker-container://NAME (docs/ci.md)"
)


@dataclass
class Finding:
    """One rule's verdict: `name` (builder, rewrite-timestamp, image store, workers)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Assessment:
    """What the builder said about itself."""

    address: str
    kind: str  # "docker", "docker-container", "buildkitd-unix", "tcp", …
    engine_version: str = ""  # the Docker Engine's, for kind "docker"
    buildkit_version: str = ""
    containerd_store: bool | None = None  # Docker only
    storage_driver: str = ""
    workers: list[WorkerInfo] = field(default_factory=list)
    container: str = ""  # for docker-container: the container and its engine
    engine: str = ""

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"buildkit_version": self.buildkit_version}
        if self.engine_version:
            out["engine_version"] = self.engine_version
        if self.containerd_store is not None:
            out["containerd_store"] = self.containerd_store
            out["storage_driver"] = self.storage_driver
        out["workers"] = [
            {"id": w.id, "platforms": w.platforms, "snapshotter": w.snapshotter}
            for w in self.workers
        ]
        if self.container:
            out["docker_engine"] = self.engine
        return out


def _version(text: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of `v0.13.2` / `26.1.5`; None for none or `v0.0.0+unknown`."""
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        return None
    parts = tuple(int(x or 0) for x in m.groups())
    return None if parts == (0, 0, 0) else parts


def gather(conn: Connection) -> Assessment:
    """Ask the builder what it is (a few short requests; BuilderError if unreachable)."""
    from repro.buildkit._connect import docker_request
    from repro.buildkit._control import Control

    address = conn.address
    found = Assessment(str(address), address.kind)
    if conn.is_docker:
        status, body = docker_request(address.target, "GET", "/version")
        if status == 200:
            found.engine_version = str(json.loads(body).get("Version", ""))
        status, body = docker_request(address.target, "GET", "/info")
        info = json.loads(body) if status == 200 else {}
        found.containerd_store = any(
            "io.containerd.snapshotter" in str(v)
            for pair in info.get("DriverStatus") or []
            for v in pair
        )
        found.storage_driver = str(info.get("Driver", ""))
        engine = _version(found.engine_version)
        if not found.containerd_store or (engine is not None and engine < (26,)):
            return found  # its BuildKit is not asked: the build is refused anyway
    elif address.kind == "docker-container":
        from repro.buildkit._exec import buildctl_version

        # One short exec first: a container without buildctl is named as such,
        # instead of a gRPC channel that never comes up.
        buildctl_version(address.engine, address.target)
        found.container, found.engine = address.target, address.engine
    try:
        info = Control(conn.channel, address).info(timeout=10)
    except BuilderError:
        if not conn.is_docker:
            raise
        return found  # an engine whose /grpc will not say its version: judged without
    found.buildkit_version = info.version
    found.workers = list(info.workers)
    return found


def judge(a: Assessment) -> list[Finding]:
    """The rules, applied: one Finding per rule, ok or not."""
    out: list[Finding] = []
    if a.kind == "docker":
        engine = _version(a.engine_version)
        label = f"Docker Engine {a.engine_version or '(version not reported)'}"
        out.append(Finding("builder", True, f"{label} with embedded BuildKit at {a.address}"))
        too_old = engine is not None and engine < (26,)
        out.append(
            Finding(
                "rewrite-timestamp",
                not too_old,
                f"{label} embeds a BuildKit older than v0.13, which lacks rewrite-timestamp; "
                "Docker Engine 26 or newer is needed"
                if too_old
                else "available (Docker Engine 26+ embeds BuildKit v0.13+)"
                if engine
                else "assumed (the engine does not report its version)",
                "use Docker Engine 26 or newer, or a standalone buildkitd v0.13+",
            )
        )
        store = bool(a.containerd_store)
        out.append(
            Finding(
                "image store",
                store,
                "containerd image store (the oci exporter is available)"
                if store
                else f"Docker Engine at {a.address} uses the classic image store "
                f"({a.storage_driver or 'unknown'}), which refuses the oci exporter",
                CLASSIC_STORE_FIX,
            )
        )
        if not store:
            return out
    else:
        version = a.buildkit_version or "(version not reported)"
        where = (
            f"BuildKit {version} in container {a.container} on the Docker Engine at {a.engine}; "
            "the engine's image store does not matter"
            if a.container
            else f"buildkitd {version} at {a.address}"
        )
        out.append(Finding("builder", True, where))
        parsed = _version(a.buildkit_version)
        too_old = parsed is not None and parsed < (0, 13)
        out.append(
            Finding(
                "rewrite-timestamp",
                not too_old,
                f"BuildKit {version} at {a.address} lacks rewrite-timestamp; BuildKit v0.13 "
                "or newer is needed"
                if too_old
                else "available (BuildKit v0.13+)"
                if parsed
                else "assumed (the builder does not report its version)",
                "run a moby/buildkit image of v0.13 or newer in the container"
                if a.container
                else "upgrade buildkitd to v0.13 or newer",
            )
        )
    if a.workers or a.kind == "docker" and not a.buildkit_version:
        plats = sorted({p for w in a.workers for p in w.platforms})
        detail = (
            f"{len(a.workers)} worker(s); platforms {', '.join(plats)}"
            if a.workers
            else "not reported by the engine"
        )
        out.append(Finding("workers", True, detail))
    else:
        out.append(Finding("workers", False, f"the builder at {a.address} reports no workers"))
    return out


def refuse_if_unusable(a: Assessment) -> None:
    """BuilderError with the first failed rule and its fix; nothing if all pass."""
    for finding in judge(a):
        if not finding.ok:
            fix = f"; {finding.fix}" if finding.fix and finding.fix not in finding.detail else ""
            raise BuilderError(finding.detail + fix)
