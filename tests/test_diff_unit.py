"""repro diff without an engine: pairing, path tables, causes, safe extraction, presenters.

Images are synthetic OCI layouts (tests/diffimages.py); diffoscope is the real one
from the venv.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from diffimages import F, gz, make_image, tar_bytes
from runner import run_repro

from repro import oci
from repro.diff import Hints, Limits, Options, PathChange, classify, diff, present
from repro.diff._causes import entropy
from repro.diff._layers import (
    compare_tables,
    extract_paths,
    normalise_name,
    pair_layers,
    read_table,
    safe_target,
)
from repro.errors import DigestMismatch, InputError, ReproError

ROOT = Path(__file__).resolve().parent.parent

BASE = [F("bin/", type=tarfile.DIRTYPE, mode=0o755), F("bin/sh", b"#!shell\n" * 100, 0o755)]


def repro(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd or ROOT, timeout=120)


def table(entries: list[F], compress: bool = True) -> object:
    raw = tar_bytes(entries)
    return read_table(io.BytesIO(gz(raw) if compress else raw), "test layer", Limits())


# --- pairing ---------------------------------------------------------------------


def test_pair_layers_by_position_when_counts_match() -> None:
    assert pair_layers(["a", "b", "c"], ["a", "x", "c"]) == [(0, 0), (1, 1), (2, 2)]


def test_pair_layers_by_diff_id_when_a_layer_was_inserted() -> None:
    assert pair_layers(["a", "b", "c"], ["a", "new", "b", "c"]) == [
        (0, 0),
        (None, 1),
        (1, 2),
        (2, 3),
    ]


def test_pair_layers_by_diff_id_when_a_layer_was_removed_and_one_changed() -> None:
    assert pair_layers(["a", "b", "c", "d"], ["a", "c", "d2"]) == [
        (0, 0),
        (1, None),
        (2, 1),
        (3, 2),
    ]


# --- the per-path table -------------------------------------------------------------


def test_table_records_metadata_and_content_hash() -> None:
    t = table(
        [
            F("./etc/", type=tarfile.DIRTYPE, mode=0o755),
            F("./etc/a", b"hello", uid=1, gid=2),
            F("etc/link", type=tarfile.SYMTYPE, linkname="a"),
            F("etc/cap", b"x", xattrs={"security.capability": "AQ=="}),
        ]
    )
    entries = t.entries  # type: ignore[attr-defined]
    assert list(entries) == ["etc", "etc/a", "etc/link", "etc/cap"]
    a = entries["etc/a"]
    assert (a.type, a.mode, a.uid, a.gid, a.size) == ("file", 0o644, 1, 2, 5)
    assert a.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert entries["etc/link"].linkname == "a"
    assert entries["etc/cap"].xattrs == (("security.capability", "AQ=="),)


def test_compare_tables_names_each_kind_of_change() -> None:
    t1 = table(
        [
            F("same", b"1"),
            F("content", b"1"),
            F("mode", b"1", mode=0o644),
            F("owner", b"1"),
            F("mtime", b"1", mtime=1),
            F("link", type=tarfile.SYMTYPE, linkname="a"),
            F("xattr", b"1"),
            F("gone", b"1"),
        ]
    )
    t2 = table(
        [
            F("same", b"1"),
            F("content", b"2"),
            F("mode", b"1", mode=0o664),
            F("owner", b"1", uid=1000),
            F("mtime", b"1", mtime=2),
            F("link", type=tarfile.SYMTYPE, linkname="b"),
            F("xattr", b"1", xattrs={"user.k": "v"}),
            F("new", b"1"),
        ]
    )
    deltas, moved = compare_tables(t1, t2)  # type: ignore[arg-type]
    got = {d.path: d.changes for d in deltas}
    assert got == {
        "content": ["content"],
        "mode": ["mode"],
        "owner": ["owner"],
        "mtime": ["mtime"],
        "link": ["link"],
        "xattr": ["xattrs"],
        "gone": ["removed"],
        "new": ["added"],
    }
    assert moved == []


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_in_every_tar_format(fmt: int) -> None:
    long = "d/" + "x" * 150 if fmt != tarfile.USTAR_FORMAT else "d" * 90 + "/" + "y" * 90
    raw = tar_bytes(
        [
            F(long, b"content"),
            F("l", type=tarfile.SYMTYPE, linkname="t" * 120 if fmt != 0 else "t"),
        ],
        format=fmt,
    )
    t = read_table(io.BytesIO(raw), "layer", Limits())
    assert list(t.entries) == [long, "l"]
    assert t.entries[long].size == 7
    assert t.entries[long].sha256 == hashlib.sha256(b"content").hexdigest()


def test_compare_tables_finds_entries_out_of_order() -> None:
    files = [F(f"f{i}", b"x") for i in range(5)]
    t1 = table(files)
    t2 = table([files[0], files[3], files[1], files[2], files[4]])
    deltas, moved = compare_tables(t1, t2)  # type: ignore[arg-type]
    assert deltas == []
    assert moved == ["f3"]


def test_gzip_with_fextra_header_and_zstd_layers_are_read() -> None:
    import zstandard

    raw = tar_bytes([F("a", b"data")])
    body = gz(raw)
    # A gzip member with FEXTRA (flag 0x04), as BuildKit writes on some layers.
    extra = b"RP\x02\x00ab"
    fextra = (
        body[:3] + bytes([body[3] | 0x04]) + body[4:10] + len(extra).to_bytes(2, "little") + extra
    )
    fextra += body[10:]
    for blob in (fextra, zstandard.ZstdCompressor().compress(raw), raw):
        t = read_table(io.BytesIO(blob), "layer", Limits())
        assert list(t.entries) == ["a"]


def test_garbage_and_truncated_layers_are_input_errors() -> None:
    with pytest.raises(InputError, match="^layer is not valid gzip"):
        read_table(io.BytesIO(b"\x1f\x8b" + b"garbage" * 100), "layer", Limits())
    truncated = gz(tar_bytes([F("a", os.urandom(100_000))]))[:2000]
    with pytest.raises(InputError, match="^layer is a truncated gzip stream"):
        read_table(io.BytesIO(truncated), "layer", Limits())


def test_bzip2_and_xz_layers_are_refused_by_name() -> None:
    for head, name in ((b"BZh91AY&SY", "bzip2"), (b"\xfd7zXZ\x00\x00", "xz")):
        with pytest.raises(InputError, match=f"{name} layers are not supported"):
            read_table(io.BytesIO(head + b"\0" * 100), "layer", Limits())


def test_tar_bomb_is_refused_by_the_layer_size_bound() -> None:
    raw = tar_bytes([F("big", b"\0" * 2_000_000)])
    with pytest.raises(InputError, match="unpacks to more than 1000000 bytes"):
        read_table(io.BytesIO(gz(raw)), "layer", Limits(max_layer_bytes=1_000_000))


# --- safe extraction -----------------------------------------------------------------


def test_normalise_name_flags_escapes() -> None:
    assert normalise_name("./usr/bin/x") == ("usr/bin/x", False)
    assert normalise_name("/etc/passwd") == ("etc/passwd", True)
    assert normalise_name("a/../../x") == ("a/../../x", True)


def test_safe_target_never_leaves_root(tmp_path: Path) -> None:
    for bad in ("../x", "a/../../x", "/abs", "", "a/\0b"):
        target = safe_target(tmp_path, bad, "7")
        assert target == tmp_path / "_unsafe" / "7"
    assert safe_target(tmp_path, "usr/bin/x", "7") == tmp_path / "usr" / "bin" / "x"


def test_extraction_of_hostile_layer_stays_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = [
        F("../escape", b"1"),
        F("/abs", b"2"),
        F("link", type=tarfile.SYMTYPE, linkname=str(outside)),
        F("link/through", b"3"),
        F("dotdot/../../../../escape2", b"4"),
        F("ok/file", b"5"),
    ]
    wanted = {normalise_name(e.name)[0] for e in entries}
    got = extract_paths(io.BytesIO(gz(tar_bytes(entries))), "hostile", wanted, root, Limits())
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "escape2").exists()
    for x in got.values():
        assert x.file is not None
        assert os.path.realpath(x.file).startswith(str(root) + os.sep)
        assert not x.file.is_symlink()
    assert got["ok/file"].file == root / "ok" / "file"
    assert (root / "link").is_dir()  # the symlink was never created
    assert sorted(x.head for x in got.values()) == [b"1", b"2", b"3", b"4", b"5"]


def test_extraction_bounds_skip_large_files(tmp_path: Path) -> None:
    entries = [F("small", b"s"), F("large", b"L" * 5000)]
    got = extract_paths(
        io.BytesIO(gz(tar_bytes(entries))),
        "layer",
        {"small", "large"},
        tmp_path,
        Limits(max_file_bytes=1000),
    )
    assert got["small"].file is not None
    assert got["large"].file is None and "larger than 1000 bytes" in got["large"].skipped
    assert not (tmp_path / "large").exists()


# --- the cause table -----------------------------------------------------------------


def causes(path: str, changes: list[str], a: bytes = b"", b: bytes = b"", **kw: object) -> set[str]:
    return {c.id for c in classify(PathChange(path, changes, head1=a, head2=b, **kw))}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "changes", "a", "b", "expected"),
    [
        (
            "etc/stamp",
            ["content"],
            b"Fri Nov 27 21:00:01 UTC 2026\n",
            b"Fri Nov 27 21:00:02 UTC 2026\n",
            "timestamp-in-content",
        ),
        (
            "etc/stamp",
            ["content"],
            b"built 2026-11-27T21:00:01Z",
            b"built 2026-11-27T21:00:09Z",
            "timestamp-in-content",
        ),
        (
            "usr/lib/python3/__pycache__/x.cpython-311.pyc",
            ["content"],
            b"\xa7\r\r\n",
            b"\xa7\r\r\n",
            "pyc",
        ),
        ("var/log/build.log", ["content"], b"", b"", "var-log"),
        ("var/lib/dpkg/status", ["content"], b"", b"", "dpkg-apt"),
        ("var/cache/apt/pkgcache.bin", ["content"], b"", b"", "dpkg-apt"),
        ("lib/apk/db/scripts.tar", ["content"], b"", b"", "apk"),
        ("var/cache/ldconfig/aux-cache", ["content"], b"", b"", "ldconfig-aux-cache"),
        ("etc/shadow", ["content"], b"root:*:19000:0:::::", b"root:*:20000:0:::::", "shadow-date"),
        (
            "usr/share/doc/x.gz",
            ["content"],
            b"\x1f\x8b\x08\x00\x01\x00\x00\x00",
            b"\x1f\x8b\x08\x00\x02\x00\x00\x00",
            "gzip-header",
        ),
        ("etc/conf", ["mtime"], b"", b"", "mtime"),
        ("etc/conf", ["owner"], b"", b"", "owner"),
        ("etc/built-on", ["content"], b"buildkitsandbox\n", b"other\n", "hostname"),
        (
            "etc/id",
            ["content"],
            b"id=3f2a9c1b7d6e4f5a8b9c0d1e2f3a4b5c",
            b"id=9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
            "random-data",
        ),
        (
            "app/cfg",
            ["content"],
            b"root=/tmp/buildkit-mount123/src",
            b"root=/tmp/buildkit-mount456/src",
            "build-path",
        ),
    ],
)
def test_cause_table(path: str, changes: list[str], a: bytes, b: bytes, expected: str) -> None:
    assert expected in causes(path, changes, a, b)


def test_umask_mode_only_for_group_and_other_bits() -> None:
    assert "umask-mode" in causes("f", ["mode"], mode1=0o644, mode2=0o664)
    assert "umask-mode" not in causes("f", ["mode"], mode1=0o644, mode2=0o755)


def test_random_bytes_and_hints() -> None:
    r1, r2 = os.urandom(256), os.urandom(256)
    assert causes("r.bin", ["content"], r1, r2) == {"random-data"}
    assert entropy(b"aaaa") == 0.0
    hints = Hints(hostnames=("builder-one",))
    assert "hostname" in causes("x", ["content"], b"builder-one", b"builder-two", hints=hints)
    assert causes("seed", ["content"], b"190322950\n", b"163014475\n") == {"random-data"}
    # A plain text change with no known pattern says what is known instead.
    [unknown] = classify(
        PathChange("etc/motd", ["content"], head1=b"hello world\n", head2=b"goodbye world\n")
    )
    assert unknown.id == "unclassified"
    assert unknown.title.startswith("text; 1 of 1 lines differ")
    assert "does not look random" in unknown.title


# --- whole images ---------------------------------------------------------------------


def test_identical_images_compare_identical(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE, [F("etc/x", b"1")]])
    make_image(tmp_path / "b", [BASE, [F("etc/x", b"1")]])
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    assert report.identical and report.verdict == "identical"
    assert [p.verdict for p in report.platforms] == ["identical"]


@pytest.mark.parametrize("compress", [True, False])
def test_one_differing_file_is_named_with_diffoscope_view(
    tmp_path: Path, compress: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gzip layers are read once (small differing files are kept from the first
    pass, big ones stream a second time); uncompressed ones are read back by offset."""
    from repro.diff._sources import ImageSource

    opened: list[tuple[str, str]] = []
    real_open = ImageSource.open_blob

    def counting(self: ImageSource, descriptor: object) -> object:
        opened.append((self.label, descriptor.digest))  # type: ignore[attr-defined]
        return real_open(self, descriptor)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageSource, "open_blob", counting)
    files = [F(f"usr/share/f{i}", os.urandom(2000)) for i in range(50)]
    a = [*files, F("etc/stamp", b"built 2026-01-01 10:00:00\n")]
    b = [*files, F("etc/stamp", b"built 2026-01-01 10:00:07\n")]
    make_image(tmp_path / "a", [BASE, a], compress=compress)
    make_image(tmp_path / "b", [BASE, b], compress=compress)
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    assert report.verdict == "different"
    assert report.platforms[0].differing_layers == [1]
    assert [(f.path, f.layer) for f in report.findings] == [("/etc/stamp", 1)]
    assert [c.id for c in report.findings[0].causes] == ["timestamp-in-content"]
    text = present.text(report)
    assert "/etc/stamp" in text and "timestamp-in-content" in text
    assert "+built 2026-01-01 10:00:07" in text  # diffoscope's view
    assert "-built 2026-01-01 10:00:00" in text
    # Each side's layer blobs were opened once (verify_blobs reads the equal ones once).
    assert len(opened) == len(set(opened))


