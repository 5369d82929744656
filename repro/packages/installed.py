"""What an image already has installed: its dpkg or apk package database.

``read_layers(layers)`` walks an image's layers from the top down and finds the
package database the running container would see (whiteouts and opaque directories
applied): Debian's ``var/lib/dpkg/status`` plus the one-file-per-package
``var/lib/dpkg/status.d/`` that distroless images use, or Alpine's
``lib/apk/db/installed``. It stops at the first layer (from the top) that holds
``status`` or ``installed``, so only the layers above the database are read.

The result records the digest of the layer that held the database, so a lock can
say which database its closure was resolved against, and is cached on disk by the
image's layer digests (``$XDG_CACHE_HOME/repro/installed/``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from repro.cachedir import touch
from repro.errors import (
    DigestMismatch,
    NoPackageDatabase,  # noqa: F401 - defined in errors, re-exported here
    TransferInterrupted,
)

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
MAX_DB = 256 * 1024 * 1024  # a package database larger than this is not believed
CACHE_VERSION = 1
READ_TRIES = 3  # reads of a base's layers from a registry, when one arrives cut or garbled


@dataclass(frozen=True)
class InstalledPackage:
    name: str
    version: str
    architecture: str = ""
    essential: bool = False
    provides: str = ""  # dpkg: "a, b (= 1)"; apk: "a=1 b"
    depends: str = ""  # dpkg: Pre-Depends and Depends joined; apk: the D: field
    breaks: str = ""  # dpkg: Breaks and Conflicts joined
    source: str = ""

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class InstalledDb:
    """A package database: the packages in it and where it came from."""

    kind: str  # "dpkg" or "apk"
    packages: Mapping[str, InstalledPackage] = field(default_factory=dict)
    layer: str = ""  # digest of the layer that holds the database
    digest: str = ""  # sha256 of the database's bytes as read

    def get(self, name: str) -> InstalledPackage | None:
        return self.packages.get(name)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "layer": self.layer,
            "digest": self.digest,
            "packages": [p.to_json() for p in self.packages.values()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> InstalledDb:
        packages = {}
        for raw in data.get("packages", []):  # type: ignore[attr-defined]
            pkg = InstalledPackage(**raw)
            packages[pkg.name] = pkg
        return cls(
            kind=str(data["kind"]),
            packages=packages,
            layer=str(data.get("layer", "")),
            digest=str(data.get("digest", "")),
        )


# --- parsing ------------------------------------------------------------------------


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    last = ""
    for line in text.split("\n"):
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, ""
            continue
        if line[0] in " \t":
            if last:
                fields[last] += "\n" + line
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"a line without a field name: {line[:60]!r}")
        last = key
        fields[key] = value.strip()
    if fields:
        yield fields


def parse_dpkg_status(text: str, label: str = DPKG_STATUS) -> dict[str, InstalledPackage]:
    """The installed packages of a dpkg status file (``Status: … installed``)."""
    out: dict[str, InstalledPackage] = {}
    try:
        for f in _stanzas(text):
            status = f.get("Status", "install ok installed").split()
            if len(status) != 3 or status[2] not in ("installed", "half-configured"):
                continue
            name, version = f.get("Package", ""), f.get("Version", "")
            if not name or not version:
                raise ValueError("a stanza without Package or Version")
            depends = ", ".join(x for x in (f.get("Pre-Depends"), f.get("Depends")) if x)
            breaks = ", ".join(x for x in (f.get("Breaks"), f.get("Conflicts")) if x)
            out[name] = InstalledPackage(
                name=name,
                version=version,
                architecture=f.get("Architecture", ""),
                essential=f.get("Essential", "") == "yes",
                provides=f.get("Provides", ""),
                depends=depends,
                breaks=breaks,
                source=f.get("Source", ""),
            )
    except ValueError as e:
        raise NoPackageDatabase(f"{label} is corrupt: {e}") from None
    return out


def parse_apk_installed(text: str, label: str = APK_INSTALLED) -> dict[str, InstalledPackage]:
    out: dict[str, InstalledPackage] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) >= 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:]
        if not fields:
            continue
        name, version = fields.get("P", ""), fields.get("V", "")
        if not name or not version:
            raise NoPackageDatabase(f"{label} is corrupt: a package without P: or V:")
        out[name] = InstalledPackage(
            name=name,
            version=version,
            architecture=fields.get("A", ""),
            provides=fields.get("p", ""),
            depends=fields.get("D", ""),
            source=fields.get("o", ""),
        )
    return out


# --- reading layers ------------------------------------------------------------------


LayerOpener = Callable[[], AbstractContextManager[IO[bytes]]]


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def read_layers(layers: Sequence[tuple[str, LayerOpener]]) -> InstalledDb | None:
    """The package database of an image whose layers are (digest, opener), bottom first.

    None when no layer holds one. Raises NoPackageDatabase when the database is there
    but unreadable.
    """
    from repro.diff import open_tar

    hidden: set[str] = set()  # paths deleted by a layer above
    opaque: set[str] = set()  # directories made opaque by a layer above
    status_d: dict[str, bytes] = {}

    def visible(path: str) -> bool:
        if path in hidden:
            return False
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in hidden or parent in opaque:
                return False
        return True

    for digest, opener in reversed(layers):
        found: tuple[str, bytes] | None = None
        layer_hidden: set[str] = set()
        layer_opaque: set[str] = set()
        with opener() as stream, open_tar(stream, f"layer {digest[:19]}") as tar:
            for member in tar:
                path = _clean(member.name)
                base = path.rsplit("/", 1)[-1]
                parent = path[: -len(base)].rstrip("/")
                if base == ".wh..wh..opq":
                    layer_opaque.add(parent)
                    continue
                if base.startswith(".wh."):
                    layer_hidden.add(f"{parent}/{base[4:]}" if parent else base[4:])
                    continue
                wanted = path in (DPKG_STATUS, APK_INSTALLED) or (
                    path.startswith(DPKG_STATUS_D) and "/" not in path[len(DPKG_STATUS_D) :]
                )
                if not wanted or not member.isfile() or not visible(path):
                    continue
                if member.size > MAX_DB:
                    raise NoPackageDatabase(f"{path} in layer {digest[:19]} is too large")
                data = b"".join(bytes(c) for c in tar.chunks())
                if path.startswith(DPKG_STATUS_D):
                    status_d.setdefault(path, data)
                else:
                    found = (path, data)
        if found is not None:
            path, data = found
            return _make_db(path, data, digest, status_d)
        hidden |= layer_hidden
        opaque |= layer_opaque
    if status_d:
        return _make_db(DPKG_STATUS, b"", "", status_d)
    return None


def _make_db(path: str, data: bytes, layer: str, status_d: Mapping[str, bytes]) -> InstalledDb:
    h = hashlib.sha256(data)
    for name in sorted(status_d):
        h.update(b"\n" + name.encode() + b"\n" + status_d[name])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoPackageDatabase(f"{path} is corrupt: not UTF-8") from None
    if path == APK_INSTALLED:
        packages = parse_apk_installed(text, path)
        kind = "apk"
    else:
        packages = parse_dpkg_status(text, path)
        for name in sorted(status_d):
            try:
                extra = status_d[name].decode("utf-8")
            except UnicodeDecodeError:
                raise NoPackageDatabase(f"{name} is corrupt: not UTF-8") from None
            packages.update(parse_dpkg_status(extra, name))
        kind = "dpkg"
    return InstalledDb(kind, packages, layer, "sha256:" + h.hexdigest())


# --- from a registry or a layout, cached ------------------------------------------------


def _cache_file(layer_digests: Iterable[str]) -> Path:
    from repro.packages import cache_dir

    key = hashlib.sha256("\n".join(layer_digests).encode()).hexdigest()
    return cache_dir().parent / "installed" / f"{key}.json"


def _cached(layer_digests: Sequence[str]) -> tuple[bool, InstalledDb | None]:
    file = _cache_file(layer_digests)
    try:
        data = json.loads(file.read_text())
        if data.get("version") != CACHE_VERSION:
            return False, None
        db = data.get("db")
        found = True, (InstalledDb.from_json(db) if db else None)
    except (OSError, ValueError, KeyError, TypeError):
        return False, None
    touch(file)
    return found


def _store(layer_digests: Sequence[str], db: InstalledDb | None) -> None:
    from repro.oci import atomic_write_bytes

    file = _cache_file(layer_digests)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": CACHE_VERSION, "db": db.to_json() if db else None}
        atomic_write_bytes(file, json.dumps(doc, sort_keys=True).encode(), durable=False)
    except OSError:
        pass  # a cache that cannot be written is only slower


def from_registry(client: object, image: str, manifest_digest: str) -> InstalledDb | None:
    """The package database of `image@manifest_digest` (a platform manifest), read
    through the registry client (every blob checked against its digest)."""
    from contextlib import contextmanager

    from repro import oci

    ref = f"{image}@{manifest_digest}"
    data, _media_type, _digest = client.get_manifest(ref)  # type: ignore[attr-defined]
    doc = oci.parse_json_document(data, f"manifest {ref}")
    layers = [
        oci.Descriptor.from_json(d, f"manifest {ref} layers[{i}]")
        for i, d in enumerate(doc.get("layers") or [])
    ]
    digests = [d.digest for d in layers]
    hit, db = _cached(digests)
    if hit:
        return db

    def opener(descriptor: oci.Descriptor) -> LayerOpener:
        @contextmanager
        def open_layer() -> Iterator[IO[bytes]]:
            # Streamed: the download runs in a thread into a pipe that the tar reader
            # drains, so fetching and decompressing overlap. The client checks the
            # digest when the blob ends; its error is raised here before anything
            # read from the layer is used.
            read_fd, write_fd = os.pipe()
            reader = os.fdopen(read_fd, "rb", buffering=1 << 20)
            writer = os.fdopen(write_fd, "wb", buffering=1 << 20)
            failed: list[BaseException] = []

            def pump() -> None:
                try:
                    client.get_blob(image, descriptor.digest, writer, descriptor.size)  # type: ignore[attr-defined]
                except BaseException as exc:  # noqa: BLE001 - re-raised by the reader
                    failed.append(exc)
                finally:
                    with contextlib.suppress(OSError):
                        writer.close()

            thread = threading.Thread(target=pump, daemon=True)
            thread.start()
            try:
                yield reader
            except Exception:
                # The reader stopped early. Drain the pipe so that the download ends
                # and checks its digest: wrong bytes (which the reader may see as a
                # corrupt stream) are then reported as what they are, not as a broken
                # pipe.
                with contextlib.suppress(OSError, ValueError):
                    while reader.read(1 << 20):
                        pass
                reader.close()
                thread.join()
                if failed:  # what the reader saw was a symptom of the download's error
                    raise failed[0] from None
                raise
            except BaseException:
                reader.close()
                thread.join()
                raise
            reader.close()
            thread.join()
            if failed:
                raise failed[0]

        return open_layer

    # A layer cut off or garbled on the way cannot be fetched again inside the
    # stream (its bytes went to the reader): the whole read is done again, bounded.
    for attempt in range(1, READ_TRIES + 1):
        try:
            db = read_layers([(d.digest, opener(d)) for d in layers])
            break
        except (DigestMismatch, TransferInterrupted):
            if attempt == READ_TRIES:
                raise
    _store(digests, db)
    return db


def from_layout(layout: object, layers: Sequence[object]) -> InstalledDb | None:
    """The package database of an image in an OCI layout (`layers`: its descriptors)."""
    from contextlib import contextmanager

    def opener(descriptor: object) -> LayerOpener:
        @contextmanager
        def open_layer() -> Iterator[IO[bytes]]:
            size = descriptor.size  # type: ignore[attr-defined]
            with layout.open_blob(descriptor.digest, size) as reader:  # type: ignore[attr-defined]
                yield reader

        return open_layer

    return read_layers([(d.digest, opener(d)) for d in layers])  # type: ignore[attr-defined]
