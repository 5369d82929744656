"""Tests for repro.devbase: .deb parsing and a deterministic busybox base image.

The .deb is made here (ar + tar.xz) with a shell script standing in for busybox
that prints an applet list for --list-full, so no network or real package is needed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest

from repro.devbase import (
    BuiltImage,
    assemble_image,
    build_image,
    go_platform,
    main,
    parse_applets,
    read_deb,
    version_tag,
    write_layout,
)
from repro.errors import InputError
from repro.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    Platform,
    canonical_json,
    load_image,
    sha256_digest,
)

DEB_MTIME = 1_700_000_000
VERSION = "1:1.36.1-4+deb12u1~b1"
APPLETS = ["usr/bin/[", "bin/sh", "bin/busybox", "sbin/init", "usr/bin/env", "linuxrc", "bin/ls"]
FAKE_BUSYBOX = (
    "#!/bin/sh\n"
    'if [ "$1" = --list-full ]; then\n'
    "cat <<'EOF'\n" + "\n".join(APPLETS) + "\nEOF\n"
    "fi\n"
).encode()


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        header = (
            f"{name:<16}{DEB_MTIME:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}".encode() + b"`\n"
        )
        assert len(header) == 60
        out.write(header + data + (b"\n" if len(data) % 2 else b""))
    return out.getvalue()


def tar_xz(files: dict[str, tuple[bytes, int]], dirs: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:xz") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mtime = DEB_MTIME
            tar.addfile(info)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, DEB_MTIME
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_deb(
    path: Path,
    busybox: bytes | None = FAKE_BUSYBOX,
    arch: str = "amd64",
    data_name: str = "data.tar.xz",
) -> Path:
    control = f"Package: busybox-static\nVersion: {VERSION}\nArchitecture: {arch}\n"
    control += "Description: test\n a continuation line\n"
    files = {"./usr/share/doc/busybox-static/copyright": (b"(c)", 0o644)}
    if busybox is not None:
        files["./bin/busybox"] = (busybox, 0o755)
    path.write_bytes(
        ar_archive(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", tar_xz({"./control": (control.encode(), 0o644)}, ("./",))),
                (data_name, tar_xz(files, ("./", "./bin/"))),
            ]
        )
    )
    return path


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    return make_deb(tmp_path / "busybox-static_test_amd64.deb")


def layer_members(image: BuiltImage) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layer))) as tar:
        return tar.getmembers()


# --- reading the .deb ---


def test_read_deb(deb: Path) -> None:
    package = read_deb(deb)
    assert (package.package, package.version, package.architecture) == (
        "busybox-static",
        VERSION,
        "amd64",
    )
    assert package.busybox == FAKE_BUSYBOX
    assert package.busybox_mtime == DEB_MTIME


def test_read_deb_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.deb").write_bytes(b"not an ar archive at all")
    with pytest.raises(InputError, match="not a .deb"):
        read_deb(tmp_path / "junk.deb")
    with pytest.raises(InputError, match="no bin/busybox"):
        read_deb(make_deb(tmp_path / "nobb.deb", busybox=None))
    with pytest.raises(InputError, match="zstd"):
        read_deb(make_deb(tmp_path / "zst.deb", data_name="data.tar.zst"))
    with pytest.raises(InputError, match="cannot read"):
        read_deb(tmp_path / "absent.deb")


def test_parse_applets_filters_and_sorts() -> None:
    assert parse_applets("\n".join(APPLETS) + "\n\n") == [
        "bin/ls",
        "bin/sh",
        "sbin/init",
        "usr/bin/[",
        "usr/bin/env",
    ]
    for bad in ("bin/..", "bin/a b", "usr/bin/x\\y"):
        with pytest.raises(InputError, match="strange applet"):
            parse_applets(bad)


def test_version_tag() -> None:
    assert version_tag("1:1.35.0-4+deb12u1+b1") == "1.35.0-4_deb12u1_b1"
    assert version_tag("1.36.1~rc1") == "1.36.1-rc1"
    assert version_tag("-odd") == "_-odd"


def test_go_platform() -> None:
    assert go_platform("amd64") == Platform("amd64", "linux")
    assert go_platform("arm64") == Platform("arm64", "linux")
    assert go_platform("armhf") == Platform("arm", "linux", "v7")
    with pytest.raises(InputError, match="unsupported Debian architecture"):
        go_platform("m68k")


# --- building ---


def test_build_is_deterministic(deb: Path, tmp_path: Path) -> None:
    first = build_image(deb)
    # A second copy of the .deb elsewhere, built again: the same bytes.
    second = build_image(make_deb(tmp_path / "copy.deb"))
    assert first.manifest_descriptor.digest == second.manifest_descriptor.digest
    assert (first.layer, first.config, first.manifest) == (
        second.layer,
        second.config,
        second.manifest,
    )
    other_epoch = build_image(deb, epoch=DEB_MTIME + 1)
    assert other_epoch.manifest_descriptor.digest != first.manifest_descriptor.digest


def test_layer_contents(deb: Path) -> None:
    image = build_image(deb)
    members = layer_members(image)
    names = [m.name for m in members]
    assert names == sorted(names)
    by_name = {m.name: m for m in members}
    assert sorted(n for n, m in by_name.items() if m.isdir()) == [
        "bin",
        "etc",
        "root",
        "sbin",
        "tmp",
        "usr",
        "usr/bin",
        "usr/sbin",
    ]
    assert by_name["tmp"].mode == 0o1777 and by_name["root"].mode == 0o700
    assert by_name["bin"].mode == 0o755
    assert by_name["bin/busybox"].isreg() and by_name["bin/busybox"].mode == 0o755
    links = {n: m.linkname for n, m in by_name.items() if m.issym()}
    assert links == {
        n: "/bin/busybox" for n in ["bin/ls", "bin/sh", "sbin/init", "usr/bin/[", "usr/bin/env"]
    }
    assert "linuxrc" not in by_name
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", DEB_MTIME)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layer))) as tar:
        assert tar.extractfile("etc/passwd").read() == b"root:x:0:0:root:/root:/bin/sh\n"  # type: ignore[union-attr]
        assert tar.extractfile("etc/group").read() == b"root:x:0:\n"  # type: ignore[union-attr]
        assert tar.extractfile("bin/busybox").read() == FAKE_BUSYBOX  # type: ignore[union-attr]


def test_gzip_header_has_no_time_or_name(deb: Path) -> None:
    layer = build_image(deb).layer
    assert layer[:3] == b"\x1f\x8b\x08"
    assert layer[3] == 0  # no FNAME, FCOMMENT, FEXTRA
    assert layer[4:8] == b"\0\0\0\0"  # mtime 0
    assert layer[8] == 2  # maximum compression


def test_config_and_manifest(deb: Path) -> None:
    image = build_image(deb)
    config = json.loads(image.config)
    assert image.config == canonical_json(config)  # compact, sorted keys
    assert config == {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "created": "2023-11-14T22:13:20Z",
        "history": [
            {
                "created": "2023-11-14T22:13:20Z",
                "created_by": f"repro devbase busybox-static {VERSION}",
            }
        ],
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(gzip.decompress(image.layer))]},
    }
    manifest = json.loads(image.manifest)
    assert image.manifest == canonical_json(manifest)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MEDIA_TYPE_OCI_MANIFEST
    assert manifest["config"] == {
        "mediaType": MEDIA_TYPE_OCI_CONFIG,
        "digest": sha256_digest(image.config),
        "size": len(image.config),
    }
    assert manifest["layers"] == [
        {
            "mediaType": MEDIA_TYPE_OCI_LAYER_GZIP,
            "digest": sha256_digest(image.layer),
            "size": len(image.layer),
        }
    ]
    assert manifest["annotations"] == {"org.opencontainers.image.version": VERSION}
    assert image.tag == "1.36.1-4_deb12u1-b1"


def test_arm_config_carries_variant(tmp_path: Path) -> None:
    package = read_deb(make_deb(tmp_path / "armhf.deb", arch="armhf"))
    image = assemble_image(package, ["bin/sh"], 0)
    config = json.loads(image.config)
    assert (config["architecture"], config["variant"]) == ("arm", "v7")
    assert config["created"] == "1970-01-01T00:00:00Z"
    with pytest.raises(InputError, match="negative"):
        assemble_image(package, ["bin/sh"], -1)


def test_write_layout(deb: Path, tmp_path: Path) -> None:
    image = build_image(deb)
    layout = write_layout(image, tmp_path / "layout")
    layout.verify(full=True)
    top = layout.top_descriptor()
    assert top.digest == image.manifest_descriptor.digest
    assert top.platform == Platform("amd64", "linux")
    loaded = load_image(layout)
    assert loaded.config["rootfs"]["diff_ids"] == [image.diff_id]


def test_main_reports_errors_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.deb").write_bytes(b"nope")
    code = main(["--deb", str(tmp_path / "bad.deb"), "--registry", "127.0.0.1:1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("repro devbase: ") and "not a .deb" in err


# --- against the real registry ---


@pytest.fixture
def registry_host() -> str:
    host = os.environ.get("REPRO_REGISTRY")
    if not host:
        pytest.skip("REPRO_REGISTRY is not set (run scripts/dev-env up)")
    try:
        httpx.get(f"http://{host}/v2/", timeout=3)
    except httpx.HTTPError as e:
        pytest.skip(f"registry REPRO_REGISTRY={host} is not answering: {e}")
    return host


@pytest.mark.engine
def test_main_pushes_same_digest_twice(
    deb: Path, tmp_path: Path, registry_host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = f"repro-test/devbase-{uuid.uuid4().hex[:12]}"
    refs = []
    for run in range(2):
        args = ["--deb", str(deb), "--registry", registry_host, "--repo", repo]
        assert main([*args, "--out", str(tmp_path / f"out{run}")]) == 0
        out, err = capsys.readouterr()
        assert "built" in err
        refs.append(out.strip())
    assert refs[0] == refs[1]
    assert re.fullmatch(rf"{re.escape(registry_host)}/{repo}@sha256:[0-9a-f]{{64}}", refs[0])
    assert refs[0].endswith(build_image(deb).manifest_descriptor.digest)

    from repro.registry import Registry

    with Registry() as registry:
        desc = registry.resolve(f"{registry_host}/{repo}:{version_tag(VERSION)}")
    assert refs[0].endswith(desc.digest)
