"""A fault-injecting HTTP proxy in front of the real registry, on 127.0.0.1 only.

Requests pass through to the upstream registry (``Host`` kept, so the upload URLs the
registry hands out point back at the proxy) unless a rule matches first:

- ``drop``: read part of the request body, then close the connection without an
  answer (the registry never sees that request: its upload stays where it was);
- ``cut``: forward the headers and half the body to the registry, then close both
  connections (the registry got part of the chunk: what it makes of that is its
  own business);
- ``status``: answer with a status code and headers (500, 429 with Retry-After,
  401 with a challenge) without forwarding;
- ``reset``: forward, send the answer's headers and half its body, then reset the
  connection (RST): a download cut mid-blob;
- ``stall``: hold the request ``delay`` seconds, then forward it (or, with
  ``status=0``, close the connection without an answer after the stall);
- ``corrupt``: forward, and flip bytes in the middle of the answer's body (same
  length, same headers): wrong bytes that only a digest check catches.

The proxy also fronts plain HTTP servers that are not registries (a package mirror):
``route`` maps a request path to an upstream base URL (``http://host[:port]/prefix``);
the request goes there with ``Host`` rewritten and the path appended to the prefix.

Each rule fires for a bounded number of matching requests (``times``; None: always),
optionally after letting ``skip`` matching requests through. Bodies are held in
memory: the proxy is for tests with blobs of a few MiB. Every request is logged as
(method, path, status or "drop").
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Rule:
    method: str
    path: str  # regular expression searched in the path
    action: str  # "drop", "cut", "status", "reset", "stall" or "corrupt"
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1
    skip: int = 0
    delay: float = 0.0  # "stall": seconds to hold the request
    seen: int = 0
    fired: int = 0

    def take(self, method: str, path: str) -> bool:
        if method != self.method or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (as the faults make them do) is not news."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    def __init__(self, upstream: str, route: Callable[[str], str] | None = None) -> None:
        self.upstream = upstream
        self.route = route
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, int | str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def statuses(self, method: str, pattern: str = "") -> list[int | str]:
        return [s for m, p, s in self.log if m == method and re.search(pattern, p)]

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.take(method, path):
                    return rule
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        rule = self._match(method, path.split("?", 1)[0])
        if rule is not None and rule.action == "drop":
            h.rfile.read(length // 2)
            self.log.append((method, path, "drop"))
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if rule is not None and rule.action == "cut":
            self._cut(h, method, path, length)
            return
        body = h.rfile.read(length) if length else b""
        if rule is not None and rule.action == "stall":
            time.sleep(rule.delay)
            if rule.status == 0:
                self.log.append((method, path, "stall"))
                self._hang_up(h, reset=False)
                return
            rule = None
        if rule is not None and rule.action == "status":
            payload = b'{"errors":[{"code":"INJECTED","message":"injected by the test proxy"}]}'
            h.send_response(rule.status)
            for key, value in rule.headers.items():
                h.send_header(key, value)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if method != "HEAD":
                h.wfile.write(payload)
            self.log.append((method, path, rule.status))
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        upstream, target = self.upstream, path
        if self.route is not None:
            base = urllib.parse.urlsplit(self.route(path))
            upstream, target = base.netloc, base.path.rstrip("/") + path
            headers = {k: v for k, v in headers.items() if k.lower() != "host"}
            headers["Host"] = base.netloc
        conn = http.client.HTTPConnection(upstream, timeout=60)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        action = rule.action if rule is not None else ""
        if action == "corrupt" and len(data) > 0:
            middle = len(data) // 2
            flipped = bytes(b ^ 0xFF for b in data[middle : middle + 16])
            data = data[:middle] + flipped + data[middle + 16 :]
        h.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP and key.lower() != "content-length":
                h.send_header(key, value)
        if method == "HEAD":
            h.send_header("Content-Length", response.getheader("Content-Length") or "0")
        else:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if action == "reset" and method != "HEAD":
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            self.log.append((method, path, "reset"))
            self._hang_up(h, reset=True)
            return
        if method != "HEAD":
            h.wfile.write(data)
        self.log.append((method, path, "corrupt" if action == "corrupt" else response.status))

    @staticmethod
    def _hang_up(h: BaseHTTPRequestHandler, *, reset: bool) -> None:
        """Close the client's connection: with an RST (SO_LINGER 0) when `reset`."""
        h.close_connection = True
        try:
            if reset:
                h.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _cut(self, h: BaseHTTPRequestHandler, method: str, path: str, length: int) -> None:
        upstream = socket.create_connection(tuple(self.upstream.rsplit(":", 1)), timeout=30)  # type: ignore[arg-type]
        try:
            head = f"{method} {path} HTTP/1.1\r\n"
            for key, value in h.headers.items():
                if key.lower() not in _HOP:
                    head += f"{key}: {value}\r\n"
            upstream.sendall((head + "Connection: close\r\n\r\n").encode("latin-1"))
            upstream.sendall(h.rfile.read(length // 2))
            time.sleep(0.2)  # let the registry write what it got
        finally:
            upstream.close()
        self.log.append((method, path, "cut"))
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
