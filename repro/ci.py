"""repro in CI: the GitHub Actions workflow written from the build graph, the daily
lock update committed one recipe at a time, and making a Docker Engine's BuildKit
usable (the containerd image store).

``github_workflow`` renders the workflow text itself, in a fixed order, so that the
same repository always gives the same bytes (no YAML library, whose output may
change between versions). See docs/ci.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.errors import BuilderError, InputError
from repro.recipe import Recipe

# Third-party actions the generated workflow uses, pinned by commit (zizmor's
# unpinned-uses; a tag can be moved, a commit cannot). The comment names the tag.
CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"  # v4.2.2
CACHE = "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684"  # v4.2.3
UPLOAD_ARTIFACT = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02"  # v4.6.2
PIN_TAGS = {CHECKOUT: "v4.2.2", CACHE: "v4.2.3", UPLOAD_ARTIFACT: "v4.6.2"}

DEFAULT_OUTPUT = Path(".github/workflows/repro.yml")
DEFAULT_RUNNER = "ubuntu-24.04"
DEFAULT_CRON = "17 4 * * *"
ACTION_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$"
)
# The line of a generated workflow that names the repro action (read back on re-runs).
ACTION_LINE_RE = re.compile(r"^\s+(?:- )?uses: (\S+@[0-9a-f]{40})  # the repro action$", re.M)
RUNNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CRON_RE = re.compile(r"^[0-9*/,-]+( [0-9*/,A-Za-z-]+){4}$")
HEADER = (
    "# Written by `repro ci github` from the build graph of {dir}/; do not edit.\n"
    "# Run it again after adding, removing or re-basing a recipe (docs/ci.md).\n"
)


def job_id(name: str) -> str:
    """A GitHub job id for a recipe (job ids allow no dots)."""
    return "recipe-" + name.replace(".", "_")


def read_action(path: Path) -> str:
    """The repro action an earlier generated workflow at `path` uses, or ""."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    m = ACTION_LINE_RE.search(text)
    return m.group(1) if m else ""


def check_action(action: str) -> str:
    if not ACTION_RE.match(action):
        raise InputError(
            f"--action {action!r}: expected OWNER/REPO@COMMIT with the full 40-hex commit "
            "of the repro repository to use (a tag can move; a commit cannot)"
        )
    return action


def _q(value: str) -> str:
    """A YAML double-quoted scalar."""
    return json.dumps(value)


def _checkout(ref: str | None, indent: str = "      ") -> list[str]:
    lines = [
        f"{indent}- uses: {CHECKOUT}  # {PIN_TAGS[CHECKOUT]}",
        f"{indent}  with:",
        f"{indent}    persist-credentials: false",
    ]
    if ref:
        lines.append(f"{indent}    ref: {ref}")
    return lines


