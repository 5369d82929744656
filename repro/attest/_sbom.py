"""An SPDX 2.3 SBOM made from the lock, and its check against the image's packages.

The SBOM lists what the lock pins: each base image (by its platform manifest), each
package with version, checksum and purl (`pkg:deb/debian/…`, `pkg:apk/alpine/…`,
the identifiers grype and trivy match advisories on), each download and git input.
A base that is another recipe of the repository contributes the packages of its own
lock (recursively), since they are in the image too; a base from elsewhere
contributes the packages of its package database when a registry client is given to
read it (without checksums: dpkg's database does not keep them).

`check_sbom` compares the SBOM's packages with the package database of the image
(`repro.packages.installed`): the SBOM is right only if both hold exactly the same
name/version pairs.

Every field is derived from the lock and recipe, so the document is byte-stable:
`created` is SOURCE_DATE_EPOCH and the namespace is derived from the subject digest.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from repro import __version__
from repro.attest._statements import (
    SPDX_DOCUMENT,
    _hex,
    package_purl,
    safe_url,
    statement,
    subject,
)

_SPDX_ID_BAD = re.compile(r"[^A-Za-z0-9.-]+")


def _spdx_id(*parts: str) -> str:
    return "SPDXRef-" + _SPDX_ID_BAD.sub("-", "-".join(parts)).strip("-")


@dataclass
class _Packages:
    """Collects SPDX packages, one per SPDX id (a package in several places once)."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, spdx_id: str, package: dict[str, Any]) -> str:
        if spdx_id not in self.items:
            self.items[spdx_id] = {"SPDXID": spdx_id, **package}
        return spdx_id


def _os_package(kind: str, pin: Mapping[str, Any], origin: str) -> tuple[str, dict[str, Any]]:
    name, version = str(pin["name"]), str(pin["version"])
    arch = str(pin.get("architecture", ""))
    purl = package_purl(kind, pin)
    checksums = []
    if pin.get("sha256"):
        checksums.append({"algorithm": "SHA256", "checksumValue": _hex(str(pin["sha256"]))})
    package: dict[str, Any] = {
        "name": name,
        "versionInfo": version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "supplier": "NOASSERTION",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "LIBRARY",
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }
        ],
        "comment": origin,
    }
    if checksums:
        package["checksums"] = checksums
    if pin.get("checksum"):
        # apk's Q1 checksum (sha1 of the control segment) is not an SPDX algorithm.
        package["comment"] = f"{origin}; apk checksum {pin['checksum']}"
    return _spdx_id(kind, name, version, arch), package


def _lock_packages(lock: Mapping[str, Any], origin: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for kind, sets in sorted((lock.get("packages") or {}).items()):
        for set_name, entry in sorted(sets.items()):
            for pin in entry.get("package", []):
                yield _os_package(kind, pin, f"{origin} package set {kind}.{set_name}")


def _base_locks(recipe: Any, lock: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """The locks of the recipe bases below this one, nearest first."""
    from repro.lock import read_lock
    from repro.recipe import load_recipe

    seen: set[str] = set()
    todo = [(recipe, lock)]
    while todo:
        current, current_lock = todo.pop()
        for ref in sorted(current_lock.get("bases") or {}):
            if not ref.startswith("recipe:") or ref in seen:
                continue
            seen.add(ref)
            name = ref.removeprefix("recipe:")
            try:
                base_recipe = load_recipe(current.directory.parent / name)
            except Exception:  # noqa: BLE001 - a base out of reach: the SBOM says less
                continue
            base_lock = read_lock(base_recipe)
            if base_lock:
                yield ref, base_lock
                todo.append((base_recipe, base_lock))


def sbom_document(
    image: str,
    manifest_digest: str,
    recipe: Any,
    lock: Mapping[str, Any],
    *,
    registry: Any = None,
) -> dict[str, Any]:
    """The SPDX 2.3 JSON document for `image@manifest_digest`."""
    epoch = int(lock.get("source_date_epoch") or 0)
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    root_id = "SPDXRef-image"
    packages = _Packages()
    relationships: list[dict[str, str]] = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": root_id,
        }
    ]

    def contains(child: str) -> None:
        relationships.append(
            {"spdxElementId": root_id, "relationshipType": "CONTAINS", "relatedSpdxElement": child}
        )

    packages.add(
        root_id,
        {
            "name": getattr(recipe, "name", image),
            "versionInfo": manifest_digest,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": _hex(manifest_digest)}],
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": _oci_purl(image, manifest_digest),
                }
            ],
        },
    )
    for ref, entry in sorted((lock.get("bases") or {}).items()):
        name = entry.get("image") or ref
        for platform, digest in sorted((entry.get("platforms") or {}).items()) or [
            ("", entry["digest"])
        ]:
            base_id = packages.add(
                _spdx_id("base", ref, platform),
                {
                    "name": ref,
                    "versionInfo": digest,
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": False,
                    "primaryPackagePurpose": "CONTAINER",
                    "checksums": [{"algorithm": "SHA256", "checksumValue": _hex(digest)}],
                    "externalRefs": [
                        {
                            "referenceCategory": "PACKAGE-MANAGER",
                            "referenceType": "purl",
                            "referenceLocator": _oci_purl(name, digest),
                        }
                    ],
                    "comment": f"base image {ref} ({platform or 'single platform'})",
                },
            )
            relationships.append(
                {
                    "spdxElementId": root_id,
                    "relationshipType": "DESCENDANT_OF",
                    "relatedSpdxElement": base_id,
                }
            )
            if not ref.startswith("recipe:") and registry is not None:
                for spdx_id, package in _registry_base_packages(registry, name, digest, ref):
                    contains(packages.add(spdx_id, package))
    for ref, base_lock in _base_locks(recipe, lock):
        for spdx_id, package in _lock_packages(base_lock, f"base {ref}"):
            contains(packages.add(spdx_id, package))
    for spdx_id, package in _lock_packages(lock, "recipe"):
        contains(packages.add(spdx_id, package))
    urls = {d.name: d for d in getattr(recipe, "downloads", ())}
    for name, entry in sorted((lock.get("downloads") or {}).items()):
        declared = urls.get(name)
        location = "NOASSERTION"
        if declared is not None and declared.url:
            location = safe_url(declared.url)
        contains(
            packages.add(
                _spdx_id("download", name),
                {
                    "name": name,
                    "downloadLocation": location,
                    "filesAnalyzed": False,
                    "primaryPackagePurpose": "FILE",
                    "checksums": [
                        {"algorithm": "SHA256", "checksumValue": _hex(str(entry["sha256"]))}
                    ],
                    "comment": "download pinned by the lock",
                },
            )
        )
    gits = {g.name: g for g in getattr(recipe, "git", ())}
    for name, entry in sorted((lock.get("git") or {}).items()):
        declared_git = gits.get(name)
        location = (
            f"git+{safe_url(declared_git.url)}@{entry['commit']}" if declared_git else "NOASSERTION"
        )
        contains(
            packages.add(
                _spdx_id("git", name),
                {
                    "name": name,
                    "versionInfo": str(entry["commit"]),
                    "downloadLocation": location,
                    "filesAnalyzed": False,
                    "primaryPackagePurpose": "SOURCE",
                    "comment": f"git ref {entry.get('ref', '')} pinned by the lock",
                },
            )
        )
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image}@{manifest_digest}",
        "documentNamespace": (
            f"https://repro.invalid/spdx/{_hex(manifest_digest)}-"
            + hashlib.sha256(repr(sorted(packages.items)).encode()).hexdigest()[:16]
        ),
        "creationInfo": {"created": created, "creators": [f"Tool: repro-{__version__}"]},
        "packages": list(packages.items.values()),
        "relationships": relationships,
    }


