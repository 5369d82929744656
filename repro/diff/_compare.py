"""Comparing two images level by level: index, platforms, manifest, config, layers, paths.

The walk stops descending as soon as two things are equal by digest: identical
manifests are not opened, layers with the same diffID are not streamed. For a pair
of differing layers both tars are streamed (in parallel threads) into path tables;
only the paths whose content differs are extracted and given to diffoscope.
"""

from __future__ import annotations

import difflib
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from repro import oci
from repro.diff import _diffoscope
from repro.diff._causes import (
    ANNOTATIONS,
    COMPRESSION,
    CONFIG_CREATED,
    CONTENT,
    FILE_ORDER,
    Hints,
    PathChange,
    classify,
)
from repro.diff._layers import (
    Extracted,
    KeepWindow,
    LayerTable,
    Limits,
    PathDelta,
    compare_tables,
    extract_at_offsets,
    extract_kept,
    extract_paths,
    pair_layers,
    read_table,
)
from repro.diff._sources import ImageSource
from repro.diff._tree import (
    DIFFERENT,
    IDENTICAL,
    SAME_CONTENT,
    Difference,
    DiffReport,
    Finding,
    PlatformVerdict,
    Verdict,
)
from repro.errors import DigestMismatch, InputError

MAX_ORDER_LISTED = 20


@dataclass
class Options:
    limits: Limits = field(default_factory=Limits)
    diffoscope: bool = True
    diffoscope_timeout: float = _diffoscope.DEFAULT_TIMEOUT
    hints: Hints = field(default_factory=Hints)
    platform: str | None = None
    # Read the layers the comparison skips (equal digests) to check their bytes.
    # `repro verify` turns it off: both images were checked as BuildKit sent them.
    verify_blobs: bool = True


def _pretty(doc: Any) -> list[str]:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").splitlines(keepends=True)


