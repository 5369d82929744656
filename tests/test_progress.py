"""The build progress display: merging BuildKit's status stream and rendering it."""

from __future__ import annotations

import io
import threading
import time

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from repro.buildkit._progress import Progress, format_bytes
from repro.buildkit.proto import buildkit_pb2 as pb

T0 = 1_700_000_000.0  # the daemon's clock at the start of these fake builds

RUN = "[2/3] RUN echo hi && false"
FROM = "[1/3] FROM docker.io/library/alpine:3.19@sha256:abc"
DEF = "[internal] load build definition from Dockerfile"
ERR = 'process "/bin/sh -c echo hi && false" did not complete successfully: exit code: 1'


def ts(sec: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(round((T0 + sec) * 1e9))
    return t


def vtx(
    digest: str,
    name: str = "",
    started: float | None = None,
    completed: float | None = None,
    cached: bool = False,
    error: str = "",
) -> pb.Vertex:
    v = pb.Vertex(digest=digest, name=name, cached=cached, error=error)
    if started is not None:
        v.started.CopyFrom(ts(started))
    if completed is not None:
        v.completed.CopyFrom(ts(completed))
    return v


def log(digest: str, at: float, msg: bytes, stream: int = 1) -> pb.VertexLog:
    return pb.VertexLog(vertex=digest, timestamp=ts(at), stream=stream, msg=msg)


def status(
    digest: str,
    id: str,
    current: int = 0,
    total: int = 0,
    started: float | None = None,
    completed: float | None = None,
) -> pb.VertexStatus:
    s = pb.VertexStatus(id=id, vertex=digest, current=current, total=total)
    if started is not None:
        s.started.CopyFrom(ts(started))
        s.timestamp.CopyFrom(ts(completed if completed is not None else started))
    if completed is not None:
        s.completed.CopyFrom(ts(completed))
    return s


def resp(**kw: object) -> pb.StatusResponse:
    return pb.StatusResponse(**kw)  # type: ignore[arg-type]


def failing_build() -> list[pb.StatusResponse]:
    """A small build: load the Dockerfile, a cached FROM, a RUN that prints and fails."""
    return [
        resp(vertexes=[vtx("sha256:def", DEF, started=0.0)]),
        resp(statuses=[status("sha256:def", "transferring dockerfile:", 77, 0, 0.01, 0.02)]),
        resp(vertexes=[vtx("sha256:def", DEF, started=0.0, completed=0.03)]),
        resp(
            vertexes=[
                vtx("sha256:from", FROM, started=0.1, completed=0.1, cached=True),
                vtx("sha256:run", RUN),  # announced, not started yet
            ]
        ),
        resp(vertexes=[vtx("sha256:run", RUN, started=0.2)]),
        resp(logs=[log("sha256:run", 0.25, b"hi\nwor")]),
        resp(logs=[log("sha256:run", 0.31, b"ld\nno newline")]),
        resp(vertexes=[vtx("sha256:run", RUN, started=0.2, completed=0.62, error=ERR)]),
    ]


def run(mode: str, messages: list[pb.StatusResponse], success: bool = True, **kw: object):
    out = io.StringIO()
    p = Progress(mode, stream=out, **kw)  # type: ignore[arg-type]
    for m in messages:
        p.update(m)
    p.close(success=success)
    return p, out.getvalue()


# ------------------------------------------------------------------ merging


def test_vertexes_merge_by_digest_in_order_of_first_appearance() -> None:
    p, _ = run("quiet", failing_build(), success=False)
    vs = p.vertices()
    assert [v.digest for v in vs] == ["sha256:def", "sha256:from", "sha256:run"]
    assert [v.index for v in vs] == [1, 2, 3]
    d, f, r = vs
    assert d.name == DEF and d.completed == pytest.approx(T0 + 0.03)
    assert d.statuses[0].id == "transferring dockerfile:" and d.statuses[0].current == 77
    assert f.cached and f.finished and not f.error
    assert r.started == pytest.approx(T0 + 0.2)
    assert r.completed == pytest.approx(T0 + 0.62)
    assert r.duration == pytest.approx(0.42)
    assert r.error == ERR
    assert r.logs == ("hi", "world", "no newline")


def test_resent_vertex_without_times_keeps_state() -> None:
    p = Progress("quiet")
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN x", started=1.0)]))
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN x")]))
    v = p.vertex("sha256:a")
    assert v is not None and v.started == pytest.approx(T0 + 1.0) and v.completed is None
    p.update(resp(vertexes=[vtx("sha256:a", "", started=1.0, completed=3.5)]))
    v = p.vertex("sha256:a")
    assert v is not None and v.name == "[1/1] RUN x" and v.duration == pytest.approx(2.5)
    assert p.vertex("sha256:nope") is None
    p.close(True)


def test_vertex_not_started_has_no_number() -> None:
    p = Progress("quiet")
    p.update(resp(vertexes=[vtx("sha256:a", "[1/2] FROM x"), vtx("sha256:b", "[2/2] RUN y")]))
    p.update(resp(vertexes=[vtx("sha256:b", "[2/2] RUN y", started=0.0)]))
    assert [(v.digest, v.index) for v in p.vertices()] == [("sha256:a", 0), ("sha256:b", 1)]
    p.close(True)


def test_log_lines_split_across_chunks() -> None:
    p = Progress("quiet")
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN x", started=0.0)]))
    for chunk in (b"ab", b"c\nd", b"e\n\nf\r\n", "h\u00e9".encode()[:2], "h\u00e9".encode()[2:]):
        p.update(resp(logs=[log("sha256:a", 0.5, chunk)]))
    v = p.vertex("sha256:a")
    assert v is not None and v.logs == ("abc", "de", "", "f")  # "hé" still partial
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN x", started=0.0, completed=1.0)]))
    v = p.vertex("sha256:a")
    assert v is not None and v.logs == ("abc", "de", "", "f", "h\u00e9")
    p.close(True)


def test_carriage_returns_keep_the_last_redraw() -> None:
    p = Progress("quiet")
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN x", started=0.0)]))
    p.update(resp(logs=[log("sha256:a", 0.1, b"10%\r50%\r100%\r\ndone\n")]))
    v = p.vertex("sha256:a")
    assert v is not None and v.logs == ("100%", "done")
    p.close(True)


# ------------------------------------------------------------------ plain


def test_plain_output_of_a_small_failing_build() -> None:
    _, out = run("plain", failing_build(), success=False)
    assert out == (
        f"#1 {DEF}\n"
        "#1 transferring dockerfile: 77B done\n"
        "#1 DONE 0.0s\n"
        "\n"
        f"#2 {FROM}\n"
        "#2 CACHED\n"
        "\n"
        f"#3 {RUN}\n"
        "#3 0.050 hi\n"
        "#3 0.050 world\n"
        "#3 0.110 no newline\n"
        f"#3 ERROR: {ERR}\n"
    )


def test_plain_done_with_duration_and_partial_line_flushed_at_completion() -> None:
    msgs = [
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN make", started=10.0)]),
        resp(logs=[log("sha256:a", 10.5, b"compiling")]),
        resp(logs=[log("sha256:a", 12.0, b"... ok")]),
        resp(logs=[log("sha256:a", 23.25, b"\nlinking\nwrote a.out")]),
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN make", started=10.0, completed=131.46)]),
    ]
    _, out = run("plain", msgs)
    assert out.splitlines() == [
        "#1 [1/1] RUN make",
        "#1 0.500 compiling... ok",
        "#1 13.25 linking",
        "#1 13.25 wrote a.out",
        "#1 DONE 121.5s",
    ]


def test_plain_partial_line_of_a_running_vertex_is_flushed_at_close() -> None:
    msgs = [
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN sleep 100", started=0.0)]),
        resp(logs=[log("sha256:a", 150.0, b"waiting")]),
    ]
    _, out = run("plain", msgs, success=False)
    assert out.splitlines() == ["#1 [1/1] RUN sleep 100", "#1 150.0 waiting"]


def test_plain_prints_each_line_once() -> None:
    out = io.StringIO()
    p = Progress("plain", stream=out)
    msgs = failing_build()
    for m in msgs:
        p.update(m)
        p.update(m)  # BuildKit re-sends vertexes; nothing may print twice
    p.close(success=False)
    lines = out.getvalue().splitlines()
    nonblank = [ln for ln in lines if ln]
    assert len(nonblank) == len(set(nonblank))
    assert nonblank.count("#3 0.050 hi") == 1


def test_plain_canceled_vertex() -> None:
    msgs = [
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN sleep 9", started=0.0)]),
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN sleep 9", 0.0, 2.0, error="context canceled")]),
    ]
    p, out = run("plain", msgs, success=False)
    assert out.splitlines() == ["#1 [1/1] RUN sleep 9", "#1 CANCELED"]
    assert p.failure_report() == ""


def test_plain_sub_status_with_sizes() -> None:
    msgs = [
        resp(vertexes=[vtx("sha256:a", "[1/2] FROM docker.io/library/debian", started=0.0)]),
        resp(statuses=[status("sha256:a", "sha256:1234", 1_000_000, 30_000_000, started=0.1)]),
        resp(statuses=[status("sha256:a", "sha256:1234", 30_000_000, 30_000_000, 0.1, 2.5)]),
        resp(statuses=[status("sha256:a", "extracting sha256:1234", started=2.5, completed=3.0)]),
        resp(vertexes=[vtx("sha256:a", "[1/2] FROM docker.io/library/debian", 0.0, 3.1)]),
    ]
    _, out = run("plain", msgs)
    assert out.splitlines() == [
        "#1 [1/2] FROM docker.io/library/debian",
        "#1 sha256:1234 30.00MB / 30.00MB 2.4s done",
        "#1 extracting sha256:1234 0.5s done",
        "#1 DONE 3.1s",
    ]


def test_plain_interleaved_vertexes_are_grouped() -> None:
    now = [100.0]
    out = io.StringIO()
    p = Progress("plain", stream=out)
    p._clock = lambda: now[0]  # a fake clock decides when held output is shown
    p.update(
        resp(
            vertexes=[
                vtx("sha256:a", "[a 1/1] RUN one", started=0.0),
                vtx("sha256:b", "[b 1/1] RUN two", started=0.0),
            ]
        )
    )
    p.update(resp(logs=[log("sha256:a", 0.1, b"a1\n")]))
    p.update(resp(logs=[log("sha256:b", 0.1, b"b1\n")]))
    p.update(resp(logs=[log("sha256:a", 0.2, b"a2\n")]))
    assert "b1" not in out.getvalue()  # held while #1 is busy
    now[0] += 2.0  # #1 went quiet: #2 gets the floor
    p.update(resp(logs=[log("sha256:b", 2.0, b"b2\n")]))
    p.update(resp(vertexes=[vtx("sha256:a", "[a 1/1] RUN one", 0.0, 2.5)]))
    p.update(resp(vertexes=[vtx("sha256:b", "[b 1/1] RUN two", 0.0, 2.5)]))
    p.close(True)
    assert out.getvalue().splitlines() == [
        "#1 [a 1/1] RUN one",
        "#1 0.100 a1",
        "#1 0.200 a2",
        "#1 ...",
        "",
        "#2 [b 1/1] RUN two",
        "#2 0.100 b1",
        "#2 2.000 b2",
        "#2 ...",
        "",
        "#1 [a 1/1] RUN one",
        "#1 DONE 2.5s",
        "",
        "#2 [b 1/1] RUN two",
        "#2 DONE 2.5s",
    ]


def test_plain_warnings_at_close() -> None:
    msgs = [
        *failing_build()[:4],
        resp(
            warnings=[
                pb.VertexWarning(vertex="sha256:from", level=1, short=b"pin the base image"),
                pb.VertexWarning(vertex="sha256:from", level=1, short=b"pin the base image"),
            ]
        ),
    ]
    p, out = run("plain", msgs)
    assert out.endswith(f"\n1 warning found:\n - {FROM}: pin the base image\n")
    (w,) = p.warnings()
    assert w.vertex_name == FROM and w.short == "pin the base image"


# ------------------------------------------------------------------ failure report


def test_failure_report_names_the_step_and_shows_its_output() -> None:
    p, _ = run("quiet", failing_build(), success=False)
    assert p.failure_report().splitlines() == [
        "------",
        f" > {RUN}:",
        "0.050 hi",
        "0.050 world",
        "0.110 no newline",
        "------",
        f"ERROR: {ERR}",
    ]


def test_failure_report_keeps_the_last_lines() -> None:
    body = b"".join(b"line %d\n" % i for i in range(50))
    msgs = [
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN noisy", started=0.0)]),
        resp(logs=[log("sha256:a", 1.0, body)]),
        resp(vertexes=[vtx("sha256:a", "[1/1] RUN noisy", 0.0, 2.0, error="exit code: 2")]),
    ]
    p, _ = run("quiet", msgs, success=False)
    lines = p.failure_report().splitlines()
    assert lines[:3] == ["------", " > [1/1] RUN noisy:", "[… 30 earlier lines not shown]"]
    assert lines[3] == "1.000 line 30" and lines[-3] == "1.000 line 49"
    assert lines[-2:] == ["------", "ERROR: exit code: 2"]


def test_no_failure_no_report() -> None:
    p, _ = run("quiet", failing_build()[:5])
    assert p.failure_report() == ""


# ------------------------------------------------------------------ quiet, tty, auto


def test_quiet_prints_nothing() -> None:
    msgs = [
        *failing_build(),
        resp(warnings=[pb.VertexWarning(vertex="sha256:from", short=b"w")]),
    ]
    _, out = run("quiet", msgs, success=False)
    assert out == ""


def test_tty_renders_to_a_string_stream() -> None:
    p, out = run("tty", failing_build(), success=False, title="hello")
    assert p.mode == "tty"
    assert "[+] Building hello" in out
    final = out[out.rfind("[+] Building") :]  # the last, static rendering
    assert "(3/3)" in final
    assert "[internal] load build definition" in final
    assert "CACHED [1/3] FROM" in final
    assert "ERROR [2/3] RUN echo hi" in final
    assert "FINISHED" not in final


def test_tty_live_frame_shows_running_steps_and_their_output() -> None:
    out = io.StringIO()
    p = Progress("tty", stream=out)
    p._wall = lambda: T0 + 1.3  # our clock agrees with the daemon's
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN make", started=0.0)]))
    p.update(resp(statuses=[status("sha256:a", "transferring context:", 2_350_000, started=0.0)]))
    lines = b"".join(b"step %d\n" % i for i in range(10)) + b"\x1b[1mbold\x1b[0m partial"
    p.update(resp(logs=[log("sha256:a", 1.3, lines)]))
    from rich.console import Console

    console = Console(file=io.StringIO(), width=80, color_system=None)
    with console.capture() as cap:
        console.print(p._render(final=False))
    frame = cap.get()
    assert "[+] Building" in frame and "(0/1)" in frame
    assert " => [1/1] RUN make" in frame and "1.3s" in frame
    assert " => => transferring context: 2.35MB" in frame
    assert " => => # step 9" in frame and " => => # bold partial" in frame
    assert "step 4" not in frame  # only the last few lines
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN make", 0.0, 1.25)]))
    p.close(True)
    final = out.getvalue()
    final = final[final.rfind("[+] Building") :]
    assert "FINISHED" in final and "[1/1] RUN make" in final and "step 9" not in final


def test_tty_close_without_updates_prints_nothing() -> None:
    _, out = run("tty", [])
    assert out == ""


def test_auto_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Progress("auto", stream=io.StringIO()).mode == "plain"
    monkeypatch.setenv("TERM", "xterm-256color")
    assert Progress("auto", stream=Tty()).mode == "tty"
    monkeypatch.setenv("TERM", "dumb")
    assert Progress("auto", stream=Tty()).mode == "plain"
    with pytest.raises(ValueError):
        Progress("fancy")  # type: ignore[arg-type]


def test_running_time_is_clamped_when_the_daemon_clock_is_ahead() -> None:
    p = Progress("quiet")
    p._wall = lambda: T0  # we see a start 5 s in our future
    p.update(resp(vertexes=[vtx("sha256:a", "[1/1] RUN x", started=5.0)]))
    v = p.vertex("sha256:a")
    assert v is not None and v.duration == 0.0
    p.close(True)


def test_update_from_another_thread_while_closing() -> None:
    out = io.StringIO()
    p = Progress("plain", stream=out)
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            d = f"sha256:{i % 7}"
            p.update(resp(vertexes=[vtx(d, f"[{i}] RUN x", started=0.0)]))
            p.update(resp(logs=[log(d, 0.5, b"x\n")]))
            i += 1

    t = threading.Thread(target=feed)
    t.start()
    time.sleep(0.05)
    p.close(False)
    stop.set()
    t.join()
    size = len(out.getvalue())
    p.update(resp(logs=[log("sha256:0", 0.6, b"after close\n")]))
    assert len(out.getvalue()) == size


def test_format_bytes() -> None:
    assert format_bytes(0) == "0B"
    assert format_bytes(77) == "77B"
    assert format_bytes(2_350_000) == "2.35MB"
    assert format_bytes(1_020) == "1.02kB"
    assert format_bytes(3 * 10**18) == "3000.00PB"
