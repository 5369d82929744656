"""Render BuildKit's solve status stream (Control.Status) for a person.

`Progress` folds the `StatusResponse` messages of one build into a merged state
(vertexes keyed by digest, their sub-statuses, logs and warnings) and shows it
in one of four modes, in the manner of ``buildx --progress=…``:

* ``tty``: a live display redrawn about 8 times a second (rich's Live), left on
  screen as a static summary when the build ends;
* ``plain``: line-oriented output for logs and CI, each line printed once::

      #3 [2/2] RUN echo hi
      #3 0.052 hi
      #3 DONE 0.1s

* ``quiet``: nothing on screen (the state is still kept, so `failure_report`
  works);
* ``auto``: ``tty`` when the stream is a terminal and TERM is not ``dumb``,
  else ``plain``.

`update` may be called from a gRPC reader thread while the main thread calls
`close`; all state is guarded by one lock.  rich is imported only in tty mode.

Times come from the daemon's clock.  Durations of finished work are
``completed - started``; for running work "now" on the daemon's clock is our
clock minus the smallest offset seen between our clock and a fresh daemon
timestamp (the daemon's clock may be off by seconds, in a VM), and elapsed
times are clamped at zero.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from repro.buildkit.proto import buildkit_pb2

Mode = Literal["auto", "tty", "plain", "quiet"]

__all__ = ["Mode", "Progress", "StatusInfo", "VertexInfo", "WarningInfo", "format_bytes"]

# How many log lines of each vertex are kept (for failure reports and tests).
LOG_KEEP = 2000
# How many log lines of a failing vertex the failure report shows.
REPORT_LOG_LINES = 20
# How many trailing log lines of each running vertex the tty display shows.
TTY_LOG_LINES = 6
# tty refresh rate.
TTY_REFRESH_PER_SECOND = 8
# A partial log line longer than this is printed without waiting for its newline.
PARTIAL_LIMIT = 64 * 1024

# plain mode: when two vertexes run at once, the output of the one not being
# shown is held back so blocks do not alternate line by line.  It is shown when
# the shown vertex finishes, has been silent for PLAIN_IDLE seconds, or when
# the held output is PLAIN_MAX_HOLD seconds old.
PLAIN_IDLE = 1.0
PLAIN_MAX_HOLD = 5.0
PLAIN_TICK = 0.25
# plain mode: a running sub-status is first printed after this many seconds
# (quick ones only print their "done" line), then again on 5% progress or
# every PLAIN_STATUS_INTERVAL seconds.
PLAIN_STATUS_DELAY = 1.0
PLAIN_STATUS_INTERVAL = 5.0
PLAIN_STATUS_STEP = 0.05

_CANCELED_SUFFIX = "context canceled"
_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# ---------------------------------------------------------------- public snapshots


@dataclass(frozen=True)
class StatusInfo:
    """A sub-task of a vertex ("transferring context:", "sha256:… layer")."""

    id: str
    name: str
    current: int
    total: int
    started: float | None
    completed: float | None


@dataclass(frozen=True)
class VertexInfo:
    """A snapshot of one vertex's merged state.  Times are daemon epoch seconds."""

    digest: str
    name: str
    index: int  # the plain-mode #N; 0 while the vertex has not started
    cached: bool
    started: float | None
    completed: float | None
    error: str
    duration: float
    logs: tuple[str, ...]  # complete lines, without the time prefix
    statuses: tuple[StatusInfo, ...]

    @property
    def finished(self) -> bool:
        return self.completed is not None or self.cached or bool(self.error)


@dataclass(frozen=True)
class WarningInfo:
    vertex: str
    vertex_name: str
    level: int
    short: str
    detail: tuple[str, ...]
    url: str


# ---------------------------------------------------------------- helpers


def format_bytes(n: int) -> str:
    """Decimal sizes the way BuildKit's tools print them: 77B, 2.35MB."""
    if n < 1000:
        return f"{n}B"
    value = float(n)
    units = ("kB", "MB", "GB", "TB", "PB")
    i = 0
    value /= 1000.0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000.0
        i += 1
    return f"{value:.2f}{units[i]}"


def _ts(parent: Any, name: str) -> float | None:
    if not parent.HasField(name):
        return None
    t: Timestamp = getattr(parent, name)
    return t.seconds + t.nanos / 1e9


def _one_line(s: str) -> str:
    return s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")


