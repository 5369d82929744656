"""Tests for repro.oci: digests, descriptors, layouts, safe archives, deterministic archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.errors import DigestMismatch, InputError
from repro.oci import (
    ANNOTATION_DOCKER_REFERENCE_TYPE,
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Hasher,
    OCILayout,
    Platform,
    VerifyingReader,
    atomic_write_bytes,
    canonical_json,
    extract_oci_archive,
    hash_stream,
    is_digest,
    load_image,
    parse_digest,
    sha256_digest,
    write_oci_archive,
)

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- helpers ---


def add_image(
    layout: OCILayout, layer: bytes, arch: str = "amd64", annotations: dict[str, str] | None = None
) -> Descriptor:
    """Write a config, one layer and a manifest into a layout; return the manifest descriptor."""
    layer_desc = layout.write_blob(layer, MEDIA_TYPE_OCI_LAYER_GZIP)
    config = canonical_json({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}})
    config_desc = layout.write_blob(config, MEDIA_TYPE_OCI_CONFIG)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer_desc.to_json()],
        }
    )
    desc = layout.write_blob(manifest, MEDIA_TYPE_OCI_MANIFEST)
    desc.platform = Platform(arch, "linux")
    desc.annotations = dict(annotations or {})
    return desc


def single_image_layout(path: Path, layer: bytes = b"layer bytes") -> tuple[OCILayout, Descriptor]:
    layout = OCILayout.create(path)
    desc = add_image(layout, layer)
    desc.annotations = {ANNOTATION_REF_NAME: "v1"}
    layout.write_index([desc])
    return layout, desc


def multi_platform_layout(path: Path) -> tuple[OCILayout, Descriptor]:
    """An index.json naming one image index with two platforms and an attestation."""
    layout = OCILayout.create(path)
    amd = add_image(layout, b"shared layer", "amd64")
    arm = add_image(layout, b"shared layer", "arm64")
    attestation = add_image(
        layout, b"provenance", "unknown", {ANNOTATION_DOCKER_REFERENCE_TYPE: "attestation-manifest"}
    )
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [amd.to_json(), arm.to_json(), attestation.to_json()],
        }
    )
    index_desc = layout.write_blob(index, MEDIA_TYPE_OCI_INDEX)
    layout.write_index([index_desc])
    return layout, index_desc


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def dir_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def layout_members(
    layout: OCILayout, prefix: str = ""
) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Every file of a layout as tar members (not sorted, with directory entries)."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        dir_member(prefix + "blobs/"),
        dir_member(prefix + "blobs/sha256/"),
    ]
    for blob in sorted((layout.path / "blobs" / "sha256").iterdir()):
        members.append(file_member(f"{prefix}blobs/sha256/{blob.name}", blob.read_bytes()))
    members.append(file_member(prefix + "index.json", (layout.path / "index.json").read_bytes()))
    members.append(file_member(prefix + "oci-layout", (layout.path / "oci-layout").read_bytes()))
    return members


class ReadOnlyStream:
    """Only `read()`, like a pipe or BuildKit's chunk reader: no seek, no tell."""

    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self._data = data
        self._pos = 0
        self._chunk = chunk

    def read(self, n: int = -1) -> bytes:
        n = self._chunk if n < 0 else min(n, self._chunk)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


# --- digests ---


def test_sha256_digest_of_empty_input() -> None:
    assert sha256_digest(b"") == EMPTY_SHA256


@pytest.mark.parametrize(
    "value, ok",
    [
        (EMPTY_SHA256, True),
        ("sha512:" + hashlib.sha512(b"").hexdigest(), True),
        (EMPTY_SHA256.upper(), False),
        ("sha256:abc", False),
        ("md5:" + "0" * 32, False),
        ("sha256" + "0" * 64, False),
        (EMPTY_SHA256 + "0", False),
        (None, False),
    ],
)
def test_is_digest(value: object, ok: bool) -> None:
    assert is_digest(value) is ok


def test_parse_digest_splits_and_refuses_garbage() -> None:
    assert parse_digest(EMPTY_SHA256) == ("sha256", EMPTY_SHA256[7:])
    with pytest.raises(InputError, match="invalid digest"):
        parse_digest("sha256:../../etc/passwd")


def test_hasher_checks_digest_and_size() -> None:
    hasher = Hasher()
    hasher.update(b"abc")
    assert hasher.size == 3
    hasher.check(sha256_digest(b"abc"), 3, "thing")
    with pytest.raises(DigestMismatch, match="expected 4"):
        hasher.check(sha256_digest(b"abc"), 4, "thing")
    with pytest.raises(DigestMismatch) as excinfo:
        hasher.check(EMPTY_SHA256, None, "thing")
    message = str(excinfo.value)
    assert EMPTY_SHA256 in message and sha256_digest(b"abc") in message
    assert "\n" not in message