def github_workflow(
    recipes: Sequence[Recipe],
    *,
    action: str,
    recipes_dir: str = "recipes",
    runner: str = DEFAULT_RUNNER,
    cron: str = DEFAULT_CRON,
) -> str:
    """The workflow text for `recipes` (every recipe of the repository).

    Jobs: ``lock`` (``repro lock --check``, on pushes and pull requests, read-only),
    ``update`` (on the daily schedule and by hand: ``repro ci update`` commits each
    recipe's moved pins and pushes; the only job that may write), then one job per
    recipe, after the jobs of the recipes it builds on, verifying the commit the
    update ended on (else the one pushed).
    """
    from repro.graph import edges, order

    check_action(action)
    if not RUNNER_RE.match(runner):
        raise InputError(f"--runner {runner!r}: expected a runner label such as ubuntu-24.04")
    if not CRON_RE.match(cron):
        raise InputError(f"--cron {cron!r}: expected five cron fields, such as '17 4 * * *'")
    if not recipes:
        raise InputError(f"no recipes under {recipes_dir}/: nothing to write a workflow for")
    deps = edges(recipes)
    names = order(recipes)
    ids: dict[str, str] = {}
    for name in names:
        jid = job_id(name)
        if jid in ids.values():
            other = next(n for n, j in ids.items() if j == jid)
            raise InputError(f"recipes {other} and {name} would share the job id {jid}")
        ids[name] = jid
    rd = recipes_dir.rstrip("/") or "."
    out = HEADER.format(dir=rd).splitlines()
    out += [
        "name: repro",
        "",
        "on:",
        "  push:",
        "  pull_request:",
        "  schedule:",
        f"    - cron: {_q(cron)}",
        "  workflow_dispatch:",
        "",
        "permissions: {}",
        "",
        "concurrency:",
        "  group: repro-${{ github.ref }}",
        "  cancel-in-progress: false",
        "",
        "jobs:",
        "  lock:",
        "    name: repro lock --check",
        "    if: github.event_name == 'push' || github.event_name == 'pull_request'",
        f"    runs-on: {runner}",
        "    permissions:",
        "      contents: read",
        "    steps:",
    ]
    out += _checkout(None)
    out += [
        f"      - uses: {action}  # the repro action",
        "        with:",
        f"          recipes-dir: {_q(rd)}",
        '          buildkit: "none"',
        '          verify: "false"',
        "",
        "  update:",
        "    name: repro lock --update, one commit per recipe",
        "    if: github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'",
        f"    runs-on: {runner}",
        "    permissions:",
        "      contents: write  # pushes the update's commits",
        "    outputs:",
        "      sha: ${{ steps.head.outputs.sha }}",
        "    steps:",
    ]
    out += _checkout(None)
    out += [
        f"      - uses: {action}  # the repro action",
        "        with:",
        f"          recipes-dir: {_q(rd)}",
        "          # a BuildKit: moved bases are built and pushed for their dependants",
        '          buildkit: "containerd-store"',
        '          lock-check: "false"',
        '          verify: "false"',
        "      - env:",
        "          GH_TOKEN: ${{ github.token }}",
        "        run: |",
        '          git config user.name "github-actions[bot]"',
        '          git config user.email "41898282+github-actions[bot]@users.noreply.github.com"',
        "          before=$(git rev-parse HEAD)",
        f"          repro ci update --recipes-dir {_q(rd)}",
        '          if [ "$(git rev-parse HEAD)" != "$before" ]; then',
        '            auth=$(printf "x-access-token:%s" "$GH_TOKEN" | base64 -w0)',
        '            git -c "http.extraheader=AUTHORIZATION: basic ${auth}" \\',
        '              push origin "HEAD:${GITHUB_REF_NAME}"',
        "          fi",
        "      - id: head",
        '        run: echo "sha=$(git rev-parse HEAD)" >> "$GITHUB_OUTPUT"',
    ]
    for name in names:
        needs = ["lock", "update", *(ids[d] for d in deps[name])]
        out += [
            "",
            f"  {ids[name]}:",
            f"    name: {_q(name)}",
            f"    needs: [{', '.join(needs)}]",
            "    # lock or update is skipped (by the event); any failure above skips this",
            "    if: ${{ !cancelled() && !failure() }}",
            f"    runs-on: {runner}",
            "    permissions:",
            "      contents: read",
            "    steps:",
        ]
        out += _checkout("${{ needs.update.outputs.sha || github.sha }}")
        lock_file = f"{rd}/{name}/repro.lock"
        key = "repro-${{ runner.os }}-" + name
        out += [
            f"      - uses: {CACHE}  # {PIN_TAGS[CACHE]}",
            "        with:",
            "          path: ~/.cache/repro",
            f"          key: {key}-${{{{ hashFiles({_sq(lock_file)}) }}}}",
            f"          restore-keys: {key}-",
            f"      - uses: {action}  # the repro action",
            "        with:",
            f"          recipes: {_q(name)}",
            f"          recipes-dir: {_q(rd)}",
            '          lock-check: "false"',
            f"          report-dir: {_q('repro-report/' + name)}",
        ]
    return "\n".join(out) + "\n"


