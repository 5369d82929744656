"""repro.oci as a model: specs, the one decompressor, layers read on demand and
checked, and the Docker archive source (synthetic archives of both formats here;
the one `docker save` writes, against the real engine, at the end)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard
from diffimages import F, make_image, tar_bytes

from repro import oci
from repro.errors import DigestMismatch, InputError

# --- specs ---------------------------------------------------------------------------


def test_output_specs() -> None:
    assert oci.Output.parse("oci:out/a") == oci.Output("oci", Path("out/a"))
    assert str(oci.Output.parse("oci-archive:a.tar")) == "oci-archive:a.tar"
    for bad in ("out/a", "oci:", "docker-archive:a.tar", "docker://x/y", "zip:a"):
        with pytest.raises(InputError, match="expected oci:DIR or oci-archive:FILE"):
            oci.Output.parse(bad)


def test_source_specs(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f.tar").write_bytes(b"")
    assert oci.parse_source_spec("docker://reg/x:1").reference == "reg/x:1"
    assert oci.parse_source_spec("registry:reg/x@sha256:" + "a" * 64).kind == "registry"
    assert oci.parse_source_spec("docker-archive:x.tar").kind == "docker-archive"
    assert oci.parse_source_spec(str(tmp_path / "d")).kind == "oci"
    assert oci.parse_source_spec(str(tmp_path / "f.tar")).kind == "oci-archive"
    with pytest.raises(InputError, match="no image reference after docker://"):
        oci.parse_source_spec("docker://")
    with pytest.raises(InputError, match="no path after oci-archive:"):
        oci.parse_source_spec("oci-archive:")
    with pytest.raises(InputError, match="docker-archive:FILE, docker://REF, or an existing path"):
        oci.parse_source_spec(str(tmp_path / "absent"))


# --- the decompressor ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none", "gzip-multi"])
def test_uncompressed_reads_every_kind(kind: str) -> None:
    data = tar_bytes([F("a", os.urandom(5000)), F("b", b"x" * 300_000)])
    blob = {
        "gzip": gzip.compress(data),
        "gzip-multi": gzip.compress(data[:1024]) + gzip.compress(data[1024:]) + b"\0" * 512,
        "zstd": zstandard.ZstdCompressor().compress(data),
        "none": data,
    }[kind]
    raw = io.BytesIO(blob)
    stream, rest, compression = oci.uncompressed(raw, "layer")
    assert stream.read() == data
    assert compression == kind.split("-")[0]
    rest.read()
    assert raw.tell() == len(blob)


def test_uncompressed_errors_are_one_line() -> None:
    data = gzip.compress(os.urandom(200_000))
    with pytest.raises(InputError, match="^layer 3 is a truncated gzip stream$"):
        oci.uncompressed(io.BytesIO(data[:5000]), "layer 3")[0].read()
    with pytest.raises(InputError, match="^layer 3 is not valid zstd"):
        oci.uncompressed(io.BytesIO(oci.ZSTD_MAGIC + b"\xff" * 64), "layer 3")[0].read()


# --- layers and images ---------------------------------------------------------------


def test_layer_diff_id_is_computed_and_checked(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "img", [[F("a", b"1")], [F("b", b"2")]])
    image = oci.Index.open(layout).image("linux/amd64")
    assert image.platform == "linux/amd64"
    layers = image.layer_objects()
    assert [layer.diff_id() for layer in layers] == image.diff_ids
    with layers[1].uncompressed() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        assert [m.name for m in tar] == ["b"]
    # a config that claims another diffID is caught when the layer is read
    image.config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match="does not match the diffID its config gives"):
        image.layer(0).diff_id()


def test_layer_bytes_are_checked_against_the_digest(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "img", [[F("a", b"1" * 1000)]])
    layer = oci.load_image(layout).layer(0)
    blob = layout.blob_path(layer.digest)
    blob.chmod(0o644)
    blob.write_bytes(gzip.compress(tar_bytes([F("a", b"2" * 1000)])))
    with pytest.raises(DigestMismatch):
        layer.diff_id()


# --- Docker archives ------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", *, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _legacy_archive(path: Path, *, evil: str = "") -> tuple[bytes, list[bytes]]:
    """A `docker save` archive in the format before Docker 25: `<id>/layer.tar`
    (uncompressed), the config as `<hex>.json`, a repeated layer as a symlink."""
    layer_a = tar_bytes([F("etc/a", b"a")])
    layer_b = tar_bytes([F("etc/b", b"b")])
    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in (layer_a, layer_b, layer_a)]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layers = ["1/layer.tar", "2/layer.tar", evil or "3/layer.tar"]
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["x:1"], "Layers": layers}])
    with tarfile.open(path, "w") as tar:
        _add(tar, "1/layer.tar", layer_a)
        _add(tar, "2/layer.tar", layer_b)
        _add(tar, "3/layer.tar", link="../1/layer.tar")
        _add(tar, config_name, config)
        _add(tar, "manifest.json", manifest.encode())
    return config, [layer_a, layer_b, layer_a]


def test_legacy_docker_archive_is_read(tmp_path: Path) -> None:
    config, layers = _legacy_archive(tmp_path / "save.tar")
    with oci.open_source(f"docker-archive:{tmp_path / 'save.tar'}") as source:
        (image,) = source.images.values()
        assert image.platform == "linux/amd64"
        assert image.config_descriptor.digest == oci.sha256_digest(config)
        assert [layer.diff_id() for layer in image.layer_objects()] == image.diff_ids
        assert [d.media_type for d in image.layers] == [oci.MEDIA_TYPE_OCI_LAYER] * 3


def test_docker_archive_paths_cannot_escape(tmp_path: Path) -> None:
    _legacy_archive(tmp_path / "save.tar", evil="../../etc/passwd")
    with (
        pytest.raises(InputError, match="it contains '..'"),
        oci.open_source(f"docker-archive:{tmp_path / 'save.tar'}"),
    ):
        pass


def test_docker_archive_blob_must_match_its_name(tmp_path: Path) -> None:
    layer = gzip.compress(tar_bytes([F("a", b"1")]))
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_name = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
    wrong = "blobs/sha256/" + "0" * 64
    with tarfile.open(tmp_path / "save.tar", "w") as tar:
        _add(tar, config_name, config)
        _add(tar, wrong, layer)
        manifest = [{"Config": config_name, "Layers": [wrong]}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    with (
        pytest.raises(DigestMismatch),
        oci.open_source(f"docker-archive:{tmp_path / 'save.tar'}"),
    ):
        pass


def test_docker_archive_of_two_images_is_refused(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "save.tar", "w") as tar:
        _add(tar, "manifest.json", b'[{"Config":"a","Layers":[]},{"Config":"b","Layers":[]}]')
    with (
        pytest.raises(InputError, match="holds 2 images"),
        oci.open_source(f"docker-archive:{tmp_path / 'save.tar'}"),
    ):
        pass


@pytest.mark.engine
def test_docker_save_archive_diffs_identical_to_the_registry_image(
    base_image: str, tmp_path: Path
) -> None:
    """`docker save` on the real engine, read back as the very same image."""
    subprocess.run(["docker", "pull", "-q", base_image], check=True, capture_output=True)
    saved = tmp_path / "save.tar"
    subprocess.run(["docker", "save", base_image, "-o", str(saved)], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "repro", "diff", f"docker-archive:{saved}", f"docker://{base_image}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical" in result.stdout
    with oci.open_source(f"docker-archive:{saved}") as source:
        assert source.top.digest == base_image.rpartition("@")[2]