def test_same_content_different_compression(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE], gzip_level=1)
    make_image(tmp_path / "b", [BASE], gzip_level=9, gzip_mtime=12345)
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    assert report.verdict == "same-content"
    assert {c.id for c in report.causes()} == {"compression"}


def test_config_created_and_layer_count_difference(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE, [F("x", b"1")]], created="2023-01-01T00:00:00Z")
    make_image(
        tmp_path / "b",
        [BASE, [F("new", b"n")], [F("x", b"1")]],
        created="2023-01-01T00:00:00Z",
    )
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    layer_nodes = [d for d in report.tree.details[0].details if d.kind == "layer"]  # type: ignore[union-attr]
    assert any("only in the second image" in n.comment for n in layer_nodes)
    make_image(tmp_path / "c", [BASE], created="2023-01-01T00:00:00Z")
    make_image(tmp_path / "d", [BASE], created="2024-01-01T00:00:00Z")
    report = diff(f"oci:{tmp_path / 'c'}", f"oci:{tmp_path / 'd'}")
    config = report.tree.details[0].details[0]  # type: ignore[union-attr]
    assert config.kind == "config" and [c.id for c in config.causes] == ["config-created"]
    assert '-  "created": "2023-01-01T00:00:00Z"' in (config.unified_diff or "")


