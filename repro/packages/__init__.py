"""Distribution package indexes and dependency closures (Debian apt, Alpine apk).

Pure logic over index text: parse, compare versions, resolve the full closure of a
set of requested names. Fetching the indexes from a mirror lives in ``fetch``.
"""

from repro.packages._common import Closure, Pin, ResolveError, cache_dir

__all__ = ["Closure", "Pin", "ResolveError", "cache_dir"]
