"""The ``repro`` command line: thin over the library, one call plus rendering each.

Exit codes: 0 ok; 1 a build failed or a check did not pass; 2 bad input or a broken
environment; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, handled as Ctrl-C:
builds cancelled, nothing left behind). Errors are one line on stderr, never a traceback.
Heavy modules (grpc, diffoscope) are imported inside the commands that need them.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from repro import __version__
from repro.errors import ReproError

if TYPE_CHECKING:
    from repro.recipe import Recipe

app = typer.Typer(
    name="repro",
    help=(
        "Build container images anyone can rebuild bit for bit.\n\n"
        "Recipes live in recipes/<name>/ (recipe.toml, a Dockerfile and its context). "
        "repro drives a real BuildKit over gRPC with SOURCE_DATE_EPOCH, normalises "
        "what it exports (file times clamped to the epoch, one canonical encoding), "
        "and writes OCI images."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RecipesDir = Annotated[
    Path,
    typer.Option(
        "--recipes-dir", help="Directory holding one folder per recipe.", show_default=True
    ),
]
Builder = Annotated[
    str | None,
    typer.Option(
        "--builder",
        help="BuildKit address: unix:///path, tcp://host:port, docker://, docker://unix:///path "
        "or docker-container://NAME. "
        "Default: $BUILDKIT_HOST, then $DOCKER_HOST, then the usual sockets.",
    ),
]

AllowUnpinned = Annotated[
    bool,
    typer.Option(
        "--allow-unpinned",
        help="Warn instead of failing when the image's package database does not match "
        "the lock (packages installed that nothing pins, locked packages not installed).",
    ),
]

BuilderId = Annotated[
    str | None,
    typer.Option(
        "--builder-id", help="Builder identity (default: $REPRO_BUILDER_ID or user@host)."
    ),
]

KeyNoLegacy = Annotated[
    bool, typer.Option("--no-legacy", help="With --key: no cosign 2 sha256-<hex>.att tag.")
]

Offline = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Take locked packages only from the local cache and the vault, never a "
        "mirror (the Dockerfile must install from the repro-apt context).",
    ),
]


def _graph_recipes(recipes_dir: Path, found: list[Recipe]) -> list[Recipe]:
    """Every recipe of the repository (for the build graph), or just `found` when the
    recipes were given by path outside it."""
    from repro.recipe import find_recipes

    root = recipes_dir.resolve()
    if not recipes_dir.is_dir() or any(r.directory.parent.resolve() != root for r in found):
        return list(found)
    return find_recipes(recipes_dir)


def _fail(exc: ReproError) -> NoReturn:
    typer.echo(f"repro: error: {exc}", err=True)
    _annotate(exc)
    raise typer.Exit(exc.exit_code)


def _annotate(exc: ReproError) -> None:
    """On GitHub Actions, the error also as an ::error annotation (on stdout, where
    the runner reads workflow commands), at its file and line when it has them."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    where = ""
    if exc.file:
        name = _escape(exc.file).replace(":", "%3A").replace(",", "%2C")
        where = f" file={name}" + (f",line={exc.line}" if exc.line else "")
    typer.echo(f"::error{where}::{_escape(exc.message)}")


