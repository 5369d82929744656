"""in-toto Statements: SLSA provenance v1 for a build, and a "reproduced" claim.

Both are SLSA provenance v1 predicates (`https://slsa.dev/provenance/v1`) on the
per-platform manifest digest, told apart by their `buildType`:

- `BUILD_TYPE`: how repro built the image. `externalParameters` hold the recipe
  (source URI and commit where known, a digest of the recipe directory), the lock's
  digest, SOURCE_DATE_EPOCH and the BuildKit version and exporter options;
  `resolvedDependencies` list every pin of the lock.
- `REPRODUCED_TYPE`: in the shape of OSS Rebuild's ArtifactEquivalence@v0.1, a
  verifier or rebuilder saying it built the same image again: the builds compared
  (`resolvedDependencies`: each build's digest), each builder's identity, the
  variations applied, the verdict, the diff report's digest and the normalisation
  rules that changed anything (`byproducts`).

The field layout of each is documented in docs/attestations.md. Nothing here reads
secrets: build secrets are never parameters of a statement.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import socket
import subprocess
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import __version__
from repro.errors import InputError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SPDX_DOCUMENT = "https://spdx.dev/Document"
# repro has no web home yet: `.invalid` (RFC 2606) is never resolvable, so these are
# names, not links. docs/attestations.md documents them; one constant to move.
TYPE_BASE = "https://repro.invalid/attestations"
BUILD_TYPE = f"{TYPE_BASE}/build@v1"
REPRODUCED_TYPE = f"{TYPE_BASE}/reproduced@v1"
BUILDER_ENV = "REPRO_BUILDER_ID"


def default_builder_id(environ: Mapping[str, str] | None = None) -> str:
    """Who is building: $REPRO_BUILDER_ID, else `repro://user@host`."""
    env = os.environ if environ is None else environ
    if env.get(BUILDER_ENV):
        return env[BUILDER_ENV]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"repro://{user}@{socket.gethostname()}"


def subject(name: str, digest: str) -> dict[str, Any]:
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or len(hex_part) != 64:
        raise InputError(f"subject digest {digest!r} is not a sha256 digest")
    return {"name": name, "digest": {"sha256": hex_part}}


def statement(
    subjects: Sequence[Mapping[str, Any]], predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [dict(s) for s in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def _hex(digest: str) -> str:
    return digest.partition(":")[2] if ":" in digest else digest


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def package_purl(kind: str, pin: Mapping[str, Any]) -> str:
    """`pkg:deb/debian/NAME@VERSION?arch=…` or `pkg:apk/alpine/NAME@VERSION?arch=…`."""
    namespace = {"apt": "deb/debian", "apk": "apk/alpine"}.get(kind)
    if namespace is None:
        raise InputError(f"package kind {kind!r}: expected apt or apk")
    purl = f"pkg:{namespace}/{_quote(str(pin['name']))}@{_quote(str(pin['version']))}"
    if pin.get("architecture"):
        purl += f"?arch={_quote(str(pin['architecture']))}"
    return purl


def safe_url(url: str) -> str:
    """A URL with no user name, password, query or fragment: those may carry tokens."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


# --- the lock as dependencies ---------------------------------------------------------


