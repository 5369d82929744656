"""The FileSync walk: fsutil's order, .dockerignore semantics, followpaths, modes.

Many expectations are the test vectors of tonistiigi/fsutil (filter_test.go) and
moby/patternmatcher (patternmatcher_test.go, ignorefile_test.go), so that a pass here
means "sends what the Go client sends".
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.buildkit._walk import (
    Entry,
    MatchInfo,
    PatternMatcher,
    fsutil_stat_mode,
    go_clean,
    go_file_mode,
    parse_dockerignore,
    resolve_followpaths,
    walk,
)
from repro.errors import ContextError

# ----------------------------------------------------------------------------------------
# helpers


def make_tree(root: Path, spec: str) -> Path:
    """Build a tree from lines ``path``, ``path/`` (a dir) or ``path -> target``."""
    for line in spec.split("\n"):
        line = line.strip()
        if not line:
            continue
        if " -> " in line:
            name, target = line.split(" -> ")
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, root / name)
        elif line.endswith("/"):
            (root / line).mkdir(parents=True, exist_ok=True)
        else:
            (root / line).parent.mkdir(parents=True, exist_ok=True)
            (root / line).write_text(line)
    return root


def kinds(root: Path, **kw: Any) -> list[str]:
    """fsutil's bufWalk format: ``dir p``, ``file p``, ``symlink:target p``."""
    out = []
    for e in walk(root, **kw):
        kind = "dir" if e.is_dir else f"symlink:{e.linkname}" if e.is_symlink else "file"
        out.append(f"{kind} {e.path}")
    return out


def paths(root: Path, **kw: Any) -> list[str]:
    return [e.path for e in walk(root, **kw)]


