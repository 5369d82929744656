"""Digests: parsing them, hashing streams, and readers that check what they read."""

from __future__ import annotations

import hashlib
import io
from typing import IO, TYPE_CHECKING, Protocol

from repro.errors import DigestMismatch, InputError
from repro.oci._media import CHUNK_SIZE

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


# The digest algorithms accepted, with the length of their hex part.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = frozenset("0123456789abcdef")


class Readable(Protocol):
    """Anything with a binary `read(n)`: a file, a socket file, a chunk reader."""

    def read(self, n: int = -1, /) -> bytes: ...


# --- digests -----------------------------------------------------------------


def sha256_digest(data: ReadableBuffer) -> str:
    """The `sha256:<hex>` digest of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> bool:
    """Whether `value` is a well-formed digest of an algorithm repro supports."""
    if not isinstance(value, str):
        return False
    algorithm, sep, hex_part = value.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    return bool(sep) and length == len(hex_part) and set(hex_part) <= _HEX


def parse_digest(digest: str) -> tuple[str, str]:
    """Split a digest into (algorithm, hex); InputError if it is malformed."""
    if not is_digest(digest):
        raise InputError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    algorithm, _, hex_part = digest.partition(":")
    return algorithm, hex_part


def short_digest(digest: str) -> str:
    """A digest cut short for messages: `sha256:0123456789ab`."""
    return digest[: digest.find(":") + 13] if ":" in digest else digest[:12]


class Hasher:
    """Incremental digest and byte count of a stream, checked at the end."""

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _DIGEST_HEX_LENGTHS:
            raise InputError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.size = 0
        self._hash = hashlib.new(algorithm)

    @classmethod
    def for_digest(cls, digest: str) -> Hasher:
        """A hasher using the algorithm of `digest`."""
        return cls(parse_digest(digest)[0])

    def update(self, data: ReadableBuffer) -> None:
        view = memoryview(data)
        self._hash.update(view)
        self.size += view.nbytes

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def check(self, expected_digest: str, expected_size: int | None, what: str) -> None:
        """Raise DigestMismatch unless the bytes seen match the digest (and size)."""
        if expected_size is not None and self.size != expected_size:
            raise DigestMismatch(
                f"{what} has {self.size} bytes, expected {expected_size} ({expected_digest})"
            )
        actual = self.digest()
        if actual != expected_digest:
            raise DigestMismatch(
                f"{what} does not match its digest: expected {expected_digest}, got {actual}"
            )


def hash_stream(stream: Readable, algorithm: str = "sha256") -> tuple[str, int]:
    """Digest and size of everything left in `stream`, read in chunks."""
    hasher = Hasher(algorithm)
    while chunk := stream.read(CHUNK_SIZE):
        hasher.update(chunk)
    return hasher.digest(), hasher.size


class VerifyingReader(io.RawIOBase):
    """A read-only stream that checks digest and size when its end is reached.

    Reading past the expected size, or reaching EOF with the wrong digest or
    size, raises DigestMismatch, so a consumer that reads to the end never
    silently accepts corrupt bytes.
    """

    def __init__(
        self, raw: IO[bytes], digest: str, size: int | None, what: str, *, close_raw: bool = True
    ) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._close_raw = close_raw
        self._hasher = Hasher.for_digest(digest)
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        if not data:
            self._verify()
            return 0
        view[: len(data)] = data
        self._hasher.update(data)
        if self._size is not None and self._hasher.size > self._size:
            raise DigestMismatch(
                f"{self._what} is longer than the {self._size} bytes its descriptor says"
            )
        return len(data)

    def verify_eof(self) -> None:
        """Check that nothing is left to read and that digest and size match."""
        if self.read(1):
            raise DigestMismatch(f"{self._what} is longer than the {self._size} bytes expected")
        self._verify()

    def _verify(self) -> None:
        if not self.verified:
            self._hasher.check(self._digest, self._size, self._what)
            self.verified = True

    def close(self) -> None:
        if not self.closed and self._close_raw:
            self._raw.close()
        super().close()