def lock_digest(lock_file: str | os.PathLike[str]) -> str:
    """sha256 of the lock file's bytes: what the policy compares across builders."""
    try:
        data = Path(lock_file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the lock: {exc.strerror}", file=str(lock_file)) from None
    return "sha256:" + hashlib.sha256(data).hexdigest()


def resolved_dependencies(lock: Mapping[str, Any], recipe: Any = None) -> list[dict[str, Any]]:
    """Every pin of a lock as a SLSA ResourceDescriptor: bases (each platform's
    manifest), packages (purl + checksum), downloads (sha256) and git commits."""
    out: list[dict[str, Any]] = []
    for ref, entry in sorted((lock.get("bases") or {}).items()):
        image = entry.get("image") or ref
        platforms = entry.get("platforms") or {}
        for platform, digest in sorted(platforms.items()) or [("", entry["digest"])]:
            item: dict[str, Any] = {
                "name": ref,
                "uri": f"oci://{image}@{digest}",
                "digest": {"sha256": _hex(digest)},
                "annotations": {"index": entry.get("digest", ""), "platform": platform},
            }
            out.append(item)
    for kind, sets in sorted((lock.get("packages") or {}).items()):
        for set_name, entry in sorted(sets.items()):
            for pin in entry.get("package", []):
                checksums: dict[str, str] = {}
                if pin.get("sha256"):
                    checksums["sha256"] = _hex(str(pin["sha256"]))
                if pin.get("checksum"):  # apk: Q1 + base64 sha1 of the control segment
                    checksums["apkChecksum"] = str(pin["checksum"])
                out.append(
                    {
                        "name": f"{pin['name']} {pin['version']}",
                        "uri": package_purl(kind, pin),
                        "digest": checksums,
                        "annotations": {"set": f"{kind}.{set_name}"},
                    }
                )
    urls = {d.name: d for d in getattr(recipe, "downloads", ())}
    for name, entry in sorted((lock.get("downloads") or {}).items()):
        item = {"name": f"download {name}", "digest": {"sha256": _hex(str(entry["sha256"]))}}
        declared = urls.get(name)
        if declared is not None:
            item["uri"] = (
                safe_url(declared.url)
                if declared.url
                else f"mirror:{declared.mirror}/" + declared.path.lstrip("/")
            )
        out.append(item)
    gits = {g.name: g for g in getattr(recipe, "git", ())}
    for name, entry in sorted((lock.get("git") or {}).items()):
        item = {"name": f"git {name}", "digest": {"gitCommit": str(entry["commit"])}}
        declared_git = gits.get(name)
        if declared_git is not None:
            item["uri"] = f"git+{safe_url(declared_git.url)}@{entry.get('ref', '')}"
        out.append(item)
    return out


# --- the recipe's source --------------------------------------------------------------


def tree_digest(directory: str | os.PathLike[str]) -> str:
    """A digest of a directory's files: paths, executable bits, contents, link targets.

    The same tree at another path gives the same digest; `repro rebuild --source`
    checks a checkout against it.
    """
    root = Path(directory)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                h.update(b"L\0%s\0%s\0" % (rel.encode(), os.readlink(path).encode()))
                continue
            executable = os.access(path, os.X_OK)
            file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
            h.update(b"F\0%s\0%d\0%s\0" % (rel.encode(), executable, file_hash.encode()))
    return "sha256:" + h.hexdigest()


def _git(directory: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def recipe_source(recipe: Any) -> dict[str, Any]:
    """Where the recipe came from: its name, a digest of its directory, and the git
    repository and commit holding it when there is one (with `dirty` when the recipe
    differs from that commit)."""
    directory = Path(recipe.directory)
    source: dict[str, Any] = {
        "name": recipe.name,
        "digest": {"sha256": _hex(tree_digest(directory))},
    }
    commit = _git(directory, "rev-parse", "HEAD")
    if commit:
        top = _git(directory, "rev-parse", "--show-toplevel")
        remote = _git(directory, "remote", "get-url", "origin")
        where = os.path.relpath(directory.resolve(), top) if top else ""
        if remote:
            source["uri"] = f"git+{safe_url(remote)}"
        source["commit"] = commit
        source["path"] = where
        source["dirty"] = bool(_git(directory, "status", "--porcelain", "--", "."))
    return source


# --- build provenance -----------------------------------------------------------------


@dataclass
class BuildFacts:
    """What the build result knows beyond the lock. `exporter_options` is None until
    the build records the options it sent (publish fills it from the build result)."""

    buildkit_version: str = ""
    exporter_options: Mapping[str, str] | None = None
    builder_id: str = ""
    started: str = ""  # RFC 3339, optional: provenance stays byte-stable without it
    finished: str = ""

    @classmethod
    def from_result(cls, result: Any, builder_id: str = "") -> BuildFacts:
        """From a repro.build.RecipeResult: the BuildKit version it reported and the
        OCI exporter options sent (None for a [rootfs] recipe, built without BuildKit)."""
        options = getattr(result, "exporter", None)
        return cls(
            buildkit_version=str(getattr(result, "buildkit_version", "") or ""),
            exporter_options=dict(options) if options is not None else None,
            builder_id=builder_id,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None, builder_id: str = "") -> BuildFacts:
        """From the build record `repro build` left (repro.records), as publish has it."""
        record = record or {}
        options = record.get("exporter")
        return cls(
            buildkit_version=str(record.get("buildkit_version") or ""),
            exporter_options=dict(options) if isinstance(options, Mapping) else None,
            builder_id=builder_id,
        )


def provenance(
    image: str,
    manifest_digest: str,
    recipe: Any,
    lock: Mapping[str, Any],
    lock_file_digest: str,
    facts: BuildFacts,
) -> dict[str, Any]:
    """SLSA provenance v1 for `image@manifest_digest` built from `recipe` and `lock`."""
    external: dict[str, Any] = {
        "recipe": recipe_source(recipe),
        "lock": {"digest": {"sha256": _hex(lock_file_digest)}, "inputs": lock.get("inputs")},
        "sourceDateEpoch": lock.get("source_date_epoch"),
        "buildkit": {
            "version": facts.buildkit_version,
            "exporterOptions": (
                dict(sorted(facts.exporter_options.items()))
                if facts.exporter_options is not None
                else None
            ),
        },
    }
    if getattr(recipe, "target", ""):
        external["target"] = recipe.target
    if getattr(recipe, "platforms", ()):
        external["platforms"] = list(recipe.platforms)
    args = getattr(recipe, "args", {})
    if args:
        external["buildArgs"] = dict(sorted(args.items()))
    metadata: dict[str, Any] = {}
    if facts.started:
        metadata["startedOn"] = facts.started
    if facts.finished:
        metadata["finishedOn"] = facts.finished
    run_details: dict[str, Any] = {
        "builder": {
            "id": facts.builder_id or default_builder_id(),
            "version": {"repro": __version__, "buildkit": facts.buildkit_version},
        }
    }
    if metadata:
        run_details["metadata"] = metadata
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "resolvedDependencies": resolved_dependencies(lock, recipe),
        },
        "runDetails": run_details,
    }
    return statement([subject(image, manifest_digest)], SLSA_PROVENANCE_V1, predicate)


