"""Normalising a whole OCI layout: layers (concurrently), configs, manifests, the index.

`normalise_layout(src, dest, options)` is a pure transform: it reads `src`, never
changes it, and writes a new layout at `dest` (staged beside it and renamed into
place, so a failure leaves no output). Manifests, configs and indexes are
re-serialised as canonical JSON (sorted keys, compact).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import InputError
from repro.normalise._cache import normalise_layer_cached
from repro.normalise._layer import (
    LayerOutcome,
    clean_annotations,
    layer_paths,
)
from repro.normalise._rules import Change, ContentRules, NormaliseOptions
from repro.oci import (
    ANNOTATION_CREATED,
    IMAGE_MANIFEST_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    Descriptor,
    OCILayout,
    canonical_json,
    check_output_target,
    manifest_children,
    platform_key,
    read_config,
    read_manifest,
    replace_output,
    short_digest,
    staging_dir_beside,
)

# Config labels that say which builder made an image rather than what it is.
BUILDER_LABEL_PREFIXES = ("moby.buildkit.", "com.docker.buildx.", "io.buildah.")


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass
class NormaliseResult:
    """The normalised image: its digests, what happened to each layer, what rules changed."""

    digest: str
    config_digest: str
    layers: list[LayerOutcome]
    changes: list[Change]
    seconds: float
    options: NormaliseOptions
    zlib_version: str = field(default_factory=lambda: zlib.ZLIB_RUNTIME_VERSION)
    warnings: list[str] = field(default_factory=list)
    # platform -> {"manifest": digest, "config": digest}, for each image normalised
    platforms: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        drop, truncate, shadow = self.options.effective()
        return {
            "digest": self.digest,
            "config_digest": self.config_digest,
            "compression": f"{self.options.compression}-{self.options.compression_level}",
            "zlib": self.zlib_version,
            "rules": {
                "presets": list(self.options.presets),
                "drop": list(drop),
                "truncate": list(truncate),
                "shadow": shadow,
            },
            "layers": [layer.to_json() for layer in self.layers],
            "changes": [c.to_json() for c in self.changes],
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ImageOutcome:
    """One platform's normalised image: what `_Normaliser.image` returns."""

    platform: str
    manifest: Descriptor
    config_digest: str
    layers: list[LayerOutcome]
    warnings: list[str]


