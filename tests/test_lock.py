"""The lock without a registry: recipe inputs, Dockerfile references, the build graph,
change lists, staleness, and where mirrors come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from repro import lock as lk
from repro.config import (
    load_repo_config,
    mirror_url,
    parse_deb822_sources,
    parse_sources_list,
)
from repro.dockerfile import image_uses, render
from repro.errors import InputError, RecipeError
from repro.graph import levels, order, to_dot
from repro.recipe import load_recipe

BASE = "registry.test:5000/team/base:1.0"


def make(tmp_path: Path, toml: str, dockerfile: str = "FROM scratch\n", name: str = "r") -> Path:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text(dockerfile)
    (d / "recipe.toml").write_text(toml)
    return d


FULL = f"""
description = "all inputs"
source_date_epoch = "git"
platforms = ["linux/amd64", "linux/arm64"]
bases = ["{BASE}", "recipe:other"]

[publish]
repository = "registry.test:5000/team/r"
tags = ["1.0", "latest"]

[packages.apt.tools]
suite = "bookworm"
packages = ["curl", "git=1:2.39.5-0+deb12u1"]

[packages.apk.runtime]
branch = "v3.20"
repositories = ["main", "community"]
packages = ["busybox"]

[downloads.src]
url = "https://example.invalid/src.tar.gz"

[downloads.from-mirror]
mirror = "debian"
path = "pool/main/h/hello/hello_2.10.orig.tar.gz"

[git.lib]
url = "https://example.invalid/lib.git"
ref = "v1.2.3"
"""


def test_full_recipe_format(tmp_path: Path) -> None:
    r = load_recipe(make(tmp_path, FULL))
    assert r.epoch_policy == "git" and r.source_date_epoch is None
    assert [b.ref for b in r.bases] == [BASE, "recipe:other"] and r.recipe_bases == ("other",)
    apt, apk = r.packages
    assert (apt.kind, apt.name, apt.suites, apt.components, apt.mirror) == (
        "apt",
        "tools",
        ("bookworm",),
        ("main",),
        "apt",
    )
    assert apk.suites == ("v3.20",) and apk.components == ("main", "community")
    assert [d.name for d in r.downloads] == ["src", "from-mirror"]
    assert r.git[0].ref == "v1.2.3" and r.publish.tags == ("1.0", "latest")
    assert r.needs_lock


@pytest.mark.parametrize(
    ("toml", "line", "fragment"),
    [
        ('source_date_epoch = "someday"\n', 1, 'must be an integer, "git" or "lock"'),
        ('source_date_epoch = 1\nbases = ["reg.test/x@sha256:' + "a" * 64 + '"]\n', 2, "tag"),
        ("source_date_epoch = 1\nbases = ['reg.test/x:1', 'reg.test/x:1']\n", 2, "twice"),
        ("source_date_epoch = 1\nbases = ['recipe:Bad Name']\n", 2, "recipe:NAME"),
        ("source_date_epoch = 1\nbases = 'x'\n", 2, "must be a list"),
        (
            "source_date_epoch = 1\n[packages.apt.t]\nsuite = 'b'\npackages = ['a']\nbogus = 1\n",
            5,
            "unknown key 'bogus'",
        ),
        ("source_date_epoch = 1\n[packages.apt.t]\nsuite = 'b'\n", 2, "'packages'"),
        ("source_date_epoch = 1\n[packages.rpm.t]\npackages = ['a']\n", None, "unknown key 'rpm'"),
        ("source_date_epoch = 1\n[downloads.x]\npath = 'a'\n", 2, "needs either url"),
        ("source_date_epoch = 1\n[git.x]\nurl = 'u'\n", 2, "missing required key 'ref'"),
        ("source_date_epoch = 1\n[git.x]\nurl = 'u'\nref = 3\n", 4, "'ref' must be a string"),
        ("source_date_epoch = 1\n[publish]\nrepository = 'r.test/x:1'\n", 3, "must not have a tag"),
    ],
)
def test_input_errors_name_file_and_line(
    tmp_path: Path, toml: str, line: int | None, fragment: str
) -> None:
    d = make(tmp_path, toml)
    with pytest.raises(RecipeError) as info:
        load_recipe(d)
    assert fragment in str(info.value)
    assert info.value.file == str(d / "recipe.toml")
    assert info.value.line == line
    assert "\n" not in str(info.value)


# --- Dockerfile references -------------------------------------------------------------


DOCKERFILE = """\
# syntax is not needed
ARG BASE=registry.test:5000/team/base:1.0
FROM ${BASE} AS build
RUN --mount=type=cache,target=/c \\
    --mount=type=bind,from=registry.test:5000/team/tools:2,target=/t true
