"""A small gRPC server over one HTTP/2 connection, for BuildKit's session callbacks.

Why not grpcio's server: its synchronous server waits for a completion event after
every streamed message (150-250 µs each), and fsutil's file sync needs at least
three messages per file, so a 10,000-file context took three times as long as
buildx. Here each message is framed into the connection's send buffer and written
at once; flow control is HTTP/2's own. The framing and state machine come from the
``h2`` library (python-hyper); this module only maps gRPC onto it:

- a request is HEADERS (``:path /pkg.Service/Method``, metadata) then DATA frames
  carrying length-prefixed messages (1 byte flag, 4 bytes big-endian length);
- a response is HEADERS (``:status 200``), DATA messages, then trailers
  (``grpc-status``, ``grpc-message``) ending the stream.

It serves exactly one connection: the socket Docker's ``/session`` upgrade hands
over, or one accepted on a private unix socket (the Control.Session tunnel, tests).
Each call runs its handler in its own thread; a reader thread feeds the h2 state
machine. Compressed messages are refused (the daemon never sends them).
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

# gRPC status codes used here
OK = 0
CANCELLED = 1
UNKNOWN = 2
NOT_FOUND = 5
INTERNAL = 13
UNIMPLEMENTED = 12

RECEIVE_WINDOW = 16 * 1024 * 1024
MAX_MESSAGE = 64 * 1024 * 1024


class GrpcAbort(Exception):
    """Raised by a handler to end its call with a gRPC status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# A unary handler: (request bytes, metadata) -> response bytes.
Unary = Callable[[bytes, Mapping[str, list[str]]], bytes]
# A streaming handler: (incoming messages, metadata, send) -> None.
Streaming = Callable[[Iterator[bytes], Mapping[str, list[str]], Callable[[bytes], None]], None]


@dataclass
class Method:
    unary: Unary | None = None
    streaming: Streaming | None = None


class _Call:
    def __init__(self, stream_id: int, path: str, metadata: dict[str, list[str]]):
        self.stream_id = stream_id
        self.path = path
        self.metadata = metadata
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.buffer = bytearray()
        self.headers_sent = False
        self.closed = False  # reset by the peer or finished by us

    def messages(self) -> Iterator[bytes]:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            yield item


class ConnectionClosed(Exception):
    pass


