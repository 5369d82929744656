"""Fetching locked packages: retries, checksums, a mirror that is down or lost a file.

A loopback HTTP server plays the mirror; the package is a few random bytes whose
sha256 stands in the lock.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from repro.errors import DigestMismatch
from repro.packages import download
from repro.packages.download import PackageGone, fetch_pinned
from repro.packages.fetch import MirrorError
from repro.vault import NotInVault, Source, obtain

DATA = os.urandom(5000)
SHA = hashlib.sha256(DATA).hexdigest()


class Server:
    def __init__(self) -> None:
        self.script: list[tuple[int, bytes, dict[str, str]]] = []
        self.hits = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.hits += 1
                status, body, headers = server.script.pop(0) if server.script else (200, DATA, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF", 0.0)
    s = Server()
    yield s
    s.httpd.shutdown()


def test_a_package_is_fetched_checked_and_cached(server: Server) -> None:
    path = fetch_pinned(f"{server.url}/pool/x.deb", SHA, len(DATA))
    assert path.read_bytes() == DATA and server.hits == 1
    assert fetch_pinned(f"{server.url}/pool/x.deb", SHA, len(DATA)) == path
    assert server.hits == 1  # from the cache, re-hashed


def test_500_and_429_are_retried(server: Server) -> None:
    server.script = [(500, b"", {}), (429, b"", {"Retry-After": "0"})]
    assert fetch_pinned(f"{server.url}/p.deb", SHA, len(DATA)).read_bytes() == DATA
    assert server.hits == 3


def test_wrong_bytes_are_refused_and_not_cached(server: Server) -> None:
    server.script = [(200, b"evil" * 1250, {})]
    with pytest.raises(DigestMismatch, match="do not match the locked sha256"):
        fetch_pinned(f"{server.url}/p.deb", SHA, len(DATA))
    pool = download.pool_dir()
    assert not pool.exists() or not any(pool.iterdir())


def test_a_lost_file_is_package_gone(server: Server) -> None:
    server.script = [(404, b"", {})]
    with pytest.raises(PackageGone, match="no longer on the mirror"):
        fetch_pinned(f"{server.url}/pool/main/h/hello/hello.deb", SHA, len(DATA), "apt:hello")


def test_a_mirror_that_stays_down_is_one_line_naming_the_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF", 0.0)
    pin = {
        "name": "hello",
        "version": "2.10-3",
        "sha256": SHA,
        "size": len(DATA),
        "filename": "pool/main/h/hello/hello_2.10-3_amd64.deb",
        "origin": "bookworm/main",
    }
    source = Source("apt", {"bookworm": "http://127.0.0.1:9"}, vault="", client=None)
    with pytest.raises(NotInVault) as err:
        obtain(pin, source)
    message = str(err.value)
    assert "\n" not in message and "apt:hello 2.10-3" in message
    assert "mirror unreachable" in message and "repro vault push" in message
    with pytest.raises(MirrorError):
        fetch_pinned("http://127.0.0.1:9/x.deb", SHA, len(DATA))