def test_hash_stream_reads_in_chunks() -> None:
    data = b"x" * (3 * 1024 * 1024 + 5)
    assert hash_stream(io.BytesIO(data)) == (sha256_digest(data), len(data))


def test_verifying_reader_accepts_good_bytes() -> None:
    reader = VerifyingReader(io.BytesIO(b"hello"), sha256_digest(b"hello"), 5, "blob")
    assert reader.read() == b"hello"
    assert reader.verified


def test_verifying_reader_fails_at_eof_on_bad_bytes() -> None:
    reader = VerifyingReader(io.BytesIO(b"hellO"), sha256_digest(b"hello"), 5, "blob")
    assert reader.read(5) == b"hellO"  # nothing is known before the end
    with pytest.raises(DigestMismatch):
        reader.read(1)


def test_verifying_reader_refuses_extra_bytes() -> None:
    reader = VerifyingReader(io.BytesIO(b"hello!"), sha256_digest(b"hello"), 5, "blob")
    with pytest.raises(DigestMismatch, match="longer"):
        reader.read()


# --- descriptors ---


def test_descriptor_round_trip_keeps_unknown_fields() -> None:
    data = {
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "digest": EMPTY_SHA256,
        "size": 0,
        "annotations": {"a": "b"},
        "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
        "artifactType": "application/x-thing",
        "urls": ["https://example.invalid/x"],
    }
    desc = Descriptor.from_json(data)
    assert desc.platform == Platform("arm", "linux", "v7")
    assert desc.extra == {
        "artifactType": "application/x-thing",
        "urls": ["https://example.invalid/x"],
    }
    assert desc.to_json() == data
    assert desc.is_manifest and not desc.is_index


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"digest": EMPTY_SHA256, "size": 0},
        {"mediaType": "x", "digest": "sha256:nope", "size": 0},
        {"mediaType": "x", "digest": EMPTY_SHA256, "size": -1},
        {"mediaType": "x", "digest": EMPTY_SHA256, "size": True},
        {"mediaType": "x", "digest": EMPTY_SHA256, "size": 0, "annotations": {"a": 1}},
        {"mediaType": "x", "digest": EMPTY_SHA256, "size": 0, "platform": {"os": "linux"}},
    ],
)
def test_descriptor_rejects_malformed_json(data: object) -> None:
    with pytest.raises(InputError):
        Descriptor.from_json(data)


@given(
    media_type=st.text(min_size=1, max_size=40),
    payload=st.binary(max_size=64),
    annotations=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    arch=st.none() | st.sampled_from(["amd64", "arm64", "riscv64"]),
)
def test_descriptor_json_round_trip(
    media_type: str, payload: bytes, annotations: dict[str, str], arch: str | None
) -> None:
    desc = Descriptor(
        media_type,
        sha256_digest(payload),
        len(payload),
        annotations=annotations,
        platform=Platform(arch, "linux") if arch else None,
    )
    again = Descriptor.from_json(json.loads(canonical_json(desc.to_json())))
    assert again == desc


def test_platform_matching() -> None:
    arm = Platform("arm64", "linux", "v8")
    assert arm.matches("linux/arm64") and arm.matches("linux/arm64/v8")
    assert not arm.matches("linux/arm64/v7") and not arm.matches("linux/amd64")
    assert str(arm) == "linux/arm64/v8"


# --- layouts ---