def _sq(value: str) -> str:
    """A single-quoted string inside a GitHub expression."""
    return "'" + value.replace("'", "''") + "'"


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` atomically unless the file already holds it; True if written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


# --- the daily update -------------------------------------------------------------


@dataclass
class UpdateCommit:
    recipe: str
    message: str
    commit: str


def commit_message(recipe: str, changes: Sequence[str]) -> str:
    """The change list as a commit message: `[recipe] first change` (and how many
    more), then one change per line."""
    if not changes:
        return f"[{recipe}] repro.lock created\n"
    subject = f"[{recipe}] {changes[0]}"
    if len(changes) > 1:
        subject += f" (+{len(changes) - 1} more)"
    return subject + "\n\n" + "\n".join(changes) + "\n"


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    try:
        r = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except FileNotFoundError:
        raise InputError("git is not installed") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise InputError(f"git {args[0]} failed: {last}")
    return r.stdout


def commit_updates(
    outcomes: Sequence[object], recipes: dict[str, Recipe], repo: Path | None = None
) -> list[UpdateCommit]:
    """One commit per recipe whose lock moved, with its change list as the message.

    Only the recipe's lock file is committed (``git commit -- FILE``), so other
    changes in the work tree stay out of it. Commits come in the outcomes' order,
    which is build-graph order.
    """
    from repro.lock import LockOutcome

    done: list[UpdateCommit] = []
    for o in outcomes:
        assert isinstance(o, LockOutcome)
        if not o.written:
            continue
        lock_file = recipes[o.recipe].directory / "repro.lock"
        where = repo or lock_file.parent
        message = commit_message(o.recipe, o.changes)
        _git(where, "add", "--", str(lock_file.resolve()))
        _git(where, "commit", "-q", "-F", "-", "--", str(lock_file.resolve()), stdin=message)
        sha = _git(where, "rev-parse", "HEAD").strip()
        done.append(UpdateCommit(o.recipe, message, sha))
    return done


def daily_update(
    recipes: Sequence[Recipe],
    recipes_dir: Path,
    *,
    builder: str | None = None,
    jobs: int = 8,
    say: Callable[[str], None] = lambda _: None,
) -> list[UpdateCommit]:
    """The daily job: ``repro lock --update`` level by level of the build graph, one
    commit per recipe that moved; a moved recipe that others build on is built and
    pushed (as ``repro build --all`` does) before its dependants are locked, so their
    locks move to its new image in the same run, each in its own commit."""
    import tempfile

    from repro.build import build_recipe
    from repro.config import load_repo_config
    from repro.graph import dependants, levels
    from repro.lock import Resolver, lock_all
    from repro.publish import push_recipe_image

    by_name = {r.name: r for r in recipes}
    needed_by = dependants(list(recipes))
    resolver = Resolver(load_repo_config(recipes_dir))
    done: list[UpdateCommit] = []
    with tempfile.TemporaryDirectory(prefix="repro-update-") as tmp:
        for level in levels(list(recipes)):
            todo = [by_name[n] for n in level]
            outcomes = lock_all(
                todo, by_name, update=True, resolver=resolver, recipes_dir=recipes_dir, jobs=jobs
            )
            for c in commit_updates(outcomes, by_name):
                say(f"{c.commit[:12]} {c.message.splitlines()[0]}")
                done.append(c)
            for o in outcomes:
                if not (o.written and needed_by[o.recipe]):
                    continue
                recipe = by_name[o.recipe]
                out = f"oci:{Path(tmp) / recipe.name}"
                build_recipe(
                    recipe,
                    builder=builder,
                    built=dict(resolver.built),
                    output=out,
                    progress="quiet",
                    remember=False,  # a temporary output
                )
                resolver.built[recipe.name] = push_recipe_image(recipe, out)
                say(
                    f"{recipe.name}: built and pushed as {resolver.built[recipe.name]} for "
                    + ", ".join(needed_by[recipe.name])
                )
    return done


# --- making a Docker Engine's BuildKit usable ---------------------------------------


def containerd_store(engine: str) -> tuple[str, bool]:
    """(engine version, whether it uses the containerd image store)."""
    from repro.buildkit import docker_request

    try:
        status, body = docker_request(engine, "GET", "/version")
        version = json.loads(body).get("Version", "") if status == 200 else ""
        status, body = docker_request(engine, "GET", "/info")
        info = json.loads(body) if status == 200 else {}
    except ValueError:
        raise BuilderError(f"the Docker Engine at {engine} sent JSON that does not parse") from None
    pairs = info.get("DriverStatus") or []
    store = any("io.containerd.snapshotter" in str(v) for pair in pairs for v in pair)
    return version, store


def enable_containerd_store(daemon_json: Path) -> bool:
    """Set features.containerd-snapshotter in a daemon.json, keeping everything else;
    True if the file changed. Written atomically."""
    try:
        text = daemon_json.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise InputError(f"cannot read {daemon_json}: {exc.strerror}") from None
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InputError(f"{daemon_json}: not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{daemon_json}: expected a JSON object")
    features = config.setdefault("features", {})
    if not isinstance(features, dict):
        raise InputError(f"{daemon_json}: 'features' is not an object")
    if features.get("containerd-snapshotter") is True:
        return False
    features["containerd-snapshotter"] = True
    return write_if_changed(daemon_json, json.dumps(config, indent=2, sort_keys=True) + "\n")


def wait_for_engine(engine: str, seconds: float = 60.0) -> None:
    from repro.buildkit import speaks_docker_api

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(engine) and speaks_docker_api(engine):
            return
        time.sleep(0.2)
    raise BuilderError(f"the Docker Engine at {engine} did not answer within {seconds:.0f} s")


def ensure_containerd_store(
    engine: str,
    daemon_json: Path,
    restart: Callable[[], None],
    say: Callable[[str], None] = lambda _: None,
) -> str:
    """The remedy for the classic image store: switch the engine to the containerd
    store (daemon.json, then restart it) unless it already uses it. Returns what was
    done, for the log."""
    version, store = containerd_store(engine)
    if store:
        return f"Docker Engine {version} at {engine} already uses the containerd image store"
    say(f"Docker Engine {version} at {engine} uses the classic image store; switching")
    enable_containerd_store(daemon_json)
    restart()
    wait_for_engine(engine)
    version, store = containerd_store(engine)
    if not store:
        raise BuilderError(
            f"Docker Engine {version} at {engine} still uses the classic image store after "
            f"setting features.containerd-snapshotter in {daemon_json} and restarting it"
        )
    return f"Docker Engine {version} at {engine} switched to the containerd image store"


def run_restart(command: str) -> Callable[[], None]:
    """A restart callable running a shell command (e.g. `systemctl restart docker`)."""

    def restart() -> None:
        try:
            r = subprocess.run(
                ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            raise BuilderError(f"{command!r} did not finish within 300 s") from None
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise BuilderError(f"{command!r} failed: {last}")

    return restart