def test_no_common_platform_is_a_reported_difference(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE], platform=("linux", "amd64"))
    make_image(tmp_path / "b", [BASE], platform=("linux", "arm64"))
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    assert report.verdict == "different"
    assert sorted(p.verdict for p in report.platforms) == ["only-in-first", "only-in-second"]
    assert report.tree is not None and "no platform in common" in report.tree.comment


def test_corrupt_blob_fails_its_digest(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE, [F("x", b"1")]])
    layout = make_image(tmp_path / "b", [BASE, [F("x", b"2")]])
    layer = oci.load_image(layout).layers[1]
    path = layout.blob_path(layer.digest)
    data = path.read_bytes()
    # Same length, valid gzip, different bytes: only the digest check can catch it.
    path.write_bytes(data[:-8] + bytes(8))
    with pytest.raises(ReproError) as info:
        diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    assert isinstance(info.value, DigestMismatch | InputError)


def test_presenters_render_one_tree(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE, [F("var/log/x.log", b"<b>1</b>"), F("f", b"1", mode=0o644)]])
    make_image(tmp_path / "b", [BASE, [F("var/log/x.log", b"<b>2</b>"), F("f", b"1", mode=0o664)]])
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}", Options(diffoscope=False))
    doc = json.loads(present.to_json(report))
    assert doc["verdict"] == "different"
    assert {f["path"]: [c["id"] for c in f["causes"]] for f in doc["findings"]} == {
        "/var/log/x.log": ["var-log"],
        "/f": ["umask-mode"],
    }
    page = present.html_report(report)
    assert "&lt;b&gt;" not in page or "<b>1</b>" not in page  # escaped, never raw
    assert "/var/log/x.log" in page and "umask-mode" in page
    md = present.markdown(report, "t")
    assert "| `/f` | 1 | mode | umask-mode |" in md
    written = present.write_report_dir(report, tmp_path / "rep")
    assert sorted(p.name for p in written) == [
        "report.html",
        "report.json",
        "summary.md",
        "summary.txt",
    ]


