"""The package vault: a recipe still builds after its mirror drops a locked version.

The mirror is a loopback proxy in front of this machine's real Debian mirror (so the
archive's own signatures and hashes hold) that can be told to lose a pool file, as
mirrors do when a point release replaces a version. Three local caches stand for
three machines. The Dockerfile installs from the `repro-apt` context, which repro
fills from the checked cache, the mirror, or the vault.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from repro.config import mirror_url

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent

DOCKERFILE = """FROM {base}
RUN --mount=type=bind,from=repro-apt,source=tools,target=/tmp/repro-apt \\
    apt-get install -y -q --no-install-recommends /tmp/repro-apt/*.deb \\
 && rm -rf /var/cache/apt/* /var/log/* /var/cache/ldconfig/aux-cache \\
           /var/lib/dpkg/*-old /var/cache/debconf/*-old
"""


class Mirror:
    """Forwards to the real mirrors; paths in `lost` answer 404."""

    def __init__(self) -> None:
        self.upstreams = [
            mirror_url("apt", suite="bookworm", components=["main"]),
            mirror_url("apt", suite="bookworm-security", components=["main"]),
        ]
        self.lost: set[str] = set()
        self.client = httpx.Client(timeout=120, follow_redirects=True)
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.lstrip("/")
                if any(path.endswith(lost) for lost in mirror.lost):
                    self.send_error(404)
                    return
                for upstream in mirror.upstreams:
                    response = mirror.client.get(f"{upstream}/{path}")
                    if response.status_code == 200:
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(response.content)))
                        self.end_headers()
                        self.wfile.write(response.content)
                        return
                self.send_error(404)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.client.close()


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    m = Mirror()
    yield m
    m.close()


def run(
    *args: str, cache: Path, mirror: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "REPRO_MIRROR_APT": mirror}
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_dropped_version_builds_from_the_vault_and_offline(
    tmp_path: Path, mirror: Mirror, registry: str, updated_base: str
) -> None:
    base = updated_base
    recipes = tmp_path / "recipes"
    (recipes / "hi").mkdir(parents=True)
    vault_ns = f"{registry}/repro-test-vault-{uuid.uuid4().hex[:8]}"
    (recipes / "repro.toml").write_text(f'registry = "{vault_ns}"\n')
    (recipes / "hi" / "recipe.toml").write_text(
        f'source_date_epoch = 1735689600\nbases = ["{base}"]\n'
        '[packages.apt.tools]\nrelease = "bookworm"\npackages = ["hello"]\n'
    )
    (recipes / "hi" / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    a, b, c = (tmp_path / f"cache-{x}" for x in "abc")
    common = ("--recipes-dir", str(recipes))

    r = run("lock", *common, "hi", cache=a, mirror=mirror.url)
    assert r.returncode == 0, r.stderr
    lock = (recipes / "hi" / "repro.lock").read_text()
    assert "bookworm-updates" in lock  # release over a named mirror: release + -updates
    out = tmp_path / "out"
    r = run("build", *common, "hi", "-o", f"oci:{out}", "--json", cache=a, mirror=mirror.url)
    assert r.returncode == 0, r.stderr[-3000:]
    digest = json.loads(r.stdout)[0]["digest"]

    # The mirror drops hello's version; a machine without it cached cannot build.
    pool = next(line.split('"')[1] for line in lock.splitlines() if "/hello_" in line)
    mirror.lost.add(pool)
    r = run("build", *common, "hi", "-o", f"oci:{out}", cache=b, mirror=mirror.url)
    assert r.returncode == 2, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "apt:hello" in line and "no longer in bookworm" in line, line
    assert "repro vault push" in line and "repro lock --update" in line, line

    # The machine that has it pushes the vault (a second push uploads nothing) ...
    r = run("vault", "push", *common, "hi", "--json", cache=a, mirror=mirror.url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["uploaded"] == 1
    r = run("vault", "push", *common, "hi", "--json", cache=a, mirror=mirror.url)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["uploaded"] == 0, r.stderr

    # ... and the other builds the same digest from the vault, then offline with the
    # mirror unreachable and an empty cache.
    r = run("build", *common, "hi", "-o", f"oci:{out}", "--json", cache=b, mirror=mirror.url)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)[0]["digest"] == digest
    dead = "http://127.0.0.1:9"
    r = run("build", *common, "hi", "-o", f"oci:{out}", "--json", "--offline", cache=c, mirror=dead)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)[0]["digest"] == digest
    # verify too: both builds offline, from a fresh cache, the vault alone
    r = run("verify", *common, "hi", "--offline", "--json", cache=tmp_path / "cache-d", mirror=dead)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)[0]
    assert result["verdict"] == "identical" and result["digest1"] == digest