def _escape(text: str) -> str:
    """Workflow command data: %, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"repro {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass


@app.command()
def build(
    recipes: Annotated[
        list[str] | None,
        typer.Argument(help="Recipe names (folders under --recipes-dir) or paths. Default: all."),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="oci:DIR (an OCI layout) or oci-archive:FILE. Only with one recipe. "
            "Default: oci:out/<recipe>.",
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Build without BuildKit's cache; and unpack a rootfs recipe's packages "
            "again even when the image its unchanged inputs made is still at the output "
            "(printed as 'unchanged').",
        ),
    ] = False,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="Secret for RUN --mount=type=secret: id=NAME,src=FILE or id=NAME,env=VAR. "
            "Never written to the image or the logs.",
        ),
    ] = None,
    build_arg: Annotated[
        list[str] | None,
        typer.Option("--build-arg", help="NAME=value, overriding the recipe's [args]."),
    ] = None,
    progress: Annotated[
        str, typer.Option("--progress", help="auto, tty, plain or quiet.")
    ] = "auto",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print results as JSON on stdout.")
    ] = False,
    builders: Annotated[
        list[str] | None,
        typer.Option(
            "--builder",
            help="BuildKit address (unix://, tcp://, docker://, docker-container://). Give it "
            "several times to "
            "spread independent recipes over several builders. Default: $BUILDKIT_HOST, "
            "then $DOCKER_HOST, then the usual sockets.",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            help="Builds at a time on each builder; a recipe starts as soon as the "
            "recipes it builds on are built. With more than one build at a time, each "
            "recipe's progress is printed as one block when it ends (a log group on "
            "GitHub Actions).",
        ),
    ] = 8,  # repro.build.DEFAULT_JOBS
    all_recipes: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Build every recipe as a graph, independent ones concurrently; recipes "
            "that others build on are pushed to their publish repository first. A "
            "failed recipe stops the recipes built on it, not the others.",
        ),
    ] = False,
    recipes_dir: RecipesDir = Path("recipes"),
    offline: Offline = False,
    allow_unpinned: AllowUnpinned = False,
    normalise: Annotated[
        str,
        typer.Option(
            "--normalise",
            help="on: canonical layers, times and JSON (the recipe's [normalise] rules); "
            "off: BuildKit's raw export.",
        ),
    ] = "on",
) -> None:
    """Build recipes into OCI images and print each image's digest."""
    from repro.build import BuildOutcome, SecretSpec, build_recipes
    from repro.errors import InputError
    from repro.recipe import find_recipes

    try:
        if progress not in ("auto", "tty", "plain", "quiet"):
            raise InputError(f"--progress {progress!r}: expected auto, tty, plain or quiet")
        if normalise not in ("on", "off"):
            raise InputError(f"--normalise {normalise!r}: expected on or off")
        if all_recipes and recipes:
            raise InputError("give recipe names or --all, not both")
        found = find_recipes(recipes_dir, recipes or None)
        if output and len(found) != 1:
            raise InputError("--output names one image; give exactly one recipe with it")
        # Every recipe of the directory was found already: no need to read them twice.
        everything = found if not recipes else _graph_recipes(recipes_dir, found)
        secrets = [SecretSpec.parse(s) for s in secret or []]
        args: dict[str, str] = {}
        for item in build_arg or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise InputError(f"--build-arg {item!r}: expected NAME=value")
            args[name] = value

        def line(outcome: BuildOutcome) -> None:
            r = outcome.result
            if r is not None and not as_json:
                took = "unchanged" if r.reused else f"{r.seconds:.1f}s"
                typer.echo(f"{r.recipe}: {r.digest}  {r.output}  ({took})")

        outcomes = build_recipes(
            found,
            everything,
            builders=list(builders) if builders else [None],
            jobs=jobs,
            progress="quiet"
            if (as_json and progress == "auto" and not sys.stderr.isatty())
            else progress,
            on_outcome=line,
            output=output,
            no_cache=no_cache,
            # a rootfs recipe built before from the same inputs to the same output
            # is not unpacked again (Dockerfile recipes have BuildKit's cache)
            unchanged=not no_cache,
            secrets=secrets,
            build_args=args,
            normalise=normalise == "on",
            allow_unpinned=allow_unpinned,
            offline=offline,
        )
        if as_json:
            typer.echo(json.dumps([o.result.to_json() for o in outcomes if o.result], indent=2))
        failed = [o for o in outcomes if not o.ok]
        for o in failed:
            # One recipe: its error as it is; several: each line names its recipe.
            why = o.message if len(outcomes) > 1 or o.error is None else str(o.error)
            typer.echo(f"repro: error: {why}", err=True)
            if o.error is not None:
                _annotate(o.error)
            else:
                _annotate(ReproError(why))
        if failed:
            raise typer.Exit(max(o.exit_code for o in failed))
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None


