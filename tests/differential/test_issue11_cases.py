"""Every case issue 11 lists, as a named regression test: a unit test of the rule, and
(engine) the same input built by repro and by buildx on the same engine, compared.

The .dockerignore cases: ``|``, ``{``, ``}`` are Go regexp operators in Docker;
``zzz*[a-]`` and ``zzz*[]a]`` are accepted; a BOM at the start of a later line; a
pattern Docker refuses is one line naming ``.dockerignore:N``, exit 2. The Dockerfile
cases: a backtick continuation under ``# escape=```, an empty line inside a
continuation, ``${V:-default}`` in FROM, a line starting with FROM inside a COPY or RUN
heredoc, ``\\ufeffFROM undeclared`` caught by the declared-base check, CRLF kept in the
rendered copy (heredoc content in the image), ``Dockerfile:N`` for a failing RUN.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import diffharness as h
import pytest

from repro.buildkit._session import _decode_metadata
from repro.buildkit._walk import PatternMatcher, parse_dockerignore, walk
from repro.dockerfile import image_uses, instructions, render
from repro.errors import ContextError, RecipeError

ROOT = Path(__file__).resolve().parents[2]
BASE = "registry.test:5000/team/base:1.0"


def matched(patterns: list[str], path: str) -> bool:
    return PatternMatcher(patterns).matches(path)


# ----------------------------------------------------------------------------------------
# .dockerignore: unit


def test_pipe_is_alternation_like_docker() -> None:
    assert matched(["*.log|*.tmp"], "app.log")  # buildx leaves app.log out
    assert matched(["*.log|*.tmp"], "x.tmp")
    assert not matched(["*.log|*.tmp"], "app.txt")
    # Go's MatchString searches: "^" anchors the first alternative only
    assert matched(["*.log|*.tmp"], "dir/x.tmp")
    assert matched(["a|b"], "a|b") and not matched(["a|b"], "a")  # no wildcard: exact


def test_braces_are_counted_repetition_like_docker() -> None:
    assert matched(["x{2}*"], "xx1")  # buildx excludes xx1
    assert not matched(["x{2}*"], "x1")
    assert not matched(["x{2}*"], "x{2}1")
    assert matched(["a{,2}*"], "a{,2}b")  # not a count: "{" is a literal
    assert matched(["}x{*"], "}x{y")
    with pytest.raises(ContextError, match="repeat count"):
        matched(["a{1001}*"], "a")  # Go's regexp refuses it, when evaluated


def test_patterns_filepath_match_accepts_are_accepted() -> None:
    # filepath.Match(p, ".") stops at the first chunk that fails ("zzz" against "."),
    # so the malformed class after the star is never read.
    assert matched(["zzz*[a-]"], "zzz-") and matched(["zzz*[a-]"], "zzzqa")
    assert matched(["zzz*[]a]"], "zzz]") and not matched(["zzz*[]a]"], "zzzb")
    for bad in ("[a-]", "[]a]", "a[", "[x-]"):
        with pytest.raises(ContextError, match="syntax error in pattern"):
            PatternMatcher([bad])


def test_bom_on_a_later_line_like_docker() -> None:
    patterns = parse_dockerignore("\ufeffa\n\ufeffb*\n\ufeffc\n")
    assert patterns == ["a", "\ufeffb*", "\ufeffc"]  # only the first line loses it
    # Go's text/scanner skips the mark when it turns the pattern into a regexp ...
    assert matched(["\ufeffb*"], "bx")
    # ... but an exact pattern is compared as written
    assert matched(["\ufeffc"], "\ufeffc") and not matched(["\ufeffc"], "c")


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    # A .dockerignore's patterns reach the walk through the build definition, whose JSON
    # turns a byte that is not UTF-8 into U+FFFD; Go's regexp matches U+FFFD with such a
    # byte in a file name (a surrogate escape here).
    from repro import dockerignore

    md = {"exclude-patterns": ["n%EF%BF%BDx%2A"], "exclude-patterns-encoded": ["1"]}
    assert _decode_metadata(md)["exclude-patterns"] == ["n\ufffdx*"]
    assert matched(["n\ufffdx*"], "n\udcffx1") and matched(["n\ufffdx*"], "n\ufffdx2")
    assert not matched(["n\ufffdx*"], "nxx")
    assert matched(["m\ufffd"], "m\ufffd") and not matched(["m\ufffd"], "m\udcff")  # exact
    (tmp_path / ".dockerignore").write_bytes(b"[!q]o[\xff\\-]x\n")  # accepted, as U+FFFD
    dockerignore.check(tmp_path, tmp_path / "Dockerfile")


def test_session_metadata_plus_is_a_space() -> None:
    # BuildKit query-escapes every pattern when one is not ASCII: "with space" -> "with+space"
    md = {
        "exclude-patterns": ["with+spa%3Fe", "%E2%98%BA", "a%2Bb"],
        "exclude-patterns-encoded": ["1"],
    }
    assert _decode_metadata(md)["exclude-patterns"] == ["with spa?e", "☺", "a+b"]


def test_refused_pattern_names_dockerignore_line(tmp_path: Path) -> None:
    from repro import dockerignore

    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / ".dockerignore").write_text("ok\n\n# c\nzzz*[a-]\n[a-]\n")
    with pytest.raises(ContextError) as info:
        dockerignore.check(tmp_path / "ctx", tmp_path / "Dockerfile")
    assert info.value.line == 5 and str(info.value.file).endswith(".dockerignore")
    assert "syntax error in pattern" in str(info.value)
    (tmp_path / "Dockerfile.dockerignore").write_text("fine\n")  # beside the Dockerfile wins
    dockerignore.check(tmp_path / "ctx", tmp_path / "Dockerfile")


def test_walk_applies_the_issue_patterns(tmp_path: Path) -> None:
    for name in ("app.log", "x.tmp", "keep.txt", "xx1", "x1", "zzz-", "zzzb"):
        (tmp_path / name).write_text(name)
    patterns = parse_dockerignore("*.log|*.tmp\nx{2}*\nzzz*[a-]\n")
    assert [e.path for e in walk(tmp_path, exclude_patterns=patterns)] == ["keep.txt", "x1", "zzzb"]


# ----------------------------------------------------------------------------------------
# Dockerfiles: unit


def uses(text: str, args: dict[str, str] | None = None) -> list[tuple[str, str, int]]:
    return [(u.instruction, u.image, u.line) for u in image_uses(text, "Dockerfile", args)]


def test_backtick_continuation_under_escape_directive() -> None:
    text = "# escape=`\nFROM `\n  " + BASE + " AS a\nRUN echo `\n  done\n"
    assert uses(text) == [("FROM", BASE, 3)]
    assert [i.line for i in instructions(text)] == [2, 4]


def test_directives_end_at_an_unknown_one_like_buildkit() -> None:
    text = "# foo=bar\n# escape=`\nFROM a.test/x:1 \\\n  AS y\n"
    assert [i.line for i in instructions(text)] == [3]  # the backslash still continues
    assert uses("#  Syntax = s.test/f:1\n# escape=`\nFROM `\n a.test/x:1\n")[1][1] == "a.test/x:1"
    with pytest.raises(RecipeError, match="only one escape parser directive"):
        instructions("# escape=`\n# escape=\\\nFROM scratch\n")


def test_syntax_directive_after_a_bom_names_its_first_word() -> None:
    text = "\ufeff# syntax = s.test/f:1 opts\nFROM scratch\n"
    (use,) = image_uses(text)
    assert (use.instruction, use.image, use.line) == ("syntax", "s.test/f:1", 1)
    assert render(text, [use], lambda u: "s.test/f@sha256:1") == text.replace(
        "s.test/f:1", "s.test/f@sha256:1"
    )


def test_empty_line_inside_a_continuation() -> None:
    text = f"FROM {BASE}\nRUN echo a \\\n\n  # comment\n   \n  && echo b\nFROM {BASE} AS x\n"
    assert [i.line for i in instructions(text)] == [1, 2, 7]
    assert [i.lines for i in instructions(text)][1] == (2, 6)
    assert uses(text) == [("FROM", BASE, 1), ("FROM", BASE, 7)]


@pytest.mark.parametrize(
    ("word", "args", "image"),
    [
        ("${V:-" + BASE + "}", {}, BASE),
        ("${V:-" + BASE + "}", {"V": ""}, BASE),
        ("${V-" + BASE + "}", {"V": "x.test/y:1"}, "x.test/y:1"),
        ("${V:+" + BASE + "}", {"V": "1"}, BASE),
        ("${V}", {"V": BASE}, BASE),
        ("${NOPE:-${V}}", {"V": BASE}, BASE),
    ],
)
def test_arg_expansion_forms_in_from(word: str, args: dict[str, str], image: str) -> None:
    decl = "".join(f"ARG {k}={v}\n" for k, v in args.items())
    assert uses(f"{decl}FROM {word}\n")[0][1] == image


def test_arg_without_default_is_unset_for_expansion() -> None:
    assert uses(f"ARG V\nFROM ${{V:-{BASE}}}\n") == [("FROM", BASE, 2)]
    with pytest.raises(RecipeError, match="should not be blank"):
        uses("ARG V\nFROM ${V:+x}\n")


@pytest.mark.parametrize("instruction", ["COPY <<EOF /f", "RUN <<EOF", "RUN cat <<'EOF' > /f"])
def test_from_inside_a_heredoc_is_not_an_instruction(instruction: str) -> None:
    text = f"FROM {BASE}\n{instruction}\nFROM undeclared\nline\nEOF\nFROM {BASE} AS two\n"
    assert uses(text) == [("FROM", BASE, 1), ("FROM", BASE, 6)]


def test_heredocs_after_onbuild_and_not_in_json_form() -> None:
    text = f"FROM {BASE}\nONBUILD RUN <<EOF\nFROM nope\nEOF\nFROM {BASE}\n"
    assert [u[2] for u in uses(text)] == [1, 5]
    text = f'FROM {BASE}\nRUN ["sh", "<<EOF"]\nFROM {BASE} AS b\n'
    assert [u[2] for u in uses(text)] == [1, 3]


def test_stage_index_in_copy_from_but_not_in_a_mount() -> None:
    text = f"FROM {BASE}\nCOPY --from=0 /a /b\nRUN --mount=from=0,target=/m true\n"
    assert uses(text) == [("FROM", BASE, 1), ("RUN", "0", 3)]


def test_from_finds_a_stage_only_by_its_lower_case_name() -> None:
    text = f"FROM {BASE} AS Build\nFROM build\nCOPY --from=BUILD /a /b\nFROM Build\n"
    assert uses(text) == [("FROM", BASE, 1), ("FROM", "Build", 4)]


def test_heredoc_with_tabs_stripped_terminator() -> None:
    text = f"FROM {BASE}\nRUN <<-EOT\n\tFROM nope\n\tEOT\nFROM {BASE}\n"
    assert [u[2] for u in uses(text)] == [1, 5]


def test_bom_before_from_is_an_instruction(tmp_path: Path) -> None:
    import repro.lock as lk
    from repro.recipe import load_recipe

    assert uses("\ufeffFROM undeclared\n") == [("FROM", "undeclared", 1)]
    assert uses("\ufeff# escape=`\nFROM `\n  x.test/a:1\n") == [("FROM", "x.test/a:1", 3)]
    d = tmp_path / "r"
    d.mkdir()
    (d / "recipe.toml").write_text(f'source_date_epoch = 1\nbases = ["{BASE}"]\n')
    (d / "Dockerfile").write_bytes(b"\xef\xbb\xbfFROM undeclared\n")
    with pytest.raises(RecipeError, match="not a declared base") as info:
        lk.check_from_lines(load_recipe(d))
    assert info.value.line == 1


def test_render_keeps_crlf_and_bom() -> None:
    text = f"\ufeffFROM {BASE}\r\nCOPY <<EOF /h\r\nline1\r\nEOF\r\n"
    found = image_uses(text)
    out = render(text, found, lambda u: "x.test/base@sha256:" + "a" * 64)
    assert out == text.replace(BASE, "x.test/base@sha256:" + "a" * 64)
    assert out.startswith("\ufeffFROM x.test/base@") and out.count("\r\n") == 4


def test_crlf_dockerfile_rendered_copy_keeps_bytes(tmp_path: Path) -> None:
    import repro.lock as lk
    from repro.recipe import load_recipe

    d = tmp_path / "r"
    d.mkdir()
    (d / "recipe.toml").write_text(f'source_date_epoch = 1\nbases = ["{BASE}"]\n')
    body = f"\ufeffFROM {BASE}\r\nCOPY <<EOF /h\r\nline1\r\nEOF\r\n".encode()
    (d / "Dockerfile").write_bytes(body)
    r = load_recipe(d)
    digest = "sha256:" + "1" * 64
    data = {"bases": {BASE: {"digest": digest}}}
    rendered = lk.render_dockerfile(r, data)
    assert rendered is not None
    assert rendered.encode() == body.replace(BASE.encode(), f"{BASE}@{digest}".encode())


# ----------------------------------------------------------------------------------------
# against buildx (engine)

IGNORE_CASES = {
    "pipe-alternation": ("*.log|*.tmp\n", ["app.log", "x.tmp", "keep.txt", "d/a.log"]),
    "brace-count": ("x{2}*\n", ["xx1", "x1", "x{2}1"]),
    "class-after-failed-chunk": ("zzz*[a-]\nzzz*[]a]\n", ["zzz-", "zzza", "zzz]", "zzzb"]),
    "bom-later-line": ("\ufeffa\n\ufeffb*\n\ufeffc\r\n", ["a", "bx", "c", "\ufeffc"]),
    "space-in-encoded-patterns": ("with spa?e\n☺\n", ["with space/f", "☺", "x"]),
    # file names and patterns with a byte that is not UTF-8 (0xff)
    "not-utf8": (
        "n\udcffx*\nm\udcff\n[!q]o[\udcff\\-]x\n",
        ["n\udcffx1", "n\ufffdx2", "m\udcff", "m\ufffd", "nxx", "k", "ao\udcffx"],
    ),
}


@pytest.mark.engine
@pytest.mark.parametrize("case", sorted(IGNORE_CASES))
def test_ignore_case_against_buildx(case: str, tmp_path: Path, buildx: list[str]) -> None:
    ignore, files = IGNORE_CASES[case]
    recipe = h.write_recipe(tmp_path / case, h.IGNORE_DOCKERFILE, [])
    for name in files:
        (recipe / "ctx" / name).parent.mkdir(parents=True, exist_ok=True)
        (recipe / "ctx" / name).write_bytes(os.fsencode(name))
    (recipe / "ctx" / ".dockerignore").write_bytes(ignore.encode("utf-8", "surrogateescape"))
    result = h.compare(recipe, h.engine_env())
    assert result.buildx.ok, result.buildx.error
    assert result.agree, result.explain()


DOCKERFILE_CASES = {
    "backtick-continuation": "# escape=`\nFROM `\n  {base} AS a\nRUN echo one `\n  > /f\n",
    "empty-line-in-continuation": "FROM {base}\nRUN echo a \\\n\n  # c\n  > /f\n",
    "default-in-from": "ARG V\nFROM ${{V:-{base}}}\nRUN echo x > /f\n",
    "from-in-copy-heredoc": "FROM {base}\nCOPY <<EOF /h\nline1\nFROM undeclared\nEOF\n",
    "from-in-run-heredoc": "FROM {base}\nRUN cat <<EOF > /h\nFROM undeclared\nEOF\n",
    "crlf-heredoc": "FROM {base}\r\nCOPY <<EOF /h\r\nline1\r\nEOF\r\n",
    "bom": "\ufeffFROM {base}\nRUN echo x > /f\n",
}


@pytest.mark.engine
@pytest.mark.parametrize("case", sorted(DOCKERFILE_CASES))
def test_dockerfile_case_against_buildx(case: str, tmp_path: Path, buildx: list[str]) -> None:
    base = h.base_tag()
    recipe = h.write_recipe(tmp_path / case, DOCKERFILE_CASES[case].format(base=base), [base])
    result = h.compare(recipe, h.engine_env(), lock=True)
    assert result.buildx.ok, result.buildx.error
    assert result.agree, result.explain()
    if case == "crlf-heredoc":
        assert result.repro.tree["h"][4] == result.buildx.tree["h"][4]


@pytest.mark.engine
def test_undeclared_from_after_bom_is_refused(tmp_path: Path, base_image: str) -> None:
    base = h.base_tag()
    recipe = h.write_recipe(tmp_path / "r", "\ufeffFROM undeclared.test/x:1\n", [base])
    r = subprocess.run(
        [sys.executable, "-m", "repro", "lock", str(recipe)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2
    assert "Dockerfile:1: FROM undeclared.test/x:1: not a declared base" in r.stderr


@pytest.mark.engine
def test_failing_run_names_dockerfile_line_like_buildx(tmp_path: Path, base_image: str) -> None:
    text = f"FROM {base_image}\nRUN echo ok\nRUN echo failing && \\\n    exit 3\n"
    recipe = h.write_recipe(tmp_path / "r", text, [])
    env = h.engine_env()
    out = h.build_buildx(recipe, tmp_path / "bx.tar", env)
    assert not out.ok and "Dockerfile:3" in out.error and ">>> RUN echo failing" in out.error
    r = subprocess.run(
        [sys.executable, "-m", "repro", "build", str(recipe), "--progress", "plain",
         "-o", f"oci:{tmp_path / 'o'}"],
        capture_output=True, text=True, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 1
    assert "Dockerfile:3\n" in r.stderr
    assert "   3 | >>> RUN echo failing && \\\n   4 | >>>     exit 3" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("repro: error: ") and "Dockerfile:3: process" in last


@pytest.mark.engine
def test_refused_pattern_is_exit_2_with_line(tmp_path: Path) -> None:
    recipe = h.write_recipe(tmp_path / "r", h.IGNORE_DOCKERFILE, [])
    (recipe / "ctx" / "f").write_text("f")
    (recipe / "ctx" / ".dockerignore").write_text("ok\nzzz*[a-]\n[a-]\n")
    env = h.engine_env()
    assert not h.build_buildx(recipe, tmp_path / "bx.tar", env).ok  # Docker refuses it too
    r = subprocess.run(
        [sys.executable, "-m", "repro", "build", str(recipe), "-o", f"oci:{tmp_path / 'o'}"],
        capture_output=True, text=True, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "ctx/.dockerignore:3: invalid pattern '[a-]'" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.engine
def test_rendered_copy_takes_the_current_dockerfile_dockerignore(
    tmp_path: Path, buildx: list[str]
) -> None:
    """Found by the harness: the rendered (pinned) Dockerfile's directory is shared by
    builds of the same text, and kept a Dockerfile.dockerignore the user had removed."""
    base = h.base_tag()
    recipe = h.write_recipe(tmp_path / "r", f"FROM {base}\nCOPY . /ctx/\n", [base])
    (recipe / "ctx" / "a.log").write_text("log")
    (recipe / "ctx" / "b.txt").write_text("txt")
    env = h.engine_env()
    (recipe / "Dockerfile.dockerignore").write_text("*.log\n")
    first = h.compare(recipe, env, lock=True)
    assert first.agree, first.explain()
    assert "ctx/a.log" not in first.repro.tree
    (recipe / "Dockerfile.dockerignore").unlink()
    second = h.compare(recipe, env, lock=True)
    assert second.agree, second.explain()
    assert "ctx/a.log" in second.repro.tree


@pytest.mark.engine
def test_socket_and_fifo_in_context_against_buildx(tmp_path: Path, buildx: list[str]) -> None:
    """Found by the harness: fsutil sends a socket as an empty regular file, and the
    daemon asks for its content; repro's session had no content to send and failed."""
    import socket

    recipe = h.write_recipe(tmp_path / "r", h.IGNORE_DOCKERFILE, [])
    os.mkfifo(recipe / "ctx" / "fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(recipe / "ctx" / "sock"))
    (recipe / "ctx" / "f").write_text("f")
    result = h.compare(recipe, h.engine_env())
    assert result.buildx.ok, result.buildx.error
    assert result.agree, result.explain()
    assert result.repro.tree["ctx/sock"][0] == "file"


# ----------------------------------------------------------------------------------------
# where a failed Solve failed (unit)


def _pb(number: int, value: bytes | int) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def _status(*anys: tuple[str, bytes]) -> bytes:
    body = _pb(1, 2) + _pb(2, b"failed")
    for url, value in anys:
        body += _pb(3, _pb(1, url.encode()) + _pb(2, value))
    return body


def test_source_ranges_from_json_and_protobuf_details() -> None:
    from repro.buildkit._errsource import has_vertex, source_ranges

    doc = b'{"info":{"filename":"Dockerfile"},"ranges":[{"start":{"line":3},"end":{"line":4}}]}'
    details = _status(
        ("github.com/moby/buildkit/stack.Stack+json", b"{}"),
        ("github.com/moby/buildkit/errdefs.Source+json", doc),
        ("github.com/moby/buildkit/errdefs.Vertex+json", b'{"digest":"sha256:1"}'),
    )
    (r,) = source_ranges(details)
    assert (r.filename, r.start, r.end) == ("Dockerfile", 3, 4)
    assert has_vertex(details)
    position = _pb(1, 7)
    source = _pb(1, _pb(1, b"Dockerfile")) + _pb(2, _pb(1, position) + _pb(2, _pb(1, 8)))
    only_source = _status(("type.googleapis.com/moby.buildkit.v1.errdefs.Source", source))
    (p,) = source_ranges(only_source)
    assert (p.filename, p.start, p.end) == ("Dockerfile", 7, 8)
    assert not has_vertex(only_source)  # the frontend refused the Dockerfile: bad input
    assert source_ranges(b"\xff\xff") == []  # garbage: nothing, no exception


def test_snippet_looks_like_buildx() -> None:
    from repro.buildkit._errsource import snippet

    lines = ["FROM x", "RUN echo ok", "RUN echo failing && \\", "    exit 3", ""]
    assert snippet(lines, [(3, 4)]) == (
        "Dockerfile:3\n"
        "--------------------\n"
        "   2 |     RUN echo ok\n"
        "   3 | >>> RUN echo failing && \\\n"
        "   4 | >>>     exit 3\n"
        "   5 |\n"
        "--------------------"
    )
    # a triggered ONBUILD: the FROM and the trigger, both marked
    assert ">>> FROM x" in snippet(lines, [(1, 1), (3, 3)]).splitlines()[2]


def test_stat_packet_with_names_that_are_not_utf8() -> None:
    """The hand-encoded STAT packet is the protobuf buildx's fsutil sends: the name's
    bytes in Stat.path (1) and Stat.linkname (7), the other fields as usual."""
    from repro.buildkit._errsource import _fields
    from repro.buildkit._session import _raw_stat_packet
    from repro.buildkit.proto import buildkit_pb2 as pb

    stat = pb.Stat(mode=0o644, size=3, mod_time=5)
    packet = dict(_fields(_raw_stat_packet(stat, b"bad\xffname", b"t\xfe")))
    assert packet.get(1, 0) == pb.PACKET_STAT  # 0: the default, not on the wire
    fields = dict(_fields(packet[2]))  # type: ignore[arg-type]
    assert fields[1] == b"bad\xffname" and fields[7] == b"t\xfe"
    assert (fields[2], fields[5], fields[6]) == (0o644, 3, 5)
    same = pb.Packet.FromString(_raw_stat_packet(stat, b"ok", b""))
    assert same.type == pb.PACKET_STAT
    assert (same.stat.path, same.stat.mode, same.stat.size) == ("ok", 0o644, 3)


@pytest.mark.engine
@pytest.mark.parametrize(
    "pattern",
    ["*{1}}{1}/p[a\\-]ren(1)", "\ufeff?|{1}?1", "[z-a]"],
    ids=["nested-repetition", "bom-missing-argument", "reversed-range"],
)
def test_pattern_only_go_regexp_refuses_is_exit_2_with_line(
    pattern: str, tmp_path: Path, buildx: list[str]
) -> None:
    """Found by the harness (seeds 402, 417): a pattern that fails only when the walk
    evaluates it was reported with exit 1, its text being shown escaped."""
    recipe = h.write_recipe(tmp_path / "r", h.IGNORE_DOCKERFILE, [])
    (recipe / "ctx" / "f").write_text("f")
    (recipe / "Dockerfile.dockerignore").write_text(f"# c\n{pattern}\n")
    result = h.compare(recipe, h.engine_env(), refusal_names="Dockerfile.dockerignore")
    assert not result.buildx.ok
    assert result.agree, result.explain()
    assert "Dockerfile.dockerignore:2: invalid pattern" in result.repro.error