def _log_text(raw: bytes) -> str:
    """A log line as a terminal would leave it: only the text after the last CR."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    if "\r" in text:
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    return text


def _clean_for_tty(s: str) -> str:
    return _CTRL_RE.sub(" ", _ANSI_RE.sub("", s))


def _fmt_offset(sec: float) -> str:
    sec = max(0.0, sec)
    if sec < 10:
        return f"{sec:.3f}"
    if sec < 100:
        return f"{sec:.2f}"
    return f"{sec:.1f}"


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total = 0.0
    end = float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


# ---------------------------------------------------------------- internal state


@dataclass
class _LogLine:
    offset: float  # seconds since the vertex started
    text: str
    stream: int


@dataclass
class _Status:
    id: str
    name: str = ""
    current: int = 0
    total: int = 0
    timestamp: float | None = None
    started: float | None = None
    completed: float | None = None
    # plain-mode bookkeeping
    first_seen: float = 0.0
    printed_line: str | None = None
    printed_done: bool = False
    last_print: float = 0.0
    last_print_current: int = 0

    @property
    def label(self) -> str:
        return _one_line(self.id or self.name)

    def progress_text(self) -> str:
        if self.total:
            return f" {format_bytes(self.current)} / {format_bytes(self.total)}"
        if self.current:
            return f" {format_bytes(self.current)}"
        return ""


@dataclass
class _Vertex:
    digest: str
    name: str = ""
    inputs: list[str] = field(default_factory=list)
    cached: bool = False
    error: str = ""
    intervals: dict[float, float | None] = field(default_factory=dict)
    completed_unstarted: float | None = None
    index: int = 0
    statuses: dict[str, _Status] = field(default_factory=dict)
    logs: deque[_LogLine] = field(default_factory=lambda: deque(maxlen=LOG_KEEP))
    log_count: int = 0
    partial: bytearray = field(default_factory=bytearray)
    partial_ts: float | None = None
    partial_stream: int = 1
    # plain-mode bookkeeping
    pending: list[str] = field(default_factory=list)
    pending_since: float | None = None
    last_activity: float = 0.0
    needs_header: bool = False
    final_printed: bool = False

    @property
    def display_name(self) -> str:
        return _one_line(self.name) if self.name else self.digest

    @property
    def internal(self) -> bool:
        return self.name.startswith("[internal]")

    @property
    def started(self) -> float | None:
        return max(self.intervals) if self.intervals else None

    @property
    def completed(self) -> float | None:
        s = self.started
        if s is None:
            return self.completed_unstarted
        return self.intervals[s]

    @property
    def finished(self) -> bool:
        if self.error:
            return True
        if self.intervals:
            return all(c is not None for c in self.intervals.values())
        return self.completed_unstarted is not None or self.cached or bool(self.error)

    @property
    def running(self) -> bool:
        return bool(self.intervals) and not self.finished

    @property
    def active(self) -> bool:
        return bool(self.intervals) or self.finished

    @property
    def canceled(self) -> bool:
        return self.error.endswith(_CANCELED_SUFFIX)

    def duration(self, daemon_now: float) -> float:
        spans = [(s, c if c is not None else max(s, daemon_now)) for s, c in self.intervals.items()]
        return max(0.0, _union_length(spans))


# ---------------------------------------------------------------- Progress


class Progress:
    """Merge and render one build's status stream; see the module docstring."""

    def __init__(self, mode: Mode = "auto", stream: TextIO | None = None, title: str = "") -> None:
        if mode not in ("auto", "tty", "plain", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.title = title
        self.mode: Literal["tty", "plain", "quiet"] = (
            self._detect(self.stream) if mode == "auto" else mode
        )
        self._lock = threading.RLock()
        self._clock: Callable[[], float] = time.monotonic
        self._wall: Callable[[], float] = time.time
        self._created = self._clock()
        self._closed_at: float | None = None
        self._closed = False
        self._success: bool | None = None
        self._daemon_offset: float | None = None  # our wall clock minus the daemon's

        self._by_digest: dict[str, _Vertex] = {}
        self._order: list[_Vertex] = []  # first appearance
        self._active: list[_Vertex] = []  # first start: the display order
        self._warnings: list[WarningInfo] = []
        self._warning_keys: set[tuple[str, str, str]] = set()

        # plain mode
        self._current: _Vertex | None = None
        self._current_since = 0.0
        self._printed_any = False
        self._ticker: threading.Thread | None = None
        self._stop_ticker = threading.Event()

        # tty mode
        self._console: Any = None
        self._live: Any = None
        self._final = False

    @staticmethod
    def _detect(stream: TextIO) -> Literal["tty", "plain"]:
        try:
            isatty = stream.isatty()
        except (AttributeError, ValueError):
            isatty = False
        if isatty and os.environ.get("TERM", "") != "dumb":
            return "tty"
        return "plain"

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(success=exc_type is None)

    def start(self) -> None:
        """Show the display now (otherwise it appears with the first update)."""
        with self._lock:
            if self._closed:
                return
            self._start_locked()

    def _start_locked(self) -> None:
        if self.mode == "tty":
            if self._live is None:
                self._start_live()
        elif self.mode == "plain" and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="repro-progress", daemon=True)
            self._ticker.start()

    def update(self, resp: buildkit_pb2.StatusResponse) -> None:
        """Merge one status message into the state (thread-safe)."""
        with self._lock:
            if self._closed:
                return
            for pv in resp.vertexes:
                self._merge_vertex(pv)
            for ps in resp.statuses:
                self._merge_status(ps)
            for pl in resp.logs:
                self._merge_log(pl)
            for pw in resp.warnings:
                self._merge_warning(pw)
            self._start_locked()
            if self.mode == "plain":
                self._flush_plain(force=False)

    def close(self, success: bool) -> None:
        """End the display: final tty rendering, remaining plain lines, warnings."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._success = success
            self._closed_at = self._clock()
            for v in self._order:
                self._flush_partial(v)
            self._final = True
            live, self._live = self._live, None
            ticker, self._ticker = self._ticker, None
        # Outside our lock: rich's refresh thread holds its lock while it asks
        # us for the renderable, and the ticker takes our lock.
        self._stop_ticker.set()
        if ticker is not None:
            ticker.join()
        if live is not None:
            live.stop()  # renders the final, complete state once more
        with self._lock:
            if self.mode == "plain":
                self._flush_plain(force=True)
            self._print_warnings()

    # ------------------------------------------------------------ accessors

    def vertices(self) -> list[VertexInfo]:
        """All vertexes seen, in order of first appearance."""
        with self._lock:
            now = self._daemon_now()
            return [self._snapshot(v, now) for v in self._order]

    def vertex(self, digest: str) -> VertexInfo | None:
        with self._lock:
            v = self._by_digest.get(digest)
            return None if v is None else self._snapshot(v, self._daemon_now())

    def warnings(self) -> list[WarningInfo]:
        with self._lock:
            return list(self._warnings)

    def failure_report(self) -> str:
        """What went wrong, for printing after the display: each failed vertex's
        name, the tail of its output and its error.  Empty when nothing failed."""
        with self._lock:
            blocks: list[str] = []
            for v in self._order:
                if not v.error or v.canceled:
                    continue
                lines = ["------", f" > {v.display_name}:"]
                logs = list(v.logs)
                if v.partial:
                    offset = self._offset(v, v.partial_ts)
                    logs.append(_LogLine(offset, _log_text(bytes(v.partial)), v.partial_stream))
                shown = logs[-REPORT_LOG_LINES:]
                hidden = v.log_count + (1 if v.partial else 0) - len(shown)
                if hidden > 0:
                    lines.append(f"[… {hidden} earlier line{'s' if hidden != 1 else ''} not shown]")
                lines.extend(f"{_fmt_offset(ln.offset)} {ln.text}" for ln in shown)
                lines.append("------")
                lines.append(f"ERROR: {v.error}")
                blocks.append("\n".join(lines))
            return "\n".join(blocks)

    # ------------------------------------------------------------ merging

    def _get(self, digest: str) -> _Vertex:
        v = self._by_digest.get(digest)
        if v is None:
            v = _Vertex(digest=digest)
            self._by_digest[digest] = v
            self._order.append(v)
        return v

    def _activate(self, v: _Vertex) -> None:
        if v.index:
            return
        self._active.append(v)
        v.index = len(self._active)
        v.needs_header = True
        v.pending_since = v.last_activity = self._clock()

    def _merge_vertex(self, pv: buildkit_pb2.Vertex) -> None:
        if not pv.digest:
            return
        v = self._get(pv.digest)
        was_finished = v.active and v.finished
        if pv.name:
            v.name = pv.name
        if pv.inputs:
            v.inputs = list(pv.inputs)
        started = _ts(pv, "started")
        completed = _ts(pv, "completed")
        if started is not None:
            self._observe(completed if completed is not None else started)
            v.intervals[started] = completed
            v.cached = pv.cached
            v.error = pv.error
        elif not v.intervals:
            v.cached = pv.cached
            v.error = pv.error
            v.completed_unstarted = completed
        else:
            # A re-sent vertex without its times must not reset what we know.
            v.cached = v.cached or pv.cached
            v.error = pv.error or v.error
        if v.active:
            self._activate(v)
            if v.finished and not was_finished:
                self._flush_partial(v)
            elif was_finished and not v.finished:
                v.final_printed = False  # started again

    def _merge_status(self, ps: buildkit_pb2.VertexStatus) -> None:
        if not ps.vertex:
            return
        v = self._get(ps.vertex)
        self._activate(v)
        key = ps.id or ps.name
        s = v.statuses.get(key)
        if s is None:
            s = _Status(id=ps.id, first_seen=self._clock())
            v.statuses[key] = s
        s.name = ps.name
        s.current = ps.current
        s.total = ps.total
        s.timestamp = _ts(ps, "timestamp")
        self._observe(s.timestamp)
        s.started = _ts(ps, "started")
        s.completed = _ts(ps, "completed")
        if s.completed is None:
            s.printed_done = False
        v.last_activity = self._clock()

    def _merge_log(self, pl: buildkit_pb2.VertexLog) -> None:
        if not pl.vertex:
            return
        v = self._get(pl.vertex)
        self._activate(v)
        stamp = _ts(pl, "timestamp")
        self._observe(stamp)
        data = bytes(pl.msg)
        while data:
            nl = data.find(b"\n")
            if nl < 0:
                if not v.partial:
                    v.partial_ts = stamp
                    v.partial_stream = int(pl.stream)
                v.partial += data
                if len(v.partial) > PARTIAL_LIMIT:
                    self._flush_partial(v)
                break
            chunk, data = data[:nl], data[nl + 1 :]
            if v.partial:
                v.partial += chunk
                self._add_line(v, bytes(v.partial), v.partial_ts, v.partial_stream)
                v.partial.clear()
                v.partial_ts = None
            else:
                self._add_line(v, chunk, stamp, int(pl.stream))

    def _flush_partial(self, v: _Vertex) -> None:
        if v.partial:
            self._add_line(v, bytes(v.partial), v.partial_ts, v.partial_stream)
            v.partial.clear()
            v.partial_ts = None

    def _offset(self, v: _Vertex, stamp: float | None) -> float:
        start = v.started
        if start is None or stamp is None:
            return 0.0
        return max(0.0, stamp - start)

    def _add_line(self, v: _Vertex, raw: bytes, stamp: float | None, stream: int) -> None:
        line = _LogLine(self._offset(v, stamp), _log_text(raw), stream)
        v.logs.append(line)
        v.log_count += 1
        if self.mode == "plain":
            self._queue(v, f"{_fmt_offset(line.offset)} {line.text}")

    def _merge_warning(self, pw: buildkit_pb2.VertexWarning) -> None:
        v = self._by_digest.get(pw.vertex)
        short = bytes(pw.short).decode("utf-8", errors="replace").strip()
        name = v.display_name if v is not None else ""
        key = (pw.vertex, short, pw.url)
        if key in self._warning_keys:
            return
        self._warning_keys.add(key)
        detail = tuple(bytes(d).decode("utf-8", errors="replace") for d in pw.detail)
        self._warnings.append(WarningInfo(pw.vertex, name, int(pw.level), short, detail, pw.url))

    # ------------------------------------------------------------ time

    def _observe(self, stamp: float | None) -> None:
        """Learn the daemon's clock offset from a fresh daemon timestamp.

        A timestamp reaches us some time after the daemon took it, so our clock
        minus it overestimates the offset by that delay; the smallest value
        seen is the best estimate."""
        if stamp is None:
            return
        offset = self._wall() - stamp
        if self._daemon_offset is None or offset < self._daemon_offset:
            self._daemon_offset = offset

    def _daemon_now(self) -> float:
        """Now on the daemon's clock (our clock, if no vertex has started yet)."""
        wall = self._wall()
        if self._closed_at is not None:
            wall -= self._clock() - self._closed_at  # freeze at close
        return wall - (self._daemon_offset or 0.0)

    def _elapsed(self) -> float:
        end = self._closed_at if self._closed_at is not None else self._clock()
        return max(0.0, end - self._created)

    def _snapshot(self, v: _Vertex, now: float) -> VertexInfo:
        logs = tuple(ln.text for ln in v.logs)
        statuses = tuple(
            StatusInfo(s.id, s.name, s.current, s.total, s.started, s.completed)
            for s in v.statuses.values()
        )
        return VertexInfo(
            digest=v.digest,
            name=v.name,
            index=v.index,
            cached=v.cached,
            started=v.started,
            completed=v.completed,
            error=v.error,
            duration=v.duration(now),
            logs=logs,
            statuses=statuses,
        )

    # ------------------------------------------------------------ plain mode

    def _queue(self, v: _Vertex, line: str) -> None:
        now = self._clock()
        if v.pending_since is None:
            v.pending_since = now
        v.last_activity = now
        v.pending.append(line)

    def _tick(self) -> None:
        while not self._stop_ticker.wait(PLAIN_TICK):
            with self._lock:
                if self._closed:
                    return
                self._flush_plain(force=False)

    def _status_due(self, v: _Vertex, s: _Status, now: float, force: bool) -> bool:
        if s.completed is not None:
            return not s.printed_done
        if s.printed_done:
            return False
        if s.printed_line is None:
            return force or v.finished or now - s.first_seen >= PLAIN_STATUS_DELAY
        if v.finished or force:
            return False
        if s.current == s.last_print_current:
            return False
        if s.total > 0 and (s.current - s.last_print_current) / s.total >= PLAIN_STATUS_STEP:
            return True
        return now - s.last_print >= PLAIN_STATUS_INTERVAL

    def _has_output(self, v: _Vertex, now: float, force: bool) -> bool:
        if v.needs_header or v.pending:
            return True
        if v.finished and not v.final_printed:
            return True
        return any(self._status_due(v, s, now, force) for s in v.statuses.values())

    def _status_line(self, s: _Status, daemon_now: float) -> str:
        tm = ""
        if s.started is not None:
            end = s.completed if s.completed is not None else (s.timestamp or daemon_now)
            diff = end - s.started
            if diff > 0.01:
                tm = f" {diff:.1f}s"
        done = " done" if s.completed is not None else ""
        return f"{s.label}{s.progress_text()}{tm}{done}"

    def _write(self, text: str, flush: bool = False) -> None:
        # A closed or broken stream must not break the build.
        with contextlib.suppress(OSError, ValueError):
            if text:
                self.stream.write(text)
            if flush:
                self.stream.flush()

    def _emit(self, v: _Vertex, now: float, force: bool) -> None:
        out: list[str] = []
        if self._current is not v:
            cur = self._current
            if cur is not None:
                out.append(f"#{cur.index} ...\n")
            if self._printed_any:
                out.append("\n")
            out.append(f"#{v.index} {v.display_name}\n")
            self._current = v
            self._current_since = now
            self._printed_any = True
        v.needs_header = False
        daemon_now = self._daemon_now()
        for s in v.statuses.values():
            if self._status_due(v, s, now, force):
                line = self._status_line(s, daemon_now)
                s.printed_line = line
                s.last_print = now
                s.last_print_current = s.current
                s.printed_done = s.completed is not None
                out.append(f"#{v.index} {line}\n")
        out.extend(f"#{v.index} {line}\n" for line in v.pending)
        v.pending.clear()
        v.pending_since = None
        if v.finished and not v.final_printed:
            v.final_printed = True
            if v.error:
                if v.canceled:
                    out.append(f"#{v.index} CANCELED\n")
                else:
                    out.append(f"#{v.index} ERROR: {v.error}\n")
            elif v.cached:
                out.append(f"#{v.index} CACHED\n")
            else:
                out.append(f"#{v.index} DONE {v.duration(daemon_now):.1f}s\n")
            self._current = None
        self._write("".join(out))

    def _flush_plain(self, force: bool) -> None:
        now = self._clock()
        cur = self._current
        if cur is not None and self._has_output(cur, now, force):
            self._emit(cur, now, force)
        # Finished vertexes print as whole blocks, in the order they finished.
        done = [
            v
            for v in self._active
            if v.finished and v is not self._current and self._has_output(v, now, force)
        ]
        done.sort(key=lambda v: (v.completed or 0.0, v.index))
        for v in done:
            self._emit(v, now, force)
        # Running ones: stay with the current vertex unless it has gone quiet
        # or another one's output has waited too long.
        while True:
            waiting = [
                v
                for v in self._active
                if v is not self._current and self._has_output(v, now, force)
            ]
            if not waiting:
                break
            nxt = min(waiting, key=lambda v: (v.pending_since or now, v.index))
            cur = self._current
            if cur is not None and not force:
                quiet_for = now - max(self._current_since, cur.last_activity)
                held_for = now - (nxt.pending_since or now)
                if quiet_for < PLAIN_IDLE and held_for < PLAIN_MAX_HOLD:
                    break
            self._emit(nxt, now, force)
        self._write("", flush=True)

    # ------------------------------------------------------------ tty mode

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(
            file=self.stream, force_terminal=True, highlight=False, soft_wrap=False
        )
        self._live = Live(
            console=self._console,
            refresh_per_second=TTY_REFRESH_PER_SECOND,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self._renderable,
        )
        self._live.start(refresh=True)

    def _renderable(self) -> Any:
        with self._lock:
            return self._render(final=self._final)

    def _rows(self, final: bool) -> list[tuple[int, str, str, str]]:
        """(block number, text, time, style) for every line under the header."""
        now = self._daemon_now()
        rows: list[tuple[int, str, str, str]] = []
        for block, v in enumerate(self._active):
            if v.error:
                style = "yellow" if v.canceled else "red"
                prefix = "CANCELED " if v.canceled else "ERROR "
            else:
                style = "blue" if v.finished else ""
                prefix = "CACHED " if v.cached else ""
            dt = v.duration(now)
            rows.append((block, f" => {prefix}{v.display_name}", _fmt_secs(dt), style))
            if v.internal and v.finished:
                continue  # [internal] steps collapse to one line once done
            for s in v.statuses.values():
                end = s.completed if s.completed is not None else now
                sdt = max(0.0, end - s.started) if s.started is not None else 0.0
                rows.append(
                    (
                        block,
                        f" => => {s.label}{s.progress_text()}",
                        _fmt_secs(sdt),
                        "blue" if s.completed is not None else "",
                    )
                )
            if v.running and not final and not v.internal:
                tail = [ln.text for ln in list(v.logs)[-TTY_LOG_LINES:]]
                if v.partial:
                    tail.append(_log_text(bytes(v.partial)))
                for text in tail[-TTY_LOG_LINES:]:
                    rows.append((block, f" => => # {_clean_for_tty(text)}", "", "dim"))
        return rows

    def _render(self, final: bool) -> Any:
        from rich.table import Table
        from rich.text import Text

        done = sum(1 for v in self._order if v.active and v.finished)
        total = len(self._order)
        title = f"{_one_line(self.title)} " if self.title else ""
        header = f"[+] Building {title}{self._elapsed():.1f}s ({done}/{total})"
        if final and self._success:
            header += " FINISHED"
        rows = self._rows(final)
        if not final and self._console is not None:
            rows = self._fit(rows, max(1, self._console.size.height - 2))
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        grid.add_row(Text(header, style="bold"), "")
        for _, text, tm, style in rows:
            grid.add_row(Text(text, style=style), Text(tm, style=style))
        return grid

    def _fit(
        self, rows: list[tuple[int, str, str, str]], height: int
    ) -> list[tuple[int, str, str, str]]:
        """Keep the live display within the screen: drop finished steps first."""
        if len(rows) <= height:
            return rows
        finished = {b for b, v in enumerate(self._active) if v.finished}
        drop: set[int] = set()
        count = len(rows)
        for b in sorted(finished):
            if count <= height:
                break
            n = sum(1 for r in rows if r[0] == b)
            drop.add(b)
            count -= n
        rows = [r for r in rows if r[0] not in drop]
        if len(rows) > height:
            rows = [r for r in rows if not r[1].startswith(" => => # ")] or rows
        return rows[-height:]

    def _print_warnings(self) -> None:
        if self.mode == "quiet" or not self._warnings:
            return
        n = len(self._warnings)
        lines = [f"{n} warning{'s' if n != 1 else ''} found:"]
        for w in self._warnings:
            where = f"{w.vertex_name}: " if w.vertex_name else ""
            url = f" ({w.url})" if w.url else ""
            lines.append(f" - {where}{w.short}{url}")
        text = "\n".join(lines)
        if self.mode == "tty" and self._console is not None:
            from rich.text import Text

            self._console.print(Text(text, style="yellow"), soft_wrap=True)
        else:
            if self.mode == "plain" and self._printed_any:
                text = "\n" + text
            self._write(text + "\n", flush=True)


def _fmt_secs(dt: float) -> str:
    return f"{0.0 if dt < 0.05 else dt:.1f}s"