@app.command()
def publish(
    recipes: Annotated[list[str] | None, typer.Argument(help="Recipe names or paths.")] = None,
    all_recipes: Annotated[
        bool, typer.Option("--all", help="Publish every recipe, in build-graph order.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print results as JSON on stdout.")
    ] = False,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Sign provenance and an SBOM with this private key (repro keygen) and "
            "attach them to each platform manifest before the tags move.",
        ),
    ] = None,
    no_legacy: KeyNoLegacy = False,
    no_sbom: Annotated[bool, typer.Option("--no-sbom", help="With --key: attach no SBOM.")] = False,
    builder_id: BuilderId = None,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Push what `repro build` wrote (out/<name>) to each recipe's repository and tags;
    with --key, signed attestations go with it."""
    from repro.errors import InputError
    from repro.publish import Publication, publish_recipes
    from repro.recipe import find_recipes

    try:
        if all_recipes and recipes:
            raise InputError("give recipe names or --all, not both")
        found = find_recipes(recipes_dir, recipes or None)
        attach = None
        if key is not None:
            from repro.attest import load_private_key, publication_attacher

            signer = load_private_key(key, passphrase=_passphrase_prompt(confirm=False))
            attach = publication_attacher(
                {r.name: r for r in found},
                signer,
                legacy=not no_legacy,
                sbom=not no_sbom,
                builder_id=builder_id or "",
            )

        def line(p: Publication) -> None:
            if as_json:
                return
            c = p.counters
            done = (
                "unchanged, the tags already name it"
                if c["images_present"]
                else f"{c['blobs_uploaded']} blobs uploaded, {c['blobs_mounted']} mounted, "
                f"{c['blobs_present']} present; {c['bytes_uploaded'] / 1e6:.1f} MB"
            )
            typer.echo(
                f"{p.recipe}: {p.reference}  tags {', '.join(p.tags)}  ({done}, {p.seconds:.1f}s)"
            )

        # One recipe has no order to keep: the rest of the graph is not even loaded.
        everything = _graph_recipes(recipes_dir, found) if len(found) > 1 else found
        results = publish_recipes(found, everything, on_published=line, attach=attach)
        if as_json:
            typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None


@app.command()
def lock(
    recipes: Annotated[
        list[str] | None,
        typer.Argument(help="Recipe names (folders under --recipes-dir) or paths. Default: all."),
    ] = None,
    update: Annotated[
        bool,
        typer.Option("--update", help="Re-resolve every pin to the newest; print what moved."),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 if a lock is missing, stale or behind."
        ),
    ] = False,
    all_recipes: Annotated[bool, typer.Option("--all", help="Lock every recipe.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="Resolutions at a time.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print outcomes as JSON.")] = False,
    to_vault: Annotated[
        bool,
        typer.Option(
            "--vault", help="Then store every locked package in the vault (repro vault push)."
        ),
    ] = False,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Pin every input of the recipes in repro.lock (bases, packages, downloads, git, epoch).

    Without options: create missing locks and re-lock stale ones, keeping unchanged
    pins. With --update, the change list reads like a commit message:
    [hello] base:REF sha256:ab12… -> sha256:cd34…, apt:curl 7.88.1-10 -> 7.88.1-11
    """
    from repro.errors import InputError
    from repro.lock import lock_all, render_change_line
    from repro.recipe import find_recipes

    try:
        if update and check:
            raise InputError("--update and --check: give one of them")
        if all_recipes and recipes:
            raise InputError("give recipe names or --all, not both")
        if jobs < 1:
            raise InputError("--jobs must be at least 1")
        found = find_recipes(recipes_dir, recipes or None)
        everything = {r.name: r for r in _graph_recipes(recipes_dir, found)}
        if to_vault and check:
            raise InputError("--vault and --check: --check writes nothing")
        outcomes = lock_all(
            found, everything, update=update, check=check, recipes_dir=recipes_dir, jobs=jobs
        )
        if to_vault:
            _vault_push(found, recipes_dir, quiet=as_json)
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "recipe": o.recipe,
                        "status": o.status,
                        "changes": o.changes,
                        "written": o.written,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    else:
        for o in outcomes:
            if o.changes:
                typer.echo(render_change_line(o))
            elif o.status != "current" or not (update or check):
                typer.echo(f"[{o.recipe}] {o.status}")
        if (update or check) and not any(o.changes or o.status != "current" for o in outcomes):
            typer.echo("all locks are current")
    if check and any(o.status != "current" for o in outcomes):
        if not as_json:
            bad = [f"{o.recipe} ({o.status})" for o in outcomes if o.status != "current"]
            typer.echo(f"repro: lock check failed: {', '.join(bad)}: run repro lock", err=True)
            if os.environ.get("GITHUB_ACTIONS") == "true":
                typer.echo(
                    "::error title=repro lock --check::"
                    + _escape(f"stale locks: {', '.join(bad)}: run repro lock")
                )
        raise typer.Exit(1)


vault_app = typer.Typer(
    help="The package vault: every locked package kept in the registry (docs/recipes.md).",
    no_args_is_help=True,
)
app.add_typer(vault_app, name="vault")


def _vault_push(found: Sequence[Recipe], recipes_dir: Path, quiet: bool) -> list[Any]:
    from repro.config import load_repo_config
    from repro.lock import require_lock
    from repro.registry import Registry
    from repro.vault import push_recipe

    repo = load_repo_config(recipes_dir)
    results = []
    with Registry() as client:
        for recipe in found:
            data = require_lock(recipe)
            if not data or not data.get("packages"):
                continue
            result = push_recipe(
                recipe,
                data,
                repo,
                client,
                on_package=None if quiet else lambda p: typer.echo(f"  pushed {p}", err=True),
            )
            results.append(result)
            if not quiet:
                typer.echo(
                    f"[{recipe.name}] vault: {result.packages} package(s), "
                    f"{result.uploaded} uploaded ({result.uploaded_bytes / 1e6:.1f} MB)"
                )
    return results