def order_key(path: str) -> list[bytes]:
    return [os.fsencode(part) for part in path.split("/")]


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The dirs the walk reads, relative to the first one read (the root)."""
    seen: list[str] = []
    real = os.scandir

    def counting(path: Any) -> Any:
        seen.append(os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    return seen


# ----------------------------------------------------------------------------------------
# order


def test_order_is_preorder_with_bytewise_sorted_names(tmp_path: Path) -> None:
    make_tree(tmp_path, "a/b\na.txt\na-b\na0\nB\n_\nz/\nz/y/x")
    assert paths(tmp_path) == ["B", "_", "a", "a/b", "a-b", "a.txt", "a0", "z", "z/y", "z/y/x"]


def test_order_non_ascii_names_by_utf8_bytes(tmp_path: Path) -> None:
    make_tree(tmp_path, "é\nz\n日本\nÀ/x\n\U0001f600\n\uff21")
    got = paths(tmp_path)
    assert got == ["z", "À", "À/x", "é", "日本", "\uff21", "\U0001f600"]
    assert got == sorted(got, key=order_key)


def test_order_undecodable_names_sort_by_their_bytes(tmp_path: Path) -> None:
    # b"\x80" sorts before "é" (b"\xc3\xa9") as bytes, but after it as str ("\udc80").
    root = os.fsencode(tmp_path)
    for name in (b"\x80", "é".encode(), b"a\xff", b"b"):
        with open(os.path.join(root, name), "wb"):
            pass
    got = paths(tmp_path)
    assert [os.fsencode(p) for p in got] == [b"a\xff", b"b", b"\x80", "é".encode()]
    assert got != sorted(got)  # a str sort would be wrong here


def test_root_is_omitted_and_symlinked_root_is_resolved(tmp_path: Path) -> None:
    make_tree(tmp_path, "ctx/f")
    os.symlink("ctx", tmp_path / "link")
    assert paths(tmp_path / "link") == ["f"]
    assert paths(tmp_path / "link/") == ["f"]


def test_root_must_be_a_readable_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ContextError, match="not a directory"):
        walk(tmp_path / "file")
    with pytest.raises(ContextError, match="cannot be read"):
        walk(tmp_path / "missing")


# ----------------------------------------------------------------------------------------
# entries


def test_entries_carry_lstat_and_kinds(tmp_path: Path) -> None:
    make_tree(tmp_path, "d/\nf\nl -> d")
    by_path = {e.path: e for e in walk(tmp_path)}
    assert by_path["d"].is_dir and not by_path["d"].is_file and not by_path["d"].is_symlink
    assert by_path["f"].is_file and by_path["f"].st.st_size == 1
    link = by_path["l"]
    assert link.is_symlink and not link.is_dir and link.linkname == "d"
    assert stat.S_ISLNK(link.st.st_mode)
    assert by_path["f"].linkname == "" and by_path["d"].linkname == ""


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", "secret")
    ctx = make_tree(tmp_path / "ctx", "real/inner\nin -> real\nout -> " + str(outside))
    os.symlink("../outside/secret", ctx / "up")
    assert kinds(ctx) == [
        "symlink:real in",
        f"symlink:{outside} out",
        "dir real",
        "file real/inner",
        "symlink:../outside/secret up",
    ]


def test_special_files_are_yielded(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("")
    entries = {e.path: e for e in walk(tmp_path)}
    fifo = entries["fifo"]
    assert not (fifo.is_dir or fifo.is_file or fifo.is_symlink)
    assert go_file_mode(fifo.st) & (1 << 25)


def test_hardlinks_name_the_first_sent_path(tmp_path: Path) -> None:
    make_tree(tmp_path, "a\nsingle")
    os.link(tmp_path / "a", tmp_path / "b")
    os.mkdir(tmp_path / "c")
    os.link(tmp_path / "a", tmp_path / "c" / "d")
    got = {e.path: e.hardlink for e in walk(tmp_path)}
    assert got == {"a": "", "b": "a", "c": "", "c/d": "a", "single": ""}
    # When the first one is excluded, the next one sent carries the content.
    got = {e.path: e.hardlink for e in walk(tmp_path, exclude_patterns=["a"])}
    assert got == {"b": "", "c": "", "c/d": "b", "single": ""}


# ----------------------------------------------------------------------------------------
# exclude patterns


def test_exclude_simple_globs(tmp_path: Path) -> None:
    make_tree(tmp_path, "a.log\nb.txt\nsub/c.log\nsub/d.txt\n.git/config\n.gitignore")
    assert paths(tmp_path, exclude_patterns=["*.log"]) == [
        ".git",
        ".git/config",
        ".gitignore",
        "b.txt",
        "sub",
        "sub/c.log",
        "sub/d.txt",
    ]
    assert paths(tmp_path, exclude_patterns=["**/*.log", ".git"]) == [
        ".gitignore",
        "b.txt",
        "sub",
        "sub/d.txt",
    ]
    assert paths(tmp_path, exclude_patterns=["sub/*.txt", ".git*"]) == [
        "a.log",
        "b.txt",
        "sub",
        "sub/c.log",
    ]
    assert paths(tmp_path, exclude_patterns=["**"]) == []
    assert paths(tmp_path, exclude_patterns=["*", "!sub"]) == ["sub", "sub/c.log", "sub/d.txt"]


def test_exclude_with_exception_inside_excluded_dir(tmp_path: Path) -> None:
    # fsutil TestWalkerExclude
    make_tree(tmp_path, "bar\nfoo/bar2\nfoo2")
    assert kinds(tmp_path, exclude_patterns=["foo*", "!foo/bar2"]) == [
        "file bar",
        "dir foo",
        "file foo/bar2",
    ]


def test_reincluded_file_brings_its_parents_just_before_it(tmp_path: Path) -> None:
    make_tree(tmp_path, "a\nvendor/x/1\nvendor/x/keep/me\nvendor/x/keep/not\nvendor/y/2\nz")
    got = paths(tmp_path, exclude_patterns=["vendor", "!vendor/x/keep/me"])
    assert got == ["a", "vendor", "vendor/x", "vendor/x/keep", "vendor/x/keep/me", "z"]


def test_parents_without_sent_descendants_are_not_sent(tmp_path: Path) -> None:
    make_tree(tmp_path, "a\nvendor/x/1\nvendor/y/2")
    # The exception could match inside vendor/x, so it is read, but nothing matches.
    assert paths(tmp_path, exclude_patterns=["vendor", "!vendor/x/nothing"]) == ["a"]
    assert paths(tmp_path, exclude_patterns=["vendor", "!**/nothing"]) == ["a"]


def test_exception_for_a_dir_reincludes_its_content(tmp_path: Path) -> None:
    make_tree(tmp_path, "docs/a.md\ndocs/api/b.md\nsrc/c.py")
    got = paths(tmp_path, exclude_patterns=["*", "!docs/api"])
    assert got == ["docs", "docs/api", "docs/api/b.md"]


def test_later_patterns_win(tmp_path: Path) -> None:
    make_tree(tmp_path, "a.md\nb.md\nc.txt")
    assert paths(tmp_path, exclude_patterns=["*.md", "!b.md"]) == ["b.md", "c.txt"]
    assert paths(tmp_path, exclude_patterns=["!b.md", "*.md"]) == ["c.txt"]


def test_excluded_dir_is_not_read(tmp_path: Path, scanned: list[str]) -> None:
    make_tree(tmp_path, "src/main.c\nnode_modules/pkg/index.js\nnode_modules/pkg/lib/x.js")
    assert paths(tmp_path, exclude_patterns=["node_modules"]) == ["src", "src/main.c"]
    assert not any("node_modules" in p for p in scanned)


def test_excluded_dir_is_read_when_an_exception_may_match_inside(
    tmp_path: Path, scanned: list[str]
) -> None:
    make_tree(tmp_path, "node_modules/pkg/index.js\nnode_modules/other/x.js")
    got = paths(tmp_path, exclude_patterns=["node_modules", "!node_modules/pkg"])
    assert got == ["node_modules", "node_modules/pkg", "node_modules/pkg/index.js"]
    read = {os.path.relpath(p, tmp_path) for p in scanned}
    assert read == {".", "node_modules", "node_modules/pkg"}  # other/ pruned by prefix


def test_glob_exception_makes_fsutil_read_every_excluded_dir(
    tmp_path: Path, scanned: list[str]
) -> None:
    make_tree(tmp_path, "node_modules/a/b/c.js\nnode_modules/a/README.md")
    got = paths(tmp_path, exclude_patterns=["node_modules", "!**/*.md"])
    assert got == ["node_modules", "node_modules/a", "node_modules/a/README.md"]
    assert {os.path.relpath(p, tmp_path) for p in scanned} == {
        ".",
        "node_modules",
        "node_modules/a",
        "node_modules/a/b",
    }


def test_huge_excluded_subtree_is_not_walked(tmp_path: Path, scanned: list[str]) -> None:
    big = tmp_path / "big"
    for i in range(200):
        (big / f"d{i}").mkdir(parents=True)
    (tmp_path / "keep").write_text("")
    assert paths(tmp_path, exclude_patterns=["big"]) == ["keep"]
    assert len(scanned) == 1


def test_unreadable_dir_fails_unless_filtered_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsutil TestWalkerPermissionDenied (simulated: the tests may run as root).
    make_tree(tmp_path, "foo/bar/")
    real = os.scandir

    def denying(path: Any) -> Any:
        if os.fsdecode(path).endswith("foo/bar"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", denying)
    with pytest.raises(ContextError, match="Permission denied"):
        list(walk(tmp_path))
    assert paths(tmp_path, exclude_patterns=["**/bar"]) == ["foo"]
    assert paths(tmp_path, exclude_patterns=["**/bar", "!foo/bar/baz"]) == ["foo"]
    with pytest.raises(ContextError, match="Permission denied"):
        list(walk(tmp_path, exclude_patterns=["**/bar", "!foo/bar"]))
    assert paths(tmp_path, include_patterns=["foo", "!**/bar"]) == ["foo"]


def test_walk_and_open_disagreement_is_flagged(tmp_path: Path) -> None:
    # The walk's MatchesUsingParentResults keeps a/a; Open's MatchesOrParentMatches
    # refuses it, so fsutil sends a/a with no content.
    make_tree(tmp_path, "a/a\na/b")
    got = [(e.path, e.empty_content) for e in walk(tmp_path, include_patterns=["a/a*", "!a"])]
    assert got == [("a", False), ("a/a", True)]
    make_tree(tmp_path, "b/b/a\nb/b/b")
    got = [
        (e.path, e.empty_content)
        for e in walk(tmp_path, exclude_patterns=["!*/a", "**/**", "!b/b/**", "b"])
    ]
    assert ("b/b/a", True) in got
    assert all(not e.empty_content for e in walk(tmp_path, exclude_patterns=["a"]))


# ----------------------------------------------------------------------------------------
# include patterns


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("bar", ["dir bar", "file bar/foo"]),
        ("bar/foo", ["dir bar", "file bar/foo"]),
        ("b*", ["dir bar", "file bar/foo"]),
        ("bar/f*", ["dir bar", "file bar/foo"]),
        ("bar/g*", []),
        ("f*", ["file foo2"]),
        ("b*/f*", ["dir bar", "file bar/foo"]),
        ("b*/foo", ["dir bar", "file bar/foo"]),
        ("b*/", ["dir bar", "file bar/foo"]),
    ],
)
def test_include_patterns(tmp_path: Path, pattern: str, expected: list[str]) -> None:
    # fsutil TestWalkerInclude
    make_tree(tmp_path, "bar/foo\nfoo2")
    assert kinds(tmp_path, include_patterns=[pattern]) == expected


DOUBLESTAR_TREE = """
a/b/baz/
a/b/bar/foo
a/b/bar/fop
bar/foo
baz/
foo2
foo/bar/bee
"""


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            "**",
            "a a/b a/b/bar a/b/bar/foo a/b/bar/fop a/b/baz bar bar/foo baz "
            "foo foo/bar foo/bar/bee foo2",
        ),
        ("**/bar", "a a/b a/b/bar a/b/bar/foo a/b/bar/fop bar bar/foo foo foo/bar foo/bar/bee"),
        ("**/bar/foo", "a a/b a/b/bar a/b/bar/foo bar bar/foo"),
        (
            "**/b*",
            "a a/b a/b/bar a/b/bar/foo a/b/bar/fop a/b/baz bar bar/foo baz foo foo/bar foo/bar/bee",
        ),
        ("**/bar/f*", "a a/b a/b/bar a/b/bar/foo a/b/bar/fop bar bar/foo"),
        ("**/bar/g*", ""),
        ("**/f*", "a a/b a/b/bar a/b/bar/foo a/b/bar/fop bar bar/foo foo foo/bar foo/bar/bee foo2"),
        ("**/b*/f*", "a a/b a/b/bar a/b/bar/foo a/b/bar/fop bar bar/foo"),
        ("**/b*/foo", "a a/b a/b/bar a/b/bar/foo bar bar/foo"),
        ("**/foo/**", "foo foo/bar foo/bar/bee"),
        ("**/baz", "a a/b a/b/baz baz"),
    ],
)
def test_include_doublestar(tmp_path: Path, pattern: str, expected: str) -> None:
    # fsutil TestWalkerDoublestarInclude
    make_tree(tmp_path, DOUBLESTAR_TREE)
    assert paths(tmp_path, include_patterns=[pattern]) == expected.split()


def test_include_prunes_dirs_by_prefix(tmp_path: Path, scanned: list[str]) -> None:
    make_tree(tmp_path, "src/app/main.py\nsrc/app/x/y\nsrc/other/z\ndocs/a")
    assert paths(tmp_path, include_patterns=["src/app"]) == [
        "src",
        "src/app",
        "src/app/main.py",
        "src/app/x",
        "src/app/x/y",
    ]
    assert {os.path.relpath(p, tmp_path) for p in scanned} == {".", "src", "src/app", "src/app/x"}


def test_include_and_exclude_together(tmp_path: Path) -> None:
    make_tree(tmp_path, "src/a.py\nsrc/a.pyc\nsrc/sub/b.pyc\ntests/t.py")
    got = paths(tmp_path, include_patterns=["src"], exclude_patterns=["**/*.pyc"])
    assert got == ["src", "src/a.py", "src/sub"]


def test_include_empty_pattern_sends_nothing(tmp_path: Path) -> None:
    # A non-empty include list whose patterns are all blank leaves fsutil with a matcher
    # that matches nothing; an empty list means no filter.
    make_tree(tmp_path, "a\nb/c")
    assert paths(tmp_path, include_patterns=[""]) == []
    assert paths(tmp_path, include_patterns=[]) == ["a", "b", "b/c"]


# ----------------------------------------------------------------------------------------
# followpaths


def test_followpaths_dockerfile_and_missing_dockerignore(tmp_path: Path) -> None:
    make_tree(tmp_path, "Dockerfile\nsrc/main.c\nREADME")
    assert kinds(tmp_path, followpaths=["Dockerfile", ".dockerignore"]) == ["file Dockerfile"]
    assert resolve_followpaths(tmp_path, ["Dockerfile", ".dockerignore"]) == [
        ".dockerignore",
        "Dockerfile",
    ]


def test_followpaths_symlinked_dockerfile(tmp_path: Path) -> None:
    make_tree(
        tmp_path, "docker/build.Dockerfile\ndocker/other\nDockerfile -> docker/build.Dockerfile"
    )
    assert kinds(tmp_path, followpaths=["Dockerfile", ".dockerignore"]) == [
        "symlink:docker/build.Dockerfile Dockerfile",
        "dir docker",
        "file docker/build.Dockerfile",
    ]


def test_followpaths_absolute_and_escaping_links_stay_in_root(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", "x")
    ctx = make_tree(tmp_path / "ctx", "etc/real\nx\nother")
    os.symlink("/etc/real", ctx / "abs")
    os.symlink("../../../x", ctx / "esc")
    os.symlink(str(outside / "x"), ctx / "far")
    assert resolve_followpaths(ctx, ["abs", "esc"]) == ["abs", "esc", "etc/real", "x"]
    assert paths(ctx, followpaths=["abs", "esc"]) == ["abs", "esc", "etc", "etc/real", "x"]
    # An absolute target outside is read as the same path under the root.
    assert resolve_followpaths(ctx, ["far"]) == ["far", go_clean(str(outside / "x"))[1:]]


def test_followpaths_symlinked_dir_in_the_middle(tmp_path: Path) -> None:
    make_tree(tmp_path, "real/Dockerfile\nreal/other\nlink -> real")
    assert kinds(tmp_path, followpaths=["link/Dockerfile"]) == [
        "symlink:real link",
        "dir real",
        "file real/Dockerfile",
    ]


def test_followpaths_of_a_dir_send_all_below_it(tmp_path: Path) -> None:
    make_tree(tmp_path, "sub/a\nsub/deep/b\nother")
    assert paths(tmp_path, followpaths=["sub"]) == ["sub", "sub/a", "sub/deep", "sub/deep/b"]
    assert paths(tmp_path, followpaths=["/sub/", "./sub/deep"]) == [
        "sub",
        "sub/a",
        "sub/deep",
        "sub/deep/b",
    ]


def test_followpaths_wildcards_and_chains(tmp_path: Path) -> None:
    # fsutil TestWalkerFollowLinks
    make_tree(
        tmp_path,
        "bar\nfoo/l1 -> /baz/one\nfoo/l2 -> /baz/two\nbaz/one\nbaz/two -> ../bax\nbax\nbay",
    )
    assert kinds(tmp_path, followpaths=["foo/l*", "bar"]) == [
        "file bar",
        "file bax",
        "dir baz",
        "file baz/one",
        "symlink:../bax baz/two",
        "dir foo",
        "symlink:/baz/one foo/l1",
        "symlink:/baz/two foo/l2",
    ]


def test_followpaths_link_to_root_sends_everything(tmp_path: Path) -> None:
    # fsutil TestWalkerFollowLinksToRoot
    make_tree(tmp_path, "foo -> .\nbar\nbax\nbay/baz")
    assert resolve_followpaths(tmp_path, ["foo"]) is None
    assert kinds(tmp_path, followpaths=["foo"]) == [
        "file bar",
        "file bax",
        "dir bay",
        "file bay/baz",
        "symlink:. foo",
    ]
    assert paths(tmp_path, followpaths=["."], include_patterns=["bar"]) == ["bar"]


def test_followpaths_cycles_terminate(tmp_path: Path) -> None:
    make_tree(tmp_path, "a -> b\nb -> a\nself -> self\nc")
    assert resolve_followpaths(tmp_path, ["a", "self"]) == ["a", "b", "self"]
    assert paths(tmp_path, followpaths=["a"]) == ["a", "b"]


def test_followpaths_combine_with_include_patterns(tmp_path: Path) -> None:
    make_tree(tmp_path, "Dockerfile\nsrc/a\nsrc/b\nz")
    got = paths(tmp_path, include_patterns=["src/a"], followpaths=["Dockerfile"])
    assert got == ["Dockerfile", "src", "src/a"]


# ----------------------------------------------------------------------------------------
# patterns


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**", "file", True),
        ("**", "dir/file", True),
        ("**/", "dir/file", True),
        ("**/**", "dir/file", True),
        ("dir/**", "dir/file", True),
        ("dir/**", "dir/dir2/file", True),
        ("**/dir", "dir", True),
        ("**/dir", "dir/file", True),
        ("**/dir2/*", "dir/dir2/file", True),
        ("**/dir2/**", "dir/dir2/dir3/file", True),
        ("**file", "file", True),
        ("**file", "dir/dir/file", True),
        ("**file", "dir/xfile", True),  # a suffix match, as Docker's
        ("**/file", "dir/xfile", False),
        ("**/file*", "dir/dir/file.txt", True),
        ("**/**/*.txt", "dir/dir/file.txt", True),
        ("**/**/*.txt2", "dir/dir/file.txt", False),
        ("**/*.txt", "file.txt", True),
        ("a**/*.txt", "a/dir/dir/file.txt", True),
        ("a/*.txt", "a/dir/file.txt", False),
        ("a/*.txt", "a/file.txt", True),
        ("a/*.txt**", "a/file.txt", True),
        ("a[b-d]e", "ace", True),
        ("a[b-d]e", "aae", False),
        ("a[^b-d]e", "aze", True),
        ("a[^b-d]e", "ace", False),
        ("a[!b]e", "a!e", True),  # "!" is not negation in Go's patterns
        ("a[!b]e", "ace", False),
        ("a[\\]]e", "a]e", True),
        (".*", ".foo", True),
        (".*", "foo", False),
        ("abc.def", "abcZdef", False),
        ("abc?def", "abcZdef", True),
        ("abc?def", "abc/def", False),
        ("a*", "ab/c", True),  # via the parent dir ab
        ("a*/b", "a/c/b", False),
        ("a\\\\", "a\\", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("abc/**", "abc", False),
        ("abc/**", "abc/def", True),
        ("**/.foo", "bar.foo", False),
        ("a(b)c/def", "a(b)c/def", True),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
        ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
        ("a?b", "a☺b", True),
        ("[a-ζ]*", "α", True),
        ("*[a-ζ]", "A", False),
        ("/abs", "abs", False),  # patternmatcher itself keeps the leading slash
        ("./x/../y", "y", True),
    ],
)
def test_pattern_matches(pattern: str, path: str, expected: bool) -> None:
    assert PatternMatcher([pattern]).matches(path) is expected


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["**", "!util/docker/web"], "util/docker/web/foo", False),
        (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
        (["docs", "!docs/README.md"], "docs/README.md", False),
        (["docs/*", "!docs/README.md"], "docs/README.md", False),
        (["*.go", "!fileutils.go"], "fileutils.go", False),
        (["!fileutils.go", "*.go"], "fileutils.go", True),
        (["  docs  ", "  !docs/README.md "], "docs/README.md", False),
    ],
)
def test_pattern_lists(patterns: list[str], path: str, expected: bool) -> None:
    pm = PatternMatcher(patterns)
    assert pm.matches(path) is expected
    info: MatchInfo | None = None
    parts = path.split("/")
    for i in range(1, len(parts)):
        _, info = pm.match_with_parent("/".join(parts[:i]), info)
    assert pm.match_with_parent(path, info)[0] is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        # patternmatcher hands "\\x" to Go's regexp, where letters mean something.
        ("foo\\bar", "foobar", False),  # \b is a word boundary: matches nothing
        ("foo\\bar", "foo\\bar", False),
        ("dir\\test", "dir\test", True),  # \t is a tab
        ("a\\d", "a1", True),
        ("a\\d", "ad", False),
        ("a\\101", "aA", True),  # octal
        ("a\\x41", "aA", True),
        ("[[:alpha:]]x", "bx", True),  # a POSIX class, not filepath.Match's "[[:alph" + "]"
        ("[[:alpha:]]x", "1x", False),
        ("[a*]", "a", False),  # Docker's "[a[^/]*]": a class, a star, then "]"
        ("[a*]", "a/^]", True),
        ("x^y", "x^y", True),  # exact: compared as text
        ("x^y*", "x^yz", False),  # regexp: "^" is an anchor
        ("^a*", "ab", True),
    ],
)
def test_pattern_regexp_semantics_are_go_regexp(pattern: str, path: str, expected: bool) -> None:
    assert PatternMatcher([pattern]).matches(path) is expected


@pytest.mark.parametrize("pattern", ["src\\main", "a\\8", "[[:foo:]]", "a\\x4", "[\\b]"])
def test_patterns_go_regexp_rejects_fail_when_evaluated(pattern: str) -> None:
    pm = PatternMatcher([pattern])  # filepath.Match accepts it
    with pytest.raises(ContextError, match="invalid pattern"):
        pm.matches("x")


def test_match_with_parent_differs_from_matches_like_docker() -> None:
    pm = PatternMatcher(["a/b", "!a"])
    assert pm.matches("a/b") is False
    _, info = pm.match_with_parent("a", None)
    assert pm.match_with_parent("a/b", info)[0] is True


@pytest.mark.parametrize(
    "pattern",
    ["!", "[", "a[", "[^", "[^bc", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]"],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ContextError):
        PatternMatcher([pattern])


def test_reversed_range_fails_only_when_evaluated(tmp_path: Path) -> None:
    # filepath.Match accepts [z-a]; Go's regexp does not, and patternmatcher compiles it
    # on first use, so the walk fails only if the pattern is ever evaluated.
    pm = PatternMatcher(["[z-a]"])
    with pytest.raises(ContextError, match="range"):
        pm.matches("x")
    make_tree(tmp_path, "a\nb")
    assert paths(tmp_path, exclude_patterns=["![z-a]", "a"]) == ["b"]  # "!" never reached
    with pytest.raises(ContextError, match="range"):
        list(walk(tmp_path, exclude_patterns=["[z-a]"]))


def test_invalid_pattern_fails_before_walking(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="invalid pattern"):
        walk(tmp_path, exclude_patterns=["ok", "bad["])


def test_blank_patterns_are_dropped() -> None:
    pm = PatternMatcher(["docs", "", "  ", "config"])
    assert [p.text for p in pm.patterns] == ["docs", "config"]
    assert not pm.has_exclusions
    assert PatternMatcher(["x", "!y"]).has_exclusions


def test_pruning_helpers() -> None:
    pm = PatternMatcher(["vendor", "!vendor/keep/**", "!other"])
    assert pm.exceptions_may_match_below("vendor")
    assert pm.exceptions_may_match_below("vendor/keep")
    assert not pm.exceptions_may_match_below("vendor/drop")
    assert not PatternMatcher(["vendor"]).exceptions_may_match_below("vendor")
    assert PatternMatcher(["vendor", "!*.md"]).exceptions_may_match_below("vendor")
    inc = PatternMatcher(["src/app/*"])
    assert inc.includes_may_match_below("src")
    assert not inc.includes_may_match_below("docs")
    assert PatternMatcher(["**/*.py"]).includes_may_match_below("docs")


# ----------------------------------------------------------------------------------------
# .dockerignore


def test_parse_dockerignore_like_docker() -> None:
    # moby/patternmatcher ignorefile TestReadAll, plus comments, BOM, CRLF, cleaning
    text = (
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    )
    assert parse_dockerignore(text) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ]
    text = (
        "\ufeff# comment\r\nnode_modules/\r\n  *.log  \r\n./a/../b/\n !x/./y\n/\n"
        "  # not a comment\n"
    )
    assert parse_dockerignore(text) == [
        "node_modules",
        "*.log",
        "b",
        "!x/y",
        "/",
        "# not a comment",
    ]
    assert parse_dockerignore("") == []
    assert parse_dockerignore("a\x1f") == ["a\x1f"]  # Go's TrimSpace keeps \x1f


def test_parsed_dockerignore_drives_the_walk(tmp_path: Path) -> None:
    make_tree(
        tmp_path, "Dockerfile\n.git/HEAD\nbuild/out.o\nbuild/keep.txt\nsrc/a.c\nsrc/a.o\nx.log"
    )
    patterns = parse_dockerignore(".git\n**/*.o\n*.log\nbuild\n!build/keep.txt\n")
    assert paths(tmp_path, exclude_patterns=patterns) == [
        "Dockerfile",
        "build",
        "build/keep.txt",
        "src",
        "src/a.c",
    ]


def test_go_clean() -> None:
    cases = {
        "": ".",
        "/": "/",
        "//a//b/": "/a/b",
        "a/./b/..": "a",
        "../../x": "../../x",
        "/../x": "/x",
        "a/..": ".",
        "./": ".",
        "!a/../b": "b",
    }
    for given_path, cleaned in cases.items():
        assert go_clean(given_path) == cleaned, given_path


# ----------------------------------------------------------------------------------------
# modes


def fake_stat(mode: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))


def test_go_file_mode_bits(tmp_path: Path) -> None:
    assert go_file_mode(fake_stat(stat.S_IFREG | 0o644)) == 0o644
    assert go_file_mode(fake_stat(stat.S_IFDIR | 0o755)) == (1 << 31) | 0o755
    assert go_file_mode(fake_stat(stat.S_IFLNK | 0o777)) == (1 << 27) | 0o777
    assert go_file_mode(fake_stat(stat.S_IFBLK | 0o660)) == (1 << 26) | 0o660
    assert go_file_mode(fake_stat(stat.S_IFCHR | 0o666)) == (1 << 26) | (1 << 21) | 0o666
    assert go_file_mode(fake_stat(stat.S_IFIFO | 0o600)) == (1 << 25) | 0o600
    assert go_file_mode(fake_stat(stat.S_IFSOCK | 0o755)) == (1 << 24) | 0o755
    assert go_file_mode(fake_stat(stat.S_IFREG | 0o4755)) == (1 << 23) | 0o755
    assert go_file_mode(fake_stat(stat.S_IFREG | 0o2755)) == (1 << 22) | 0o755
    assert go_file_mode(fake_stat(stat.S_IFDIR | 0o1777)) == (1 << 31) | (1 << 20) | 0o777
    assert fsutil_stat_mode(fake_stat(stat.S_IFSOCK | 0o755)) == 0o755

    # And on real files.
    (tmp_path / "f").write_text("")
    os.chmod(tmp_path / "f", 0o6750)
    os.mkdir(tmp_path / "d")
    os.chmod(tmp_path / "d", 0o1777)
    os.symlink("f", tmp_path / "l")
    got = {e.path: go_file_mode(e.st) for e in walk(tmp_path)}
    assert got == {
        "d": (1 << 31) | (1 << 20) | 0o777,
        "f": (1 << 23) | (1 << 22) | 0o750,
        "l": (1 << 27) | 0o777,
    }
    null = os.stat("/dev/null")
    assert go_file_mode(null) == (1 << 26) | (1 << 21) | 0o666


def test_sockets_are_yielded_with_the_socket_bit_cleared_by_fsutil_mode() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths are short
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(os.path.join(short, "s"))
            (entry,) = walk(Path(short))
        finally:
            sock.close()
    assert entry.path == "s" and not (entry.is_file or entry.is_dir or entry.is_symlink)
    assert go_file_mode(entry.st) & (1 << 24)
    assert fsutil_stat_mode(entry.st) & (1 << 24) == 0


# ----------------------------------------------------------------------------------------
# performance


def test_ten_thousand_files_walk_fast(tmp_path: Path) -> None:
    for a in range(20):
        for b in range(10):
            d = tmp_path / f"d{a}" / f"s{b}"
            d.mkdir(parents=True)
            for c in range(50):
                (d / f"f{c}.txt").touch()
    start = time.perf_counter()
    count = sum(1 for _ in walk(tmp_path))
    plain = time.perf_counter() - start
    start = time.perf_counter()
    filtered = sum(1 for _ in walk(tmp_path, exclude_patterns=["**/*.log", "d1", "!d1/s1/f1.txt"]))
    with_patterns = time.perf_counter() - start
    assert count == 10_000 + 200 + 20
    assert filtered == count - 511 + 3
    assert plain < 1.0 and with_patterns < 1.0, (plain, with_patterns)


# ----------------------------------------------------------------------------------------
# properties

NAMES = ["a", "a.txt", "a-b", "a0", "b", "B", "é", "z"]
Tree = dict[str, Any]

trees = st.recursive(
    st.none(),
    lambda children: st.dictionaries(st.sampled_from(NAMES), children, max_size=4),
    max_leaves=25,
).map(lambda t: t if isinstance(t, dict) else {"a": None})

SEGMENTS = ["a", "b", "*", "**", "a*", "*.txt", "?", "[ab]", "é", "a.txt"]
pattern_strategy = st.builds(
    lambda neg, segs: ("!" if neg else "") + "/".join(segs),
    st.booleans(),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3),
)
pattern_lists = st.lists(pattern_strategy, max_size=4)


def build(root: Path, tree: Tree) -> None:
    for name, child in tree.items():
        if child is None:
            (root / name).write_text(name)
        else:
            (root / name).mkdir()
            build(root / name, child)


def all_paths(tree: Tree, prefix: str = "") -> Iterator[tuple[str, bool]]:
    for name, child in tree.items():
        yield prefix + name, child is not None
        if child is not None:
            yield from all_paths(child, prefix + name + "/")


def reference(tree: Tree, inc: PatternMatcher | None, exc: PatternMatcher | None) -> set[str]:
    """What fsutil sends, computed recursively over the in-memory tree."""
    sent: set[str] = set()

    def visit(
        node: Tree, prefix: str, inc_info: MatchInfo | None, exc_info: MatchInfo | None
    ) -> None:
        for name, child in node.items():
            rel = prefix + name
            is_dir = child is not None
            skip = False
            ii = ei = None
            if inc is not None:
                m, ii = inc.match_with_parent(rel, inc_info)
                if not m:
                    if is_dir and not inc.includes_may_match_below(rel):
                        continue
                    skip = True
            if exc is not None:
                m, ei = exc.match_with_parent(rel, exc_info)
                if m:
                    if is_dir and not exc.exceptions_may_match_below(rel):
                        continue
                    skip = True
            if not skip:
                parts = rel.split("/")
                sent.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
            if is_dir:
                visit(child, rel + "/", ii, ei)

    visit(tree, "", None, None)
    return sent


def check_shape(got: list[str]) -> None:
    assert got == sorted(got, key=order_key)
    assert len(set(got)) == len(got)
    seen: set[str] = set()
    for p in got:
        if "/" in p:
            assert p.rsplit("/", 1)[0] in seen, f"{p} before its parent"
        seen.add(p)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees, excludes=pattern_lists, includes=pattern_lists)
def test_property_walk_order_and_filtering(
    tree: Tree, excludes: list[str], includes: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, tree)

        everything = paths(root)
        check_shape(everything)
        assert set(everything) == {p for p, _ in all_paths(tree)}

        exc = PatternMatcher(excludes) if excludes else None
        got = paths(root, exclude_patterns=excludes)
        check_shape(got)
        assert set(got) == reference(tree, None, exc)
        if exc is not None and not exc.has_exclusions:
            # Without exceptions this is exactly Docker's "matches or a parent matches".
            assert set(got) == {p for p in everything if not exc.matches(p)}

        inc = PatternMatcher(includes) if includes else None
        got = paths(root, include_patterns=includes, exclude_patterns=excludes)
        check_shape(got)
        assert set(got) == reference(tree, inc, exc)
        if inc is not None and not inc.has_exclusions and (exc is None or not exc.has_exclusions):
            wanted = {p for p in everything if inc.matches(p) and not (exc and exc.matches(p))}
            with_parents = {
                "/".join(p.split("/")[:i]) for p in wanted for i in range(1, p.count("/") + 2)
            }
            assert set(got) == with_parents


def test_entry_is_a_frozen_dataclass(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    (entry,) = walk(tmp_path)
    assert isinstance(entry, Entry)
    with pytest.raises(AttributeError):
        entry.path = "g"  # type: ignore[misc]
