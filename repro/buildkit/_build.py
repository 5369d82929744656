"""One Dockerfile build on BuildKit: session, Solve, Status, and the export to disk.

The export is streamed: chunks of the OCI tarball that arrive over FileSend are
written straight to a temporary file (``oci-archive``) or unpacked as they arrive
(``oci`` layout), every blob checked against its digest, and moved into place only
when the Solve has succeeded. A failed or cancelled build leaves nothing behind.

With `BuildRequest.export_store` the exporter writes into the session's content
store instead (``tar=false``, repro.buildkit._content): blobs the client has (or
can take from `BuildRequest.take_blob`) are not sent, and the layout's index is
written here from the exporter's response.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from repro.buildkit._connect import Connection
from repro.buildkit._content import ExportStore, Take
from repro.buildkit._control import Control, describe_rpc_error
from repro.buildkit._exporter import exporter_attrs
from repro.buildkit._session import Session, SessionServer
from repro.buildkit.proto import buildkit_pb2 as pb
from repro.errors import (
    BuilderError,
    BuildFailed,
    Cancelled,
    ContextError,
    EnvironmentError_,
    InputError,
    RegistryError,
    ReproError,
)
from repro.oci import Output

NETWORK_MODES = ("default", "none", "host")


@dataclass
class BuildRequest:
    context: Path
    dockerfile: Path
    output: Output
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    platforms: list[str] = field(default_factory=list)
    source_date_epoch: int | None = None
    no_cache: bool = False
    network: str = "default"
    secrets: dict[str, Callable[[], bytes]] = field(default_factory=dict)
    shared_key: str = ""
    session_name: str = "repro"
    rewrite_timestamp: bool = True
    extra_frontend_attrs: dict[str, str] = field(default_factory=dict)
    # Extra attributes for the OCI exporter, e.g. {"compression": "zstd"}.
    exporter_attrs: dict[str, str] = field(default_factory=dict)
    # The version the BuildKit reports (set by `build` from the connection); decides
    # whether `compatibility-version` is sent.
    buildkit_version: str = ""
    # The user's Dockerfile when `dockerfile` is a rendered copy (errors name this one).
    source_dockerfile: Path | None = None
    # BuildKit source policy rules, in order: (action, selector, match type, new
    # identifier), e.g. ("CONVERT", "docker-image://h/r:t", "EXACT", "docker-image://h/r:t@sha256:…")
    # or ("DENY", "docker-image://*", "WILDCARD", ""). See repro.lock.source_policy.
    source_policy: list[tuple[str, str, str, str]] = field(default_factory=list)
    # Named build contexts served from local directories (`FROM name`,
    # `RUN --mount=from=name`), like buildx's --build-context name=DIR.
    named_contexts: dict[str, Path] = field(default_factory=dict)
    # Set from another thread to abandon the build (a scheduler's Ctrl-C): the Solve is
    # cancelled on BuildKit and `build` raises Cancelled.
    cancel: threading.Event | None = None
    # Receive the export blob by blob into a content store (``tar=false``; only for
    # an ``oci`` layout output), blobs already at hand not sent: those `take_blob`
    # (digest, size, path) puts at the path, checked.
    export_store: bool = False
    take_blob: Take | None = None


@dataclass
class BuildResult:
    digest: str
    config_digest: str
    output: Output
    seconds: float
    exporter_response: dict[str, str]
    descriptor: dict[str, Any] | None = None
    # The exporter attributes sent, and the version the BuildKit reported.
    exporter_attrs: dict[str, str] = field(default_factory=dict)
    buildkit_version: str = ""
    # How the export came: blobs and bytes sent by BuildKit, and those not sent
    # because they were at hand (a content-store export; zero for a tarball).
    received: tuple[int, int] = (0, 0)
    skipped: tuple[int, int] = (0, 0)


def request_exporter_attrs(req: BuildRequest) -> dict[str, str]:
    """The OCI exporter's attributes for `req`: repro's pins (repro.buildkit._exporter)."""
    attrs = exporter_attrs(
        req.buildkit_version, rewrite_timestamp=req.rewrite_timestamp, extra=req.exporter_attrs
    )
    if req.export_store:
        attrs["tar"] = "false"
    return attrs


def solve_request(req: BuildRequest, session_id: str, ref: str) -> pb.SolveRequest:
    """The SolveRequest for a Dockerfile build (pure: easy to test)."""
    attrs: dict[str, str] = {"filename": req.dockerfile.name}
    for k, v in sorted(req.build_args.items()):
        attrs[f"build-arg:{k}"] = v
    for k, v in sorted(req.labels.items()):
        attrs[f"label:{k}"] = v
    if req.source_date_epoch is not None:
        attrs["build-arg:SOURCE_DATE_EPOCH"] = str(req.source_date_epoch)
    if req.target:
        attrs["target"] = req.target
    if req.platforms:
        attrs["platform"] = ",".join(req.platforms)
    if req.no_cache:
        attrs["no-cache"] = ""
    if req.network != "default":
        if req.network not in NETWORK_MODES:
            raise InputError(f"network mode {req.network!r}: expected one of {NETWORK_MODES}")
        attrs["force-network-mode"] = req.network
    for name in sorted(req.named_contexts):
        attrs[f"context:{name}"] = f"local:{name}"
    attrs.update(req.extra_frontend_attrs)
    exporter_attrs = request_exporter_attrs(req)
    entitlements = ["network.host"] if req.network == "host" else []
    policy = None
    if req.source_policy:
        policy = pb.SourcePolicy(
            version=1,
            rules=[
                pb.SourcePolicyRule(
                    action=pb.SourcePolicyAction.Value(action),
                    selector=pb.SourcePolicySelector(
                        identifier=selector, match_type=pb.SourcePolicyMatchType.Value(match)
                    ),
                    updates=pb.SourcePolicyUpdate(identifier=update) if update else None,
                )
                for action, selector, match, update in req.source_policy
            ],
        )
    return pb.SolveRequest(
        source_policy=policy,
        ref=ref,
        session=session_id,
        frontend="dockerfile.v0",
        frontend_attrs=attrs,
        exporter_deprecated="oci",
        exporter_attrs_deprecated=exporter_attrs,
        exporters=[pb.Exporter(type="oci", attrs=exporter_attrs)],
        entitlements=entitlements,
    )


def exported_descriptor(exporter_response: Mapping[str, str]) -> dict[str, Any] | None:
    """The image descriptor the exporter's response carries (base64 JSON), if any."""
    encoded = exporter_response.get("containerimage.descriptor")
    if encoded is None:
        return None
    try:
        descriptor = json.loads(base64.b64decode(encoded))
    except ValueError:
        return None
    return descriptor if isinstance(descriptor, dict) else None


