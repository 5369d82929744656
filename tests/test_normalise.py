"""repro.normalise: canonical layers, configs and rules, on layouts made in the test."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro import oci
from repro.errors import InputError, RecipeError
from repro.normalise import (
    NormaliseOptions,
    base_layer_count,
    compile_glob,
    marker,
    normalise_layout,
    rewrite_shadow,
)

EPOCH = 1735689600  # 2025-01-01
LATER = EPOCH + 86400 * 400

# --- making layers and layouts ----------------------------------------------------

# An entry: (name, kind, extra) with kind file/dir/symlink/hardlink/whiteout/fifo.
Entry = tuple[str, str, Any]


def make_tar(
    entries: list[Entry],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    mtime: float = LATER + 0.5,
    uname: str = "builder",
    prefix: str = "",
    pax: dict[str, str] | None = None,
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(prefix + name)
            info.mtime = mtime if fmt == tarfile.PAX_FORMAT else int(mtime)
            info.uname = info.gname = uname
            info.uid, info.gid = 1000, 1000
            if fmt == tarfile.PAX_FORMAT and pax:
                info.pax_headers = dict(pax)
            data = None
            if kind in ("file", "whiteout"):
                content = extra if isinstance(extra, bytes) else b""
                info.size = len(content)
                info.mode = 0o644 if kind == "whiteout" else 0o640
                data = io.BytesIO(content)
            elif kind == "exec":
                info.size = len(extra)
                info.mode = 0o4755
                data = io.BytesIO(extra)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
                info.mode = 0o777
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = prefix + extra
                info.mode = 0o640
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                info.mode = 0o600
            tar.addfile(info, data)
    return out.getvalue()


def gzip_bytes(data: bytes, level: int = 9, name: str = "layer.tar", mtime: int = 12345) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(
        filename=name, mode="wb", compresslevel=level, fileobj=out, mtime=mtime
    ) as gz:
        gz.write(data)
    return out.getvalue()


def zstd_bytes(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)


def make_layout(
    path: Path,
    layers: list[tuple[bytes, str]],
    *,
    history: list[dict[str, Any]] | None = None,
    uncompressed: list[bytes] | None = None,
) -> oci.OCILayout:
    """A one-image layout; `layers` are (blob bytes, media type), `uncompressed` their tars."""
    layout = oci.OCILayout.create(path)
    descriptors = []
    for blob, media_type in layers:
        d = layout.write_blob(blob, media_type)
        d.annotations = {"buildkit/rewritten-timestamp": str(EPOCH)}
        descriptors.append(d)
    tars = uncompressed or [b""] * len(layers)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-27T10:00:00.123456789Z",
        "config": {"Env": ["PATH=/bin"], "Labels": {"moby.buildkit.frontend": "x", "keep": "1"}},
        "history": history
        or [{"created": "2026-11-27T10:00:00Z", "comment": "buildkit.dockerfile.v0"}] * len(layers),
        "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(t) for t in tars]},
    }
    # BuildKit's key order, not sorted: normalisation re-serialises canonically.
    config_desc = layout.write_blob(json.dumps(config).encode(), oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in descriptors],
    }
    manifest_desc = layout.write_blob(
        json.dumps(manifest, indent=2).encode(), oci.MEDIA_TYPE_OCI_MANIFEST
    )
    manifest_desc.annotations = {oci.ANNOTATION_CREATED: "2026-11-27T10:00:00Z"}
    manifest_desc.platform = oci.Platform("amd64", "linux")
    layout.write_index([manifest_desc])
    return layout


def single_layer_layout(path: Path, tar: bytes, compression: str = "gzip") -> oci.OCILayout:
    if compression == "gzip":
        blob, media = gzip_bytes(tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP
    elif compression == "zstd":
        blob, media = zstd_bytes(tar), oci.MEDIA_TYPE_OCI_LAYER_ZSTD
    else:
        blob, media = tar, oci.MEDIA_TYPE_OCI_LAYER
    return make_layout(path, [(blob, media)], uncompressed=[tar])


def layer_members(layout_dir: Path, index: int = -1) -> list[tuple[tarfile.TarInfo, bytes]]:
    image = oci.load_image(oci.OCILayout(layout_dir))
    layer = image.layers[index]
    blob = oci.OCILayout(layout_dir).read_blob(layer.digest, layer.size)
    if layer.media_type == oci.MEDIA_TYPE_OCI_LAYER_ZSTD:
        import zstandard

        blob = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
    else:
        blob = gzip.decompress(blob)
    return layer_members_from_bytes(blob)


def strip(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or "."


def tree(members: list[tuple[tarfile.TarInfo, bytes]]) -> dict[str, tuple[Any, ...]]:
    """What extracting a layer gives: per path its kind, mode, content or link target.

    Hard links are resolved to the content they share, so which name carries the
    data does not matter.
    """
    data: dict[str, bytes] = {}
    out: dict[str, tuple[Any, ...]] = {}
    for m, content in members:
        name = strip(m.name)
        if m.isreg():
            data[name] = content
            out[name] = ("file", m.mode & 0o7777, content, m.uid, m.gid)
        elif m.islnk():
            target = strip(m.linkname)
            out[name] = ("file", out[target][1], data[target], m.uid, m.gid)
            data[name] = data[target]
        elif m.issym():
            out[name] = ("symlink", m.linkname)
        elif m.isdir():
            out[name] = ("dir", m.mode & 0o7777)
        else:
            out[name] = ("other", m.type, m.mode & 0o7777)
    return out


def normalise(src: Path, dest: Path, **kw: Any) -> Any:
    return normalise_layout(src, dest, NormaliseOptions(epoch=EPOCH, **kw))


SAMPLE: list[Entry] = [
    ("usr/local/bin/tool", "exec", b"#!/bin/sh\necho hi\n"),
    ("etc", "dir", None),
    ("usr", "dir", None),
    ("usr/local", "dir", None),
    ("usr/local/bin", "dir", None),
    ("etc/data", "file", b"shared bytes\n"),
    ("etc/zz-link", "hardlink", "etc/data"),
    ("etc/alias", "symlink", "/etc/data"),
    ("etc/.wh.removed", "whiteout", None),
    ("usr/.wh..wh..opq", "whiteout", None),
    ("etc/fifo", "fifo", None),
    ("etc/" + "long-name-" * 15, "file", b"long\n"),
]


# --- canonical encoding ----------------------------------------------------------


def test_canonical_layer_is_sorted_clamped_and_anonymous(tmp_path: Path) -> None:
    tar = make_tar(SAMPLE, pax={"atime": "1.5", "ctime": "2.5", "SCHILY.xattr.user.k": "v"})
    single_layer_layout(tmp_path / "src", tar)
    result = normalise(tmp_path / "src", tmp_path / "out")
    members = layer_members(tmp_path / "out")
    names = [m.name.rstrip("/") for m, _ in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    for m, _ in members:
        assert m.mtime == EPOCH
        assert m.uname == m.gname == ""
        assert (m.uid, m.gid) == (1000, 1000)
        assert set(m.pax_headers) - {"path"} == {"SCHILY.xattr.user.k"}
    # the hard link now points at the first name of its group, which comes first
    by_name = {m.name: m for m, _ in members}
    assert by_name["etc/zz-link"].islnk() and by_name["etc/zz-link"].linkname == "etc/data"
    assert tree(members) == tree(layer_members_from_bytes(tar))
    assert result.layers[0].action == "rewritten"
    # the config's diff_id is the digest of the canonical tar
    image = oci.load_image(oci.OCILayout(tmp_path / "out"))
    blob = oci.OCILayout(tmp_path / "out").read_blob(image.layers[0].digest)
    assert image.config["rootfs"]["diff_ids"] == [oci.sha256_digest(gzip.decompress(blob))]
    assert blob[:2] == b"\x1f\x8b" and marker(NormaliseOptions(epoch=EPOCH)) in blob[:80]


def layer_members_from_bytes(tar: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as t:
        for m in t:
            fh = t.extractfile(m) if m.isreg() else None
            out.append((m, fh.read() if fh else b""))
    return out


def test_hardlink_group_data_moves_to_first_name(tmp_path: Path) -> None:
    entries: list[Entry] = [("b", "file", b"data"), ("a", "hardlink", "b"), ("c", "hardlink", "a")]
    single_layer_layout(tmp_path / "src", make_tar(entries))
    normalise(tmp_path / "src", tmp_path / "out")
    members = layer_members(tmp_path / "out")
    assert [(m.name, m.type, m.linkname) for m, _ in members] == [
        ("a", tarfile.REGTYPE, ""),
        ("b", tarfile.LNKTYPE, "a"),
        ("c", tarfile.LNKTYPE, "a"),
    ]
    assert members[0][1] == b"data"


@pytest.mark.parametrize(
    "variant",
    ["gnu", "reversed", "dot-slash", "gzip-1", "zstd", "plain", "other-owner-names", "old-mtime"],
)
def test_same_contents_any_encoding_same_digest(tmp_path: Path, variant: str) -> None:
    reference = make_tar(SAMPLE)
    single_layer_layout(tmp_path / "ref", reference)
    expected = normalise(tmp_path / "ref", tmp_path / "ref-out").digest

    entries, kw, compression = list(SAMPLE), {}, "gzip"
    if variant == "gnu":
        kw = {"fmt": tarfile.GNU_FORMAT}
    elif variant == "reversed":
        # hard link targets must still come first in the input
        entries = [e for e in reversed(SAMPLE) if e[1] != "hardlink"] + [SAMPLE[6]]
    elif variant == "dot-slash":
        kw = {"prefix": "./"}
    elif variant == "other-owner-names":
        kw = {"uname": "root"}
    elif variant == "old-mtime":
        kw = {"mtime": LATER + 99999}
    elif variant in ("zstd", "plain"):
        compression = variant
    tar = make_tar(entries, **kw)  # type: ignore[arg-type]
    if variant == "gzip-1":
        layout = make_layout(
            tmp_path / "src",
            [(gzip_bytes(tar, level=1), oci.MEDIA_TYPE_OCI_LAYER_GZIP)],
            uncompressed=[tar],
        )
    else:
        layout = single_layer_layout(tmp_path / "src", tar, compression)
    assert normalise(layout.path, tmp_path / "out").digest == expected


def test_mtimes_below_the_epoch_are_kept(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE[:2], mtime=1000))
    normalise(tmp_path / "src", tmp_path / "out")
    assert {m.mtime for m, _ in layer_members(tmp_path / "out")} == {1000}


def test_second_normalisation_keeps_every_byte(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE))
    first = normalise(tmp_path / "src", tmp_path / "once")
    second = normalise(tmp_path / "once", tmp_path / "twice")
    assert second.digest == first.digest
    assert [layer.action for layer in second.layers] == ["kept"]
    assert sorted(p.name for p in (tmp_path / "once/blobs/sha256").iterdir()) == sorted(
        p.name for p in (tmp_path / "twice/blobs/sha256").iterdir()
    )
    # other options (another epoch) are another canonical form: the marker says so
    third = normalise_layout(
        tmp_path / "once", tmp_path / "other", NormaliseOptions(epoch=EPOCH - 86400)
    )
    assert third.layers[0].action == "rewritten"


def test_config_history_and_annotations(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE[:3]))
    result = normalise(tmp_path / "src", tmp_path / "out")
    layout = oci.OCILayout(tmp_path / "out")
    image = oci.load_image(layout)
    assert image.config["created"] == "2025-01-01T00:00:00Z"
    assert {h["created"] for h in image.config["history"]} == {"2025-01-01T00:00:00Z"}
    assert image.config["config"]["Labels"] == {"keep": "1"}
    assert image.layers[0].annotations == {}
    assert image.descriptor.annotations == {oci.ANNOTATION_CREATED: "2025-01-01T00:00:00Z"}
    raw = layout.read_blob(image.descriptor.digest)
    assert raw == oci.canonical_json(json.loads(raw))
    assert layout.read_blob(image.config_descriptor.digest) == oci.canonical_json(image.config)
    assert result.config_digest == image.config_descriptor.digest
    assert result.digest == layout.index_manifests()[0].digest
    layout.verify(full=True)


def test_buildkits_stand_in_history_says_one_thing(tmp_path: Path) -> None:
    """A base without history: BuildKit writes a stand-in entry whose created_by was
    "pulled from REF@DIGEST" on one build and "created by buildkit" on the next (its
    cache held the layer's origin or not). Both normalise to the same config."""
    digests = []
    for n, said in enumerate(
        ["pulled from reg.test/base@sha256:" + "a" * 64, "created by buildkit"]
    ):
        tar = make_tar(SAMPLE[:1])
        entry = {
            "created": "1970-01-01T00:00:01Z",
            "created_by": said,
            "comment": "buildkit.exporter.image.v0",
        }
        make_layout(
            tmp_path / f"src{n}",
            [(gzip_bytes(tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP)],
            uncompressed=[tar],
            history=[entry],
        )
        digests.append(normalise(tmp_path / f"src{n}", tmp_path / f"out{n}").config_digest)
    assert digests[0] == digests[1]
    config = oci.load_image(oci.OCILayout(tmp_path / "out0")).config
    assert config["history"][0]["created_by"] == "created by buildkit"


def test_created_from_options(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE[:1]))
    normalise_layout(tmp_path / "src", tmp_path / "out", NormaliseOptions(epoch=EPOCH, created=0))
    assert (
        oci.load_image(oci.OCILayout(tmp_path / "out")).config["created"] == "1970-01-01T00:00:00Z"
    )


def test_base_layers_keep_their_bytes(tmp_path: Path) -> None:
    base = make_tar(SAMPLE[:3], fmt=tarfile.GNU_FORMAT)
    top = make_tar(SAMPLE[3:6])
    base_blob = gzip_bytes(base, level=9, mtime=0, name="")
    layout = make_layout(
        tmp_path / "src",
        [
            (base_blob, oci.MEDIA_TYPE_OCI_LAYER_GZIP),
            (gzip_bytes(top), oci.MEDIA_TYPE_OCI_LAYER_GZIP),
        ],
        uncompressed=[base, top],
        history=[
            {"created": "2020-01-01T00:00:00Z", "created_by": "devbase"},
            {
                "created": "2026-01-01T00:00:00Z",
                "comment": "buildkit.dockerfile.v0",
                "empty_layer": True,
            },
            {"created": "2026-01-01T00:00:00Z", "comment": "buildkit.dockerfile.v0"},
        ],
    )
    config = oci.load_image(layout).config
    assert base_layer_count(config) == 1
    result = normalise(tmp_path / "src", tmp_path / "out", keep_layers=base_layer_count(config))
    assert [layer.action for layer in result.layers] == ["kept", "rewritten"]
    image = oci.load_image(oci.OCILayout(tmp_path / "out"))
    assert image.layers[0].digest == oci.sha256_digest(base_blob)
    assert image.config["rootfs"]["diff_ids"][0] == oci.sha256_digest(base)


def test_layers_of_an_image_are_normalised_concurrently(tmp_path: Path) -> None:
    tars = [make_tar([(f"f{i}", "file", bytes([i]) * 100000)]) for i in range(4)]
    make_layout(
        tmp_path / "src",
        [(gzip_bytes(t), oci.MEDIA_TYPE_OCI_LAYER_GZIP) for t in tars],
        uncompressed=tars,
    )
    one = normalise_layout(
        tmp_path / "src", tmp_path / "one", NormaliseOptions(epoch=EPOCH), jobs=1
    )
    four = normalise_layout(
        tmp_path / "src", tmp_path / "four", NormaliseOptions(epoch=EPOCH), jobs=4
    )
    assert one.digest == four.digest
    assert [layer.index for layer in four.layers] == [0, 1, 2, 3]


def test_zstd_output(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE))
    opts = NormaliseOptions(epoch=EPOCH, compression="zstd")
    a = normalise_layout(tmp_path / "src", tmp_path / "a", opts)
    b = normalise_layout(tmp_path / "a", tmp_path / "b", opts)
    assert a.digest == b.digest
    image = oci.load_image(oci.OCILayout(tmp_path / "a"))
    assert image.layers[0].media_type == oci.MEDIA_TYPE_OCI_LAYER_ZSTD
    assert tree(layer_members(tmp_path / "a")) == tree(layer_members_from_bytes(make_tar(SAMPLE)))