# --- the reproduced claim -------------------------------------------------------------


@dataclass
class Comparison:
    """What a verifier or rebuilder compared, taken from repro.verify's result (or a
    rebuild's): two builds, who built each, how the second was varied, the verdict."""

    verdict: str  # identical | same-content | different
    builds: list[dict[str, Any]]  # {"label", "digest", "builder", "builder_version"}
    variations: list[str] = field(default_factory=list)
    report_digest: str = ""  # sha256 of the diff report's JSON, when there was one
    normalisation: list[dict[str, Any]] = field(default_factory=list)  # rules that changed
    platforms: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_verify(cls, result: Any) -> Comparison:
        """From a repro.verify.VerifyResult."""
        builds = []
        rules: dict[tuple[str, str], int] = {}
        for side in result.sides:
            r = side.result
            builds.append(
                {
                    "label": side.label,
                    "digest": r.digest if r else "",
                    "builder": (r.builder if r else side.builder) or "",
                    "builder_version": r.builder_version if r else "",
                    "cache": bool(getattr(side, "cache", False)),
                    "reused": bool(getattr(side, "reused", False)),
                }
            )
            for change in ((r.normalised or {}).get("changes") or []) if r else []:
                key = (str(change.get("rule", "")), str(change.get("path", "")))
                rules[key] = rules.get(key, 0) + 1
        report_digest = ""
        if result.report is not None:
            from repro.diff import present

            report_digest = (
                "sha256:" + hashlib.sha256(present.to_json(result.report).encode()).hexdigest()
            )
        return cls(
            verdict=result.verdict,
            builds=builds,
            variations=list(result.variations),
            report_digest=report_digest,
            normalisation=[
                {"rule": rule, "path": path} for (rule, path), _n in sorted(rules.items())
            ],
            platforms=[p.to_json() for p in result.platforms],
        )


def reproduced(
    image: str,
    manifest_digest: str,
    recipe: Any,
    lock_file_digest: str,
    comparison: Comparison,
    *,
    builder_id: str = "",
) -> dict[str, Any]:
    """A signed-to-be claim that `image@manifest_digest` was built again and compared."""
    dependencies = [
        {
            "name": f"build {b['label']}",
            "digest": {"sha256": _hex(b["digest"])},
            "annotations": {
                "builder": b["builder"],
                "builderVersion": b["builder_version"],
                # Whether BuildKit's cache could serve this build (the other one is
                # always from scratch).
                "cache": bool(b.get("cache", False)),
                # Whether this build is the image an earlier `repro build` made from
                # the same inputs (repro.inputs), taken instead of building again.
                "reused": bool(b.get("reused", False)),
            },
        }
        for b in comparison.builds
        if b.get("digest")
    ]
    byproducts: list[dict[str, Any]] = [
        {
            "name": "verdict",
            "content": base64.b64encode(comparison.verdict.encode()).decode(),
            "annotations": {"level": comparison.verdict},
        }
    ]
    if comparison.report_digest:
        byproducts.append(
            {
                "name": "diff-report",
                "mediaType": "application/json",
                "digest": {"sha256": _hex(comparison.report_digest)},
            }
        )
    if comparison.normalisation:
        byproducts.append(
            {
                "name": "normalisation",
                "content": base64.b64encode(b"rules that changed the image").decode(),
                "annotations": {"changes": comparison.normalisation},
            }
        )
    predicate = {
        "buildDefinition": {
            "buildType": REPRODUCED_TYPE,
            "externalParameters": {
                "target": {"name": image, "digest": {"sha256": _hex(manifest_digest)}},
                "recipe": recipe_source(recipe) if recipe is not None else None,
                "lock": {"digest": {"sha256": _hex(lock_file_digest)}},
                "variations": list(comparison.variations),
                "platforms": comparison.platforms,
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {
                "id": builder_id or default_builder_id(),
                "version": {"repro": __version__},
            },
            "byproducts": byproducts,
        },
    }
    return statement([subject(image, manifest_digest)], SLSA_PROVENANCE_V1, predicate)


def statement_kind(doc: Mapping[str, Any]) -> str:
    """ "provenance", "reproduced", "sbom" or "other" for a statement repro reads."""
    predicate_type = doc.get("predicateType")
    if predicate_type == SPDX_DOCUMENT:
        return "sbom"
    if predicate_type != SLSA_PROVENANCE_V1:
        return "other"
    predicate = doc.get("predicate")
    build_type = (
        predicate.get("buildDefinition", {}).get("buildType")
        if isinstance(predicate, Mapping)
        else None
    )
    return {BUILD_TYPE: "provenance", REPRODUCED_TYPE: "reproduced"}.get(str(build_type), "other")


def iter_subject_digests(doc: Mapping[str, Any]) -> Iterable[str]:
    for item in doc.get("subject") or []:
        if isinstance(item, Mapping) and isinstance(item.get("digest"), Mapping):
            value = item["digest"].get("sha256")
            if isinstance(value, str):
                yield "sha256:" + value