def json_changes(a: Any, b: Any, where: str = "") -> list[str]:
    """JSON paths (like `config.Env[2]`) whose values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out.extend(json_changes(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out.extend(json_changes(x, y, f"{where}[{i}]"))
        return out
    return [] if a == b else [where or "(document)"]


def json_difference(kind: str, label1: str, label2: str, a: Any, b: Any) -> Difference:
    diff = "".join(difflib.unified_diff(_pretty(a), _pretty(b), label1, label2, n=2))
    fields = json_changes(a, b)
    return Difference(
        kind=kind,
        source1=label1,
        source2=label2,
        unified_diff=diff,
        changes=fields,
        comment="differs at " + ", ".join(fields[:10]) + (" ..." if len(fields) > 10 else ""),
    )


def _is_time_field(path: str) -> bool:
    return path == "created" or (path.startswith("history[") and path.endswith(".created"))


def _diff_ids(image: oci.Image) -> list[str]:
    rootfs = image.config.get("rootfs") or {}
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if (
        isinstance(ids, list)
        and len(ids) == len(image.layers)
        and all(isinstance(i, str) for i in ids)
    ):
        return list(ids)
    return [d.digest for d in image.layers]


def _read_tables(
    src1: ImageSource, l1: oci.Descriptor, src2: ImageSource, l2: oci.Descriptor, limits: Limits
) -> tuple[LayerTable, LayerTable]:
    tables = (LayerTable(), LayerTable())
    window = KeepWindow(tables)

    def table(src: ImageSource, layer: oci.Descriptor, side: int) -> LayerTable:
        with src.open_blob(layer) as blob:
            return read_table(
                blob,
                f"layer {layer.digest} of {src.label}",
                limits,
                layer.size,
                table=tables[side],
                window=window,
                side=side,
            )

    with ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(table, src1, l1, 0)
        f2 = pool.submit(table, src2, l2, 1)
        return f1.result(), f2.result()


def _extract_both(
    src1: ImageSource,
    l1: oci.Descriptor,
    t1: LayerTable,
    src2: ImageSource,
    l2: oci.Descriptor,
    t2: LayerTable,
    wanted: set[str],
    tmp: Path,
    limits: Limits,
) -> tuple[dict[str, Extracted], dict[str, Extracted]]:
    def extract(
        src: ImageSource, layer: oci.Descriptor, table: LayerTable, root: Path
    ) -> dict[str, Extracted]:
        root.mkdir()
        label = f"layer {layer.digest} of {src.label}"
        if not table.compressed:
            # Uncompressed and already digest-checked: seek straight to the files.
            entries = [table.entries[p] for p in wanted]
            blob = src.layout.blob_path(layer.digest)
            return extract_at_offsets(blob, label, entries, root, limits)
        if wanted <= table.kept.keys():
            # The differing files were kept from the first (checked) pass: no second
            # decompression.
            return extract_kept(table, label, wanted, root, limits)
        with src.open_blob(layer) as blob_stream:
            return extract_paths(blob_stream, label, wanted, root, limits)

    with ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(extract, src1, l1, t1, tmp / "a")
        f2 = pool.submit(extract, src2, l2, t2, tmp / "b")
        return f1.result(), f2.result()


def _path_node(
    delta: PathDelta, x1: Extracted | None, x2: Extracted | None, hints: Hints
) -> Difference:
    e1, e2 = delta.entry1, delta.entry2
    change = PathChange(
        path=delta.path,
        changes=delta.changes,
        mode1=e1.mode if e1 else None,
        mode2=e2.mode if e2 else None,
        head1=x1.head if x1 else b"",
        head2=x2.head if x2 else b"",
        hints=hints,
        type1=e1.type if e1 else "",
        type2=e2.type if e2 else "",
        link1=e1.linkname if e1 else "",
        link2=e2.linkname if e2 else "",
        size1=e1.size if e1 else 0,
        size2=e2.size if e2 else 0,
        file1=x1.file if x1 and x2 and x2.file else None,
        file2=x2.file if x1 and x2 and x1.file else None,
    )
    comment_parts = []
    if e1 and e2:
        for what in delta.changes:
            if what == "mode":
                comment_parts.append(f"mode {e1.mode:04o} -> {e2.mode:04o}")
            elif what == "owner":
                comment_parts.append(f"owner {e1.uid}:{e1.gid} -> {e2.uid}:{e2.gid}")
            elif what == "mtime":
                comment_parts.append(f"mtime {e1.mtime:.0f} -> {e2.mtime:.0f}")
            elif what == "link":
                comment_parts.append(f"link {e1.linkname!r} -> {e2.linkname!r}")
            elif what == "content":
                comment_parts.append(f"content {e1.size}B -> {e2.size}B")
            else:
                comment_parts.append(what)
    elif e1:
        comment_parts.append(f"only in the first image ({e1.describe()})")
    elif e2:
        comment_parts.append(f"only in the second image ({e2.describe()})")
    for x in (x1, x2):
        if x is not None and x.skipped:
            comment_parts.append(f"not given to diffoscope: {x.skipped}")
            break
    return Difference(
        kind="path",
        source1=f"/{delta.path}" if e1 else "",
        source2=f"/{delta.path}" if e2 else "",
        path="/" + delta.path,
        changes=list(delta.changes),
        comment="; ".join(comment_parts),
        causes=classify(change),
    )


def compare_layers(
    src1: ImageSource,
    l1: oci.Descriptor,
    src2: ImageSource,
    l2: oci.Descriptor,
    label: str,
    options: Options,
) -> Difference:
    t1, t2 = _read_tables(src1, l1, src2, l2, options.limits)
    deltas, moved = compare_tables(t1, t2)
    node = Difference(kind="layer", source1=f"{label} {l1.digest}", source2=f"{label} {l2.digest}")
    notes = []
    for side, table in (("first", t1), ("second", t2)):
        if table.unsafe:
            notes.append(
                f"the {side} layer has {len(table.unsafe)} unsafe names "
                f"(absolute or with ..), e.g. {table.unsafe[0]!r}"
            )
        if table.duplicates:
            notes.append(f"the {side} layer repeats {len(table.duplicates)} paths")
    node.comment = "; ".join(notes)
    wanted = {
        d.path
        for d in deltas
        if CONTENT in d.changes
        and d.entry1
        and d.entry2
        and d.entry1.type == d.entry2.type == "file"
    }
    x1: dict[str, Extracted] = {}
    x2: dict[str, Extracted] = {}
    with tempfile.TemporaryDirectory(prefix="repro-diff-files-") as tmp_name:
        tmp = Path(tmp_name)
        views: dict[str, Difference] = {}
        error = ""
        if wanted:
            x1, x2 = _extract_both(src1, l1, t1, src2, l2, t2, wanted, tmp, options.limits)
            files1 = {
                p: x.file for p, x in x1.items() if x.file is not None and x2.get(p) and x2[p].file
            }
            if options.diffoscope and files1:
                views, error = _diffoscope.run(
                    tmp / "a", tmp / "b", files1, timeout=options.diffoscope_timeout
                )
        for delta in deltas:
            child = _path_node(delta, x1.get(delta.path), x2.get(delta.path), options.hints)
            if delta.path in views:
                child.details.append(views[delta.path])
            elif delta.path in wanted and error:
                child.comment += f"; {error}"
            node.details.append(child)
    if moved:
        listed = ", ".join("/" + p for p in moved[:MAX_ORDER_LISTED])
        more = f" and {len(moved) - MAX_ORDER_LISTED} more" if len(moved) > MAX_ORDER_LISTED else ""
        node.details.append(
            Difference(
                kind="order",
                source1=label,
                source2=label,
                comment=f"{len(moved)} entries moved in the tar: {listed}{more}",
                causes=[FILE_ORDER],
                changes=["order"],
            )
        )
    if not node.details and not node.comment:
        node.comment = "the tars differ only in bytes that carry no file data (headers, padding)"
    return node


def check_present(src: ImageSource, image: oci.Image, key: str) -> None:
    """Every layer blob is in the layout at its declared size (a source must say when
    it is incomplete; a cheap stat, the bytes are checked when read)."""
    for i, layer in enumerate(image.layers):
        try:
            size = src.layout.blob_path(layer.digest).stat().st_size
        except FileNotFoundError:
            raise InputError(
                f"{src.label}: layer {i} of {key} ({layer.digest}) is missing from the layout"
            ) from None
        except OSError as e:
            raise InputError(f"{src.label}: cannot read layer {i} of {key}: {e}") from None
        if size != layer.size:
            raise DigestMismatch(
                f"{src.label}: layer {i} of {key} ({layer.digest}) has {size} bytes, "
                f"the manifest says {layer.size}"
            )


def verify_layer(src: ImageSource, layer: oci.Descriptor, diff_id: str | None = None) -> None:
    """Read a layer the comparison would otherwise skip, so that equal digests are
    never taken on trust: its bytes against its digest and, with `diff_id`, its
    uncompressed bytes against the config's diffID."""
    import hashlib

    with src.open_blob(layer) as blob:
        if diff_id is None:
            while blob.read(1 << 20):
                pass
        else:
            what = f"{src.label}: layer {layer.digest}"
            stream, raw, _ = oci.uncompressed(blob, what)
            h = hashlib.sha256()
            try:
                while chunk := stream.read(1 << 20):
                    h.update(chunk)
            except OSError as e:
                raise InputError(f"{what} is not readable: {e}") from None
            while raw.read(1 << 20):
                pass
            if "sha256:" + h.hexdigest() != diff_id:
                raise InputError(
                    f"{src.label}: layer {layer.digest} does not hold the content its config "
                    f"names ({diff_id})"
                )
        cast(Any, blob).verify_eof()