FROM build AS test
COPY --from=build /a /a
COPY --from=registry.test:5000/team/data:3 /d /d
FROM --platform=linux/amd64 scratch
COPY --from=0 /a /a
"""


def test_image_uses_skip_stages_and_expand_global_args() -> None:
    uses = image_uses(DOCKERFILE)
    assert [(u.instruction, u.image, u.line) for u in uses] == [
        ("FROM", "registry.test:5000/team/base:1.0", 3),
        ("RUN", "registry.test:5000/team/tools:2", 5),
        ("COPY", "registry.test:5000/team/data:3", 8),
    ]
    rendered = render(DOCKERFILE, uses, lambda u: u.image.split(":")[0] + "@sha256:x")
    lines = rendered.split("\n")
    assert lines[2] == "FROM registry.test@sha256:x AS build"
    assert "from=registry.test@sha256:x,target=/t" in lines[4]
    assert len(lines) == len(DOCKERFILE.split("\n"))


def test_from_with_unknown_variable_is_an_error() -> None:
    with pytest.raises(RecipeError, match=r"\$NOPE has no default") as info:
        image_uses("FROM $NOPE\n", "Dockerfile")
    assert info.value.line == 1


def test_undeclared_from_is_an_error_at_lock_and_build(tmp_path: Path) -> None:
    d = make(
        tmp_path,
        f'source_date_epoch = 1\nbases = ["{BASE}"]\n',
        f"FROM {BASE}\nFROM registry.test:5000/team/other:2\n",
    )
    r = load_recipe(d)
    with pytest.raises(RecipeError, match="not a declared base") as info:
        lk.check_from_lines(r)
    assert info.value.file == str(r.dockerfile) and info.value.line == 2


def test_digest_pinned_from_needs_no_lock_only_without_lockable_inputs(tmp_path: Path) -> None:
    pinned = "FROM registry.test:5000/x@sha256:" + "a" * 64 + "\n"
    plain = load_recipe(make(tmp_path, "source_date_epoch = 1\n", pinned, name="plain"))
    assert lk.require_lock(plain) is None  # nothing to lock: builds as before
    tagged = load_recipe(make(tmp_path, "source_date_epoch = 1\n", f"FROM {BASE}\n", name="t"))
    with pytest.raises(RecipeError, match="not a declared base"):
        lk.require_lock(tagged)


# --- staleness and rendering -------------------------------------------------------------


def locked(r: Any, digest: str = "sha256:" + "1" * 64) -> dict[str, Any]:
    return {
        "version": lk.LOCK_VERSION,
        "recipe": r.name,
        "inputs": lk.inputs_digest(r),
        "source_date_epoch": 1234 if r.source_date_epoch is None else r.source_date_epoch,
        "bases": {BASE: {"digest": digest, "platforms": {"linux/amd64": digest}}},
    }


def test_missing_and_stale_locks_are_refused(tmp_path: Path) -> None:
    d = make(tmp_path, f'source_date_epoch = "lock"\nbases = ["{BASE}"]\n', f"FROM {BASE}\n")
    r = load_recipe(d)
    with pytest.raises(lk.StaleLock, match="r: no repro.lock: run repro lock"):
        lk.require_lock(r)
    lk.write_lock(r, locked(r))
    assert lk.require_lock(r)["source_date_epoch"] == 1234  # type: ignore[index]
    (d / "recipe.toml").write_text(
        f'source_date_epoch = "lock"\nbases = ["{BASE}", "x.test/y:1"]\n'
    )
    r2 = load_recipe(d)
    with pytest.raises(lk.StaleLock, match="stale.*run repro lock"):
        lk.require_lock(r2)


def test_build_uses_the_locked_digest(tmp_path: Path) -> None:
    d = make(
        tmp_path,
        f'source_date_epoch = 7\nbases = ["{BASE}"]\n',
        f"FROM {BASE} AS a\nRUN true\nFROM a\n",
    )
    r = load_recipe(d)
    data = locked(r)
    lk.write_lock(r, data)
    pinned = lk.apply_lock(r, {})
    text = pinned.dockerfile.read_text()
    assert text.splitlines()[0] == f"FROM registry.test:5000/team/base:1.0@sha256:{'1' * 64} AS a"
    assert text.splitlines()[2] == "FROM a"
    assert pinned.dockerfile.name == "Dockerfile" and pinned.source_date_epoch == 7


def test_recipe_base_rebuilt_with_another_digest_makes_the_lock_stale(tmp_path: Path) -> None:
    d = make(
        tmp_path,
        'source_date_epoch = 1\nbases = ["recipe:base"]\n',
        "FROM recipe:base\n",
        name="child",
    )
    r = load_recipe(d)
    data = {
        "version": lk.LOCK_VERSION,
        "recipe": "child",
        "inputs": lk.inputs_digest(r),
        "source_date_epoch": 1,
        "bases": {"recipe:base": {"digest": "sha256:" + "2" * 64, "image": "reg.test/base"}},
    }
    lk.write_lock(r, data)
    assert lk.require_lock(r, {"base": "sha256:" + "2" * 64})
    with pytest.raises(lk.StaleLock, match="base recipe:base was rebuilt"):
        lk.require_lock(r, {"base": "sha256:" + "3" * 64})
    assert lk.render_dockerfile(r, data) == f"FROM reg.test/base@sha256:{'2' * 64}\n"


def test_lock_file_is_stable_toml(tmp_path: Path) -> None:
    r = load_recipe(
        make(tmp_path, f'source_date_epoch = 1\nbases = ["{BASE}"]\n', f"FROM {BASE}\n")
    )
    data = locked(r)
    text = lk.dump_lock(data)
    assert text.startswith("# Written by `repro lock`")
    assert text.index("version") < text.index("recipe") < text.index("inputs")
    assert lk.dump_lock(dict(reversed(list(data.items())))) == text


def test_change_list() -> None:
    old = {
        "source_date_epoch": 1,
        "bases": {"alpine:3": {"digest": "sha256:ab12" + "0" * 60}},
        "packages": {"apk": {"main": {"package": [{"name": "busybox", "version": "1.36.1-r2"}]}}},
        "git": {"lib": {"commit": "a" * 40}},
    }
    new = {
        "source_date_epoch": 1,
        "bases": {"alpine:3": {"digest": "sha256:cd34" + "0" * 60}},
        "packages": {
            "apk": {
                "main": {
                    "package": [
                        {"name": "busybox", "version": "1.36.1-r3"},
                        {"name": "musl", "version": "1.2.5-r0"},
                    ]
                }
            }
        },
        "git": {"lib": {"commit": "b" * 40}},
    }
    assert lk.changes(old, new) == [
        "base:alpine:3 sha256:ab1200000000… -> sha256:cd3400000000…",
        "apk:busybox 1.36.1-r2 -> 1.36.1-r3",
        "apk:musl (new) -> 1.2.5-r0",
        "git:lib aaaaaaaaaaaa -> bbbbbbbbbbbb",
    ]
    outcome = lk.LockOutcome("hello", "updated", lk.changes(old, new))
    assert lk.render_change_line(outcome).startswith("[hello] base:alpine:3 sha256:ab12")
    assert lk.changes(new, new) == []


# --- the build graph -----------------------------------------------------------------------


def graph_of(tmp_path: Path, spec: dict[str, list[str]]) -> list[Any]:
    out = []
    for name, deps in spec.items():
        bases = ", ".join(f'"recipe:{d}"' for d in deps)
        out.append(
            load_recipe(make(tmp_path, f"source_date_epoch = 1\nbases = [{bases}]\n", name=name))
        )
    return out


def test_topological_levels_and_dot(tmp_path: Path) -> None:
    rs = graph_of(tmp_path, {"app": ["lib", "base"], "lib": ["base"], "base": [], "tool": []})
    assert levels(rs) == [["base", "tool"], ["lib"], ["app"]]
    assert order(rs) == ["base", "tool", "lib", "app"]
    assert levels(rs, only=["app", "tool"]) == [["tool"], ["app"]]
    dot = to_dot(rs)
    assert '"base" -> "lib";' in dot and '"lib" -> "app";' in dot


def test_cycle_is_an_error_naming_it(tmp_path: Path) -> None:
    rs = graph_of(tmp_path, {"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    with pytest.raises(RecipeError, match=r"cycle: a -> b -> c -> a"):
        levels(rs)


def test_unknown_recipe_base(tmp_path: Path) -> None:
    rs = graph_of(tmp_path, {"a": ["nope"]})
    with pytest.raises(RecipeError, match="recipe:nope is not a recipe") as info:
        levels(rs)
    assert info.value.line == 2


# --- repo settings and mirrors ----------------------------------------------------------------


def test_repo_config(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    assert load_repo_config(tmp_path / "recipes").registry == ""
    (tmp_path / "recipes" / "repro.toml").write_text(
        'registry = "reg.test/team/"\n[mirrors]\nalpine = { env = "MY_ALPINE" }\n'
    )
    cfg = load_repo_config(tmp_path / "recipes")
    assert cfg.registry == "reg.test/team" and cfg.mirrors == {"alpine": "MY_ALPINE"}
    assert mirror_url("alpine", repo=cfg, environ={"MY_ALPINE": "http://m.test/a/"}) == (
        "http://m.test/a"
    )
    (tmp_path / "recipes" / "repro.toml").write_text('[mirrors]\nalpine = "http://host.test"\n')
    with pytest.raises(RecipeError, match="no host names in the repo") as info:
        load_repo_config(tmp_path / "recipes")
    assert info.value.line == 2
    (tmp_path / "recipes" / "repro.toml").write_text("bogus = 1\n")
    with pytest.raises(RecipeError, match="unknown key 'bogus'"):
        load_repo_config(tmp_path / "recipes")


def test_apt_sources_give_the_mirror(tmp_path: Path) -> None:
    deb822 = (
        "Types: deb\nURIs: http://a.test/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\n\n"
        "Types: deb-src\nURIs: http://src.test/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://b.test/debian-security/\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    sources = parse_deb822_sources(deb822)
    assert [s.uri for s in sources] == ["http://a.test/debian", "http://b.test/debian-security"]
    one_line = "deb [arch=amd64 signed-by=/k.gpg] http://c.test/debian trixie main\n# deb x y\n"
    assert parse_sources_list(one_line)[0].suites == ("trixie",)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(deb822)
    env: dict[str, str] = {"REPRO_CONFIG": str(tmp_path / "none.toml")}
    assert mirror_url(
        "apt", suite="bookworm-security", components=["main"], environ=env, apt_dir=apt
    ) == ("http://b.test/debian-security")
    assert mirror_url(
        "apt", suite="bookworm", components=["contrib"], environ=env, apt_dir=apt
    ) == ("http://a.test/debian")
    with pytest.raises(InputError, match="no apt source of this machine serves trixie"):
        mirror_url("apt", suite="trixie", components=["main"], environ=env, apt_dir=apt)
    # the user's own configuration comes first
    (tmp_path / "mine.toml").write_text('[mirrors]\napt = "http://mine.test/debian"\n')
    env["REPRO_CONFIG"] = str(tmp_path / "mine.toml")
    assert (
        mirror_url("apt", suite="bookworm", environ=env, apt_dir=apt) == "http://mine.test/debian"
    )
    with pytest.raises(InputError, match="mirror 'alpine' is not configured"):
        mirror_url("alpine", environ={"REPRO_CONFIG": str(tmp_path / "none.toml")})


# --- a registry answering garbage ----------------------------------------------------------


class _Garbage(__import__("http.server").server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        if "/manifests/" in self.path:
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            if "mismatch" in self.path:
                self.send_header("Docker-Content-Digest", "sha256:" + "0" * 64)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(b"{}" if self.path == "/v2/" else b"\x00garbage, not json")

    do_HEAD = do_GET  # noqa: N815


@pytest.mark.parametrize("repo", ["garbage/img", "mismatch/img"])
def test_registry_answering_garbage_is_a_one_line_error(tmp_path: Path, repo: str) -> None:
    import http.server
    import subprocess
    import sys
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ref = f"127.0.0.1:{server.server_address[1]}/{repo}:1"
        d = make(tmp_path, f'source_date_epoch = 1\nbases = ["{ref}"]\n', f"FROM {ref}\n")
        r = subprocess.run(
            [sys.executable, "-m", "repro", "lock", str(d)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("repro: error: ")
    assert "Traceback" not in r.stderr
    assert not (d / "repro.lock").exists()


# --- downloads, git and the epoch, end to end without a registry -----------------------------


def _git(cwd: Path, *args: str) -> str:
    import subprocess

    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_AUTHOR_DATE": "@1700000000 +0000",
        "GIT_COMMITTER_DATE": "@1700000000 +0000",
        "HOME": str(cwd),
        "PATH": __import__("os").environ["PATH"],
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_downloads_git_and_epoch_are_locked(tmp_path: Path) -> None:
    import functools
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "src.tar.gz").write_bytes(b"source bytes")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = tmp_path / "lib"
    upstream.mkdir()
    _git(upstream, "init", "-q", "-b", "main")
    (upstream / "f").write_text("1")
    _git(upstream, "add", "f")
    _git(upstream, "commit", "-q", "-m", "one")
    _git(upstream, "tag", "-a", "v1", "-m", "v1")
    commit = _git(upstream, "rev-parse", "HEAD")

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    url = f"http://127.0.0.1:{server.server_address[1]}/src.tar.gz"
    d = make(
        repo,
        'source_date_epoch = "git"\n'
        f'[downloads.src]\nurl = "{url}"\n'
        f'[downloads.mirrored]\nmirror = "files"\npath = "src.tar.gz"\n'
        f'[git.lib]\nurl = "{upstream}"\nref = "v1"\n',
    )
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "recipe")
    try:
        r = load_recipe(d)
        resolver = lk.Resolver(
            load_repo_config(repo),
            environ={"REPRO_MIRROR_FILES": f"http://127.0.0.1:{server.server_address[1]}"},
        )
        data = lk.lock_recipe(r, resolver, {r.name: r})
    finally:
        server.shutdown()
    sha = "sha256:" + hashlib.sha256(b"source bytes").hexdigest()
    assert data["downloads"]["src"]["sha256"] == sha
    assert data["downloads"]["mirrored"]["sha256"] == sha
    assert data["git"]["lib"]["commit"] == commit  # the tag peeled to its commit
    assert data["source_date_epoch"] == 1700000000  # the last commit touching the recipe
    lk.write_lock(r, data)
    text = r.lock_file.read_text()
    assert "127.0.0.1" not in text  # no hosts in the lock
    args = lk.lock_build_args(r, data)
    assert args["REPRO_DOWNLOAD_SRC_SHA256"] == sha and args["REPRO_GIT_LIB_COMMIT"] == commit


def test_syntax_directive_is_an_image_source(tmp_path: Path) -> None:
    d = make(tmp_path, "source_date_epoch = 1\n", f"# syntax={BASE}\nFROM scratch\n")
    r = load_recipe(d)
    with pytest.raises(
        RecipeError, match="syntax registry.test:5000/team/base:1.0: not a declared"
    ):
        lk.require_lock(r)


def test_source_policy_rules_reach_the_solve_request(tmp_path: Path) -> None:
    from repro.buildkit import BuildRequest, Output, solve_request

    d = make(
        tmp_path,
        f'source_date_epoch = 1\nbases = ["{BASE}", "recipe:up"]\n',
        f"FROM {BASE}\nFROM recipe:up\n",
    )
    r = load_recipe(d)
    digest = "sha256:" + "4" * 64
    data = {
        "bases": {BASE: {"digest": digest}, "recipe:up": {"digest": digest, "image": "reg.test/up"}}
    }
    rules = lk.source_policy(r, data)
    assert rules[0] == ("DENY", "docker-image://*", "WILDCARD", "")
    assert (
        "CONVERT",
        f"docker-image://{BASE}",
        "WILDCARD",
        f"docker-image://{BASE}@{digest}",
    ) in rules
    allows = [rule for rule in rules if rule[0] == "ALLOW"]
    import re

    assert re.match(allows[0][1], f"docker-image://{BASE}@{digest}")
    assert not re.match(allows[0][1], f"docker-image://{BASE}@sha256:{'5' * 64}")
    assert re.match(allows[1][1], f"docker-image://reg.test/up@{digest}")
    assert lk.source_policy(r, None) == []
    req = BuildRequest(
        context=d,
        dockerfile=d / "Dockerfile",
        output=Output("oci", tmp_path / "o"),
        source_policy=rules,
    )
    policy = solve_request(req, "s", "r").source_policy
    assert policy.version == 1 and len(policy.rules) == len(rules)
    assert policy.rules[1].updates.identifier == f"docker-image://{BASE}@{digest}"