class H2GrpcConnection:
    """Serves gRPC calls on one connected socket until the peer goes away."""

    def __init__(
        self,
        sock: socket.socket,
        methods: Mapping[str, Method],
        initial: bytes = b"",
        on_error: Callable[[str], None] | None = None,
    ):
        self.sock = sock
        self.methods = methods
        self.on_error = on_error
        self._initial = initial
        config = h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False
        )
        self.conn = h2.connection.H2Connection(config=config)
        self._state = threading.Condition()  # guards self.conn and the calls
        # All socket writes happen in one writer thread: callers only frame messages
        # into h2's buffer and wake it, so messages that pile up while it writes go out
        # together in one sendall instead of one system call (and lock hand-off) each.
        self._pending = threading.Event()
        self._writer = threading.Thread(
            target=self._write_loop, name="repro-h2-writer", daemon=True
        )
        self._calls: dict[int, _Call] = {}
        self._closed = False

    # -- running -------------------------------------------------------------------

    def serve(self) -> None:
        """Read and dispatch until the connection ends (call in a thread)."""
        try:
            with self._state:
                # Our settings go in the very first SETTINGS frame and count from the
                # start: h2 applies a changed max frame size only from the next
                # receive_data call after the peer's ACK, so a later update_settings
                # fails when the ACK and a larger frame arrive in one read.
                self.conn.local_settings = h2.settings.Settings(
                    client=False,
                    initial_values={
                        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                        h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20,
                        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
                    },
                )
                self.conn.max_inbound_frame_size = 1 << 20
                self.conn.initiate_connection()
                self.conn.increment_flow_control_window(RECEIVE_WINDOW)
            self._writer.start()
            self._flush()
            buffer = bytearray(256 * 1024)
            view = memoryview(buffer)
            data = self._initial
            while True:
                if data:
                    self._receive(data)
                n = self.sock.recv_into(buffer)
                if not n:
                    break
                data = bytes(view[:n])
        except (OSError, ConnectionClosed, h2.exceptions.ProtocolError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        with self._state:
            if self._closed:
                return
            self._closed = True
            for call in self._calls.values():
                call.closed = True
                call.inbox.put(None)
            self._state.notify_all()
        self._pending.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _flush(self) -> None:
        """Ask the writer thread to send what h2 has buffered."""
        self._pending.set()

    def _write_loop(self) -> None:
        try:
            while True:
                self._pending.wait()
                self._pending.clear()
                with self._state:
                    out = self.conn.data_to_send()
                    closed = self._closed
                if out:
                    self.sock.sendall(out)
                if closed:
                    return
        except OSError:
            self.close()

    # -- incoming ------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        with self._state:
            events = self.conn.receive_data(data)
            start: list[_Call] = []
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    start.append(self._new_call(event))
                elif isinstance(event, h2.events.DataReceived):
                    self._data(event)
                elif isinstance(event, h2.events.StreamEnded):
                    call = self._calls.get(event.stream_id)
                    if call is not None:
                        call.inbox.put(None)
                elif isinstance(event, h2.events.StreamReset):
                    call = self._calls.pop(event.stream_id, None)
                    if call is not None:
                        call.closed = True
                        call.inbox.put(None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ConnectionClosed("peer closed the connection")
            self._state.notify_all()  # window updates, settings, resets
        self._flush()
        for call in start:
            threading.Thread(
                target=self._run_call, args=(call,), name="repro-h2-call", daemon=True
            ).start()

    def _new_call(self, event: h2.events.RequestReceived) -> _Call:
        path = ""
        metadata: dict[str, list[str]] = {}
        for name, value in event.headers or []:
            key = name.decode() if isinstance(name, bytes) else name
            val = value.decode() if isinstance(value, bytes) else value
            if key == ":path":
                path = val
            elif not key.startswith(":"):
                metadata.setdefault(key.lower(), []).append(val)
        call = _Call(event.stream_id, path, metadata)
        self._calls[event.stream_id] = call
        return call

    def _data(self, event: h2.events.DataReceived) -> None:
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        call = self._calls.get(event.stream_id)
        if call is None:
            return
        buf = call.buffer
        buf += event.data
        while len(buf) >= 5:
            if buf[0] != 0:
                self._reset(call, "compressed gRPC messages are not supported")
                return
            length = int.from_bytes(buf[1:5], "big")
            if length > MAX_MESSAGE:
                self._reset(call, f"message of {length} bytes is over the limit")
                return
            if len(buf) < 5 + length:
                break
            call.inbox.put(bytes(buf[5 : 5 + length]))
            del buf[: 5 + length]

    def _reset(self, call: _Call, why: str) -> None:
        if self.on_error:
            self.on_error(why)
        call.closed = True
        call.inbox.put(None)
        self.conn.reset_stream(call.stream_id, error_code=2)
        self._calls.pop(call.stream_id, None)

    # -- outgoing ------------------------------------------------------------------

    def _headers(self, call: _Call) -> None:
        if not call.headers_sent:
            self.conn.send_headers(
                call.stream_id, [(":status", "200"), ("content-type", "application/grpc")]
            )
            call.headers_sent = True

    def send_message(self, call: _Call, payload: bytes) -> None:
        data = memoryview(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        while data:
            with self._state:
                if call.closed or self._closed:
                    raise ConnectionClosed("the call was cancelled")
                self._headers(call)
                window = min(
                    self.conn.local_flow_control_window(call.stream_id),
                    self.conn.max_outbound_frame_size,
                )
                if window <= 0:
                    self._state.wait(timeout=1.0)
                    continue
                chunk = data[:window]
                self.conn.send_data(call.stream_id, chunk.tobytes())
                data = data[window:]
            self._flush()

    def _finish(self, call: _Call, code: int, message: str = "") -> None:
        with self._state:
            if call.closed or self._closed:
                return
            call.closed = True
            self._calls.pop(call.stream_id, None)
            trailers = [("grpc-status", str(code))]
            if message:
                trailers.append(("grpc-message", quote(message, safe=" ")))
            try:
                if not call.headers_sent:
                    # trailers-only response
                    self.conn.send_headers(
                        call.stream_id,
                        [(":status", "200"), ("content-type", "application/grpc"), *trailers],
                        end_stream=True,
                    )
                else:
                    self.conn.send_headers(call.stream_id, trailers, end_stream=True)
            except h2.exceptions.StreamClosedError:
                return
        self._flush()

    def _run_call(self, call: _Call) -> None:
        method = self.methods.get(call.path)
        try:
            if method is None:
                raise GrpcAbort(UNIMPLEMENTED, f"unknown method {call.path}")
            if method.unary is not None:
                request = next(call.messages(), b"")
                response = method.unary(request, call.metadata)
                self.send_message(call, response)
            elif method.streaming is not None:
                method.streaming(
                    call.messages(), call.metadata, lambda b: self.send_message(call, b)
                )
            self._finish(call, OK)
        except GrpcAbort as abort:
            self._finish(call, abort.code, abort.message)
        except ConnectionClosed:
            pass
        except Exception as exc:  # reported to the daemon as INTERNAL and to the build
            if self.on_error:
                self.on_error(f"{call.path}: {exc}")
            self._finish(call, INTERNAL, str(exc))


def serve_in_thread(conn: H2GrpcConnection) -> threading.Thread:
    thread = threading.Thread(target=conn.serve, name="repro-h2-reader", daemon=True)
    thread.start()
    return thread


def metadata_first(md: Mapping[str, list[str]], key: str) -> str:
    values = md.get(key) or [""]
    return values[0]