def test_create_layout_writes_marker_and_empty_index(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path / "l")
    layout.check_layout_file()
    assert json.loads((layout.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert layout.index_manifests() == []


def test_write_and_read_blob(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path)
    desc = layout.write_blob(b"payload", "application/x-test")
    assert desc == Descriptor("application/x-test", sha256_digest(b"payload"), 7)
    assert layout.has_blob(desc.digest)
    assert layout.blob_path(desc.digest).read_bytes() == b"payload"
    assert layout.read_blob(desc.digest, 7) == b"payload"
    with layout.open_blob(desc.digest, 7) as reader:
        assert reader.read() == b"payload"


def test_write_blob_with_wrong_expected_digest_leaves_nothing(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path)
    with pytest.raises(DigestMismatch):
        layout.write_blob(b"payload", expected_digest=EMPTY_SHA256)
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_tampered_blob_is_caught(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path)
    desc = layout.write_blob(b"payload")
    layout.blob_path(desc.digest).write_bytes(b"paYload")
    with pytest.raises(DigestMismatch, match=desc.digest):
        layout.read_blob(desc.digest, desc.size)
    with layout.open_blob(desc.digest, desc.size) as reader, pytest.raises(DigestMismatch):
        while reader.read(3):
            pass
    layout.blob_path(desc.digest).write_bytes(b"payload, longer")
    with pytest.raises(DigestMismatch, match="bytes"):
        layout.read_blob(desc.digest, desc.size)


def test_missing_blob_is_an_input_error(tmp_path: Path) -> None:
    layout = OCILayout.create(tmp_path)
    with pytest.raises(InputError, match="missing"):
        layout.read_blob(EMPTY_SHA256)


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no index.json"):
        OCILayout(tmp_path).index_manifests()
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "9.9"}')
    with pytest.raises(InputError, match="unsupported"):
        OCILayout(tmp_path).check_layout_file()


def test_index_round_trip_and_top_descriptor(tmp_path: Path) -> None:
    layout, desc = single_image_layout(tmp_path)
    assert layout.index_manifests() == [desc]
    assert layout.top_descriptor() == desc
    # BuildKit lists the same image once per name: still one image.
    other_name = Descriptor.from_json(desc.to_json())
    other_name.annotations = {ANNOTATION_REF_NAME: "v2"}
    layout.write_index([desc, other_name])
    assert layout.top_descriptor().digest == desc.digest
    second = add_image(layout, b"another layer")
    layout.write_index([desc, second])
    with pytest.raises(InputError, match="2 images"):
        layout.top_descriptor()


def test_walk_puts_children_first_and_dedups(tmp_path: Path) -> None:
    layout, index_desc = multi_platform_layout(tmp_path)
    order = list(layout.walk())
    digests = [d.digest for d in order]
    assert len(digests) == len(set(digests))
    assert digests[-1] == index_desc.digest
    position = {d: i for i, d in enumerate(digests)}
    for desc in order:
        for child in layout.children(desc):
            assert position[child.digest] < position[desc.digest]
    # 3 manifests + 3 configs (amd64, arm64, unknown) + 2 layers (shared + provenance) + index
    assert len(order) == 9


def test_image_manifests_recurse_into_nested_indexes(tmp_path: Path) -> None:
    layout, _ = multi_platform_layout(tmp_path)
    manifests = layout.image_manifests()
    assert [str(d.platform) for d in manifests] == ["linux/amd64", "linux/arm64", "linux/unknown"]
    assert [d.is_attestation for d in manifests] == [False, False, True]


def test_load_image_picks_platform_and_skips_attestations(tmp_path: Path) -> None:
    layout, _ = multi_platform_layout(tmp_path)
    with pytest.raises(InputError, match="choose a platform"):
        load_image(layout)
    image = load_image(layout, "linux/arm64")
    assert image.config["architecture"] == "arm64"
    assert image.config_descriptor.media_type == MEDIA_TYPE_OCI_CONFIG
    assert [layer.size for layer in image.layers] == [len(b"shared layer")]
    with pytest.raises(InputError, match="no image for linux/s390x"):
        load_image(layout, "linux/s390x")


def test_load_single_image(tmp_path: Path) -> None:
    layout, desc = single_image_layout(tmp_path)
    image = load_image(layout)
    assert image.descriptor.digest == desc.digest
    assert image.manifest["schemaVersion"] == 2


def test_manifest_media_type_must_agree_with_descriptor(tmp_path: Path) -> None:
    layout, desc = single_image_layout(tmp_path)
    desc.media_type = MEDIA_TYPE_OCI_INDEX
    layout.write_index([desc])
    with pytest.raises(InputError, match="media type"):
        list(layout.walk())


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write_bytes(target, b"old")
    from repro.oci import atomic_writer

    with pytest.raises(RuntimeError), atomic_writer(target) as out:
        out.write(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_writes_under_a_scratch_dir_are_not_forced_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build's staged export and verify's images are deleted when done: no fsync
    there (the rename stays), everywhere else as before, and only while marked."""
    import os

    from repro.oci import scratch_dir

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    scratch, kept = tmp_path / "scratch", tmp_path / "scratchy"
    scratch.mkdir()
    kept.mkdir()
    with scratch_dir(scratch):
        with scratch_dir(scratch):  # marked twice (two threads): both must end
            atomic_write_bytes(scratch / "a", b"a")
        atomic_write_bytes(scratch / "sub-b", b"b")
        assert synced == []
        atomic_write_bytes(kept / "c", b"c")  # a sibling sharing the prefix: synced
        assert len(synced) == 1
    atomic_write_bytes(scratch / "d", b"d")
    assert len(synced) == 2
    assert sorted(p.name for p in scratch.iterdir()) == ["a", "d", "sub-b"]
    # A cache entry that can be made again is not forced to disk either.
    atomic_write_bytes(kept / "e", b"e", durable=False)
    assert len(synced) == 2 and (kept / "e").read_bytes() == b"e"


# --- extracting archives ---


def test_extract_round_trip_from_stream(tmp_path: Path) -> None:
    layout, desc = multi_platform_layout(tmp_path / "src")
    archive = tar_bytes(layout_members(layout, prefix="./"))
    out = extract_oci_archive(ReadOnlyStream(archive), tmp_path / "out")
    assert out.top_descriptor() == desc
    assert load_image(out, "linux/amd64").config["architecture"] == "amd64"
    out.verify(full=True)


def test_extract_from_path(tmp_path: Path) -> None:
    layout, desc = single_image_layout(tmp_path / "src")
    (tmp_path / "a.tar").write_bytes(tar_bytes(layout_members(layout)))
    out = extract_oci_archive(tmp_path / "a.tar", tmp_path / "out")
    assert out.top_descriptor() == desc


def test_extract_accepts_and_drops_docker_manifest_json(tmp_path: Path) -> None:
    layout, _ = single_image_layout(tmp_path / "src")
    members = [*layout_members(layout), file_member("manifest.json", b"[]")]
    out = extract_oci_archive(io.BytesIO(tar_bytes(members)), tmp_path / "out")
    assert not (out.path / "manifest.json").exists()


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def _fifo(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info, None


@pytest.mark.parametrize(
    "evil, message",
    [
        (_symlink("index.json", "/etc/passwd"), "symlink"),
        (_hardlink("blobs/sha256/" + "0" * 64, "/etc/shadow"), "hard link"),
        (_fifo("oci-layout"), "device or fifo"),
        (file_member("/etc/cron.d/evil", b"x"), "not a relative path"),
        (file_member("blobs/../../evil", b"x"), "'..'"),
        (file_member("blobs/sha256/../../../evil", b"x"), "'..'"),
        (file_member("evil.sh", b"x"), "not part of an OCI image layout"),
        (file_member("blobs/md5/" + "0" * 32, b"x"), "not part of an OCI image layout"),
        (file_member("blobs/sha256/" + "A" * 64, b"x"), "not part of an OCI image layout"),
        (dir_member("index.json"), "expected a regular file"),
        (file_member("blobs", b""), "expected a directory"),
    ],
)
def test_extract_refuses_unsafe_members(
    tmp_path: Path, evil: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    layout, _ = single_image_layout(tmp_path / "src")
    archive = tar_bytes([evil, *layout_members(layout)])
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        extract_oci_archive(io.BytesIO(archive), dest)
    assert not dest.exists()  # created by the call, so removed on failure
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil.sh").exists()


def test_extract_refuses_duplicate_member(tmp_path: Path) -> None:
    layout, _ = single_image_layout(tmp_path / "src")
    members = layout_members(layout)
    archive = tar_bytes([*members, file_member("index.json", b'{"schemaVersion": 2}')])
    with pytest.raises(InputError, match="appears twice"):
        extract_oci_archive(io.BytesIO(archive), tmp_path / "out")


def test_extract_refuses_blob_not_matching_its_name(tmp_path: Path) -> None:
    layout, _ = single_image_layout(tmp_path / "src")
    name = "blobs/sha256/" + sha256_digest(b"layer bytes")[7:]
    members = [
        file_member(name, b"tampered!!!") if info.name == name else (info, data)
        for info, data in layout_members(layout)
    ]
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DigestMismatch) as excinfo:
        extract_oci_archive(io.BytesIO(tar_bytes(members)), dest)
    assert sha256_digest(b"layer bytes") in str(excinfo.value)
    assert sha256_digest(b"tampered!!!") in str(excinfo.value)
    assert dest.is_dir() and list(dest.iterdir()) == []  # an existing dir is emptied, kept


def test_extract_refuses_incomplete_archives(tmp_path: Path) -> None:
    layout, _ = single_image_layout(tmp_path / "src")
    members = layout_members(layout)
    no_index = [m for m in members if m[0].name != "index.json"]
    with pytest.raises(InputError, match="no index.json"):
        extract_oci_archive(io.BytesIO(tar_bytes(no_index)), tmp_path / "a")
    layer_name = "blobs/sha256/" + sha256_digest(b"layer bytes")[7:]
    no_layer = [m for m in members if m[0].name != layer_name]
    with pytest.raises(InputError, match="incomplete"):
        extract_oci_archive(io.BytesIO(tar_bytes(no_layer)), tmp_path / "b")


def test_extract_refuses_non_tar_and_truncated_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a valid tar"):
        extract_oci_archive(io.BytesIO(b"this is not a tar archive" * 50), tmp_path / "a")
    layout, _ = single_image_layout(tmp_path / "src", layer=b"L" * 5000)
    archive = tar_bytes(layout_members(layout))
    with pytest.raises(InputError):
        extract_oci_archive(io.BytesIO(archive[:3000]), tmp_path / "b")


def test_extract_refuses_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("mine")
    with pytest.raises(InputError, match="not an empty directory"):
        extract_oci_archive(io.BytesIO(b""), tmp_path)
    assert (tmp_path / "keep").read_text() == "mine"


def test_extract_refuses_invalid_json(tmp_path: Path) -> None:
    archive = tar_bytes([file_member("index.json", b"{not json")])
    with pytest.raises(InputError, match="not valid JSON"):
        extract_oci_archive(io.BytesIO(archive), tmp_path / "out")


# --- writing archives ---


def test_write_oci_archive_is_deterministic(tmp_path: Path) -> None:
    layout, _ = multi_platform_layout(tmp_path / "l")
    (layout.path / "blobs" / "sha256" / ("f" * 64)).write_bytes(b"stray, unreachable")
    write_oci_archive(layout, tmp_path / "a.tar")
    # Same content built again elsewhere, at another time: same bytes.
    other, _ = multi_platform_layout(tmp_path / "m")
    write_oci_archive(other, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()

    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    assert "blobs/sha256/" + "f" * 64 not in names
    assert len(names) == 2 + 9 + 2
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_write_then_extract_round_trip(tmp_path: Path) -> None:
    layout, desc = multi_platform_layout(tmp_path / "l")
    write_oci_archive(layout, tmp_path / "a.tar")
    out = extract_oci_archive(tmp_path / "a.tar", tmp_path / "out")
    assert out.top_descriptor() == desc
    write_oci_archive(out, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_write_oci_archive_catches_tampered_blob(tmp_path: Path) -> None:
    layout, _ = single_image_layout(tmp_path / "l")
    layer = layout.blob_path(sha256_digest(b"layer bytes"))
    layer.write_bytes(b"LAYER BYTES")
    with pytest.raises(DigestMismatch):
        write_oci_archive(layout, tmp_path / "a.tar")
    assert not (tmp_path / "a.tar").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["l"]  # no temp file left
    layer.write_bytes(b"short")
    with pytest.raises(DigestMismatch, match="bytes"):
        write_oci_archive(layout, tmp_path / "a.tar")


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_atomic_write_sweeps_what_a_killed_process_left(tmp_path: Path) -> None:
    """Staging entries of a dead process beside the target go; a live process's, the
    user's own dotfiles and other names' entries stay. One listing per directory and
    process: entries that appear after it are left for the next process."""
    from repro.oci import _files

    dead, alive = _dead_pid(), os.getpid()
    stale_tmp = tmp_path / f".out.{dead}-abcd1234.tmp"
    stale_dir = tmp_path / f".out.early-{dead}-abcd_234"
    stale_old = tmp_path / f".out.{dead}-zz99aa00-old"
    live = tmp_path / f".out.{alive}-abcd1234.tmp"
    user = tmp_path / ".out.notes"
    other = tmp_path / f".other.{dead}-abcd1234.tmp"
    for p in (stale_tmp, stale_old, live, user, other):
        p.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "blob").write_text("x")
    atomic_write_bytes(tmp_path / "out", b"new")
    assert (tmp_path / "out").read_bytes() == b"new"
    assert not stale_tmp.exists() and not stale_dir.exists() and not stale_old.exists()
    assert live.exists() and user.exists() and other.exists()
    late = tmp_path / f".out.{dead}-late0000.tmp"
    late.write_text("x")
    atomic_write_bytes(tmp_path / "other", b"2")
    assert not other.exists(), "the first listing's entries for another name are swept"
    atomic_write_bytes(tmp_path / "out", b"3")
    assert late.exists(), "listed once per directory and process"
    _files._dotted.pop(os.fspath(tmp_path))  # as a new process would
    atomic_write_bytes(tmp_path / "out", b"4")
    assert not late.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, user.name, "out", "other"]
    )