# --- content rules ---------------------------------------------------------------


def test_rules_are_off_by_default(tmp_path: Path) -> None:
    entries: list[Entry] = [
        ("var/log/dpkg.log", "file", b"2026-11-27 install x\n"),
        ("etc/shadow", "file", b"root:*:20419:0:99999:7:::\n"),
    ]
    single_layer_layout(tmp_path / "src", make_tar(entries))
    result = normalise(tmp_path / "src", tmp_path / "out")
    assert result.changes == []
    assert tree(layer_members(tmp_path / "out")) == tree(
        layer_members_from_bytes(make_tar(entries))
    )


def test_rules_drop_truncate_shadow_and_record_changes(tmp_path: Path) -> None:
    entries: list[Entry] = [
        ("var", "dir", None),
        ("var/log", "dir", None),
        ("var/log/dpkg.log", "file", b"2026-11-27 install x\n"),
        ("var/log/apt", "dir", None),
        ("var/log/apt/history.log", "file", b"Start-Date: today\n"),
        ("var/log/.wh.old.log", "whiteout", None),
        ("var/cache/apt/pkgcache.bin", "file", b"\x00binary"),
        ("var/cache/ldconfig/aux-cache", "file", b"cache"),
        ("usr/lib/py/__pycache__/m.cpython-311.pyc", "file", b"pyc"),
        ("usr/lib/py/m.py", "file", b"print()\n"),
        ("etc/shadow", "file", b"root:*:20419:0:99999:7:::\nnobody:!::0:::::\n"),
        ("etc/keep-link", "hardlink", "var/cache/ldconfig/aux-cache"),
    ]
    single_layer_layout(tmp_path / "src", make_tar(entries))
    result = normalise(
        tmp_path / "src", tmp_path / "out", presets=("debian", "python"), drop=("/etc/nothing",)
    )
    out = tree(layer_members(tmp_path / "out"))
    assert "var/cache/apt/pkgcache.bin" not in out
    assert "var/cache/ldconfig/aux-cache" not in out
    assert out["etc/keep-link"][2] == b"cache"  # the surviving name of the group keeps the data
    assert "usr/lib/py/__pycache__/m.cpython-311.pyc" not in out
    assert out["usr/lib/py/m.py"][2] == b"print()\n"
    assert out["var/log/dpkg.log"][2] == b""
    assert out["var/log/apt/history.log"][2] == b""
    assert "var/log/.wh.old.log" in out  # whiteouts are never touched by rules
    day = EPOCH // 86400
    assert out["etc/shadow"][2] == f"root:*:{day}:0:99999:7:::\nnobody:!::0:::::\n".encode()
    recorded = {(c.path, c.rule.split()[0]) for c in result.changes}
    assert recorded == {
        ("/var/cache/apt/pkgcache.bin", "drop"),
        ("/var/cache/ldconfig/aux-cache", "drop"),
        ("/usr/lib/py/__pycache__/m.cpython-311.pyc", "drop"),
        ("/var/log/dpkg.log", "truncate"),
        ("/var/log/apt/history.log", "truncate"),
        ("/etc/shadow", "shadow"),
    }
    assert all(c.layer == 0 for c in result.changes)
    assert result.to_json()["changes"][0].keys() == {"layer", "path", "rule"}


