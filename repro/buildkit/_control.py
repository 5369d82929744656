"""The moby.buildkit.v1.Control service, called through a plain grpcio channel.

Only method paths travel on the wire, so the message classes come from repro's own
minimal proto (``proto/buildkit.proto``) and no generated service stubs are needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from repro.buildkit.proto import buildkit_pb2 as pb
from repro.errors import BuilderError

_SERVICE = "/moby.buildkit.v1.Control/"


def _method(channel: grpc.Channel, name: str, kind: str, req: Any, resp: Any) -> Any:
    factory = getattr(channel, kind)
    return factory(
        _SERVICE + name,
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )


@dataclass
class WorkerInfo:
    id: str
    labels: dict[str, str]
    platforms: list[str]
    version: str = ""

    @property
    def snapshotter(self) -> str:
        return self.labels.get("org.mobyproject.buildkit.worker.snapshotter", "")

    @property
    def executor(self) -> str:
        return self.labels.get("org.mobyproject.buildkit.worker.executor", "")


@dataclass
class BuilderInfo:
    version: str
    workers: list[WorkerInfo] = field(default_factory=list)


def describe_rpc_error(exc: grpc.RpcError, address: object) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"BuildKit at {address} is unreachable: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"BuildKit at {address} did not answer in time"
    name = code.name if code is not None else "error"
    return f"BuildKit at {address}: {name}: {details}"


class Control:
    """Thin typed wrapper over the Control service."""

    def __init__(self, channel: grpc.Channel, address: object):
        self.channel = channel
        self.address = address
        self._solve = _method(channel, "Solve", "unary_unary", pb.SolveRequest, pb.SolveResponse)
        self._status = _method(
            channel, "Status", "unary_stream", pb.StatusRequest, pb.StatusResponse
        )
        self._session = _method(
            channel, "Session", "stream_stream", pb.BytesMessage, pb.BytesMessage
        )
        self._list_workers = _method(
            channel, "ListWorkers", "unary_unary", pb.ListWorkersRequest, pb.ListWorkersResponse
        )
        self._info = _method(channel, "Info", "unary_unary", pb.InfoRequest, pb.InfoResponse)

    def info(self, timeout: float = 10.0) -> BuilderInfo:
        """Version and workers; raises BuilderError when the builder can't be reached."""
        version = ""
        try:
            resp = self._info(pb.InfoRequest(), timeout=timeout)
            version = resp.buildkit_version.version
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:  # pre-0.11 daemons lack Info
                raise BuilderError(describe_rpc_error(exc, self.address)) from None
        try:
            workers = self._list_workers(pb.ListWorkersRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            raise BuilderError(describe_rpc_error(exc, self.address)) from None
        infos = []
        for w in workers.record:
            plats = []
            for p in w.platforms:
                plats.append("/".join(x for x in (p.os, p.architecture, p.variant) if x))
            infos.append(
                WorkerInfo(w.id, dict(w.labels), plats, w.buildkit_version.version or version)
            )
        return BuilderInfo(version, infos)

    def ping(self, timeout: float) -> None:
        """One cheap round trip over the connection (raises grpc.RpcError)."""
        self._list_workers(pb.ListWorkersRequest(), timeout=timeout)

    def solve_future(self, req: pb.SolveRequest) -> grpc.Future:
        return self._solve.future(req)

    def status(self, ref: str) -> Iterator[pb.StatusResponse]:
        return self._status(pb.StatusRequest(ref=ref))  # type: ignore[no-any-return]

    def session(self, requests: Iterator[pb.BytesMessage], metadata: list[tuple[str, str]]) -> Any:
        return self._session(requests, metadata=metadata)