class _ExportWriter:
    """Receives the exporter's tarball, or its blobs into a content store (`store`),
    and stages it next to its destination."""

    def __init__(self, output: Output, store: bool = False, take: Take | None = None):
        from repro import oci

        self.output = output
        oci.check_output_target(output.kind, output.path)
        if store and output.kind != "oci":
            raise InputError("an export into a content store needs an oci layout output")
        self.staging = oci.staging_dir_beside(output.path, "export")
        self.received = False
        self.bytes = 0
        # Why receiving the export failed on this side (a full disk, a bad archive):
        # BuildKit only reports that the export failed, so this is what the user sees.
        self._failure: ReproError | None = None
        self.store = ExportStore(self.staging / "layout", take) if store else None

    def _cannot_write(self, e: OSError) -> EnvironmentError_:
        return EnvironmentError_(
            f"cannot write the image export beside {self.output.path}: {e.strerror or e}"
        )

    @property
    def failure(self) -> ReproError | None:
        if self._failure is None and self.store is not None and self.store.failure is not None:
            return self._cannot_write(self.store.failure)
        return self._failure

    def counts(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(blobs, bytes) sent by BuildKit, and (blobs, bytes) it did not send (a
        tarball's blobs are not counted)."""
        if self.store is None:
            return (0, self.bytes), (0, 0)
        received, skipped = self.store.received, self.store.skipped
        return (received[0], received[1]), (skipped[0], skipped[1])

    def finish_store(self, descriptor: dict[str, Any] | None) -> None:
        """The stored export made a layout: its index from the exporter's descriptor
        (`exported_descriptor`), and every blob the index reaches checked to be there."""
        from repro import oci

        assert self.store is not None
        try:
            if descriptor is None:
                raise ValueError("no containerimage.descriptor in its response")
            root = oci.Descriptor.from_json(descriptor, "the exporter's image descriptor")
        except (ValueError, ReproError) as e:
            raise BuilderError(f"BuildKit's export named no image: {e}") from None
        try:
            layout = oci.OCILayout.create(self.store.layout)
            layout.write_index([root])
        except OSError as e:
            raise self._cannot_write(e) from None
        try:
            layout.verify()  # every blob there (those received or taken were checked)
        except ReproError as e:
            raise BuilderError(f"BuildKit's export is incomplete: {e}") from None
        shutil.rmtree(self.store.ingest, ignore_errors=True)
        self.received = True

    def _receive(self, md: Mapping[str, str], chunks: Iterator[bytes]) -> None:
        from repro import oci

        self.metadata = dict(md)
        if self.output.kind == "oci-archive":
            target = self.staging / "image.tar"
            with open(target, "wb") as fh:

                def written() -> Iterator[bytes]:
                    for chunk in chunks:
                        fh.write(chunk)
                        self.bytes += len(chunk)
                        yield chunk

                stream = written()
                # Checked as it arrives, not read back afterwards: BuildKit waits for
                # this handler, and a second pass cost ~0.1 s per build.
                oci.check_archive_stream(_ChunkReader(stream))
                for _ in stream:  # the tar's end padding, past what tarfile reads
                    pass
        else:
            layout_dir = self.staging / "layout"
            reader = _ChunkReader(chunks)
            oci.extract_oci_archive(reader, layout_dir)
            self.bytes = reader.count
        self.received = True

    def __call__(self, md: Mapping[str, str], chunks: Iterator[bytes]) -> None:
        try:
            self._receive(md, chunks)
        except ReproError as e:
            self._failure = e
            raise
        except OSError as e:
            self._failure = self._cannot_write(e)
            raise

    def commit(self) -> None:
        """Move the staged export into place atomically."""
        if not self.received:
            raise BuilderError("BuildKit finished without sending the image export")
        from repro import oci

        src = self.staging / ("image.tar" if self.output.kind == "oci-archive" else "layout")
        oci.replace_output(self.output.kind, src, self.output.path)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks (for streaming tar reads).

    Keeps the current chunk and an offset into it, so small reads (tar reads 10 KiB
    at a time from 3 MiB chunks) cost only what they return.
    """

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = n
        while wanted != 0:
            if self._pos >= len(self._chunk):
                try:
                    self._chunk = next(self._chunks)
                except StopIteration:
                    break
                self._pos = 0
                self.count += len(self._chunk)
                continue
            end = len(self._chunk) if wanted < 0 else min(len(self._chunk), self._pos + wanted)
            parts.append(self._chunk[self._pos : end])
            if wanted > 0:
                wanted -= end - self._pos
            self._pos = end
        return b"".join(parts)


_PARSE_ERROR = re.compile(r"dockerfile parse error on line (\d+): (.*)", re.IGNORECASE)
_LINE_ERROR = re.compile(r"(?:^|: )(.*?\bline (\d+)\b.*)$")


def _last_heredoc_line(dockerfile: Path) -> int | None:
    """The line of the last heredoc a Dockerfile opens (where an unterminated one starts)."""
    try:
        lines = dockerfile.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = [n for n, line in enumerate(lines, 1) if re.search(r"<<-?[\"']?[A-Za-z_]", line)]
    return found[-1] if found else None


def classify_solve_error(details: str, dockerfile: Path) -> Exception:
    """Turn BuildKit's error text into the right repro error (input vs. build)."""
    msg = details.strip().splitlines()[0] if details.strip() else "build failed"
    msg = re.sub(r"^(rpc error: code = \w+ desc = )+", "", msg)
    m = _PARSE_ERROR.search(msg)
    if m:
        return InputError(m.group(2), file=str(dockerfile), line=int(m.group(1)))
    lowered = msg.lower()
    if "failed to parse" in lowered or "unknown instruction" in lowered:
        return InputError(msg, file=str(dockerfile))
    if "failed to read dockerfile" in lowered:
        return ContextError(msg, file=str(dockerfile))
    if "unterminated heredoc" in lowered or "dockerfile cannot be empty" in lowered:
        return InputError(msg, file=str(dockerfile), line=_last_heredoc_line(dockerfile))
    if "rewrite-timestamp" in lowered and ("unknown" in lowered or "invalid" in lowered):
        return BuilderError(
            "this BuildKit does not support rewrite-timestamp; BuildKit v0.13 or newer "
            "(Docker Engine 26 or newer) is needed"
        )
    if ("failed to resolve source metadata" in lowered or "failed to do request" in lowered) and (
        "connection refused" in lowered
        or "no such host" in lowered
        or "i/o timeout" in lowered
        or "server gave http response to https client" in lowered
    ):
        return RegistryError(f"registry unreachable: {msg}")
    if "exporter" in lowered and "not supported" in lowered:
        return BuilderError(
            f"{msg}: the OCI exporter needs the containerd image store "
            '(dockerd feature "containerd-snapshotter": true) or a standalone buildkitd'
        )
    return BuildFailed(msg)


def check_inputs(req: BuildRequest) -> None:
    if not req.context.is_dir():
        raise ContextError(f"build context {req.context} is not a directory")
    if not req.dockerfile.is_file():
        raise ContextError(f"Dockerfile {req.dockerfile} does not exist")
    if req.output.kind == "oci-archive" and req.output.path.is_dir():
        raise InputError(f"output {req.output.path} is a directory; oci-archive needs a file")


def build(
    conn: Connection,
    req: BuildRequest,
    on_status: Callable[[pb.StatusResponse], None] | None = None,
    credentials: Callable[[str], tuple[str, str] | None] | None = None,
) -> BuildResult:
    """Run one build; return the exporter's digests. Raises ReproError subclasses."""
    check_inputs(req)
    if not req.buildkit_version:
        req.buildkit_version = conn.buildkit_version
    started = time.monotonic()
    control = Control(conn.channel, conn.address)
    writer = _ExportWriter(req.output, req.export_store, req.take_blob)
    server = None
    session = None
    status_thread = None
    ok = False
    try:
        server = SessionServer(
            {
                "context": req.context.absolute(),
                "dockerfile": req.dockerfile.absolute().parent,
                **{name: path.absolute() for name, path in req.named_contexts.items()},
            },
            export_sink=None if writer.store is not None else writer,
            secrets=req.secrets,
            credentials=credentials,
            content_store=writer.store,
        )
        session = Session(conn, server, name=req.session_name, shared_key=req.shared_key)
        ref = uuid.uuid4().hex
        if on_status is not None:
            status_thread = threading.Thread(
                target=_follow_status, args=(control, ref, on_status), daemon=True
            )
            status_thread.start()
        future = control.solve_future(solve_request(req, session.id, ref))
        try:
            response = _wait(future, conn, req, _Watchdog(control))
        except ReproError as exc:
            if writer.failure is not None:
                raise writer.failure from None
            # the walk of a local dir met bad input: that is the cause, however the
            # daemon reported the failure (as the walk's message, or as "cancelled")
            if (
                isinstance(exc, (BuildFailed, Cancelled, InputError))
                and server.input_errors
                and not (isinstance(exc, Cancelled) and "was told to stop" in exc.message)
            ):
                raise server.input_errors[0] from None
            raise
        if server.errors:
            raise BuilderError(server.errors[0])
        if status_thread is not None:
            status_thread.join(timeout=5)
        exporter_response = dict(response.exporter_response)
        descriptor = exported_descriptor(exporter_response)
        if writer.store is not None:
            writer.finish_store(descriptor)
        writer.commit()
        counts = writer.counts()
        ok = True
        return BuildResult(
            digest=exporter_response.get("containerimage.digest", ""),
            config_digest=exporter_response.get("containerimage.config.digest", ""),
            output=req.output,
            seconds=time.monotonic() - started,
            exporter_response=exporter_response,
            descriptor=descriptor,
            exporter_attrs=request_exporter_attrs(req),
            buildkit_version=req.buildkit_version,
            received=counts[0],
            skipped=counts[1],
        )
    finally:
        if session is not None:
            session.close()
        elif server is not None:
            server.close()
        if not ok:
            writer.discard()


class _Watchdog:
    """Notices a connection to BuildKit that stopped moving while a Solve runs.

    A silent RUN step sends no status, so silence proves nothing; instead a cheap
    unary call (ListWorkers) goes over the same connection every PERIOD seconds.
    When MISSES calls in a row get no answer within TIMEOUT, the connection is
    taken for dead (a stalled proxy, a frozen daemon, a dropped route): 5 to 9 s.
    """

    PERIOD = 1.0
    TIMEOUT = 3.0
    MISSES = 2

    def __init__(self, control: Control) -> None:
        self.control = control
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        misses = 0
        while not self._stop.wait(self.PERIOD):
            try:
                self.control.ping(self.TIMEOUT)
                misses = 0
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    misses += 1
                    if misses >= self.MISSES:
                        self.stalled = True
                        return
                # other errors (the connection closed) reach the Solve by themselves

    def stop(self) -> None:
        self._stop.set()


# Set when the process is being interrupted: builds running in other threads (only the
# main thread sees Ctrl-C) stop their Solve too, so that their clean-up runs before exit.
_CANCEL_ALL = threading.Event()


def cancel_builds() -> None:
    """Tell every Solve of this process to stop (they raise `Cancelled`)."""
    _CANCEL_ALL.set()


def _wait(
    future: grpc.Future, conn: Connection, req: BuildRequest, watchdog: _Watchdog | None = None
) -> pb.SolveResponse:
    try:
        return _wait_for(future, conn, req, watchdog)
    finally:
        if watchdog is not None:
            watchdog.stop()


def _wait_for(
    future: grpc.Future, conn: Connection, req: BuildRequest, watchdog: _Watchdog | None
) -> pb.SolveResponse:
    try:
        while True:
            try:
                return future.result(timeout=0.25)  # type: ignore[no-any-return]
            except grpc.FutureTimeoutError:
                if _CANCEL_ALL.is_set() or (req.cancel is not None and req.cancel.is_set()):
                    future.cancel()
                    raise Cancelled("build cancelled; BuildKit was told to stop") from None
                if watchdog is not None and watchdog.stalled:
                    future.cancel()
                    waited = int(watchdog.MISSES * (watchdog.PERIOD + watchdog.TIMEOUT))
                    raise BuilderError(
                        f"BuildKit at {conn.address} stopped answering (nothing for about "
                        f"{waited} s); the build was abandoned"
                    ) from None
                continue
    except KeyboardInterrupt:
        future.cancel()
        raise Cancelled("build cancelled; BuildKit was told to stop") from None
    except grpc.RpcError as exc:
        code = exc.code()
        details = exc.details() or ""
        if code == grpc.StatusCode.CANCELLED:
            raise Cancelled("build cancelled") from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise BuilderError(
                f"lost the connection to BuildKit at {conn.address}: {details}"
            ) from None
        if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise BuilderError(describe_rpc_error(exc, conn.address)) from None
        error = classify_solve_error(details, req.source_dockerfile or req.dockerfile)
        if isinstance(error, BuildFailed):
            error = _locate_failure(error, exc, req.source_dockerfile or req.dockerfile)
        raise error from None


def _locate_failure(error: BuildFailed, exc: grpc.RpcError, dockerfile: Path) -> ReproError:
    """Give a failure the Dockerfile lines BuildKit says it came from, as buildx shows
    them (``Dockerfile:N`` and the instruction); the rendered copy has the same line
    numbers as the user's file, which is the one named. A failure located in the
    Dockerfile but in no step (no vertex: the frontend refused the Dockerfile, such as a
    bad substitution) is bad input."""
    from repro.buildkit._errsource import has_vertex, snippet, source_ranges

    try:
        trailers = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a call without trailers
        return error
    details = b"".join(
        v for k, v in trailers if k == "grpc-status-details-bin" and isinstance(v, bytes)
    )
    names = ("", "Dockerfile", dockerfile.name)
    ranges = [r for r in source_ranges(details) if r.filename in names]
    if not ranges:
        return error
    first = ranges[0]
    if not has_vertex(details):
        return InputError(error.message, file=str(dockerfile), line=first.start)
    error.file, error.line = str(dockerfile), first.start
    try:
        lines = dockerfile.read_text(encoding="utf-8", errors="replace").split("\n")
    except OSError:
        return error
    lines = [line.removesuffix("\r") for line in lines]
    marked = [(r.start, r.end) for r in ranges if r.filename == first.filename]
    try:  # mark whole instructions, continuation lines too, as buildx does
        from repro.dockerfile import instructions

        last = {ins.line: ins.lines[-1] for ins in instructions("\n".join(lines))}
        marked = [(a, max(b, last.get(a, b))) for a, b in marked]
    except ReproError:
        pass
    error.source_snippet = snippet(lines, marked, dockerfile.name)
    return error


def _follow_status(
    control: Control, ref: str, on_status: Callable[[pb.StatusResponse], None]
) -> None:
    try:
        for resp in control.status(ref):
            on_status(resp)
    except grpc.RpcError:
        pass  # the Solve's own error is what gets reported
