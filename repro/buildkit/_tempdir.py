"""Private temporary directories (for unix sockets) that go away with the process.

A build's session and gRPC bridge each listen on a socket in a directory of their
own, removed when they close. When Ctrl-C ends the process while a build runs in
another thread (`repro verify`'s two builds, `--jobs`), that thread's clean-up never
runs; the directories are then removed at interpreter exit instead.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading

_live: set[str] = set()
_lock = threading.Lock()


def private_dir(prefix: str) -> str:
    """A new temporary directory, removed by `release` or at the latest at exit."""
    path = tempfile.mkdtemp(prefix=prefix)
    with _lock:
        _live.add(path)
    return path


def release(path: str) -> None:
    with _lock:
        _live.discard(path)
    shutil.rmtree(path, ignore_errors=True)


@atexit.register
def _release_all() -> None:
    with _lock:
        paths = list(_live)
        _live.clear()
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