class _Normaliser:
    def __init__(
        self, src: OCILayout, dest: OCILayout, options: NormaliseOptions, jobs: int
    ) -> None:
        self.src = src
        self.dest = dest
        self.options = options
        self.rules = ContentRules.from_options(options)
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="normalise")
        self.layers: dict[tuple[str, int], Future[LayerOutcome]] = {}
        self.lock = threading.Lock()
        self.created = rfc3339(options.created_time)

    def layer(self, layer: Descriptor, diff_id: str, index: int) -> Future[LayerOutcome]:
        keep = index < self.options.keep_layers
        bases = self.options.base_layers
        restore = bases[index] if keep and index < len(bases) else None
        key = (layer.digest, index if keep else -1)
        with self.lock:
            if key not in self.layers:
                self.layers[key] = self.pool.submit(
                    normalise_layer_cached,
                    self.src,
                    self.dest,
                    layer,
                    diff_id,
                    index,
                    self.options,
                    self.rules,
                    keep=keep,
                    restore=restore,
                )
            return self.layers[key]

    def descriptor(self, descriptor: Descriptor) -> tuple[Descriptor | None, list[ImageOutcome]]:
        """Normalise what a descriptor names: its new descriptor (None for what is
        dropped: attestations) and each platform's outcome below it."""
        if descriptor.is_attestation:
            return None, []  # it names the un-normalised image; a new one is made at publish
        if descriptor.media_type in INDEX_MEDIA_TYPES:
            return self.index(descriptor)
        if descriptor.media_type in IMAGE_MANIFEST_MEDIA_TYPES:
            outcome = self.image(descriptor)
            return outcome.manifest, [outcome]
        raise InputError(
            f"OCI layout {self.src.path}: cannot normalise a {descriptor.media_type} "
            f"({descriptor.digest})"
        )

    def annotations(self, annotations: dict[str, str]) -> dict[str, str]:
        out = clean_annotations(annotations)
        if ANNOTATION_CREATED in out:
            out[ANNOTATION_CREATED] = self.created
        return out

    def _write_json(self, doc: dict[str, Any], source: Descriptor) -> Descriptor:
        written = self.dest.write_blob(canonical_json(doc), source.media_type)
        return Descriptor(
            media_type=source.media_type,
            digest=written.digest,
            size=written.size,
            annotations=self.annotations(source.annotations),
            platform=source.platform,
            extra=dict(source.extra),
        )

    def index(self, descriptor: Descriptor) -> tuple[Descriptor, list[ImageOutcome]]:
        doc = self.src.read_json(descriptor)
        children = manifest_children(doc, descriptor.media_type, f"index {descriptor.digest}")
        kept: list[Descriptor] = []
        outcomes: list[ImageOutcome] = []
        for child in children:
            new_child, below = self.descriptor(child)
            if new_child is not None:
                kept.append(new_child)
            outcomes.extend(below)
        new = dict(doc)
        new["manifests"] = [d.to_json() for d in kept]
        if isinstance(doc.get("annotations"), dict):
            new["annotations"] = self.annotations(doc["annotations"])
        return self._write_json(new, descriptor), outcomes

    def whiteout_warnings(
        self, layers: list[Descriptor], outcomes: list[LayerOutcome]
    ) -> list[str]:
        """A warning for each whiteout that removes a path no lower layer has.

        Lower layers are read (headers only) just when a layer has whiteouts.
        """
        targets: dict[str, list[tuple[int, str]]] = {}
        for outcome in outcomes:
            for entry in outcome.whiteouts:
                head, _, tail = entry.rpartition("/")
                target = (head + "/" if head else "") + tail[len(".wh.") :]
                targets.setdefault(target, []).append((outcome.index, entry))
        if not targets:
            return []
        resolved: set[tuple[int, str]] = set()
        last = max(i for pending in targets.values() for i, _ in pending)
        for j in range(last):
            what = f"layer {j} ({short_digest(layers[j].digest)})"
            for name in layer_paths(self.src, layers[j], what):
                parts = name.split("/")
                for k in range(len(parts), 0, -1):
                    for i, entry in targets.get("/".join(parts[:k]), ()):
                        if i > j:
                            resolved.add((i, entry))
        return [
            f"layer {i} ({short_digest(layers[i].digest)}): whiteout {entry!r} removes "
            f"/{target}, which no lower layer has"
            for target, pending in sorted(targets.items())
            for i, entry in pending
            if (i, entry) not in resolved
        ]

    def image(self, descriptor: Descriptor) -> ImageOutcome:
        manifest = read_manifest(self.src, descriptor)
        config_descriptor, config = read_config(self.src, manifest)
        layers = manifest_children(
            manifest, descriptor.media_type, f"manifest {descriptor.digest}"
        )[1:]
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if diff_ids is None and isinstance(rootfs, dict) and "diff_ids" in rootfs:
            diff_ids = []  # BuildKit writes null for an image without layers (FROM scratch)
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise InputError(
                f"image {descriptor.digest}: its config lists "
                f"{len(diff_ids) if isinstance(diff_ids, list) else 'no'} diff_ids "
                f"for {len(layers)} layers"
            )
        futures = [
            self.layer(layer, str(d), i)
            for i, (layer, d) in enumerate(zip(layers, diff_ids, strict=True))
        ]
        outcomes = [f.result() for f in futures]
        warnings = self.whiteout_warnings(layers, outcomes)

        new_config = dict(config)
        if "created" in new_config:
            new_config["created"] = self.created
        history = config.get("history")
        if isinstance(history, list):
            new_config["history"] = [_history_entry(h, self.created) for h in history]
        new_config["rootfs"] = {**(rootfs or {}), "diff_ids": [o.diff_id for o in outcomes]}
        inner = config.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("Labels"), dict):
            labels = {
                k: v for k, v in inner["Labels"].items() if not k.startswith(BUILDER_LABEL_PREFIXES)
            }
            new_config["config"] = {**inner, "Labels": labels}
        new_config_descriptor = self._write_json(new_config, config_descriptor)

        new_manifest = dict(manifest)
        new_manifest["config"] = new_config_descriptor.to_json()
        layer_descriptors = [o.descriptor for o in outcomes]
        if descriptor.media_type == MEDIA_TYPE_DOCKER_MANIFEST:
            # a Docker manifest names its gzip layers with Docker's media type
            for d in layer_descriptors:
                if d.media_type == MEDIA_TYPE_OCI_LAYER_GZIP:
                    d.media_type = MEDIA_TYPE_DOCKER_LAYER_GZIP
        new_manifest["layers"] = [d.to_json() for d in layer_descriptors]
        if isinstance(manifest.get("annotations"), dict):
            new_manifest["annotations"] = self.annotations(manifest["annotations"])
        return ImageOutcome(
            platform_key(descriptor, config),
            self._write_json(new_manifest, descriptor),
            new_config_descriptor.digest,
            outcomes,
            warnings,
        )


