"""repro verify's pure parts: variations, verdict levels, context copies."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from repro.errors import InputError
from repro.recipe import load_recipe
from repro.verify import (
    VerifyResult,
    _apply_umask,
    _is_run_step,
    _move_mtimes,
    _prepare,
    parse_vary,
)


def test_parse_vary() -> None:
    assert parse_vary(["umask,mtime", "umask"]) == ["umask", "mtime"]
    assert parse_vary(["all"]) == ["umask", "mtime", "timezone", "locale", "build_path"]
    assert parse_vary([]) == ["umask", "timezone", "locale", "build_path"]
    assert parse_vary(["none"]) == []
    with pytest.raises(InputError, match="--vary none"):
        parse_vary(["none,umask"])
    with pytest.raises(InputError, match="--vary 'cpu'"):
        parse_vary(["cpu"])


@pytest.mark.parametrize(
    ("verdict", "accept", "ok"),
    [
        ("identical", "identical", True),
        ("same-content", "identical", False),
        ("same-content", "same-content", True),
        ("different", "same-content", False),
    ],
)
def test_accept_levels(verdict: str, accept: str, ok: bool) -> None:
    result = VerifyResult("r", verdict, "sha256:a", "sha256:b", [], 1.0, [])
    assert result.reproducible(accept) is ok


def test_culprits_only_when_plain_builds_agree() -> None:
    result = VerifyResult("r", "different", "a", "b", [], 1.0, [])
    result.bisect = {"none": "identical", "umask": "different", "mtime": "identical"}
    assert result.culprits() == ["umask"]
    result.bisect["none"] = "different"
    assert result.culprits() == []


def test_run_step_names() -> None:
    assert _is_run_step("[2/3] RUN make")
    assert not _is_run_step("[1/3] FROM busybox")
    assert not _is_run_step("[internal] load build context")


def test_umask_and_mtime_variations(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0o644)
    _apply_umask(tmp_path, group_writable=True)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o664
    _apply_umask(tmp_path, group_writable=False)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    before = (tmp_path / "f").stat().st_mtime
    _move_mtimes(tmp_path, 1000)
    assert (tmp_path / "f").stat().st_mtime == before + 1000


def test_two_sides_are_independent_copies(tmp_path: Path) -> None:
    src = tmp_path / "src" / "rcp"
    src.mkdir(parents=True)
    (src / "Dockerfile").write_text("FROM scratch\n")
    (src / "recipe.toml").write_text("source_date_epoch = 0\n")
    recipe = load_recipe(src)
    side_a, copy_a = _prepare(recipe, tmp_path / "work", "a", ["timezone", "build_path"], None)
    side_b, copy_b = _prepare(recipe, tmp_path / "work", "b", ["timezone", "build_path"], None)
    assert copy_a.context != copy_b.context and copy_a.context.is_dir()
    assert len(str(copy_a.context)) != len(str(copy_b.context))
    assert copy_a.dockerfile.read_text() == "FROM scratch\n"
    assert side_a.hostname != side_b.hostname
    assert side_a.build_args["TZ"] != side_b.build_args["TZ"]
    assert side_a.build_args["BUILDKIT_SANDBOX_HOSTNAME"] == side_a.hostname


def test_builds_at_a_time_are_capped_across_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_recipes runs `jobs` recipes at a time but at most `builds` builds across
    them; every build still runs and every recipe gets its result, in order."""
    import threading
    import time

    from diffimages import make_image

    import repro.verify as verify
    from repro.build import RecipeResult

    running = 0
    most = 0
    lock = threading.Lock()
    built: list[str] = []

    def fake_build(recipe, *, output, **_options):  # type: ignore[no-untyped-def]
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        layout = make_image(Path(output.partition(":")[2]), [])
        manifest = layout.top_descriptor()
        with lock:
            running -= 1
            built.append(recipe.name)
        return RecipeResult(
            recipe=recipe.name,
            digest=str(manifest.digest),
            config_digest=str(layout.read_json(manifest)["config"]["digest"]),
            output=output,
            seconds=0.05,
            builder="fake",
            builder_version="1",
            source_date_epoch=0,
        )

    monkeypatch.setattr(verify, "build_recipe", fake_build)
    recipes = []
    for i in range(5):
        d = tmp_path / f"r{i}"
        d.mkdir()
        (d / "Dockerfile").write_text("FROM busybox\n")
        (d / "recipe.toml").write_text("source_date_epoch = 1700000000\n")
        recipes.append(load_recipe(d))
    run = verify.verify_recipes(recipes, jobs=4, builds=2, vary=[], stagger=0)
    assert [r.recipe for r in run.results] == [f"r{i}" for i in range(5)]
    assert all(r.verdict == "identical" for r in run.results)
    assert sorted(built) == sorted([f"r{i}" for i in range(5)] * 2)
    assert most == 2