def compare_platform(
    key: str, src1: ImageSource, i1: oci.Image, src2: ImageSource, i2: oci.Image, options: Options
) -> tuple[PlatformVerdict, Difference | None]:
    d1, d2 = i1.descriptor.digest, i2.descriptor.digest
    check_present(src1, i1, key)
    check_present(src2, i2, key)
    if d1 == d2:
        if options.verify_blobs:
            for src, image in ((src1, i1), (src2, i2)):
                for layer in image.layers:
                    verify_layer(src, layer)
        return PlatformVerdict(key, IDENTICAL, d1, d2), None
    node = Difference(kind="platform", source1=f"{key} {d1}", source2=f"{key} {d2}")
    a1 = i1.manifest.get("annotations") or {}
    a2 = i2.manifest.get("annotations") or {}
    if a1 != a2:
        child = json_difference("manifest", "manifest annotations", "manifest annotations", a1, a2)
        child.causes.append(ANNOTATIONS)
        node.details.append(child)
    if i1.config_descriptor.digest != i2.config_descriptor.digest:
        child = json_difference(
            "config",
            f"config {i1.config_descriptor.digest}",
            f"config {i2.config_descriptor.digest}",
            i1.config,
            i2.config,
        )
        relevant = [f for f in child.changes if not f.startswith("rootfs.diff_ids")]
        if relevant and all(_is_time_field(f) for f in relevant):
            child.causes.append(CONFIG_CREATED)
        node.details.append(child)
    ids1, ids2 = _diff_ids(i1), _diff_ids(i2)
    differing: list[int] = []
    for n1, n2 in pair_layers(ids1, ids2):
        if n1 is None or n2 is None:
            which = n1 if n1 is not None else n2
            assert which is not None
            layer = (i1 if n1 is not None else i2).layers[which]
            side = "first" if n1 is not None else "second"
            node.details.append(
                Difference(
                    kind="layer",
                    source1=f"layer {n1}" if n1 is not None else "",
                    source2=f"layer {n2}" if n2 is not None else "",
                    comment=f"layer {which} ({layer.digest}) is only in the {side} image",
                    layer=which,
                )
            )
            differing.append(which)
            continue
        l1, l2 = i1.layers[n1], i2.layers[n2]
        if l1.digest == l2.digest:
            if options.verify_blobs:
                verify_layer(src1, l1)
                verify_layer(src2, l2)
            continue
        label = f"layer {n1}" if n1 == n2 else f"layer {n1}/{n2}"
        if ids1[n1] == ids2[n2]:
            verify_layer(src1, l1, ids1[n1])
            verify_layer(src2, l2, ids2[n2])
            node.details.append(
                Difference(
                    kind="layer",
                    source1=f"{label} {l1.digest} ({l1.media_type})",
                    source2=f"{label} {l2.digest} ({l2.media_type})",
                    comment="same content (diffID), different compressed bytes",
                    causes=[COMPRESSION],
                    layer=n2,
                )
            )
            continue
        differing.append(n2)
        layer_node = compare_layers(src1, l1, src2, l2, label, options)
        layer_node.layer = n2
        node.details.append(layer_node)
    verdict = SAME_CONTENT if ids1 == ids2 else DIFFERENT
    if not node.details:
        node.comment = "the manifests differ in fields repro does not compare"
        node.unified_diff = "".join(
            difflib.unified_diff(_pretty(i1.manifest), _pretty(i2.manifest), "manifest", "manifest")
        )
    return PlatformVerdict(key, verdict, d1, d2, differing), node


