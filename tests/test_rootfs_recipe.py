"""The [rootfs] recipe: parsing with file:line errors, what the lock digests, and what a
root filesystem's package set asks the resolver for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from repro.errors import RecipeError
from repro.lock import inputs_digest, read_lock
from repro.packages.deb import DebIndex
from repro.recipe import find_recipes, load_recipe
from repro.rootfs._select import rootfs_request

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
source_date_epoch = 1735689600
[rootfs]
packages = "base"
{rootfs}
[packages.apt.base]
suites = ["bookworm", "bookworm-security"]
packages = ["apt"]
"""


def make(tmp_path: Path, toml: str, name: str = "base12") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "recipe.toml").write_text(toml)
    return d


def test_a_rootfs_recipe_needs_no_dockerfile_and_has_defaults(tmp_path: Path) -> None:
    r = load_recipe(make(tmp_path, BASE.format(rootfs="")))
    assert r.rootfs is not None and r.needs_lock
    spec = r.rootfs
    assert (spec.packages, spec.variant, spec.merged_usr, spec.prefer) == (
        "base",
        "essential",
        True,
        (),
    )
    assert spec.cmd == ("/bin/sh",) and spec.workdir == "/" and spec.user == ""
    assert spec.environment() == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    (s,) = r.packages
    assert dict(s.rootfs) == {"variant": "essential", "merged_usr": "yes"}


def test_rootfs_keys(tmp_path: Path) -> None:
    r = load_recipe(
        make(
            tmp_path,
            BASE.format(
                rootfs='variant = "required"\nmerged_usr = false\nprefer = ["a", "b"]\n'
                'cmd = ["/bin/bash"]\nentrypoint = ["/usr/bin/tini", "--"]\n'
                'env = { LANG = "C.UTF-8", PATH = "/opt/bin:/usr/bin" }\n'
                'user = "nonroot"\nworkdir = "/srv"\n'
            ),
        )
    )
    spec = r.rootfs
    assert spec is not None
    assert spec.variant == "required" and not spec.merged_usr and spec.prefer == ("a", "b")
    assert spec.environment() == ["PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8"]
    assert spec.entrypoint == ("/usr/bin/tini", "--") and spec.user == "nonroot"
    assert dict(r.packages[0].rootfs) == {"variant": "required", "merged_usr": "no"}


@pytest.mark.parametrize(
    ("toml", "line", "fragment"),
    [
        (BASE.format(rootfs='variant = "tiny"'), 4, "variant 'tiny' must be one of"),
        (BASE.format(rootfs="bogus = 1"), 4, "unknown key 'bogus'"),
        (BASE.format(rootfs='workdir = "srv"'), 4, "must be an absolute path"),
        (BASE.format(rootfs="env = { A = 1 }"), 4, "env 'A'"),
        (BASE.format(rootfs="merged_usr = 'yes'"), 4, "must be a boolean"),
        (BASE.replace('packages = "base"', 'packages = "nope"').format(rootfs=""), 3, "names no"),
        ('dockerfile = "Dockerfile"\n' + BASE.format(rootfs=""), 1, "has no Dockerfile"),
        ('bases = ["recipe:x"]\n' + BASE.format(rootfs=""), 1, "it has no bases"),
        ('network = "none"\n' + BASE.format(rootfs=""), 1, "runs nothing"),
    ],
)
def test_rootfs_errors_name_file_and_line(
    tmp_path: Path, toml: str, line: int | None, fragment: str
) -> None:
    d = make(tmp_path, toml)
    with pytest.raises(RecipeError) as info:
        load_recipe(d)
    err = info.value
    assert fragment in str(err) and err.line == line and err.file == str(d / "recipe.toml")
    assert "\n" not in str(err)


def test_the_selection_is_part_of_the_lock_digest_only_for_rootfs_sets(tmp_path: Path) -> None:
    a = load_recipe(make(tmp_path, BASE.format(rootfs=""), "a"))
    b = load_recipe(make(tmp_path, BASE.format(rootfs='variant = "required"'), "b"))
    c = load_recipe(make(tmp_path, BASE.format(rootfs='cmd = ["/bin/bash"]'), "c"))
    assert inputs_digest(a) != inputs_digest(b)  # a different closure: the lock is stale
    assert inputs_digest(a) == inputs_digest(c)  # image config does not touch the lock


def test_existing_locks_stay_current() -> None:
    """The [rootfs] key of a package set's spec is absent for ordinary sets: the digests of
    the committed locks of the other recipes did not move."""
    for recipe in find_recipes(ROOT / "recipes"):
        lock = read_lock(recipe)
        if lock is not None:
            assert lock["inputs"] == inputs_digest(recipe), recipe.name


def stanza(name: str, version: str = "1", **fields: str) -> str:
    body = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
    for key, value in fields.items():
        body += f"{key.replace('_', '-').title()}: {value}\n"
    digest = hashlib.sha256(name.encode()).hexdigest()
    return body + f"Filename: pool/{name}.deb\nSize: 1\nSHA256: {digest}\n"


def test_the_variants_request(tmp_path: Path) -> None:
    index = DebIndex("amd64")
    index.add(
        "\n".join(
            [
                stanza("ess-b", essential="yes", priority="required"),
                stanza("ess-a", essential="yes", priority="required"),
                stanza("req", priority="required"),
                stanza("opt", priority="optional"),
                stanza("was-essential", "1", essential="yes"),
                stanza("was-essential", "2"),  # the newest version decides
                stanza("usr-is-merged"),
            ]
        ),
        "bookworm/main",
    )
    r = load_recipe(make(tmp_path, BASE.format(rootfs=""), "e"))
    (s,) = r.packages
    assert rootfs_request(index, s) == ["apt", "ess-a", "ess-b", "usr-is-merged"]
    required = load_recipe(make(tmp_path, BASE.format(rootfs='variant = "required"'), "r"))
    assert rootfs_request(index, required.packages[0]) == [
        "apt",
        "ess-a",
        "ess-b",
        "req",
        "usr-is-merged",
    ]
    custom = load_recipe(
        make(tmp_path, BASE.format(rootfs='variant = "custom"\nmerged_usr = false'), "c")
    )
    assert rootfs_request(index, custom.packages[0]) == ["apt"]


APK = """\
source_date_epoch = 1735689600
[rootfs]
packages = "base"
{rootfs}
[packages.apk.base]
branch = "v3.20"
packages = ["alpine-base"]
"""


def test_an_apk_rootfs_set_is_what_it_lists(tmp_path: Path) -> None:
    r = load_recipe(make(tmp_path, APK.format(rootfs="")))
    assert r.rootfs is not None
    assert (r.rootfs.variant, r.rootfs.merged_usr) == ("custom", False)
    (s,) = r.packages
    assert s.kind == "apk" and dict(s.rootfs) == {"variant": "custom", "merged_usr": "no"}
    for key in ('variant = "essential"', "merged_usr = true"):
        with pytest.raises(RecipeError, match=r"is for Debian sets; an apk set is what it lists"):
            load_recipe(make(tmp_path, APK.format(rootfs=key), name=key.split()[0]))
