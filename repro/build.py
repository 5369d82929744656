"""Building recipes: a recipe plus options in, an OCI image on disk and its digests out."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from repro.errors import BuildFailed, ContextError, InputError
from repro.recipe import Recipe

if TYPE_CHECKING:
    from repro.buildkit import Output
    from repro.normalise import NormaliseResult


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
    # With normalisation on (the default), `digest`/`config_digest` are the
    # normalised image's and `raw_digest` is what BuildKit exported.
    raw_digest: str = ""
    normalised: dict[str, Any] | None = None
    # The image's package database against base + lock (repro.binding), when checked.
    packages: dict[str, Any] | None = None
    # A [rootfs] recipe: its packages, what was reproduced of their scripts (repro.rootfs).
    rootfs: dict[str, Any] | None = None
    # The version the BuildKit reported and the OCI exporter options sent (None for
    # images repro writes itself); kept in the build record (repro.records).
    buildkit_version: str = ""
    exporter: dict[str, str] | None = None

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


def build_recipe(recipe: Recipe, **options: Any) -> RecipeResult:
    """Build one recipe (see `_build_recipe` for the options). Folders made for the
    output are removed again when the build fails: nothing is left half-written."""
    output = str(options.get("output") or default_output(recipe))
    made = _new_parents(Path(output.partition(":")[2] or output))
    try:
        result = _build_recipe(recipe, **options)
    except BaseException:
        for directory in made:
            try:
                directory.rmdir()  # only if still empty
            except OSError:
                break
        raise
    record_build(recipe, result)
    return result


def record_build(recipe: Recipe, result: RecipeResult) -> None:
    """Write the build record of `result` (repro.records) for publish and the provenance."""
    from repro import __version__
    from repro.records import file_digest, write_build_record

    write_build_record(
        {
            "digest": result.digest,
            "recipe": recipe.name,
            "lock": {"path": str(recipe.lock_file), "digest": file_digest(recipe.lock_file)},
            "builder": result.builder,
            "builder_version": result.builder_version,
            "buildkit_version": result.buildkit_version,
            "exporter": result.exporter,
            "source_date_epoch": result.source_date_epoch,
            "normalised": result.normalised is not None,
            "repro_version": __version__,
        }
    )


def _new_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first."""
    out = []
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        out.append(parent)
        parent = parent.parent
    return out


