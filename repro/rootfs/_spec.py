"""The ``[rootfs]`` table of a recipe: a root filesystem made of packages, no Dockerfile.

    # recipes/debian12/recipe.toml
    source_date_epoch = 1735689600

    [rootfs]
    packages = "base"              # the [packages.apt.NAME] set the filesystem is made of
    variant = "essential"          # essential (default) | required | custom: see below
    merged_usr = true              # bin, sbin, lib -> usr/... (Debian 12's layout; default)
    prefer = []                    # packages that win when two ship one path differently
    cmd = ["/bin/bash"]            # image config (defaults: PATH, ["/bin/sh"], root, "/")
    entrypoint = []
    env = { LANG = "C.UTF-8" }     # added to PATH=/usr/local/sbin:...:/bin
    user = ""                      # "" (root), a name or uid[:gid]
    workdir = "/"

    [packages.apt.base]
    suites = ["bookworm", "bookworm-updates", "bookworm-security"]
    packages = ["apt", "ca-certificates"]

``variant`` says what is added to the set's packages when locking, as mmdebstrap's
variants do: ``essential`` every ``Essential: yes`` package of the suites, ``required``
those and every ``Priority: required`` one (debootstrap's minbase), ``custom`` nothing.
The closure is then resolved with nothing assumed installed. The image's labels are
the recipe's ``[labels]``; its platform is ``linux/`` + the set's architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

VARIANTS = ("essential", "required", "custom")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CMD = ("/bin/sh",)
KEYS = (
    "packages",
    "variant",
    "merged_usr",
    "prefer",
    "cmd",
    "entrypoint",
    "env",
    "user",
    "workdir",
)


@dataclass(frozen=True)
class RootfsSpec:
    packages: str  # the name of the apt package set
    variant: str = "essential"
    merged_usr: bool = True
    prefer: tuple[str, ...] = ()
    cmd: tuple[str, ...] = DEFAULT_CMD
    entrypoint: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    line: int | None = None

    def selection(self) -> tuple[tuple[str, str], ...]:
        """What the lock's resolution of the package set depends on (part of its spec)."""
        return (("variant", self.variant), ("merged_usr", "yes" if self.merged_usr else "no"))

    def environment(self) -> list[str]:
        env = {"PATH": DEFAULT_PATH, **self.env}
        return [f"{k}={v}" for k, v in env.items()]


def parse_rootfs(
    table: dict[str, Any],
    take: Callable[..., Any],
    strings: Callable[[str, list[str] | None], list[str]],
    error: Callable[[str, str | None], Exception],
    line: int | None,
) -> RootfsSpec:
    """Read ``[rootfs]`` with the recipe reader's helpers (errors carry file and line)."""
    packages = take("packages", str, what=" (the name of a [packages.apt.NAME] set)")
    variant = take("variant", str, "essential")
    if variant not in VARIANTS:
        raise error(f"variant {variant!r} must be one of {', '.join(VARIANTS)}", "variant")
    merged_usr = take("merged_usr", bool, True)
    prefer = strings("prefer", [])
    cmd = strings("cmd", list(DEFAULT_CMD))
    entrypoint = strings("entrypoint", [])
    env_table = take("env", dict, {})
    env: dict[str, str] = {}
    for key, value in env_table.items():
        if not isinstance(value, str) or not key or "=" in key:
            raise error(f'env {key!r} must be a NAME = "string" pair', "env")
        env[key] = value
    user = take("user", str, "")
    workdir = take("workdir", str, "/")
    if workdir and not workdir.startswith("/"):
        raise error(f"workdir {workdir!r} must be an absolute path", "workdir")
    return RootfsSpec(
        packages=packages,
        variant=variant,
        merged_usr=merged_usr,
        prefer=tuple(prefer),
        cmd=tuple(cmd),
        entrypoint=tuple(entrypoint),
        env=env,
        user=user,
        workdir=workdir,
        line=line,
    )


def check_recipe(
    spec: RootfsSpec,
    sets: Sequence[tuple[str, str]],
    present: Mapping[str, bool],
    error: Callable[[str, str | None], Exception],
    top_error: Callable[[str, str | None], Exception],
    given: Collection[str] = (),
) -> tuple[RootfsSpec, str]:
    """What a [rootfs] recipe may not have: it is not built from a Dockerfile. Returns
    the spec (as it applies to the set's kind) and the kind of the set it names: "apt"
    or "apk" (`sets`: (kind, name) of the recipe's package sets; `given`: the keys the
    [rootfs] table spelled out).

    `error` locates a key of [rootfs], `top_error` a top-level key of the recipe.
    """
    kinds = [kind for kind, name in sets if name == spec.packages]
    if not kinds:
        raise error(
            f"packages = {spec.packages!r} names no [packages.apt.{spec.packages}] "
            f"(or [packages.apk.{spec.packages}]) set",
            "packages",
        )
    if len(kinds) > 1:
        raise error(
            f"packages = {spec.packages!r} names both an apt and an apk set: rename one",
            "packages",
        )
    kind = kinds[0]
    if kind == "apk":
        # Alpine has no Essential set and no merged /usr: the set is what it lists.
        for key in ("variant", "merged_usr"):
            if key in given:
                raise error(f"{key!r} is for Debian sets; an apk set is what it lists", key)
        spec = replace(spec, variant="custom", merged_usr=False)
    for key, why in (
        ("dockerfile", "a [rootfs] recipe has no Dockerfile"),
        ("context", "a [rootfs] recipe has no build context"),
        ("target", "a [rootfs] recipe has no stages"),
        ("bases", "a [rootfs] recipe is a base: it has no bases"),
        ("args", "a [rootfs] recipe runs nothing, so it takes no build args"),
        ("network", "a [rootfs] recipe runs nothing, so it has no network setting"),
        ("downloads", "a [rootfs] recipe is made of packages only"),
        ("git", "a [rootfs] recipe is made of packages only"),
    ):
        if present.get(key):
            raise top_error(f"{key!r}: {why}", key)
    return spec, kind
