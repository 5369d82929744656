"""A BuildKit client over gRPC: connect, run a session, Solve, follow Status.

Public API::

    with connect(builder) as conn:          # --builder / BUILDKIT_HOST / DOCKER_HOST
        result = build(conn, BuildRequest(...), on_status=Progress().update)

Importing this package imports grpcio; the CLI imports it only for commands that
talk to a builder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repro.buildkit._assess import CLASSIC_STORE_FIX, Assessment, Finding
from repro.buildkit._assess import gather as assess_builder
from repro.buildkit._assess import judge as judge_builder
from repro.buildkit._build import (
    BuildRequest,
    BuildResult,
    Output,
    build,
    cancel_builds,
    check_inputs,
    solve_request,
)
from repro.buildkit._connect import (
    BuilderAddress,
    Connection,
    docker_engine_socket,
    docker_request,
    find_builder,
    parse_address,
    speaks_docker_api,
)
from repro.buildkit._control import BuilderInfo, Control, WorkerInfo
from repro.buildkit._exec import buildctl_version
from repro.buildkit._walk import PatternMatcher, parse_dockerignore

if TYPE_CHECKING:
    from repro.buildkit._progress import Progress


def __getattr__(name: str) -> object:
    # The progress display imports rich; only builds need it.
    if name == "Progress":
        from repro.buildkit._progress import Progress

        return Progress
    raise AttributeError(name)


def connect(builder: str | None = None) -> Connection:
    """Open a channel to the builder chosen from ``builder`` or the environment."""
    return Connection(find_builder(builder))


__all__ = [
    "cancel_builds",
    "CLASSIC_STORE_FIX",
    "Assessment",
    "Finding",
    "assess_builder",
    "judge_builder",
    "BuildRequest",
    "BuildResult",
    "BuilderAddress",
    "BuilderInfo",
    "Connection",
    "Control",
    "Output",
    "PatternMatcher",
    "Progress",
    "WorkerInfo",
    "build",
    "buildctl_version",
    "check_inputs",
    "docker_engine_socket",
    "docker_request",
    "connect",
    "find_builder",
    "parse_address",
    "parse_dockerignore",
    "solve_request",
    "speaks_docker_api",
]