def normalise_layout(
    src: str | os.PathLike[str] | OCILayout,
    dest: str | os.PathLike[str],
    options: NormaliseOptions,
    *,
    jobs: int | None = None,
    replace: bool = False,
) -> NormaliseResult:
    """Write the normalised form of the layout `src` as a new layout at `dest`.

    `dest` must not exist (or, with `replace`, may be an earlier OCI layout, which is
    replaced at the end; anything else there is refused, see `check_output_target`).
    Layers are normalised on up to `jobs` threads (default: one per CPU); zlib,
    zstd and hashing release the GIL, so they run in parallel.
    """
    started = time.monotonic()
    source = src if isinstance(src, OCILayout) else OCILayout(src)
    source.check_layout_file()
    target = Path(dest)
    if target.exists() or target.is_symlink():
        if not replace:
            raise InputError(f"output {target} already exists")
        check_output_target("oci", target)
    staging = staging_dir_beside(target, "normalise")
    ok = False
    try:
        out = OCILayout.create(staging)
        worker = _Normaliser(source, out, options, jobs or os.cpu_count() or 1)
        try:
            index = source.read_index()
            entries = source.index_manifests()
            new_entries: list[Descriptor] = []
            images: list[ImageOutcome] = []
            for entry in entries:
                new_entry, below = worker.descriptor(entry)
                if new_entry is not None:
                    new_entries.append(new_entry)
                images.extend(below)
        finally:
            worker.pool.shutdown(wait=True, cancel_futures=True)
        if not new_entries:
            raise InputError(f"OCI layout {source.path} has no image to normalise")
        annotations = index.get("annotations")
        out.write_index(
            new_entries, worker.annotations(annotations) if isinstance(annotations, dict) else None
        )
        replace_output("oci", staging, target)
        ok = True
    finally:
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)
    outcomes = sorted((o for image in images for o in image.layers), key=lambda o: o.index)
    changes = [c for o in outcomes for c in o.changes]
    warnings: list[str] = []
    for image in images:
        warnings.extend(w for w in image.warnings if w not in warnings)
    return NormaliseResult(
        digest=new_entries[0].digest,
        config_digest=images[0].config_digest if images else "",
        layers=outcomes,
        changes=changes,
        seconds=time.monotonic() - started,
        options=options,
        warnings=warnings,
        platforms={
            i.platform: {"manifest": i.manifest.digest, "config": i.config_digest} for i in images
        },
    )


BUILDKIT_HISTORY_COMMENT = "buildkit.dockerfile.v0"
# The comment of the entry BuildKit's exporter writes for a layer that has no history
# entry (a base image whose config has none). Its created_by depends on BuildKit's
# cache: "pulled from REF@DIGEST" when the layer's cache record still says where it
# came from, "created by buildkit" otherwise; two builds of the same recipe on one
# engine, cold and warm, differed only in that.
BUILDKIT_STAND_IN_COMMENT = "buildkit.exporter.image.v0"
STAND_IN_CREATED_BY = "created by buildkit"


def _history_entry(entry: Any, created: str) -> Any:
    """A history entry with the build's date; BuildKit's stand-in for a base layer
    without history says one thing, whatever BuildKit's cache held."""
    if not isinstance(entry, dict):
        return entry
    out = dict(entry)
    if "created" in out:
        out["created"] = created
    if out.get("comment") == BUILDKIT_STAND_IN_COMMENT and "created_by" in out:
        out["created_by"] = STAND_IN_CREATED_BY
    return out


def base_layer_count(config: dict[str, Any], epoch: int | None = None) -> int:
    """How many leading layers of a BuildKit-built image came from its base image.

    BuildKit marks the history entries of the steps it ran with the comment
    `buildkit.dockerfile.v0` and, given SOURCE_DATE_EPOCH, dates them at the epoch.
    Entries copied from the base image's config keep their own comment and date.
    The base's layers are those before the first entry of this build that made a
    layer. (A base built by BuildKit with the same epoch looks like this build: its
    layers are then normalised too, which leaves them as they are when it was
    normalised with the same options. The lock's pinned base diff_ids are the exact
    answer once it records them.)
    """
    history = config.get("history")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    layers = len(diff_ids) if isinstance(diff_ids, list) else 0
    if not isinstance(history, list):
        return 0
    created = rfc3339(epoch) if epoch is not None else None
    count = 0
    for entry in history:
        if not isinstance(entry, dict) or entry.get("empty_layer"):
            continue
        ours = entry.get("comment") == BUILDKIT_HISTORY_COMMENT and (
            created is None or entry.get("created") == created
        )
        if ours:
            break
        count += 1
    return min(count, layers)
