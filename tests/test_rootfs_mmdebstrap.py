"""The example Debian 12 base against what mmdebstrap makes of the very same packages.

mmdebstrap (``--variant=custom --include=<the locked packages>``, merged /usr as its
merged-usr hook sets it up, from a file:// repository of the cached .debs) installs
them with dpkg and runs every maintainer script. repro unpacks them and makes the
scripts' effects itself. The two trees must hold the same paths, except those listed
in `ONLY_MMDEBSTRAP` and `ONLY_REPRO` (docs/rootfs.md says why), and every common path
the same type, mode, owner, link target and bytes, except `DIFFERENT`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from aptrepo import make_repo

from repro import oci
from repro.recipe import load_recipe

# mmdebstrap downloads from the Debian mirror: `engine` keeps it out of the offline
# `pytest -m "not engine"` run, `mirror` says why.
pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.mirror]

ROOT = Path(__file__).resolve().parent.parent
HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")

# What mmdebstrap's tree has and repro's does not, on purpose.
ONLY_MMDEBSTRAP = [
    r"etc/\.pwd\.lock",  # a lock file shadow's tools leave
    r"etc/(passwd|group|shadow|gshadow)-",  # their backups
    r"var/lib/dpkg/(status|diversions|available)-old",  # dpkg's backups
    r"var/lib/dpkg/(lock|lock-frontend|triggers/Lock)",  # lock files, made on use
    r"var/cache/apt/archives/lock|var/lib/apt/lists/lock",
    r"etc/apt/sources\.list(\.d/.*)?",  # a mirror's host: never written into an image
    r"etc/(hostname|resolv\.conf|fstab)",  # the host's, or a boot's; a runtime provides them
    r"etc/ld\.so\.cache",  # ldconfig: not run (the loader searches the default paths)
    r"var/cache/debconf/.*",  # the debconf database: made on first use
    r"etc/rc[0-6S]\.d/.*",  # update-rc.d: a container does not boot
    r"etc/systemd/system/.*|var/lib/systemd(/.*)?",  # deb-systemd-helper: no systemd
]
# What repro's tree has and mmdebstrap's does not.
ONLY_REPRO = [
    r"dev",  # base-files' /dev (mmdebstrap's tar output is told to leave /dev out)
    r"home/nonroot",  # every repro base has the nonroot user
]
# Common paths that differ on purpose.
DIFFERENT = {
    "etc/passwd": "nonroot added",
    "etc/group": "nonroot added",
    "etc/shadow": "nonroot added",
    "etc/gshadow": "nonroot added",
    "var/cache/apt/archives/partial": "apt makes it _apt's when it first runs",
    "var/lib/apt/lists/partial": "apt makes it _apt's when it first runs",
}


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: tuple[object, ...] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir",)
            else:
                what = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            out[str(path.relative_to(root))] = (
                *what,
                oct(st.st_mode & 0o7777),
                st.st_uid,
                st.st_gid,
            )
    return out


def _matches(path: str, patterns: list[str]) -> bool:
    return any(re.fullmatch(p, path) for p in patterns)


# Python 3.11.4 added extraction filters (Debian 12's python3 is 3.11.2): use the
# "tar" filter where there is one; both trees are our own test output either way.
TAR_FILTER: dict[str, str] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not shutil.which("mmdebstrap") or not HOOK.is_dir():
        pytest.skip("mmdebstrap (with its merged-usr hook) is not installed")
    if os.geteuid() != 0:
        pytest.skip("the comparison extracts both trees with their owners: run as root")
    work = tmp_path_factory.mktemp("vs-mmdebstrap")
    recipe = load_recipe(ROOT / "recipes" / "debian12")
    lock = tomllib.loads(recipe.lock_file.read_text())
    repo = make_repo(recipe, lock, work / "repo")

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "repro",
            "build",
            str(recipe.directory),
            "-o",
            f"oci:{work / 'img'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    layout = oci.OCILayout(work / "img")
    (layer,) = oci.load_image(layout).layers
    mine = work / "repro"
    mine.mkdir()
    with tarfile.open(layout.blob_path(layer.digest)) as tar:
        tar.extractall(mine, **TAR_FILTER)  # owners are kept for root

    out = work / "mmdebstrap.tar"
    r = subprocess.run(
        [
            "mmdebstrap", "--variant=custom", f"--include={','.join(repo.names)}",
            "--mode=root", "--format=tar", f"--hook-dir={HOOK}", "--skip=output/dev",
            repo.suite, str(out), repo.source(),
        ],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(lock["source_date_epoch"])},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = work / "mmdebstrap"
    theirs.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(theirs, **TAR_FILTER)
    return mine, theirs


def test_the_same_paths_but_the_documented_ones(trees: tuple[Path, Path]) -> None:
    mine, theirs = (_tree(t) for t in trees)
    only_theirs = sorted(p for p in set(theirs) - set(mine) if not _matches(p, ONLY_MMDEBSTRAP))
    only_mine = sorted(p for p in set(mine) - set(theirs) if not _matches(p, ONLY_REPRO))
    assert only_theirs == [] and only_mine == []
    # and each documented pattern still matches something (else the list is out of date)
    for pattern in ONLY_REPRO:
        assert any(re.fullmatch(pattern, p) for p in set(mine) - set(theirs)), pattern


def test_common_paths_have_the_same_metadata_and_bytes(trees: tuple[Path, Path]) -> None:
    mine, theirs = (_tree(t) for t in trees)
    differ = sorted(
        p for p in set(mine) & set(theirs) if mine[p] != theirs[p] and p not in DIFFERENT
    )
    assert differ == [], [(p, mine[p], theirs[p]) for p in differ[:10]]


def test_accounts_differ_only_by_nonroot(trees: tuple[Path, Path]) -> None:
    mine, theirs = trees
    for name in ("passwd", "group", "shadow", "gshadow"):
        ours = [
            line
            for line in (mine / "etc" / name).read_text().splitlines()
            if not line.startswith("nonroot:")
        ]
        assert ours == (theirs / "etc" / name).read_text().splitlines(), name


def test_dpkg_agrees_on_the_database(trees: tuple[Path, Path]) -> None:
    mine, theirs = trees
    for name in ("status", "diversions", "triggers/File", "triggers/ldconfig"):
        assert (mine / "var/lib/dpkg" / name).read_bytes() == (
            theirs / "var/lib/dpkg" / name
        ).read_bytes(), name
    audit = subprocess.run(
        ["dpkg", f"--admindir={mine / 'var/lib/dpkg'}", "--audit"], capture_output=True, text=True
    )
    assert audit.returncode == 0 and audit.stdout == ""