@vault_app.command("push")
def vault_push(
    recipes: Annotated[
        list[str] | None,
        typer.Argument(help="Recipe names (folders under --recipes-dir) or paths. Default: all."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Store every package the recipes' locks name in the vault (only what it lacks).

    Packages come from the local cache, else their mirror; each is stored under its
    own sha256, and each locked closure as one OCI manifest tagged by its digest.
    """
    from repro.recipe import find_recipes

    try:
        found = find_recipes(recipes_dir, recipes or None)
        results = _vault_push(found, recipes_dir, quiet=as_json)
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))


@app.command()
def graph(
    dot: Annotated[bool, typer.Option("--dot", help="Print the graph in Graphviz dot.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print levels as JSON.")] = False,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Print the build order: recipes that build on other recipes come after them."""
    from repro.graph import edges, levels, to_dot
    from repro.recipe import find_recipes

    try:
        found = find_recipes(recipes_dir)
        if dot:
            typer.echo(to_dot(found), nl=False)
            return
        deps = edges(found)
        order = levels(found)
    except ReproError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps({"levels": order, "bases": deps}, indent=2))
        return
    for number, level in enumerate(order, 1):
        for name in level:
            after = f"  <- {', '.join(deps[name])}" if deps[name] else ""
            typer.echo(f"{number}. {name}{after}")


@app.command()
def doctor(
    builder: Builder = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Say which BuildKit, registry and tools were found, and how to fix what is missing.

    The registry checked is the one recipes/repro.toml names (else $REPRO_REGISTRY);
    exit 2 when a required part is missing or broken.
    """
    from repro.doctor import diagnose

    report = diagnose(builder, recipes_dir)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for check in report.checks:
            mark = "ok " if check.ok else ("-- " if check.optional else "!! ")
            typer.echo(f"{mark} {check.name}: {check.detail}")
            if not check.ok and check.fix:
                typer.echo(f"    fix: {check.fix}")
    raise typer.Exit(0 if report.ok else 2)


cache_app = typer.Typer(
    help="What repro keeps to be fast (packages, normalised layers, built layers, documents, build "
    "records): its size, and pruning it.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the sections as JSON.")] = False,
) -> None:
    """Each part of the cache: where it is, what it holds, its entries and size."""
    from repro.cacheprune import human, usage

    parts = usage()
    if as_json:
        typer.echo(json.dumps([u.to_json() for u in parts], indent=2))
        return
    for u in parts:
        typer.echo(f"{u.name:<12} {u.entries:>7} entries {human(u.size):>11}  {u.path}: {u.what}")
    total = sum(u.size for u in parts)
    typer.echo(f"{'total':<12} {sum(u.entries for u in parts):>7} entries {human(total):>11}")


@cache_app.command("prune")
def cache_prune(
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            help="Remove the least recently used entries until the cache holds at most "
            "this much (500M, 2G, 10GiB).",
        ),
    ] = None,
    unused_for: Annotated[
        str | None,
        typer.Option(
            "--unused-for",
            help="Remove entries not used for this long (30d, 12h, 1w). The default when "
            "neither --max-size nor --all is given: 30d.",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Remove every entry (but those in use right now).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Remove cache entries: those unused for a while, the least recently used beyond
    a size, or all. Every read of an entry marks it used; entries used in the last
    10 minutes are always kept, so builds running meanwhile are safe. Everything
    removed is fetched or made again when a build needs it; a locked package its
    mirror has dropped comes back only from the vault (repro vault push)."""
    from repro.cacheprune import human, parse_age, parse_size, prune
    from repro.errors import InputError

    try:
        size = parse_size(max_size) if max_size is not None else None
        age = parse_age(unused_for) if unused_for is not None else None
    except ValueError as exc:
        _fail(InputError(str(exc)))
    if size is None and age is None and not everything:
        age = parse_age("30d")
    result = prune(max_size=size, unused_for=age, everything=everything, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for name, gone in result.removed.items():
        left = result.kept[name]
        if gone:
            typer.echo(
                f"{name}: {verb} {len(gone)} entries ({human(sum(e.size for e in gone))}); "
                f"{left.entries} ({human(left.size)}) left"
            )
    total_left = sum(u.size for u in result.kept.values())
    count = sum(len(g) for g in result.removed.values())
    typer.echo(
        f"{verb} {count} entries ({human(result.removed_bytes())}); "
        f"the cache {'would hold' if dry_run else 'holds'} {human(total_left)}"
    )


ci_app = typer.Typer(
    help="repro in CI: the GitHub workflow, the daily lock update, a usable BuildKit (docs/ci.md).",
    no_args_is_help=True,
)
app.add_typer(ci_app, name="ci")


@ci_app.command("github")
def ci_github(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write. Default: .github/workflows/repro.yml"),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="The repro action the workflow uses, OWNER/REPO@COMMIT (full commit). "
            "Default: the one the existing file uses.",
        ),
    ] = None,
    runner: Annotated[str, typer.Option("--runner", help="runs-on label.")] = "ubuntu-24.04",
    cron: Annotated[
        str, typer.Option("--cron", help="When the daily lock update runs (UTC).")
    ] = "17 4 * * *",
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the file is not current.")
    ] = False,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Write a GitHub Actions workflow from the build graph: one job per recipe after
    the recipes it builds on, a daily lock update committed per recipe, then verify."""
    from repro.ci import DEFAULT_OUTPUT, github_workflow, read_action, write_if_changed
    from repro.errors import InputError
    from repro.recipe import find_recipes

    target = output or DEFAULT_OUTPUT
    try:
        chosen = action or read_action(target)
        if not chosen:
            raise InputError(
                "--action OWNER/REPO@COMMIT: name the repro action (and commit) the workflow uses"
            )
        text = github_workflow(
            find_recipes(recipes_dir),
            action=chosen,
            recipes_dir=recipes_dir.as_posix(),
            runner=runner,
            cron=cron,
        )
        if check:
            current = target.read_text(encoding="utf-8") if target.is_file() else ""
            if current != text:
                typer.echo(f"repro: {target} is not current: run repro ci github", err=True)
                raise typer.Exit(1)
            typer.echo(f"{target} is current")
            return
        written = write_if_changed(target, text)
    except ReproError as exc:
        _fail(exc)
    typer.echo(f"{target}: {'written' if written else 'unchanged'}")


@ci_app.command("update")
def ci_update(
    recipes_dir: RecipesDir = Path("recipes"),
    builder: Builder = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Resolutions at a time.")] = 8,
) -> None:
    """repro lock --update in build-graph order, one git commit per recipe whose pins
    moved (its change list as the message); a moved base is built and pushed first, so
    its dependants move to it in the same run (the daily job of the generated workflow)."""
    from repro.ci import daily_update
    from repro.recipe import find_recipes

    try:
        commits = daily_update(
            find_recipes(recipes_dir),
            recipes_dir,
            builder=builder,
            jobs=jobs,
            say=typer.echo,
        )
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    if not commits:
        typer.echo("all locks are current")


@ci_app.command("buildkit")
def ci_buildkit(
    daemon_json: Annotated[
        Path, typer.Option("--daemon-json", help="The engine's daemon.json.")
    ] = Path("/etc/docker/daemon.json"),
    restart: Annotated[
        str, typer.Option("--restart", help="Shell command that restarts the engine.")
    ] = "systemctl restart docker",
) -> None:
    """Make the Docker Engine at $DOCKER_HOST (else /var/run/docker.sock) build OCI
    images: switch it to the containerd image store if it uses the classic one."""
    from repro.buildkit import docker_engine_socket
    from repro.ci import ensure_containerd_store, run_restart

    try:
        engine = docker_engine_socket()
        done = ensure_containerd_store(
            engine, daemon_json, run_restart(restart), say=lambda s: typer.echo(s, err=True)
        )
    except ReproError as exc:
        _fail(exc)
    typer.echo(done)


def _size(value: str, option: str) -> int:
    """A byte count: 123, 64K, 512M, 2G (powers of 1024)."""
    from repro.errors import InputError

    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "")
    try:
        n = int(float(number) * units[unit])
    except ValueError:
        raise InputError(f"{option} {value!r}: expected a size like 64M or 2G") from None
    if n <= 0:
        raise InputError(f"{option} {value!r}: must be positive")
    return n


ReportDir = Annotated[
    Path | None,
    typer.Option(
        "--report-dir",
        help="Write report.html, report.json, summary.txt and summary.md here.",
    ),
]
MaxFileSize = Annotated[
    str,
    typer.Option("--max-file-size", help="Largest single file handed to diffoscope."),
]
MaxLayerSize = Annotated[
    str,
    typer.Option(
        "--max-layer-size", help="Refuse layers that unpack to more than this (tar bombs)."
    ),
]


@app.command()
def diff(
    first: Annotated[
        str,
        typer.Argument(
            help="oci:DIR, oci-archive:FILE, docker-archive:FILE (docker save), "
            "docker://REF or registry:REF (pulled, every blob checked), or a path."
        ),
    ],
    second: Annotated[str, typer.Argument(help="The same forms as FIRST.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    report_dir: ReportDir = None,
    platform: Annotated[
        str | None, typer.Option("--platform", help="Compare only this os/arch[/variant].")
    ] = None,
    no_diffoscope: Annotated[
        bool, typer.Option("--no-diffoscope", help="Stop at file metadata and hashes.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="Differing paths shown in text.")] = 40,
    max_file_size: MaxFileSize = "64M",
    max_layer_size: MaxLayerSize = "64G",
) -> None:
    """Explain why two images differ: platforms, config, layers, files, diffoscope.

    Exit 0 when identical, 1 when they differ, 2 on bad input.
    """
    from repro.diff import Limits, Options, present
    from repro.diff import diff as run_diff

    try:
        layer_bytes = _size(max_layer_size, "--max-layer-size")
        limits = Limits(
            max_file_bytes=_size(max_file_size, "--max-file-size"),
            max_layer_bytes=layer_bytes,
        )
        if layer_bytes != Limits().max_layer_bytes:
            # Given explicitly: the user's bound replaces the compression-ratio one.
            limits = dataclasses.replace(limits, ratio_floor=layer_bytes)
        options = Options(limits=limits, diffoscope=not no_diffoscope, platform=platform)
        report = run_diff(first, second, options)
        if report_dir is not None:
            present.write_report_dir(report, report_dir, f"{first} vs {second}")
        if as_json:
            typer.echo(present.to_json(report))
        else:
            typer.echo(present.text(report, limit=limit), nl=False)
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    raise typer.Exit(0 if report.identical else 1)


@app.command()
def verify(
    recipes: Annotated[
        list[str] | None,
        typer.Argument(help="Recipe names (folders under --recipes-dir) or paths. Default: all."),
    ] = None,
    all_recipes: Annotated[bool, typer.Option("--all", help="Verify every recipe.")] = False,
    accept: Annotated[
        str,
        typer.Option(
            "--accept",
            help="identical (default), or same-content: accept images whose layers "
            "hold the same files (same diffIDs) but whose bytes differ.",
        ),
    ] = "identical",
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            help="Variations for the second build, comma-separated: umask, mtime, "
            "timezone, locale, build_path, all, or none. Default: umask, timezone, "
            "locale, build_path.",
        ),
    ] = None,
    bisect: Annotated[
        bool,
        typer.Option("--bisect", help="On a difference, re-run one variation at a time."),
    ] = False,
    builders: Annotated[
        list[str] | None,
        typer.Option(
            "--builder",
            help="BuildKit address; give it twice to build the two sides on two builders.",
        ),
    ] = None,
    stagger: Annotated[
        float, typer.Option("--stagger", help="Seconds between starting the two builds.")
    ] = 1.1,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Build both sides from scratch. By default the first build is the "
            "image repro build wrote from the same inputs, when it is still there "
            "(taken, not built again), else it may come from BuildKit's cache; the "
            "second, always from scratch, checks that it reproduces.",
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            help="Recipes verified at a time, with at most 8 builds (or --jobs, if "
            "more) running at once across them: a recipe is two builds, or one when "
            "its first is the image repro build wrote. Each recipe builds on its bases "
            "at the digests its lock pins, so recipes do not wait for each other; "
            "results are printed in order.",
        ),
    ] = 8,  # repro.verify.DEFAULT_JOBS
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Keep both images here as <recipe>-a and <recipe>-b."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Compare BuildKit's exports as they are, not normalised."),
    ] = False,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="Secret for RUN --mount=type=secret, given to both builds: id=NAME,src=FILE "
            "or id=NAME,env=VAR. Never written to the images, the logs or the report.",
        ),
    ] = None,
    allow_unpinned: AllowUnpinned = False,
    offline: Offline = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    report_dir: ReportDir = None,
    limit: Annotated[int, typer.Option("--limit", help="Differing paths shown in text.")] = 40,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish",
            help="When every recipe verified, publish the first build of each (as repro "
            "publish does); with --key, with signed provenance, SBOM and a 'reproduced' "
            "statement of this verification. Nothing is published when one fails.",
        ),
    ] = False,
    key: Annotated[
        Path | None, typer.Option("--key", help="With --publish: the private key to sign with.")
    ] = None,
    no_legacy: KeyNoLegacy = False,
    builder_id: BuilderId = None,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Build each recipe twice, independently, and prove the digests match.

    Exit 0 when every recipe is reproducible, 1 when one is not, 2 on bad input.
    """
    import tempfile

    from repro.build import SecretSpec
    from repro.diff import verify_present
    from repro.errors import InputError
    from repro.recipe import find_recipes
    from repro.verify import parse_vary, verify_recipes

    try:
        if builders and len(builders) > 2:
            raise InputError("--builder: give at most two builders")
        if all_recipes and recipes:
            raise InputError("give recipe names or --all, not both")
        variations = parse_vary(vary)
        secret_specs = [SecretSpec.parse(x) for x in secret or []]
        found = find_recipes(recipes_dir, recipes or None)
        if key is not None and not publish:
            raise InputError("--key signs what --publish publishes: give --publish too")
        signer = None
        if key is not None:
            from repro.attest import load_private_key

            signer = load_private_key(key, passphrase=_passphrase_prompt(confirm=False))
        kept_tmp = None
        if publish and keep is None:  # the first build of each recipe is what is published
            kept_tmp = tempfile.TemporaryDirectory(prefix="repro-verified-")
            keep = Path(kept_tmp.name)

        def show(result: Any) -> None:
            if not as_json:
                typer.echo(verify_present.text(result, accept, limit), nl=False)

        run = verify_recipes(
            found,
            accept=accept,
            report_dir=report_dir,
            on_result=show,
            builders=list(builders) if builders else [None],
            vary=variations,
            bisect=bisect,
            stagger=stagger,
            cache=not no_cache,
            jobs=jobs,
            keep=keep,
            raw=raw,
            allow_unpinned=allow_unpinned,
            offline=offline,
            secrets=secret_specs,
            on_step=None if as_json else lambda s: typer.echo(f"repro: {s}", err=True),
        )
        published: list[Any] = []
        if publish and run.ok:
            assert keep is not None
            from repro.publish import publish_verified

            attach = None
            if signer is not None:
                from repro.attest import publication_attacher

                attach = publication_attacher(
                    {r.name: r for r in found},
                    signer,
                    legacy=not no_legacy,
                    builder_id=builder_id or "",
                    verified={r.recipe: r for r in run.results},
                )
            everything = _graph_recipes(recipes_dir, found) if len(found) > 1 else found
            published = publish_verified(run, found, keep, everything=everything, attach=attach)
            if not as_json:
                for p in published:
                    signed = " with signed attestations" if signer is not None else ""
                    typer.echo(f"{p.recipe}: published {p.reference}{signed}")
        elif publish:
            typer.echo("repro: not published: a recipe did not verify", err=True)
        if kept_tmp is not None:
            kept_tmp.cleanup()
        if as_json:
            results = run.to_json()
            if publish:
                for entry, result in zip(results, run.results, strict=True):
                    entry["published"] = next(
                        (p.to_json() for p in published if p.recipe == result.recipe), None
                    )
            typer.echo(json.dumps(results, indent=2))
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in verify_present.github_annotations(run.results, accept):
                typer.echo(line)
            summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
            if summary_path:
                with open(summary_path, "a", encoding="utf-8") as out:
                    out.write(verify_present.step_summary(run.results, accept))
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    raise typer.Exit(0 if run.ok else 1)


# --- keygen and attest: signed attestations (repro.attest, docs/attestations.md) -----


def _passphrase_prompt(confirm: bool) -> Any:
    """A prompt for a key's passphrase on a terminal; None (no prompt) otherwise."""
    if not sys.stdin.isatty():
        return None
    return lambda: typer.prompt(
        "passphrase", hide_input=True, confirmation_prompt=confirm, default="", show_default=False
    )


@app.command()
def keygen(
    prefix: Annotated[
        str, typer.Argument(help="Write PREFIX.key (private, mode 0600) and PREFIX.pub.")
    ] = "repro",
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help="Encrypt the private key with a passphrase: $REPRO_KEY_PASSWORD, or asked.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Write an ECDSA P-256 key pair for signing attestations (cosign reads the .pub)."""
    from repro.attest import PASSWORD_ENV, generate
    from repro.errors import SigningKeyError

    try:
        password = os.environ.get(PASSWORD_ENV) or None
        if encrypt and password is None:
            ask = _passphrase_prompt(confirm=True)
            password = ask() if ask is not None else None
            if not password:
                raise SigningKeyError(f"--encrypt needs a passphrase: set ${PASSWORD_ENV}")
        private, public = generate(prefix, password=password, force=force)
    except ReproError as exc:
        _fail(exc)
    typer.echo(f"wrote {private} (private{', encrypted' if password else ''}) and {public}")


attest_app = typer.Typer(
    help="Signed attestations on an image's platform manifest (docs/attestations.md).",
    no_args_is_help=True,
)
app.add_typer(attest_app, name="attest")

KeyFiles = Annotated[
    list[Path],
    typer.Option("--key", help="Public key (PEM) that may have signed; give one per signer."),
]


@attest_app.command("attach")
def attest_attach(
    ref: Annotated[str, typer.Argument(help="The image: host/repo:tag or host/repo@sha256:…")],
    key: Annotated[Path, typer.Option("--key", help="Private key (PEM) to sign with.")],
    recipe_name: Annotated[
        str | None,
        typer.Option("--recipe", help="The recipe it was built from (default: the repo's name)."),
    ] = None,
    no_legacy: Annotated[
        bool, typer.Option("--no-legacy", help="Do not write cosign 2's sha256-<hex>.att tag.")
    ] = False,
    no_sbom: Annotated[bool, typer.Option("--no-sbom", help="Attach no SBOM.")] = False,
    builder_id: BuilderId = None,
    platform: Annotated[str, typer.Option("--platform")] = "linux/amd64",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Sign provenance and an SBOM from the recipe's lock and attach them to the image."""
    from repro.attest import (
        attach_statements,
        load_private_key,
        platform_manifest,
        recipe_statements,
    )
    from repro.recipe import find_recipes
    from repro.registry import Registry

    try:
        signer = load_private_key(key, passphrase=_passphrase_prompt(confirm=False))
        with Registry() as registry:
            repo, digest = platform_manifest(registry, ref, platform)
            name = recipe_name or repo.repository.rsplit("/", 1)[-1]
            recipe = find_recipes(recipes_dir, [name])[0]
            statements = recipe_statements(
                registry, repo.name, digest, recipe, sbom=not no_sbom, builder_id=builder_id or ""
            )
            result = attach_statements(
                registry, repo, digest, statements, signer, legacy=not no_legacy
            )
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(
            f"{result.image}@{result.digest}: {len(result.referrers)} statement(s) attached "
            f"({result.path}{', ' + result.legacy if result.legacy else ''})"
        )


@attest_app.command("verify")
def attest_verify(
    ref: Annotated[str, typer.Argument(help="The image: host/repo:tag or host/repo@sha256:…")],
    key: KeyFiles,
    policy: Annotated[
        str, typer.Option("--policy", help="builders>=K: K builders agree on digest and lock.")
    ] = "builders>=1",
    platform: Annotated[str, typer.Option("--platform")] = "linux/amd64",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the image's attestations: signatures, subject, predicate types, policy.

    Exit 0 verified, 1 not verified, 2 bad input.
    """
    from repro.attest import load_public_key, parse_policy, verify_image
    from repro.registry import Registry

    try:
        required = parse_policy(policy)
        keys = [load_public_key(k) for k in key]
        with Registry() as registry:
            outcome = verify_image(registry, ref, keys, required=required, platform=platform)
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        typer.echo(outcome.text(), nl=False)
    raise typer.Exit(0 if outcome.ok else 1)


@app.command()
def rebuild(
    ref: Annotated[str, typer.Argument(help="The published image: host/repo:tag or @sha256:….")],
    source: Annotated[
        Path, typer.Option("--source", help="The recipe directory to rebuild from (a checkout).")
    ],
    key: Annotated[
        list[Path] | None,
        typer.Option("--key", help="Public key the provenance must be signed with."),
    ] = None,
    sign: Annotated[
        Path | None,
        typer.Option("--sign", help="Private key: attach your own signed reproduced statement."),
    ] = None,
    builder: Builder = None,
    builder_id: Annotated[
        str | None,
        typer.Option(
            "--builder-id", help="Your identity (default: $REPRO_BUILDER_ID or user@host)."
        ),
    ] = None,
    no_legacy: Annotated[
        bool, typer.Option("--no-legacy", help="Do not write cosign 2's .att tag.")
    ] = False,
    platform: Annotated[str, typer.Option("--platform")] = "linux/amd64",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Differing paths shown in text.")] = 40,
) -> None:
    """Rebuild a published image from its recipe and compare (exit 0 identical, 1 not).

    The recipe in --source must be the one the image's provenance names (tree and lock
    digests); the build uses your BuildKit with no cache.
    """
    from repro.attest import load_private_key, load_public_key
    from repro.attest import rebuild as rebuild_image
    from repro.diff import present
    from repro.registry import Registry

    try:
        keys = [load_public_key(k) for k in key or []]
        signer = (
            load_private_key(sign, passphrase=_passphrase_prompt(confirm=False)) if sign else None
        )
        with Registry() as registry:
            result = rebuild_image(
                registry,
                ref,
                source,
                keys=keys,
                builder=builder,
                sign=signer,
                builder_id=builder_id or "",
                legacy=not no_legacy,
                platform=platform,
            )
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _say_interrupted()
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(f"{result.image}@{result.digest}: {result.verdict} (rebuilt {result.rebuilt})")
        if result.report is not None:
            typer.echo(present.text(result.report, limit), nl=False)
        if result.attached is not None:
            typer.echo(f"signed reproduced statement attached ({result.attached.path})")
    raise typer.Exit(0 if result.verdict == "identical" else 1)


_interrupt_said = threading.Event()
_terminated = threading.Event()  # the interruption was SIGTERM, not Ctrl-C


def _say_interrupted() -> None:
    """The one line an interrupted command ends with (printed once)."""
    if not _interrupt_said.is_set():
        _interrupt_said.set()
        typer.echo("repro: terminated" if _terminated.is_set() else "repro: interrupted", err=True)


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a cancelled CI job, `timeout`, `docker stop`) ends the command as
    Ctrl-C does: running builds cancelled, staged outputs and temporary directories
    removed, one line said; the exit status is 143. A second SIGTERM ends the process
    at once."""
    import signal

    _terminated.set()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


# A file system that is full, over quota or read-only: the environment, wherever in
# repro the write happened (outputs, locks and caches are written atomically, so
# nothing half-written is left).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def main() -> None:
    """The `repro` command: runs it, then ends the process at once (`_exit_now`)."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _main()
    except SystemExit as exc:
        code = exc.code
        if code == 130 and _terminated.is_set():
            code = 143
        _exit_now(code)
    _exit_now(143 if _terminated.is_set() else 0)


def _exit_now(code: int | str | None) -> NoReturn:
    """End the process with `code` as the interpreter would, minus its teardown.

    What the interpreter does at exit that matters is done here, in its order: wait
    for the threads that are not daemons (and let executors stop theirs), run the
    atexit handlers (temporary directories), flush stdout and stderr. What is left
    out is unloading every module and shutting down grpc's core, which took 0.08-0.1 s
    at the end of every command, a quarter of `repro build`'s own time on a cached
    build. Only the console command does this; the app itself exits normally.
    """
    import atexit

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # A closed pipe (`repro … | head`): Python would exit 120 saying so.
            status = status or 120
    os._exit(status)


def _main() -> None:
    try:
        app()
    except ReproError as exc:
        typer.echo(f"repro: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        # Ctrl-C outside a command's own handler (while options are parsed, or before
        # its work starts): typer exits 130 silently; say so, as the commands do.
        if exc.code == 130:
            _say_interrupted()
        raise
    except KeyboardInterrupt:
        _say_interrupted()
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        typer.echo(f"repro: error: cannot write{where}: {exc.strerror}", err=True)
        sys.exit(2)
