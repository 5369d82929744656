"""Building recipes: a recipe plus options in, an OCI image on disk and its digests out."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from repro.errors import ContextError, InputError
from repro.recipe import Recipe


@dataclass
class SecretSpec:
    id: str
    src: str = ""
    env: str = ""

    @classmethod
    def parse(cls, value: str) -> SecretSpec:
        """``id=NAME,src=PATH`` or ``id=NAME,env=VAR`` (``type=file|env`` accepted)."""
        fields: dict[str, str] = {}
        for part in value.split(","):
            key, sep, val = part.partition("=")
            if not sep or not val:
                raise InputError(
                    f"--secret {value!r}: expected id=NAME,src=PATH or id=NAME,env=VAR"
                )
            fields[key.strip()] = val.strip()
        unknown = set(fields) - {"id", "src", "source", "env", "type"}
        if unknown:
            raise InputError(f"--secret {value!r}: unknown field {sorted(unknown)[0]!r}")
        spec = cls(
            id=fields.get("id", ""),
            src=fields.get("src", fields.get("source", "")),
            env=fields.get("env", ""),
        )
        if fields.get("type") == "env" and not spec.env:
            spec.env, spec.src = spec.src or spec.id, ""
        if not spec.id:
            spec.id = Path(spec.src).name if spec.src else spec.env
        if not spec.id or (not spec.src and not spec.env):
            raise InputError(f"--secret {value!r}: needs id= and src= or env=")
        return spec

    def loader(self) -> Callable[[], bytes]:
        """Check the source now (bad input fails before the build), read it on demand."""
        if self.src:
            path = Path(self.src)
            if not path.is_file():
                raise ContextError(f"secret {self.id}: source file {self.src} does not exist")
            return path.read_bytes
        if self.env not in os.environ:
            raise ContextError(f"secret {self.id}: environment variable {self.env} is not set")
        name = self.env
        return lambda: os.environ[name].encode()


@dataclass
class RecipeResult:
    recipe: str
    digest: str
    config_digest: str
    output: str
    seconds: float
    builder: str
    builder_version: str
    source_date_epoch: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_output(recipe: Recipe) -> str:
    return f"oci:out/{recipe.name}"


def shared_key(recipe: Recipe) -> str:
    """Keys BuildKit's cache of the transferred context: stable per checkout path."""
    return hashlib.sha256(str(recipe.context.resolve()).encode()).hexdigest()[:32]


def _credentials(host: str) -> tuple[str, str] | None:
    from repro import dockerconfig

    try:
        creds = dockerconfig.get_credentials(host)
    except Exception:  # a broken helper means anonymous, as for docker itself
        return None
    if creds is None:
        return None
    return creds.username, creds.secret


def build_recipe(
    recipe: Recipe,
    *,
    builder: str | None = None,
    output: str | None = None,
    no_cache: bool = False,
    secrets: list[SecretSpec] | None = None,
    progress: str = "auto",
    stream: TextIO | None = None,
    build_args: dict[str, str] | None = None,
) -> RecipeResult:
    """Build one recipe with BuildKit and write its OCI image."""
    from repro.buildkit import BuildRequest, Output, build, connect
    from repro.buildkit._progress import Progress

    out = Output.parse(output or default_output(recipe))
    args = dict(recipe.args)
    args.update(build_args or {})
    request = BuildRequest(
        context=recipe.context,
        dockerfile=recipe.dockerfile,
        output=out,
        build_args=args,
        labels=dict(recipe.labels),
        target=recipe.target,
        platforms=list(recipe.platforms),
        source_date_epoch=recipe.source_date_epoch,
        no_cache=no_cache,
        network=recipe.network,
        secrets={s.id: s.loader() for s in secrets or []},
        shared_key=shared_key(recipe),
        session_name=recipe.name,
    )
    display = Progress(mode=progress, stream=stream or sys.stderr, title=recipe.name)  # type: ignore[arg-type]
    success = False
    with connect(builder) as conn:
        conn.preflight()
        try:
            result = build(conn, request, on_status=display.update, credentials=_credentials)
            success = True
        finally:
            display.close(success)
            if not success:
                report = display.failure_report()
                if report:
                    print(report, file=stream or sys.stderr)
    return RecipeResult(
        recipe=recipe.name,
        digest=result.digest,
        config_digest=result.config_digest,
        output=str(out),
        seconds=round(result.seconds, 3),
        builder=str(conn.address),
        builder_version=conn.engine_version,
        source_date_epoch=recipe.source_date_epoch,
    )