def test_globs() -> None:
    assert compile_glob("/var/log/**").match("/var/log/a/b.log")
    assert not compile_glob("/var/log/**").match("/var/log")
    assert compile_glob("/var/log/*.log").match("/var/log/x.log")
    assert not compile_glob("/var/log/*.log").match("/var/log/apt/x.log")
    assert compile_glob("**/__pycache__/**").match("/a/__pycache__/b.pyc")
    assert compile_glob("/var/log/**/*.log").match("/var/log/x.log")
    assert compile_glob("/var/log/**/*.log").match("/var/log/a/b/x.log")
    assert compile_glob("/etc/shadow[-]").match("/etc/shadow-")
    assert compile_glob("/x/[!a]").match("/x/b") and not compile_glob("/x/[!a]").match("/x/a")
    for bad in ("var/log", "/var/[log", "/var/log]", "/x/[]"):
        with pytest.raises(InputError, match="invalid glob"):
            compile_glob(bad)


def test_rewrite_shadow() -> None:
    assert rewrite_shadow(b"a:x:1:2\nb:!::\n\n", 5) == b"a:x:5:2\nb:!::\n\n"


# --- bad input -------------------------------------------------------------------


def test_not_a_tar_is_one_line_error_and_no_output(tmp_path: Path) -> None:
    layout = make_layout(
        tmp_path / "src", [(gzip_bytes(b"this is not a tar" * 100), oci.MEDIA_TYPE_OCI_LAYER_GZIP)]
    )
    with pytest.raises(InputError) as e:
        normalise(layout.path, tmp_path / "out")
    assert "layer 0 (sha256:" in str(e.value) and "not a valid tar" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_corrupt_gzip_is_an_input_error(tmp_path: Path) -> None:
    blob = gzip_bytes(make_tar(SAMPLE))
    layout = make_layout(
        tmp_path / "src", [(blob[: len(blob) // 2], oci.MEDIA_TYPE_OCI_LAYER_GZIP)]
    )
    with pytest.raises(InputError, match="layer 0 .*truncated gzip"):
        normalise(layout.path, tmp_path / "out")


def test_hardlink_to_missing_target_names_the_entry(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar([("a", "hardlink", "missing")]))
    with pytest.raises(
        InputError, match=r"layer 0 \(sha256:[0-9a-f]{12}\): entry 'a' is a hard link to 'missing'"
    ):
        normalise(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_invalid_options() -> None:
    with pytest.raises(InputError, match="invalid glob"):
        NormaliseOptions(epoch=0, drop=("/a/[b",))
    with pytest.raises(InputError, match="unknown preset 'fedora'"):
        NormaliseOptions(epoch=0, presets=("fedora",))
    with pytest.raises(InputError, match="compression 'xz'"):
        NormaliseOptions(epoch=0, compression="xz")


def test_existing_output_is_refused(tmp_path: Path) -> None:
    single_layer_layout(tmp_path / "src", make_tar(SAMPLE[:1]))
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="already exists"):
        normalise(tmp_path / "src", tmp_path / "out")


# --- the recipe table --------------------------------------------------------------


def write_recipe(tmp_path: Path, extra: str) -> Path:
    d = tmp_path / "r"
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text("FROM scratch\n")
    (d / "recipe.toml").write_text("source_date_epoch = 1735689600\n" + extra)
    return d


def test_recipe_normalise_table(tmp_path: Path) -> None:
    from repro.recipe import load_recipe

    d = write_recipe(
        tmp_path,
        '[normalise]\npresets = ["debian"]\ndrop = ["/tmp/**"]\ncompression = "zstd"\nlevel = 5\n',
    )
    settings = load_recipe(d).normalise
    assert settings.presets == ("debian",) and settings.drop == ("/tmp/**",)
    options = settings.options(EPOCH, keep_layers=2)
    assert (options.compression, options.compression_level, options.keep_layers) == ("zstd", 5, 2)
    assert load_recipe(write_recipe(tmp_path / "x", "")).normalise.options(EPOCH).effective() == (
        (),
        (),
        False,
    )


@pytest.mark.parametrize(
    ("table", "message", "line"),
    [
        ('drop = ["/var/[log"]', "[normalise] drop: invalid glob '/var/[log'", 4),
        ('presets = ["fedora"]', "unknown preset 'fedora'", 4),
        ("shadow = 1", "'shadow' must be a boolean", 4),
        ('compression = "xz"', "compression 'xz' must be gzip or zstd", 4),
        ("level = 12", "gzip level 12 is not in 0..9", 4),
        ("colour = 1", "unknown key 'colour'", 4),
    ],
)
def test_recipe_normalise_errors(tmp_path: Path, table: str, message: str, line: int) -> None:
    from repro.recipe import load_recipe

    d = write_recipe(tmp_path, f"\n[normalise]\n{table}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(d)
    assert message in str(e.value)
    assert str(e.value).startswith(f"{d / 'recipe.toml'}:{line}: ")


def test_cli_rejects_bad_normalise_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from repro.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["build", "--normalise", "maybe", "x"])
    assert r.exit_code == 2 and "--normalise 'maybe': expected on or off" in r.output
    d = write_recipe(tmp_path, '[normalise]\ntruncate = ["var/log/*"]\n')
    r = runner.invoke(app, ["build", str(d)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0
    assert "must be an absolute path" in r.output


# --- properties ----------------------------------------------------------------------

_names = st.lists(
    st.text(alphabet="abcdefgh._-", min_size=1, max_size=6).filter(
        lambda s: s not in (".", "..") and not s.startswith(".wh.")
    ),
    min_size=1,
    max_size=3,
).map("/".join)


@st.composite
def layers(draw: st.DrawFn) -> list[Entry]:
    paths = draw(st.lists(_names, min_size=1, max_size=12, unique=True))
    # a path is either a leaf or a directory: drop leaves that are parents of others
    leaves = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    dirs = sorted({"/".join(p.split("/")[:i]) for p in leaves for i in range(1, p.count("/") + 1)})
    entries: list[Entry] = [(d, "dir", None) for d in dirs]
    files: list[str] = []
    for p in leaves:
        kind = draw(
            st.sampled_from(["file", "file", "exec", "symlink", "hardlink", "whiteout", "fifo"])
        )
        if kind == "hardlink" and not files:
            kind = "file"
        if kind in ("file", "exec"):
            entries.append((p, kind, draw(st.binary(max_size=700))))
            files.append(p)
        elif kind == "symlink":
            entries.append((p, kind, draw(_names)))
        elif kind == "hardlink":
            entries.append((p, kind, draw(st.sampled_from(files))))
        elif kind == "whiteout":
            head, _, tail = p.rpartition("/")
            entries.append(((head + "/" if head else "") + ".wh." + tail, kind, None))
        else:
            entries.append((p, kind, None))
    # any order, as long as hard link targets come before their links
    order = draw(st.permutations(range(len(entries))))
    shuffled = [entries[i] for i in order]
    placed: set[str] = set()
    result: list[Entry] = []
    waiting: list[Entry] = []
    for e in shuffled:
        (waiting if e[1] == "hardlink" and e[2] not in placed else result).append(e)
        placed.add(e[0])
    return result + waiting


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=layers(), fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
def test_property_idempotent_and_preserving(
    tmp_path_factory: pytest.TempPathFactory, entries: list[Entry], fmt: int
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    tar = make_tar(entries, fmt=fmt)
    single_layer_layout(tmp / "src", tar)
    once = normalise(tmp / "src", tmp / "once")
    twice = normalise(tmp / "once", tmp / "twice")
    assert twice.digest == once.digest
    assert [layer.action for layer in twice.layers] == ["kept"]
    original = tree(layer_members_from_bytes(tar))
    normalised = tree(layer_members(tmp / "once"))
    assert normalised == original  # contents, modes, link targets and whiteouts survive
    # re-encoding from the uncompressed original gives the same bytes
    single_layer_layout(tmp / "plain", tar, "plain")
    assert normalise(tmp / "plain", tmp / "plain-out").digest == once.digest


def test_gzip_header_is_fixed() -> None:
    from repro.normalise._layer import gzip_header

    header = gzip_header(NormaliseOptions(epoch=EPOCH))
    assert header[:10] == b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff"
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    assert d.decompress(header + zlib.compress(b"", 6)[2:-4] + b"\0" * 8) == b""


def test_base_layer_count_from_history() -> None:
    def config(history: list[dict[str, Any]]) -> dict[str, Any]:
        layers = sum(1 for h in history if not h.get("empty_layer"))
        return {"history": history, "rootfs": {"diff_ids": ["sha256:" + "0" * 64] * layers}}

    ours = {"created": "2025-01-01T00:00:00Z", "comment": "buildkit.dockerfile.v0"}
    theirs = {"created": "2023-11-14T22:13:20Z", "comment": "buildkit.dockerfile.v0"}
    plain = {"created": "2020-01-01T00:00:00Z", "created_by": "devbase"}
    empty = {**ours, "empty_layer": True}
    assert base_layer_count(config([plain, empty, ours, ours]), EPOCH) == 1
    # a base BuildKit built at another epoch: its layers are the base's
    assert base_layer_count(config([plain, theirs, theirs, ours]), EPOCH) == 3
    assert base_layer_count(config([ours, ours]), EPOCH) == 0
    assert base_layer_count(config([plain, plain]), EPOCH) == 2
    assert base_layer_count({"rootfs": {"diff_ids": []}}, EPOCH) == 0


def test_multi_block_gzip_is_valid_and_independent_of_threads(tmp_path: Path) -> None:
    import random
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    import repro.normalise._layer as layer_module

    rng = random.Random(5)
    big = bytes(rng.randbytes(1_500_000)) + b"abc" * 700_000  # > 3 blocks, mixed
    single_layer_layout(tmp_path / "src", make_tar([("big", "file", big), ("small", "file", b"x")]))
    a = normalise(tmp_path / "src", tmp_path / "a")
    saved = layer_module._deflate_pool
    layer_module._deflate_pool = ThreadPoolExecutor(max_workers=1)
    try:
        b = normalise(tmp_path / "src", tmp_path / "b")
    finally:
        layer_module._deflate_pool = saved
    assert a.digest == b.digest
    out = tree(layer_members(tmp_path / "a"))
    assert out["big"][2] == big
    blob = next(p for p in (tmp_path / "a/blobs/sha256").iterdir() if p.stat().st_size > 100_000)
    assert subprocess.run(["gzip", "-t", str(blob)], capture_output=True).returncode == 0


def test_golden_digests() -> None:
    """The canonical bytes are pinned: a change here is a change of every user's digests.

    They depend on CPython's tar header writer and on zlib's deflate (madler zlib
    1.2.x/1.3.x give the same bytes; zlib-ng or other forks would not).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        single_layer_layout(Path(tmp) / "src", make_tar(SAMPLE, pax={"SCHILY.xattr.user.k": "v"}))
        layer = normalise(Path(tmp) / "src", Path(tmp) / "out").layers[0]
    assert layer.diff_id == (
        "sha256:0e6f57f5d4e56a6aa34042da7d70616419968f415826648c35e7f4a79003ef7d"
    ), "the canonical tar encoding changed"
    assert layer.descriptor.digest == (
        "sha256:654c9172c4d6a74c106b83939e445032520bafa5519bac5e033fb5798c6ab2f2"
    ), f"gzip output changed (zlib {zlib.ZLIB_RUNTIME_VERSION})"


class _FakeRegistry:
    """Serves one layout's manifest and blobs as `repro.registry.Registry` would."""

    def __init__(self, layout: oci.OCILayout) -> None:
        self.layout = layout

    def get_manifest(self, ref: str) -> tuple[bytes, str, str]:
        digest = ref.rpartition("@")[2]
        return self.layout.read_blob(digest), oci.MEDIA_TYPE_OCI_MANIFEST, digest

    def get_blob(self, repo: str, digest: str, dest: Any, size: int | None = None) -> int:
        data = self.layout.read_blob(digest, size)
        if isinstance(dest, str | Path):
            Path(dest).write_bytes(data)
        else:
            dest.write(data)
        return len(data)


def test_locked_base_layers_are_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repro.normalise import locked_base_layers

    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))

    base_tar, top_tar = make_tar(SAMPLE[:3]), make_tar(SAMPLE[3:6])
    base_blob = gzip_bytes(base_tar, level=9)
    base = make_layout(
        tmp_path / "base", [(base_blob, oci.MEDIA_TYPE_OCI_LAYER_GZIP)], uncompressed=[base_tar]
    )
    # the builder exported the base layer as other bytes (another compression level)
    image = make_layout(
        tmp_path / "img",
        [
            (gzip_bytes(base_tar, level=1), oci.MEDIA_TYPE_OCI_LAYER_GZIP),
            (gzip_bytes(top_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP),
        ],
        uncompressed=[base_tar, top_tar],
    )
    base_digest = base.index_manifests()[0].digest
    lock = {
        "bases": {
            "127.0.0.1:5000/other:1": {"digest": "sha256:" + "1" * 64, "platforms": {}},
            "127.0.0.1:5000/base:1": {"digest": base_digest, "platforms": {}},
        }
    }
    client = _FakeRegistry(base)
    found = locked_base_layers(
        {"bases": {"127.0.0.1:5000/base:1": lock["bases"]["127.0.0.1:5000/base:1"]}},
        "linux/amd64",
        oci.load_image(image).config,
        lambda: client,
    )
    assert found is not None and found.repository == "127.0.0.1:5000/base"
    assert [d.digest for d in found.layers] == [oci.sha256_digest(base_blob)]
    oci.copy_blobs(client, found.repository, found.layers, image)
    result = normalise(image.path, tmp_path / "out", keep_layers=1, base_layers=tuple(found.layers))
    assert [layer.action for layer in result.layers] == ["restored", "rewritten"]
    assert oci.load_image(oci.OCILayout(tmp_path / "out")).layers[0].digest == oci.sha256_digest(
        base_blob
    )
    # a base whose layers do not begin the image is not it
    other = make_layout(tmp_path / "other", [(gzip_bytes(top_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP)],
                        uncompressed=[top_tar])  # fmt: skip
    lock_other = {"bases": {"x/y:1": {"digest": other.index_manifests()[0].digest}}}
    config = oci.load_image(image).config
    found = locked_base_layers(lock_other, "linux/amd64", config, lambda: _FakeRegistry(other))
    assert found is None


def test_locked_base_documents_come_from_a_checked_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base's manifest and config are kept by digest: the next build asks the
    registry nothing; a cached document whose bytes do not match is fetched again."""
    from repro.normalise import locked_base_layers
    from repro.oci import documents_dir

    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    base_tar, top_tar = make_tar(SAMPLE[:3]), make_tar(SAMPLE[3:6])
    base = make_layout(tmp_path / "base", [(gzip_bytes(base_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP)],
                       uncompressed=[base_tar])  # fmt: skip
    image = make_layout(
        tmp_path / "img",
        [(gzip_bytes(base_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP),
         (gzip_bytes(top_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP)],
        uncompressed=[base_tar, top_tar],
    )  # fmt: skip
    manifest_digest = base.index_manifests()[0].digest
    lock = {"bases": {"127.0.0.1:5000/base:1": {"digest": manifest_digest}}}
    config = oci.load_image(image).config
    asked: list[str] = []

    def client() -> _FakeRegistry:
        asked.append("registry")
        return _FakeRegistry(base)

    def unreachable() -> _FakeRegistry:
        raise AssertionError("the registry was asked")

    first = locked_base_layers(lock, "linux/amd64", config, client)
    assert first is not None and asked
    cached = sorted(p.name for p in documents_dir().iterdir())
    assert f"sha256-{manifest_digest.split(':')[1]}" in cached and len(cached) == 2
    again = locked_base_layers(lock, "linux/amd64", config, unreachable)
    assert again == first
    # Damaged: not trusted, fetched again and replaced.
    for path in documents_dir().iterdir():
        path.write_bytes(path.read_bytes() + b" ")
    asked.clear()
    assert locked_base_layers(lock, "linux/amd64", config, client) == first and asked
    assert locked_base_layers(lock, "linux/amd64", config, unreachable) == first


@pytest.mark.parametrize("compression", ["gzip", "zstd", "plain", "multi-member"])
def test_whiteout_of_a_path_no_lower_layer_has_is_a_warning(
    tmp_path: Path, compression: str
) -> None:
    lower_tar = make_tar(
        [("etc", "dir", None), ("etc/old", "file", b"x"), ("opt/app/a", "file", b"")]
    )
    upper_tar = make_tar(
        [
            ("etc/.wh.old", "whiteout", None),  # removes a file the lower layer has
            ("opt/.wh.app", "whiteout", None),  # removes a directory it has
            ("etc/.wh.ghost", "whiteout", None),  # removes nothing
            ("srv/.wh..wh..opq", "whiteout", None),  # opaque: not checked
        ]
    )
    if compression == "gzip":
        lower = (gzip_bytes(lower_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP)
    elif compression == "zstd":
        lower = (zstd_bytes(lower_tar), oci.MEDIA_TYPE_OCI_LAYER_ZSTD)
    elif compression == "plain":
        lower = (lower_tar, oci.MEDIA_TYPE_OCI_LAYER)
    else:  # two gzip members, as concatenating compressors write
        half = len(lower_tar) // 2
        lower = (
            gzip_bytes(lower_tar[:half]) + gzip_bytes(lower_tar[half:]),
            oci.MEDIA_TYPE_OCI_LAYER_GZIP,
        )
    make_layout(
        tmp_path / "src",
        [lower, (gzip_bytes(upper_tar), oci.MEDIA_TYPE_OCI_LAYER_GZIP)],
        uncompressed=[lower_tar, upper_tar],
    )
    result = normalise(tmp_path / "src", tmp_path / "out", keep_layers=1)
    assert len(result.warnings) == 1, result.warnings
    assert result.warnings[0].startswith("layer 1 (sha256:")
    assert (
        "whiteout 'etc/.wh.ghost' removes /etc/ghost, which no lower layer has"
        in result.warnings[0]
    )
    assert result.to_json()["warnings"] == result.warnings
    # the whiteouts themselves are all kept
    names = {m.name for m, _ in layer_members(tmp_path / "out")}
    assert {"etc/.wh.old", "opt/.wh.app", "etc/.wh.ghost", "srv/.wh..wh..opq"} <= names


def test_umask_rule_clears_bits_and_keeps_complying_layers_byte_identical(tmp_path: Path) -> None:
    """`umask` clears group/other bits the way a umask would, records each entry it
    changes, leaves symlinks alone; a layer whose modes already comply gets the same
    bytes as without the rule (so adding it to a recipe does not move its digest)."""
    loose: list[Entry] = [
        ("etc", "dir", None),
        ("etc/data", "file", b"x\n"),
        ("etc/alias", "symlink", "/etc/data"),
    ]
    tar = make_tar(loose)
    # make_tar writes 0640 files and 0755 dirs: make them group/other-writable.
    members = layer_members_from_bytes(tar)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for m, content in members:
            if not m.issym():
                m.mode |= 0o022
            t.addfile(m, io.BytesIO(content) if m.isreg() else None)
    single_layer_layout(tmp_path / "src", out.getvalue())
    result = normalise(tmp_path / "src", tmp_path / "out", umask=0o022)
    got = tree(layer_members(tmp_path / "out"))
    assert got["etc/data"][1] == 0o640 and got["etc"][1] == 0o755
    assert {c.path for c in result.changes} == {"/etc", "/etc/data"}
    assert all(c.rule.startswith("umask 022") for c in result.changes)
    # Already complying: the same digest with and without the rule.
    single_layer_layout(tmp_path / "ok", tar)
    plain = normalise(tmp_path / "ok", tmp_path / "plain")
    masked = normalise(tmp_path / "ok", tmp_path / "masked", umask=0o022)
    assert plain.digest == masked.digest and not masked.changes


def test_umask_setting_is_checked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from repro.cli import app

    d = write_recipe(tmp_path, '[normalise]\numask = "0998"\n')
    r = CliRunner().invoke(app, ["build", str(d)])
    assert r.exit_code == 2 and "umask '0998' must be octal digits" in r.output


def test_each_platform_of_an_index_is_returned_with_its_own_digests(tmp_path: Path) -> None:
    """A multi-platform image: every platform's manifest and config come back in the
    result (they used to be one field, set by whichever platform finished last)."""
    import shutil

    from diffimages import F, make_image

    amd = make_image(tmp_path / "amd", [[F("a", b"amd64")]], platform=("linux", "amd64"))
    arm = make_image(tmp_path / "arm", [[F("a", b"arm64")]], platform=("linux", "arm64"))
    for blob in (arm.path / "blobs" / "sha256").iterdir():
        target = amd.path / "blobs" / "sha256" / blob.name
        if not target.exists():
            shutil.copyfile(blob, target)
    children = amd.index_manifests() + arm.index_manifests()
    index_doc = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_INDEX,
        "manifests": [d.to_json() for d in children],
    }
    top = amd.write_blob(oci.canonical_json(index_doc), oci.MEDIA_TYPE_OCI_INDEX)
    amd.write_index([top])

    result = normalise(amd.path, tmp_path / "out")
    assert sorted(result.platforms) == ["linux/amd64", "linux/arm64"]
    out = oci.Index.open(oci.OCILayout(tmp_path / "out"))
    for platform, digests in result.platforms.items():
        image = out.images[platform]
        assert image.descriptor.digest == digests["manifest"]
        assert image.config_descriptor.digest == digests["config"]
    assert result.config_digest == result.platforms["linux/amd64"]["config"]
