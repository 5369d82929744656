"""Recipe parsing: values, defaults, and one-line errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.errors import RecipeError
from repro.recipe import find_recipes, load_recipe


def make(tmp_path: Path, toml: str, name: str = "hello") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "Dockerfile").write_text("FROM scratch\n")
    (d / "recipe.toml").write_text(toml)
    return d


def test_minimal_recipe_defaults(tmp_path: Path) -> None:
    r = load_recipe(make(tmp_path, "source_date_epoch = 1700000000\n"))
    assert r.name == "hello"
    assert r.dockerfile == (tmp_path / "hello" / "Dockerfile").resolve()
    assert r.context == (tmp_path / "hello").resolve()
    assert r.source_date_epoch == 1700000000
    assert r.network == "default" and r.platforms == () and dict(r.args) == {}


def test_full_recipe(tmp_path: Path) -> None:
    d = make(
        tmp_path,
        'description = "x"\nsource_date_epoch = 5\nplatforms = ["linux/amd64"]\n'
        'network = "none"\ntarget = "final"\n[args]\nA = "1"\nB = 2\n'
        '[labels]\n"org.opencontainers.image.title" = "t"\n',
    )
    r = load_recipe(d)
    assert dict(r.args) == {"A": "1", "B": "2"}
    assert r.labels["org.opencontainers.image.title"] == "t"
    assert r.platforms == ("linux/amd64",) and r.target == "final" and r.network == "none"


@pytest.mark.parametrize(
    ("toml", "line", "fragment"),
    [
        ("source_date_epoch = 1\nbogus = 2\n", 2, "unknown key 'bogus'"),
        ('source_date_epoch = "x"\n', 1, "must be an integer"),
        ("description = 'x'\n", None, "missing required key 'source_date_epoch'"),
        ("source_date_epoch = 1\nnetwork = 'wifi'\n", 2, "network 'wifi'"),
        ("source_date_epoch = 1\n[args]\nA = [1]\n", 3, "[args] 'A'"),
        ("source_date_epoch = 1\nplatforms = ['amd64']\n", 2, "os/arch"),
        ("source_date_epoch = 1\n= broken\n", 2, "invalid TOML"),
        ("source_date_epoch = 1\ndockerfile = 'Nope'\n", 2, "does not exist"),
        ("source_date_epoch = 1\ncontext = '../..'\n", 2, "outside the recipe"),
        ("source_date_epoch = true\n", 1, "not a boolean"),
    ],
)
def test_errors_name_file_and_line(
    tmp_path: Path, toml: str, line: int | None, fragment: str
) -> None:
    d = make(tmp_path, toml)
    with pytest.raises(RecipeError) as info:
        load_recipe(d)
    err = info.value
    assert fragment in str(err)
    assert err.file == str(d / "recipe.toml")
    assert err.line == line
    assert "\n" not in str(err)


def test_missing_recipe_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="missing recipe.toml"):
        load_recipe(tmp_path / "empty")


def test_find_recipes_sorted_and_by_name(tmp_path: Path) -> None:
    make(tmp_path, "source_date_epoch = 1\n", "b")
    make(tmp_path, "source_date_epoch = 1\n", "a")
    assert [r.name for r in find_recipes(tmp_path)] == ["a", "b"]
    assert [r.name for r in find_recipes(tmp_path, ["b"])] == ["b"]
    with pytest.raises(RecipeError, match="no recipe named 'zzz'"):
        find_recipes(tmp_path, ["zzz"])


def test_example_recipes_parse() -> None:
    root = Path(__file__).resolve().parent.parent / "recipes"
    recipes = find_recipes(root)
    assert len(recipes) >= 2
    with_dockerfile = [r for r in recipes if r.rootfs is None]  # [rootfs] recipes have none
    assert any(r.target or "AS" in r.dockerfile.read_text() for r in with_dockerfile)
    assert any(r.rootfs is not None for r in recipes)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('source_date_epoch = 1\nbases = ["a:1"\n', 2),
        ('source_date_epoch = "', 1),
        ("source_date_epoch = 1\n\nx = \n", 3),
    ],
)
def test_toml_errors_name_a_line_even_at_the_end(tmp_path: Path, text: str, line: int) -> None:
    from repro.errors import RecipeError
    from repro.recipe import load_recipe

    (tmp_path / "recipe.toml").write_text(text)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path)
    assert err.value.line == line and "invalid TOML" in str(err.value)
    assert "end of document" not in str(err.value)
