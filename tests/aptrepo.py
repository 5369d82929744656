"""A local apt repository (copy://) holding exactly the .debs a lock pins, from repro's cache.

mmdebstrap is pointed at it to install the very same packages repro unpacks, without
the network: the mmdebstrap comparison test and bench/bench_rootfs.py use it.

    repo = make_repo(recipe, lock, tmp / "repo")   # -> Repo(path, suite, names)
    mmdebstrap ... repo.source()   # "deb [trusted=yes] copy://DIR SUITE main"

The Packages stanzas are the archive's own (so Priority, Essential, Provides and the
relations are what apt would see), with Filename pointing into the local pool; the
.debs are hard links (or copies) of the cached files, fetched if missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Repo:
    path: Path
    suite: str
    names: list[str]  # the pinned package names

    def source(self) -> str:
        return f"deb [trusted=yes] copy://{self.path} {self.suite} main"


def make_repo(recipe: Any, lock: dict[str, Any], dest: Path, suite: str = "bookworm") -> Repo:
    from repro.config import load_repo_config
    from repro.packages.download import mirrors_for_suites
    from repro.packages.fetch import load_deb_index_from
    from repro.rootfs._build import fetch_packages
    from repro.vault import Source

    s = next(p for p in recipe.packages if p.kind == "apt" and p.name == recipe.rootfs.packages)
    pins = lock["packages"]["apt"][s.name]["package"]
    repo = load_repo_config(recipe.directory.parent)
    mirrors = mirrors_for_suites(s.mirror, s.suites, s.components, repo=repo)
    paths, _ = fetch_packages(pins, Source("apt", mirrors))
    index = load_deb_index_from(mirrors, s.components, s.architecture)
    pool = dest / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for pin, path in zip(pins, paths, strict=True):
        same = [p for p in index.versions(pin["name"]) if p.version == pin["version"]]
        package = next((p for p in same if p.origin == pin.get("origin")), same[0])
        name = Path(pin["filename"]).name
        target = pool / name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        text = package._text[package._start : package._end].rstrip("\n")  # noqa: SLF001
        lines = [
            f"Filename: pool/{name}" if line.startswith("Filename: ") else line
            for line in text.split("\n")
        ]
        stanzas.append("\n".join(lines) + "\n")
    packages = "\n".join(stanzas).encode()
    index_dir = dest / "dists" / suite / "main" / "binary-amd64"
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / "Packages").write_bytes(packages)
    (dest / "dists" / suite / "Release").write_text(
        f"Origin: repro-test\nSuite: {suite}\nCodename: {suite}\n"
        "Date: Wed, 01 Jan 2025 00:00:00 UTC\nArchitectures: amd64\nComponents: main\n"
        f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} "
        "main/binary-amd64/Packages\n"
    )
    return Repo(dest, suite, [p["name"] for p in pins])
