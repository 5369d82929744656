"""repro.inputs (the fingerprint of a build's inputs) and the index in repro.records
that lets `repro verify` take the image `repro build` made from the same inputs."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from diffimages import make_image

from repro.buildkit import BuildRequest
from repro.inputs import fingerprint, tree_listing, visible_args
from repro.oci import OCILayout, Output
from repro.recipe import load_recipe
from repro.records import recall_inputs, remember_inputs

DOCKERFILE = "FROM busybox\nARG GREETING\nRUN echo $GREETING > /g\nCOPY app.txt /app.txt\n"


def make(tmp_path: Path, name: str = "r") -> Path:
    d = tmp_path / "recipes" / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text(DOCKERFILE)
    (d / "recipe.toml").write_text("source_date_epoch = 1700000000\n")
    (d / "app.txt").write_text("hello\n")
    (d / "sub").mkdir()
    (d / "sub" / "link").symlink_to("../app.txt")
    return d


def fp(directory: Path, args: dict[str, str] | None = None, builder: str = "docker://x") -> str:
    recipe = load_recipe(directory)
    request = BuildRequest(
        context=recipe.context,
        dockerfile=recipe.dockerfile,
        output=Output("oci", directory.parent / "out"),
        build_args=dict(args or {}),
        source_date_epoch=1700000000,
    )
    return fingerprint(recipe, request, builder, normalise=True)


def test_a_copy_of_the_recipe_has_the_same_fingerprint(tmp_path: Path) -> None:
    d = make(tmp_path)
    copy = tmp_path / "elsewhere" / "deeper" / "r"
    shutil.copytree(d, copy, symlinks=True)
    assert fp(d) == fp(copy)
    assert len(fp(d)) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda d: os.utime(d / "app.txt", ns=(1, 1)),
        lambda d: (d / "app.txt").write_text("hullo\n"),
        lambda d: os.chmod(d / "app.txt", 0o600),
        lambda d: (d / "new.txt").write_text(""),
        lambda d: ((d / "sub" / "link").unlink(), (d / "sub" / "link").symlink_to("x")),
        lambda d: (d / "recipe.lock").write_text("version = 1\n"),
        lambda d: (d.parent / "repro.toml").write_text("[registry]\n"),
        lambda d: (d / "Dockerfile").write_text(DOCKERFILE + "USER 1000\n"),
    ],
    ids=["mtime", "content", "mode", "new-file", "link-target", "lock", "settings", "dockerfile"],
)
def test_any_change_to_the_inputs_changes_the_fingerprint(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    d = make(tmp_path)
    before = fp(d)
    change(d)
    assert fp(d) != before


def test_build_args_count_when_the_dockerfile_can_see_them(tmp_path: Path) -> None:
    d = make(tmp_path)
    plain = fp(d)
    # verify's variations pass TZ and LANG to every build; a Dockerfile that never
    # names them builds the same image.
    assert fp(d, {"TZ": "UTC", "LANG": "C.UTF-8"}) == plain
    assert fp(d, {"GREETING": "hi"}) != plain
    assert fp(d, {"BUILDKIT_SANDBOX_HOSTNAME": "h"}) != plain
    assert fp(d, {"http_proxy": "http://p"}) != plain
    assert fp(d, builder="docker://other") != plain
    seen = visible_args("ARG A\nRUN echo $B", {"A": "1", "B": "2", "C": "3"})
    assert seen == {"A": "1", "B": "2"}


def test_a_listing_sees_owner_and_type(tmp_path: Path) -> None:
    d = make(tmp_path)
    before = tree_listing(d)
    os.chown(d / "app.txt", 1234, 1234)
    assert tree_listing(d) != before
    assert tree_listing(tmp_path / "missing") == ""


def _layout(path: Path) -> str:
    return str(make_image(path, []).top_descriptor().digest)


def test_an_image_is_recalled_only_while_it_is_where_and_what_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    digest = _layout(out)
    key = "a" * 64
    remember_inputs(key, {"digest": digest, "output": f"oci:{out}", "recipe": "r"})
    assert recall_inputs(key) == {"digest": digest, "output": f"oci:{out}", "recipe": "r"}
    assert recall_inputs("b" * 64) is None
    assert recall_inputs("../x") is None

    # A damaged blob: passed over, and said why.
    said: list[str] = []
    layout = OCILayout(out)
    config = layout.blob_path(layout.read_json(layout.top_descriptor())["config"]["digest"])
    config.write_bytes(b"[]" + config.read_bytes()[2:])
    assert recall_inputs(key, said.append) is None
    assert len(said) == 1 and config.name in said[0]

    # Gone (nothing to warn about either).
    other = tmp_path / "out2"
    assert _layout(other) == digest
    remember_inputs("c" * 64, {"digest": digest, "output": f"oci:{other}"})
    assert recall_inputs("c" * 64) == {"digest": digest, "output": f"oci:{other}"}
    shutil.rmtree(other)
    assert recall_inputs("c" * 64, said.append) is None and len(said) == 1
    # Built over since: another image there, complete (nothing to warn about).
    shutil.rmtree(out)
    OCILayout.create(out).write_index([OCILayout(out).write_blob(b"x", "text/plain")])
    assert recall_inputs(key, said.append) is None and len(said) == 1
    # A relative output names no one place.
    remember_inputs("d" * 64, {"digest": digest, "output": "oci:out"})
    assert recall_inputs("d" * 64) is None


def test_secrets_are_never_fingerprinted(tmp_path: Path) -> None:
    from repro.build import _fingerprint

    d = make(tmp_path)
    recipe = load_recipe(d)
    request = BuildRequest(
        context=recipe.context, dockerfile=recipe.dockerfile, output=Output("oci", tmp_path / "o")
    )
    assert _fingerprint(recipe, request, "tcp://127.0.0.1:1234", True) != ""
    request = dataclasses.replace(request, secrets={"token": lambda: b"s3cret"})
    assert _fingerprint(recipe, request, "tcp://127.0.0.1:1234", True) == ""


def test_a_rootfs_recipe_is_fingerprinted_by_its_files_and_lock(tmp_path: Path) -> None:
    from repro.inputs import rootfs_fingerprint

    d = tmp_path / "recipes" / "base"
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(
        'source_date_epoch = 1735689600\n[rootfs]\npackages = "base"\n'
        '[packages.apt.base]\nsuites = ["bookworm"]\npackages = ["busybox"]\n'
    )
    (d / "repro.lock").write_text("version = 1\n")
    recipe = load_recipe(d)
    copy = tmp_path / "copy" / "base"
    shutil.copytree(d, copy)
    assert rootfs_fingerprint(recipe) == rootfs_fingerprint(load_recipe(copy))
    before = rootfs_fingerprint(recipe)
    (d / "repro.lock").write_text("version = 1\n# moved\n")
    assert rootfs_fingerprint(recipe) != before