def findings_of(tree: Difference) -> list[Finding]:
    out: list[Finding] = []
    for platform in tree.details:
        if platform.kind != "platform":
            continue
        key = platform.source1.split(" ")[0] or platform.source2.split(" ")[0]
        for layer in platform.details:
            if layer.kind != "layer":
                continue
            index = layer.layer if layer.layer is not None else -1
            for node in layer.details:
                if node.kind == "path" and node.path:
                    out.append(Finding(key, index, node.path, node.changes, node.causes))
    return out


def compare(src1: ImageSource, src2: ImageSource, options: Options | None = None) -> DiffReport:
    """Compare two images and return the difference tree (None when identical)."""
    options = options or Options()
    top1, top2 = src1.top.digest, src2.top.digest
    keys1, keys2 = set(src1.images), set(src2.images)
    if options.platform:
        keys1 = {k for k in keys1 if _platform_matches(k, options.platform)}
        keys2 = {k for k in keys2 if _platform_matches(k, options.platform)}
    verdicts: list[PlatformVerdict] = []
    root = Difference(kind="image", source1=f"{src1.label} {top1}", source2=f"{src2.label} {top2}")
    if options.platform and not (keys1 or keys2):
        raise InputError(
            f"--platform {options.platform}: neither image has it (they have "
            f"{', '.join(sorted(set(src1.images) | set(src2.images)))})"
        )
    if top1 == top2:
        verdicts = []
        for k in sorted(keys1):
            for src in (src1, src2):
                check_present(src, src.images[k], k)
                for layer in src.images[k].layers if options.verify_blobs else ():
                    verify_layer(src, layer)
            digest = src1.images[k].descriptor.digest
            verdicts.append(PlatformVerdict(k, IDENTICAL, digest, digest))
        return DiffReport(src1.label, src2.label, top1, top2, verdicts, None)
    if src1.index_annotations != src2.index_annotations:
        child = json_difference(
            "index",
            "index.json annotations",
            "index.json annotations",
            src1.index_annotations,
            src2.index_annotations,
        )
        child.causes.append(ANNOTATIONS)
        root.details.append(child)
    for key in sorted(keys1 | keys2):
        if key not in keys2:
            verdicts.append(
                PlatformVerdict(
                    key, Verdict.ONLY_IN_FIRST, src1.images[key].descriptor.digest, None
                )
            )
            root.details.append(
                Difference("platform", key, "", comment=f"{key} is only in the first image")
            )
            continue
        if key not in keys1:
            verdicts.append(
                PlatformVerdict(
                    key, Verdict.ONLY_IN_SECOND, None, src2.images[key].descriptor.digest
                )
            )
            root.details.append(
                Difference("platform", "", key, comment=f"{key} is only in the second image")
            )
            continue
        verdict, node = compare_platform(
            key, src1, src1.images[key], src2, src2.images[key], options
        )
        verdicts.append(verdict)
        if node is not None:
            root.details.append(node)
    if not keys1 & keys2:
        root.comment = "the images have no platform in common"
    if not root.details:
        # Same images under a different top-level wrapper (index vs manifest, annotations).
        root.comment = "the top-level descriptors differ, every platform's image is identical"
    report = DiffReport(src1.label, src2.label, top1, top2, verdicts, root)
    report.findings = findings_of(root)
    return report


def _platform_matches(key: str, wanted: str) -> bool:
    return key == wanted or key.startswith(wanted + "/")