def _build_recipe(
    recipe: Recipe,
    *,
    builder: str | None = None,
    output: str | None = None,
    no_cache: bool = False,
    secrets: list[SecretSpec] | None = None,
    progress: str = "auto",
    stream: TextIO | None = None,
    build_args: dict[str, str] | None = None,
    normalise: bool = True,
    rewrite_timestamp: bool = True,
    exporter_attrs: dict[str, str] | None = None,
    built: dict[str, str] | None = None,
    on_status: Callable[[Any], None] | None = None,
    allow_unpinned: bool = False,
    offline: bool = False,
) -> RecipeResult:
    """Build one recipe with BuildKit and write its OCI image (normalised unless told not).

    `rewrite_timestamp` and `exporter_attrs` (e.g. ``compression=zstd``) pass through
    to BuildKit's OCI exporter; normalisation makes the result independent of them.
    """
    if recipe.rootfs is not None:
        # Packages unpacked into one layer by repro itself: no Dockerfile, no BuildKit.
        from repro.rootfs import build_rootfs

        return build_rootfs(
            recipe, output=output, progress=progress, stream=stream, offline=offline
        )
    from repro.buildkit import BuildRequest, Output, Progress, build, check_inputs, connect

    out = Output.parse(output or default_output(recipe))
    from repro import oci

    # Refused before anything is built: a sink replaces only an earlier output.
    oci.check_output_target(out.kind, out.path)
    # The lock makes the pins binding (repro.lock.apply_lock): a stale or missing lock
    # is refused, bases are rewritten to their locked digests in a rendered
    # Dockerfile, closures/checksums/commits arrive as build args.
    from repro.lock import apply_lock

    pinned = apply_lock(recipe, build_args or {}, built)
    _check_locked_bases(recipe, pinned.lock)
    from repro import dockerignore

    dockerignore.check(recipe.context, recipe.dockerfile)
    args = pinned.build_args
    request = BuildRequest(
        context=recipe.context,
        dockerfile=pinned.dockerfile,
        source_dockerfile=recipe.dockerfile,
        source_policy=pinned.source_policy,
        output=out,
        build_args=args,
        labels=dict(recipe.labels),
        target=recipe.target,
        platforms=list(recipe.platforms),
        source_date_epoch=pinned.source_date_epoch,
        no_cache=no_cache,
        network=recipe.network,
        secrets={s.id: s.loader() for s in secrets or []},
        shared_key=shared_key(recipe),
        session_name=recipe.name,
        rewrite_timestamp=rewrite_timestamp,
        exporter_attrs=dict(exporter_attrs or {}),
    )
    staging: Path | None = None
    from repro.binding import Binding, UnpinnedPackages, check_image, checked_base

    packages_dir = _package_context(recipe, pinned.lock, offline)
    if packages_dir is not None:
        from repro.vault import CONTEXT_NAME

        request.named_contexts[CONTEXT_NAME] = packages_dir

    bind = bool(pinned.lock) and checked_base(recipe, pinned.lock or {}) is not None
    if normalise or bind:
        # BuildKit's export is staged beside the output, checked against the lock
        # and normalised (or moved) into place.
        check_inputs(request)
        staging = _normalise_staging(out.path)
        request.output = Output("oci", staging / "raw")
    display = Progress(mode=progress, stream=stream or sys.stderr, title=recipe.name)  # type: ignore[arg-type]
    success = False
    where = ""  # the failing Dockerfile lines, shown like buildx
    try:
        with connect(builder) as conn:
            conn.preflight()
            try:
                result = build(
                    conn,
                    request,
                    on_status=_tee(display.update, on_status),
                    credentials=_credentials,
                )
                success = True
            except (BuildFailed, ContextError) as exc:
                located = dockerignore.locate(exc.message, recipe.context, recipe.dockerfile)
                if located is not None:
                    raise located from None
                if isinstance(exc, BuildFailed):
                    where = exc.source_snippet
                raise
            finally:
                display.close(success)
                if not success:
                    report = display.failure_report()
                    if report:
                        print(report, file=stream or sys.stderr)
                    if where:
                        print(where, file=stream or sys.stderr)
        digest, config_digest, normalised = result.digest, result.config_digest, None
        binding = Binding()
        if staging is not None and bind:
            binding = check_image(recipe, pinned.lock, staging / "raw")
            if not binding.ok:
                if not allow_unpinned:
                    raise UnpinnedPackages(binding.message(recipe.name))
                print(f"repro: warning: {binding.message(recipe.name)}", file=stream or sys.stderr)
        if staging is not None and not normalise:
            _move_raw(staging / "raw", out)
        elif staging is not None:
            norm = normalise_output(
                recipe, staging / "raw", out, request.source_date_epoch, pinned.lock
            )
            digest, config_digest, normalised = norm.digest, norm.config_digest, norm.to_json()
            for warning in norm.warnings:
                print(f"repro: warning: {warning}", file=stream or sys.stderr)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if packages_dir is not None:
            shutil.rmtree(packages_dir, ignore_errors=True)
    return RecipeResult(
        recipe=recipe.name,
        digest=digest,
        config_digest=config_digest,
        raw_digest=result.digest,
        normalised=normalised,
        output=str(out),
        seconds=round(result.seconds, 3),
        builder=str(conn.address),
        builder_version=conn.engine_version,
        source_date_epoch=pinned.source_date_epoch,
        packages=binding.to_json() if binding.checked else None,
        buildkit_version=result.buildkit_version,
        exporter=dict(result.exporter_attrs),
    )


def _check_locked_bases(recipe: Recipe, lock: dict[str, Any] | None) -> None:
    """Every base digest the lock pins must be in its registry: one line naming the
    lock entry before anything is built (BuildKit would report it three times over)."""
    from repro.errors import RegistryError
    from repro.lock import image_name
    from repro.registry import Registry

    if not lock or not lock.get("bases"):
        return
    with Registry() as client:
        for ref, entry in lock["bases"].items():
            if entry.get("image"):
                image = str(entry["image"])  # a recipe: base, as it was published
            elif ref.startswith("recipe:"):
                continue
            else:
                image = image_name(ref)
            try:
                client.resolve(f"{image}@{entry['digest']}")
            except RegistryError as exc:
                if "not found" not in str(exc):
                    raise
                raise InputError(
                    f"{recipe.name}: repro.lock pins base {ref} to {entry['digest'][:19]}…, "
                    f"which {image.split('/')[0]} does not have; run repro lock --update "
                    "(or push that image)"
                ) from None


