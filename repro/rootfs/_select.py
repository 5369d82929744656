"""What `repro lock` resolves for a root filesystem's package set.

A base has nothing installed before it, so the closure is resolved with nothing
assumed (``assume_essential=False``) and the packages a variant adds are made explicit
in the request, after the recipe's own (which so win any choice between them):

- ``essential``: every package whose newest version in the suites is ``Essential: yes``
  (what ``mmdebstrap --variant=essential`` installs; with ``apt`` asked for, what
  ``--variant=apt`` installs);
- ``required``: those and every ``Priority: required`` package (debootstrap's
  ``--variant=minbase``, mmdebstrap's ``required``);
- ``custom``: nothing (mmdebstrap's ``custom``);

plus ``usr-is-merged`` on merged /usr, as debootstrap and mmdebstrap's merged-usr
hook install it: Debian 12's init-system-helpers depends on ``usrmerge |
usr-is-merged``, and ``usrmerge`` would convert a system at install time (with perl),
which a root filesystem built merged has no use for. Among several providers of a
virtual package the one of highest Priority wins, as with apt (``awk`` is mawk).

The suites of a set may live on different mirror paths (Debian's security suite
does): each suite's index comes from the mirror that serves it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from repro.packages import Closure

if TYPE_CHECKING:
    from repro.config import RepoConfig
    from repro.packages.deb import DebIndex
    from repro.recipe import PackageSet


def _newest_says(index: DebIndex, name: str, key: str, value: str) -> bool:
    versions = index.versions(name)
    return bool(versions) and versions[0].get(key).strip().lower() == value


def rootfs_request(index: DebIndex, s: PackageSet) -> list[str]:
    """The names a root filesystem's set asks for: the recipe's, then the variant's."""
    selection = dict(s.rootfs)
    variant = selection.get("variant", "essential")
    names = list(s.packages)
    if variant in ("essential", "required"):
        names += sorted(n for n in index.packages if _newest_says(index, n, "Essential", "yes"))
    if variant == "required":
        names += sorted(n for n in index.packages if _newest_says(index, n, "Priority", "required"))
    if selection.get("merged_usr") == "yes" and index.packages.get("usr-is-merged"):
        names.append("usr-is-merged")
    return list(dict.fromkeys(names))


def resolve_rootfs_set(
    s: PackageSet, repo: RepoConfig, environ: Mapping[str, str] | None, label: str
) -> Closure:
    """The full closure of a root filesystem's package set (see the module doc)."""
    from repro.lock import release_suites
    from repro.packages.deb import resolve
    from repro.packages.download import mirrors_for_suites
    from repro.packages.fetch import load_deb_index_from
    from repro.packages.trust import deb_trust

    env = dict(os.environ if environ is None else environ)
    suites = release_suites(s, repo, env)
    mirrors = mirrors_for_suites(s.mirror, suites, s.components, repo=repo, environ=env)
    trusts = {suite: deb_trust(s, repo, env, suite=suite) for suite in suites}
    index = load_deb_index_from(mirrors, s.components, s.architecture, trusts=trusts)
    return resolve(
        index,
        rootfs_request(index, s),
        assume_installed=s.assume_installed,
        assume_essential=False,
        label=label,
        providers_by_priority=True,
    )
