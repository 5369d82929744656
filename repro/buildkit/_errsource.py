"""Where in the Dockerfile a failed Solve failed: the source ranges BuildKit attaches.

BuildKit returns a failed Solve as a gRPC status whose details (trailer
``grpc-status-details-bin``, a ``google.rpc.Status``) hold ``Any`` messages; one of type
``errdefs.Source`` names the file (``info.filename``) and the line ranges of the failing
instruction. buildx prints those lines; so does repro. Only
the few fields needed are read, with a minimal protobuf wire reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# The type names BuildKit gives it: a protobuf message, or (with containerd's typeurl
# registry, as dockerd sends it) the same message as JSON.
_SOURCE_TYPES = ("moby.buildkit.v1.errdefs.Source", "github.com/moby/buildkit/errdefs.Source+json")


@dataclass(frozen=True)
class SourceRange:
    filename: str
    start: int  # 1-based lines, inclusive
    end: int


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, int value or bytes) for each field of a protobuf message."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield number, value
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("truncated field")
            yield number, data[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _line(position: bytes) -> int:
    for number, value in _fields(position):
        if number == 1 and isinstance(value, int):
            return value
    return 0


def source_ranges(status_details: bytes) -> list[SourceRange]:
    """The Dockerfile ranges in a serialized ``google.rpc.Status`` (empty if none)."""
    out: list[SourceRange] = []
    try:
        for number, any_msg in _fields(status_details):
            if number != 3 or not isinstance(any_msg, bytes):
                continue
            type_url, value = "", b""
            for n, v in _fields(any_msg):
                if n == 1 and isinstance(v, bytes):
                    type_url = v.decode("utf-8", "replace")
                elif n == 2 and isinstance(v, bytes):
                    value = v
            if type_url.endswith(_SOURCE_TYPES[1]):
                out.extend(_from_json(value))
                continue
            if not type_url.endswith(_SOURCE_TYPES[0]):
                continue
            filename = ""
            for n, v in _fields(value):
                if n == 1 and isinstance(v, bytes):  # SourceInfo
                    for m, w in _fields(v):
                        if m == 1 and isinstance(w, bytes):
                            filename = w.decode("utf-8", "replace")
                elif n == 2 and isinstance(v, bytes):  # Range
                    start = end = 0
                    for m, w in _fields(v):
                        if m == 1 and isinstance(w, bytes):
                            start = _line(w)
                        elif m == 2 and isinstance(w, bytes):
                            end = _line(w)
                    if start:
                        out.append(SourceRange(filename, start, max(end, start)))
    except ValueError:
        return out
    return out


def has_vertex(status_details: bytes) -> bool:
    """Whether the error names a build step (``errdefs.Vertex``): a step failed, as
    opposed to the frontend refusing the Dockerfile before any step ran."""
    try:
        for number, any_msg in _fields(status_details):
            if number == 3 and isinstance(any_msg, bytes):
                for n, v in _fields(any_msg):
                    if n == 1 and isinstance(v, bytes) and b"errdefs.Vertex" in v:
                        return True
    except ValueError:
        return False
    return False


def _from_json(value: bytes) -> list[SourceRange]:
    try:
        doc = json.loads(value)
        filename = str((doc.get("info") or {}).get("filename") or "")
        out = []
        for r in doc.get("ranges") or ():
            start = int((r.get("start") or {}).get("line") or 0)
            end = int((r.get("end") or {}).get("line") or 0)
            if start:
                out.append(SourceRange(filename, start, max(start, end)))
        return out
    except (ValueError, TypeError, AttributeError):
        return []


def snippet(
    lines: Sequence[str], ranges: Sequence[tuple[int, int]], name: str = "Dockerfile"
) -> str:
    """buildx's picture of the failing lines: ``name:N`` (the first range's start), a
    rule, the lines of every range marked ``>>>`` with one line of context around."""
    start = ranges[0][0]
    lo = min(a for a, _ in ranges)
    hi = max(b for _, b in ranges)
    out = [f"{name}:{start}", "-" * 20]
    for n in range(max(1, lo - 1), min(len(lines), hi + 1) + 1):
        mark = ">>>" if any(a <= n <= b for a, b in ranges) else "   "
        out.append(f" {n:>3} | {mark} {lines[n - 1]}".rstrip())
    out.append("-" * 20)
    return "\n".join(out)
