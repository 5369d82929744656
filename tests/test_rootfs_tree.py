"""Unpacking packages into one tree: merged /usr, shared and conflicting paths, and the
escapes, loops and device nodes a root filesystem must refuse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from debs import EPOCH, E, Pkg, dirs, make_deb

from repro.rootfs._deb import DIR, FILE, SYMLINK, DebPackage, read_deb
from repro.rootfs._tree import RootfsError, Tree


@pytest.fixture
def opened() -> Iterator[list[DebPackage]]:
    packages: list[DebPackage] = []
    yield packages
    for p in packages:
        p.close()


def load(tmp_path: Path, opened: list[DebPackage], *pkgs: Pkg) -> list[DebPackage]:
    out = []
    for pkg in pkgs:
        package = read_deb(make_deb(tmp_path, pkg), f"{pkg.name} {pkg.version}")
        opened.append(package)
        out.append(package)
    return out


def tree_of(
    tmp_path: Path, opened: list[DebPackage], *pkgs: Pkg, prefer: tuple[str, ...] = ()
) -> Tree:
    tree = Tree(EPOCH, label="test")
    for package in load(tmp_path, opened, *pkgs):
        tree.add_package(package, prefer)
    tree.check_links()
    return tree


def test_merged_usr_puts_bin_and_lib_under_usr(tmp_path: Path, opened: list[DebPackage]) -> None:
    libc = Pkg(
        "libc",
        entries=[
            *dirs("./", "./lib", "./lib/x86_64-linux-gnu", "./lib64", "./usr", "./usr/lib"),
            E("./lib/x86_64-linux-gnu/libc.so.6", b"ELF"),
            E("./lib64/ld-linux-x86-64.so.2", link="/lib/x86_64-linux-gnu/ld.so"),
        ],
    )
    sh = Pkg("sh", entries=[*dirs("./", "./bin"), E("./bin/sh", b"#!", mode=0o755)])
    tree = tree_of(tmp_path, opened, libc, sh)
    nodes = tree.nodes
    for link in ("bin", "sbin", "lib", "lib64"):
        assert (nodes[link].kind, nodes[link].linkname) == (SYMLINK, f"usr/{link}")
    assert "lib32" not in nodes and "libx32" not in nodes  # no package ships them
    assert nodes["usr/bin/sh"].kind == FILE and nodes["usr/bin/sh"].owner == "sh"
    assert nodes["usr/lib/x86_64-linux-gnu/libc.so.6"].content() == b"ELF"
    assert nodes["usr/lib64/ld-linux-x86-64.so.2"].kind == SYMLINK
    assert tree.read("bin/sh") == b"#!"  # through the link, as in the image
    assert "bin/sh" not in nodes


def test_without_merged_usr_paths_stay_where_packages_put_them(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    tree = Tree(EPOCH, merged_usr=False)
    for package in load(tmp_path, opened, Pkg("sh", entries=[*dirs("./bin"), E("./bin/sh", b"")])):
        tree.add_package(package)
    assert tree.nodes["bin"].kind == DIR and "bin/sh" in tree.nodes


def test_identical_files_may_be_shared(tmp_path: Path, opened: list[DebPackage]) -> None:
    a = Pkg("a", entries=[*dirs("./etc"), E("./etc/shared.conf", b"same\n")])
    b = Pkg("b", entries=[*dirs("./etc"), E("./etc/shared.conf", b"same\n")])
    tree = tree_of(tmp_path, opened, a, b)
    assert tree.read("etc/shared.conf") == b"same\n"


def test_different_content_at_one_path_names_both_packages(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    a = Pkg("alpha", "1", entries=[*dirs("./usr/bin"), E("./usr/bin/tool", b"alpha")])
    b = Pkg("beta", "2", entries=[*dirs("./bin"), E("./bin/tool", b"beta")])
    with pytest.raises(RootfsError) as info:
        tree_of(tmp_path, opened, a, b)
    message = str(info.value)
    assert "/usr/bin/tool" in message and "alpha" in message and "beta 2" in message
    assert 'prefer = ["alpha"]' in message and "\n" not in message


def test_prefer_chooses_the_winner_and_the_loser_gives_up_the_path(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    a = Pkg("alpha", entries=[*dirs("./usr/bin"), E("./usr/bin/tool", b"alpha")])
    b = Pkg("beta", entries=[*dirs("./usr/bin"), E("./usr/bin/tool", b"beta", mode=0o755)])
    tree = tree_of(tmp_path, opened, a, b, prefer=("beta",))
    assert tree.read("usr/bin/tool") == b"beta" and tree.nodes["usr/bin/tool"].owner == "beta"
    assert tree.replaced == {"alpha": {"usr/bin/tool"}}
    # the other way round
    again = tree_of(tmp_path, [], a, b, prefer=("alpha", "beta"))
    assert again.read("usr/bin/tool") == b"alpha"


def test_a_file_and_a_directory_at_one_path_conflict_whatever_is_preferred(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    a = Pkg("a", entries=[*dirs("./opt/x")])
    b = Pkg("b", entries=[*dirs("./opt"), E("./opt/x", b"file")])
    with pytest.raises(RootfsError, match="/opt/x is shipped by both a and b"):
        tree_of(tmp_path, opened, a, b, prefer=("b",))


def test_a_path_under_another_packages_file_is_refused(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    a = Pkg("a", entries=[*dirs("./etc"), E("./etc/thing", b"file")])
    b = Pkg("b", entries=[E("./etc/thing/inner", b"x")])
    with pytest.raises(RootfsError, match=r"/etc/thing/inner \(b\) is under /etc/thing"):
        tree_of(tmp_path, opened, a, b)


def test_writing_through_a_link_that_leaves_the_root_is_refused(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    evil = Pkg(
        "evil",
        entries=[
            *dirs("./usr/share"),
            E("./usr/share/way-out", link="../../../../../etc"),
            E("./usr/share/way-out/cron.d/job", b"* * * * * root sh\n"),
        ],
    )
    with pytest.raises(RootfsError, match="escapes the root") as info:
        tree_of(tmp_path, opened, evil)
    assert "/usr/share/way-out" in str(info.value)


def test_a_link_leaving_the_root_is_refused_even_if_unused(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    evil = Pkg("evil", entries=[*dirs("./etc"), E("./etc/shadow-link", link="../../etc/shadow")])
    with pytest.raises(RootfsError, match=r"/etc/shadow-link -> ../../etc/shadow escapes"):
        tree_of(tmp_path, opened, evil)


def test_an_absolute_link_stays_inside_the_image(tmp_path: Path, opened: list[DebPackage]) -> None:
    ok = Pkg(
        "ok",
        entries=[
            *dirs("./etc", "./usr/share/conf"),
            E("./etc/conf", link="/usr/share/conf"),
            E("./etc/conf/file", b"inside"),
        ],
    )
    tree = tree_of(tmp_path, opened, ok)
    assert tree.nodes["usr/share/conf/file"].content() == b"inside"


def test_a_link_loop_is_refused(tmp_path: Path, opened: list[DebPackage]) -> None:
    loop = Pkg("loop", entries=[*dirs("./etc"), E("./etc/a", link="b"), E("./etc/b", link="a")])
    with pytest.raises(RootfsError, match="symbolic link loop"):
        tree_of(tmp_path, opened, loop)
    through = Pkg(
        "through",
        entries=[
            *dirs("./etc"),
            E("./etc/a", link="b"),
            E("./etc/b", link="a"),
            E("./etc/a/x", b""),
        ],
    )
    with pytest.raises(RootfsError, match="symbolic link loop"):
        tree_of(tmp_path, opened, through)


def test_a_device_node_is_refused(tmp_path: Path, opened: list[DebPackage]) -> None:
    dev = Pkg("makedev", "2.3", entries=[*dirs("./dev"), E("./dev/null", kind="char")])
    with pytest.raises(
        RootfsError, match=r"makedev 2.3 ships a device node /dev/null \(char 1,3\)"
    ):
        tree_of(tmp_path, opened, dev)


def test_a_hard_link_must_point_at_a_file_of_its_package(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    ok = Pkg(
        "ok",
        entries=[*dirs("./bin"), E("./bin/a", b"x"), E("./bin/b", kind="hardlink", link="./bin/a")],
    )
    tree = tree_of(tmp_path, opened, ok)
    assert tree.nodes["usr/bin/b"].linkname == "usr/bin/a"
    bad = Pkg("bad", entries=[*dirs("./bin"), E("./bin/c", kind="hardlink", link="./etc/shadow")])
    with pytest.raises(RootfsError, match="hard link to /etc/shadow"):
        tree_of(tmp_path, [], bad)


def test_a_missing_parent_becomes_a_directory(tmp_path: Path, opened: list[DebPackage]) -> None:
    sloppy = Pkg("sloppy", entries=[E("./opt/deep/file", b"x")])
    tree = tree_of(tmp_path, opened, sloppy)
    assert tree.nodes["opt/deep"].kind == DIR and tree.nodes["opt/deep"].mode == 0o755
