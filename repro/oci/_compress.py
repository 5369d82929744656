"""Layer compression: the one place that tells gzip, zstd and plain tar apart.

`uncompressed(raw, what)` is how every part of repro reads the tar stream inside a
layer blob (normalise, diff, the package-database reader): the compression is told
by the blob's magic number, not by its media type, because registries and
exporters disagree about media types but never about bytes. Errors in the
compressed data become one-line InputErrors naming `what`.

gzip is read with ISA-L (`isal`), about twice zlib's speed; the bytes out are the
same, and nothing repro writes is compressed with it, so no digest depends on it.
"""

from __future__ import annotations

import gzip
import io
from typing import IO, TYPE_CHECKING, Any, cast

from repro.errors import EnvironmentError_, InputError
from repro.oci._digest import Readable
from repro.oci._media import CHUNK_SIZE

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_UNSUPPORTED = ((b"BZh", "bzip2"), (b"\xfd7zX", "xz"))


def zstandard_module() -> Any:
    """The `zstandard` package (a dependency), or one line saying it is missing."""
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise EnvironmentError_(
            "zstd layers need the 'zstandard' package: pip install zstandard"
        ) from None
    return zstandard


def compression_of(head: bytes) -> str:
    """ "gzip", "zstd" or "none" for a blob starting with `head` (4 bytes are enough)."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] == ZSTD_MAGIC:
        return "zstd"
    for magic, name in _UNSUPPORTED:
        if head.startswith(magic):
            raise InputError(f"{name} layers are not supported (only gzip, zstd or plain tar)")
    return "none"


class _AsRaw(io.RawIOBase):
    """A RawIOBase over anything with `read(n)`, so it can be buffered and peeked.

    Closing it (as a buffer around it does when it is dropped) leaves the source
    open: the caller still reads it to the end, to have its digest checked."""

    def __init__(self, source: Readable) -> None:
        super().__init__()
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        readinto = getattr(self._source, "readinto", None)
        if readinto is not None:
            return int(readinto(buffer))
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Checked(io.RawIOBase):
    """The decompressed stream, with the codec's errors turned into InputError."""

    def __init__(self, inner: IO[bytes], compression: str, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._compression = compression
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            return int(self._inner.readinto(buffer))  # type: ignore[attr-defined]
        except EOFError:
            raise InputError(f"{self._what} is a truncated {self._compression} stream") from None
        except InputError:
            raise
        except Exception as e:  # gzip.BadGzipFile, zlib.error, zstandard.ZstdError
            if isinstance(e, OSError | ValueError) or type(e).__module__.startswith(
                ("zlib", "zstandard", "gzip", "isal")
            ):
                raise InputError(f"{self._what} is not valid {self._compression}: {e}") from None
            raise


def uncompressed(raw: Readable, what: str) -> tuple[IO[bytes], IO[bytes], str]:
    """The tar stream inside a layer blob read from `raw`.

    Returns (tar stream, buffered raw stream, compression). Read the raw stream to its
    end after the tar stream is done, so that a digest-checking `raw` sees every byte.
    """
    reader = io.BufferedReader(_AsRaw(raw), CHUNK_SIZE)
    compression = compression_of(reader.peek(4)[:4])
    buffered = cast(IO[bytes], reader)
    if compression == "none":
        return buffered, buffered, compression
    inner: IO[bytes]
    if compression == "gzip":
        try:
            from isal import igzip
        except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
            inner = cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
        else:
            inner = cast(IO[bytes], igzip.GzipFile(fileobj=buffered, mode="rb"))
    else:
        inner = cast(
            IO[bytes],
            zstandard_module()
            .ZstdDecompressor()
            .stream_reader(buffered, read_across_frames=True, closefd=False),
        )
    # Not buffered again: both decompressors buffer, and readinto passes straight through.
    return cast(IO[bytes], _Checked(inner, compression, what)), buffered, compression