def _oci_purl(image: str, digest: str) -> str:
    from repro.registry import parse_reference

    try:
        ref = parse_reference(image)
    except Exception:  # noqa: BLE001 - "recipe:NAME" and the like
        return f"pkg:oci/{image.rsplit('/', 1)[-1].replace(':', '-')}@{digest.replace(':', '%3A')}"
    name = ref.repository.rsplit("/", 1)[-1]
    url = f"{ref.host}/{ref.repository}".replace(":", "%3A")
    return f"pkg:oci/{name}@{digest.replace(':', '%3A')}?repository_url={url}"


def _registry_base_packages(
    registry: Any, image: str, digest: str, ref: str
) -> Iterable[tuple[str, dict[str, Any]]]:
    from repro.packages.installed import from_registry

    db = from_registry(registry, image, digest)
    if db is None:
        return []
    kind = "apt" if db.kind == "dpkg" else "apk"
    return [
        _os_package(
            kind,
            {"name": p.name, "version": p.version, "architecture": p.architecture},
            f"base {ref} package database",
        )
        for p in sorted(db.packages.values(), key=lambda p: p.name)
    ]


def sbom_statement(image: str, manifest_digest: str, document: Mapping[str, Any]) -> dict[str, Any]:
    return statement([subject(image, manifest_digest)], SPDX_DOCUMENT, document)


# --- the check against the image -----------------------------------------------------


@dataclass
class SbomCheck:
    """The SBOM's OS packages against the image's package database."""

    missing: list[str] = field(default_factory=list)  # in the image, not in the SBOM
    extra: list[str] = field(default_factory=list)  # in the SBOM, not in the image
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "missing": self.missing,
            "extra": self.extra,
        }


def sbom_packages(document: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(name, version) of every deb/apk package the SBOM lists."""
    out: set[tuple[str, str]] = set()
    for package in document.get("packages") or []:
        for ref in package.get("externalRefs") or []:
            locator = str(ref.get("referenceLocator", ""))
            if ref.get("referenceType") == "purl" and locator.startswith(("pkg:deb/", "pkg:apk/")):
                out.add((str(package["name"]), str(package.get("versionInfo", ""))))
    return out


def check_sbom(document: Mapping[str, Any], db: Any) -> SbomCheck:
    """Compare the SBOM with an InstalledDb (repro.packages.installed)."""
    listed = sbom_packages(document)
    have = {(p.name, p.version) for p in db.packages.values()} if db is not None else set()
    return SbomCheck(
        missing=[f"{n} {v}" for n, v in sorted(have - listed)],
        extra=[f"{n} {v}" for n, v in sorted(listed - have)],
        checked=len(have),
    )