def _package_context(recipe: Recipe, lock: dict[str, Any] | None, offline: bool) -> Path | None:
    """The locked packages laid out for the build's ``repro-apt`` context, when the
    Dockerfile mounts it (from the checked cache, the mirror, or the vault)."""
    from repro import vault

    if not lock or not lock.get("packages"):
        return None
    try:
        text = recipe.dockerfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not vault.uses_package_context(text):
        if offline:
            raise InputError(
                f"{recipe.name}: --offline needs the Dockerfile to install from the "
                f"{vault.CONTEXT_NAME} context (see docs/recipes.md, the package vault)"
            )
        return None
    from repro.config import load_repo_config
    from repro.packages.fetch import cache_dir

    parent = cache_dir().parent / "contexts"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{recipe.name}-", dir=parent))
    try:
        repo = load_repo_config(recipe.directory.parent)
        return vault.package_context(recipe, lock, repo, directory, offline=offline)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _move_raw(raw: Path, out: Output) -> None:
    """Put BuildKit's export (a layout, unnormalised) at `out`."""
    from repro import oci

    if out.kind == "oci":
        oci.replace_output("oci", raw, out.path)
    else:
        oci.check_output_target(out.kind, out.path)
        oci.write_oci_archive(oci.OCILayout(raw), out.path)


def _tee(
    first: Callable[[Any], None], second: Callable[[Any], None] | None
) -> Callable[[Any], None]:
    """One status callback that feeds the display and, if given, the caller's (verify's)."""
    if second is None:
        return first

    def both(status: Any) -> None:
        first(status)
        second(status)

    return both


def _normalise_staging(dest: Path) -> Path:
    from repro import oci

    return oci.staging_dir_beside(dest, "raw")


def normalise_output(
    recipe: Recipe,
    raw: Path,
    out: Output,
    epoch: int | None,
    lock: dict[str, Any] | None = None,
) -> NormaliseResult:
    """Normalise the raw export at `raw` into `out` (a layout or an archive).

    The base image's layers keep their bytes: with a lock, exactly the locked base's
    layers, restored from the registry where BuildKit exported other bytes; without
    one (or if the registry cannot say), those the image's history says are the base's.
    """
    from repro import oci
    from repro.errors import ReproError
    from repro.normalise import base_layer_count, locked_base_layers, normalise_layout

    layout = oci.OCILayout(raw)
    images = [d for d in layout.image_manifests() if not d.is_attestation]
    configs = [oci.read_config(layout, oci.read_manifest(layout, d))[1] for d in images]
    if epoch is None:  # no epoch given to BuildKit: its `created` is the build's time
        epoch = int(time.time())
    keep = min((base_layer_count(c, epoch) for c in configs), default=0)
    base_layers: tuple[oci.Descriptor, ...] = ()
    if lock and len(images) == 1:
        from repro.registry import Registry

        platform = str(images[0].platform) if images[0].platform else ""
        try:
            with Registry() as client:
                base = locked_base_layers(lock, platform, configs[0], client)
                if base is not None:
                    oci.copy_blobs(client, base.repository, base.layers, layout)
                    keep, base_layers = len(base.layers), tuple(base.layers)
        except ReproError as e:
            # Not silently: guessing the base's layers from the history instead could
            # give another digest than a build that reached the registry.
            raise type(e)(
                f"cannot read the locked base image's layers for {recipe.name}: {e.message}"
            ) from None
    options = dataclasses.replace(
        recipe.normalise.options(epoch, keep_layers=keep), base_layers=base_layers
    )
    if out.kind == "oci":
        return normalise_layout(layout, out.path, options, replace=True)
    result = normalise_layout(layout, raw.parent / "normalised", options)
    oci.check_output_target(out.kind, out.path)
    oci.write_oci_archive(oci.OCILayout(raw.parent / "normalised"), out.path)
    return result
