"""The ``repro`` command line: thin over the library, one call plus rendering each.

Exit codes: 0 ok; 1 a build failed or a check did not pass; 2 bad input or a broken
environment; 130 interrupted. Errors are one line on stderr, never a traceback.
Heavy modules (grpc, diffoscope) are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from repro import __version__
from repro.errors import ReproError

app = typer.Typer(
    name="repro",
    help=(
        "Build container images anyone can rebuild bit for bit.\n\n"
        "Recipes live in recipes/<name>/ (recipe.toml, a Dockerfile and its context). "
        "repro drives a real BuildKit over gRPC with SOURCE_DATE_EPOCH and "
        "rewrite-timestamp, and writes OCI images."
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
        help="BuildKit address: unix:///path, tcp://host:port, docker:// or docker://unix:///path. "
        "Default: $BUILDKIT_HOST, then $DOCKER_HOST, then the usual sockets.",
    ),
]


def _fail(exc: ReproError) -> NoReturn:
    typer.echo(f"repro: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


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
        bool, typer.Option("--no-cache", help="Build without BuildKit's cache.")
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
    builder: Builder = None,
    recipes_dir: RecipesDir = Path("recipes"),
) -> None:
    """Build recipes into OCI images and print each image's digest."""
    from repro.build import SecretSpec, build_recipe
    from repro.errors import InputError
    from repro.recipe import find_recipes

    try:
        if progress not in ("auto", "tty", "plain", "quiet"):
            raise InputError(f"--progress {progress!r}: expected auto, tty, plain or quiet")
        found = find_recipes(recipes_dir, recipes or None)
        if output and len(found) != 1:
            raise InputError("--output names one image; give exactly one recipe with it")
        secrets = [SecretSpec.parse(s) for s in secret or []]
        args: dict[str, str] = {}
        for item in build_arg or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise InputError(f"--build-arg {item!r}: expected NAME=value")
            args[name] = value
        results = []
        for recipe in found:
            result = build_recipe(
                recipe,
                builder=builder,
                output=output,
                no_cache=no_cache,
                secrets=secrets,
                progress="quiet"
                if (as_json and progress == "auto" and not sys.stderr.isatty())
                else progress,
                build_args=args,
            )
            results.append(result)
            if not as_json:
                typer.echo(
                    f"{result.recipe}: {result.digest}  {result.output}  ({result.seconds:.1f}s)"
                )
        if as_json:
            typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    except ReproError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("repro: interrupted", err=True)
        raise typer.Exit(130) from None


@app.command()
def doctor(
    builder: Builder = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
) -> None:
    """Say which BuildKit, registry and tools were found, and how to fix what is missing."""
    from repro.doctor import diagnose

    report = diagnose(builder)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for check in report.checks:
            mark = "ok " if check.ok else ("-- " if check.optional else "!! ")
            typer.echo(f"{mark} {check.name}: {check.detail}")
            if not check.ok and check.fix:
                typer.echo(f"    fix: {check.fix}")
    raise typer.Exit(0 if report.ok else 2)


def main() -> None:
    try:
        app()
    except ReproError as exc:
        typer.echo(f"repro: error: {exc}", err=True)
        sys.exit(exc.exit_code)