def test_text_presenter_counts_what_it_does_not_show(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [[F(f"f{i}", b"a") for i in range(10)]])
    make_image(tmp_path / "b", [[F(f"f{i}", b"b") for i in range(10)]])
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}", Options(diffoscope=False))
    text = present.text(report, limit=3)
    assert "... and 7 more differing paths" in text


# --- the command line --------------------------------------------------------------


def test_cli_diff_exit_codes_and_outputs(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [BASE, [F("etc/x", b"1")]])
    make_image(tmp_path / "b", [BASE, [F("etc/x", b"2")]])
    oci.write_oci_archive(oci.OCILayout(tmp_path / "b"), tmp_path / "b.tar")
    same = repro("diff", f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'a'}")
    assert same.returncode == 0, same.stderr
    assert "identical" in same.stdout
    r = repro(
        "diff",
        f"oci:{tmp_path / 'a'}",
        f"oci-archive:{tmp_path / 'b.tar'}",
        "--json",
        "--report-dir",
        str(tmp_path / "rep"),
    )
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["findings"][0]["path"] == "/etc/x"
    assert (tmp_path / "rep" / "report.html").is_file()


@pytest.mark.parametrize(
    "second",
    [
        "oci:/nonexistent",
        "nonsense:thing",
        "oci-archive:{tmp}/bad.tar",
        "oci-archive:{tmp}/trunc.tar",
    ],
)
def test_cli_diff_bad_input_is_one_line_exit_2(tmp_path: Path, second: str) -> None:
    make_image(tmp_path / "a", [BASE])
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    oci.write_oci_archive(oci.OCILayout(tmp_path / "a"), tmp_path / "full.tar")
    (tmp_path / "trunc.tar").write_bytes((tmp_path / "full.tar").read_bytes()[:3000])
    r = repro("diff", f"oci:{tmp_path / 'a'}", second.format(tmp=tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("repro: error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_cli_diff_hostile_layer_is_reported_not_extracted(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [[F("ok", b"1"), F("../../evil", b"1")]])
    make_image(tmp_path / "b", [[F("ok", b"1"), F("../../evil", b"2")]])
    r = repro("diff", str(tmp_path / "a"), str(tmp_path / "b"), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "unsafe names" in r.stdout and "../../evil" in r.stdout
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "evil").exists()


def test_cli_diff_tar_bomb_bound_is_configurable(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [[F("big", b"\0" * 200_000)]])
    make_image(tmp_path / "b", [[F("big", b"\1" * 200_000)]])
    r = repro("diff", str(tmp_path / "a"), str(tmp_path / "b"), "--max-layer-size", "100K")
    assert r.returncode == 2, r.stdout
    assert "unpacks to more than 102400 bytes" in r.stderr and r.stderr.count("\n") == 1
    r = repro("diff", str(tmp_path / "a"), str(tmp_path / "b"), "--max-file-size", "1K")
    assert r.returncode == 1
    assert "not given to diffoscope: larger than 1024 bytes" in r.stdout


# --- a source says when it is incomplete or corrupt ----------------------------------


def _run_diff(a: Path, b: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repro", "diff", f"oci:{a}", f"oci:{b}", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _layer_path(layout_dir: Path) -> Path:
    layout = oci.OCILayout(layout_dir)
    image = layout.image_manifests()[0]
    layer = oci.read_manifest(layout, image)["layers"][0]["digest"]
    return layout.blob_path(layer)


@pytest.mark.parametrize("damage", ["delete", "corrupt", "truncate"])
def test_a_damaged_copy_of_the_same_image_is_not_identical(tmp_path: Path, damage: str) -> None:
    import shutil

    make_image(tmp_path / "a", [[F("etc/x", b"hello world" * 100)]])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    blob = _layer_path(tmp_path / "b")
    data = blob.read_bytes()
    if damage == "delete":
        blob.unlink()
    elif damage == "corrupt":
        blob.write_bytes(data[:-5] + b"XXXXX")
    else:
        blob.write_bytes(data[:-5])
    r = _run_diff(tmp_path / "a", tmp_path / "b")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "identical" not in r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_a_layer_that_is_not_what_its_diff_id_says_is_refused(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [[F("etc/x", b"content")]])
    make_image(tmp_path / "b", [[F("etc/x", b"content")]], gzip_level=1)
    # b's layer replaced by bytes that are not even a tar, under a fresh digest
    layout = oci.OCILayout(tmp_path / "b")
    image = layout.image_manifests()[0]
    manifest = oci.read_manifest(layout, image)
    bogus = layout.write_blob(gz(b"not a tar at all" * 64), oci.MEDIA_TYPE_OCI_LAYER_GZIP)
    manifest["layers"][0] = bogus.to_json()
    desc = layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)
    desc.platform = image.platform
    layout.write_index([desc])
    r = _run_diff(tmp_path / "a", tmp_path / "b")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "does not hold the content its config names" in r.stderr, r.stderr


def test_a_platform_neither_image_has_is_an_error(tmp_path: Path) -> None:
    make_image(tmp_path / "a", [[F("etc/x", b"1")]])
    make_image(tmp_path / "b", [[F("etc/x", b"2")]])
    r = _run_diff(tmp_path / "a", tmp_path / "b", "--platform", "linux/s390x")
    assert r.returncode == 2 and "neither image has it" in r.stderr, (r.stdout, r.stderr)


def test_awkward_but_valid_layer_paths_do_not_abort_the_diff(tmp_path: Path) -> None:
    long_name = "d/" + "x" * 300
    first = [[F("c", b"file one"), F(long_name, b"a" * 50), F("evil\nsame content: forged", b"1")]]
    second = [[F("c", b"file two"), F(long_name, b"b" * 50), F("evil\nsame content: forged", b"2")]]
    first.append([F("c/inner.txt", b"one")])
    second.append([F("c/inner.txt", b"two")])
    make_image(tmp_path / "a", first)
    make_image(tmp_path / "b", second)
    r = _run_diff(tmp_path / "a", tmp_path / "b")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "too long" not in r.stderr, r.stderr
    assert "x" * 300 in r.stdout and "c/inner.txt" in r.stdout
    assert "evil\\nsame content: forged" in r.stdout
    assert not any(line.startswith("same content: forged") for line in r.stdout.splitlines())


def test_a_small_gzip_bomb_is_refused_by_its_ratio_not_after_minutes() -> None:
    bomb = gz(tar_bytes([F("zeros", b"\0" * (8 * 1024 * 1024))]))
    assert len(bomb) < 64 * 1024
    limits = Limits(ratio_floor=1024 * 1024)  # small floor, so a small bomb trips it
    with pytest.raises(InputError, match="more than 256 times its compressed size"):
        read_table(io.BytesIO(bomb), "layer", limits, compressed_size=len(bomb))
    # An ordinary layer of the same size passes, and so does the bomb without the ratio
    ordinary = gz(tar_bytes([F("random", os.urandom(2 * 1024 * 1024))]))
    read_table(io.BytesIO(ordinary), "layer", limits, compressed_size=len(ordinary))
    read_table(io.BytesIO(bomb), "layer", Limits(ratio_floor=10**12), compressed_size=len(bomb))


def test_diffoscope_hunks_keep_one_order() -> None:
    from repro.diff._diffoscope import one_order

    diff = "@@ -1,3 +1,3 @@\n ctx\n+new a\n-old a\n ctx\n@@ -9 +9 @@\n-old b\n+new b\n"
    assert one_order(diff) == (
        "@@ -1,3 +1,3 @@\n ctx\n-old a\n+new a\n ctx\n@@ -9 +9 @@\n-old b\n+new b\n"
    )


def test_causes_from_structure_and_variations(tmp_path: Path) -> None:
    import io as _io
    import tarfile as _tarfile

    def tar(mtime: int, order: list[str]) -> bytes:
        out = _io.BytesIO()
        with _tarfile.open(fileobj=out, mode="w") as t:
            for name in order:
                info = _tarfile.TarInfo(name)
                info.size, info.mtime = 1, mtime
                t.addfile(info, _io.BytesIO(b"x"))
        return out.getvalue()

    def archive(a: bytes, b: bytes) -> list[str]:
        (tmp_path / "1").write_bytes(a)
        (tmp_path / "2").write_bytes(b)
        change = PathChange(
            "opt/x.tar",
            ["content"],
            head1=a[:65536],
            head2=b[:65536],
            file1=tmp_path / "1",
            file2=tmp_path / "2",
        )
        return [c.id for c in classify(change)]

    assert archive(tar(1, ["a", "b"]), tar(2, ["a", "b"])) == ["archive-member-times"]
    assert archive(tar(1, ["a", "b"]), tar(1, ["b", "a"])) == ["archive-member-order"]
    tz = Hints(variations=(("timezone", ("UTC", "<+14>-14")),))
    assert causes(
        "etc/t",
        ["content"],
        b"Tue Nov 14 22:13:20 UTC 2023\n",
        b"Wed Nov 15 12:13:20 +14 2023\n",
        hints=tz,
    ) == {"timezone"}
    loc = Hints(variations=(("locale", ("C.UTF-8", "fr_FR.UTF-8")),))
    assert causes("o", ["content"], b"B\na\nc\n", b"a\nB\nc\n", hints=loc) == {"locale-sort"}
    assert causes("o", ["content"], b"c\na\nB\n", b"a\nc\nB\n") == {"random-order"}
    assert causes("o", ["content"], b"ratio 1.5\n", b"ratio 1,5\n") == {"locale"}
    assert causes("o", ["type", "content", "link"], type1="hardlink", type2="file") == {
        "hardlink-vs-copy"
    }
    assert causes("o", ["added"]) == {"file-set"}
    [unknown] = classify(
        PathChange("bin/x", ["content"], head1=b"\x7fELF\x01\x02", head2=b"\x7fELF\x01\x03")
    )
    assert unknown.id == "unclassified"
    assert unknown.title.startswith(
        "ELF binary; 1 of 6 bytes differ in 1 run, the first at offset 5"
    )
    assert "build IDs" in unknown.fix


def test_keep_window_pins_only_differing_files_and_the_latest_entry() -> None:
    from repro.diff._layers import KeepWindow, LayerTable

    tables = (LayerTable(), LayerTable())
    w = KeepWindow(tables)
    w.offer(0, "same", "h1", b"x")
    w.offer(1, "same", "h1", b"x")
    w.offer(0, "diff", "h1", b"a")
    w.offer(1, "diff", "h2", b"b")
    assert tables[0].kept == {"diff": b"a"} and tables[1].kept == {"diff": b"b"}
    # The same path again on side 0, too big to keep: the earlier bytes must go.
    w.offer(0, "diff", "h3", None)
    assert "diff" not in tables[0].kept


def test_gzip_layers_with_many_files_are_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The differing file is deep in the layer, past any fixed budget: the window
    still keeps it, because both sides stream at the same time."""
    from repro.diff._sources import ImageSource

    opened: list[tuple[str, str]] = []
    real_open = ImageSource.open_blob

    def counting(self: ImageSource, descriptor: object) -> object:
        opened.append((self.label, descriptor.digest))  # type: ignore[attr-defined]
        return real_open(self, descriptor)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageSource, "open_blob", counting)
    files = [F(f"d/f{i:04d}", os.urandom(64 * 1024)) for i in range(600)]  # ~38 MiB
    changed = list(files)
    changed[500] = F("d/f0500", b"other bytes\n")
    make_image(tmp_path / "a", [files])
    make_image(tmp_path / "b", [changed])
    report = diff(f"oci:{tmp_path / 'a'}", f"oci:{tmp_path / 'b'}")
    assert [f.path for f in report.findings] == ["/d/f0500"]
    assert len(opened) == len(set(opened)) == 2
