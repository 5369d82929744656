"""Recipes: a directory under ``recipes/`` with ``recipe.toml``, a Dockerfile and context.

Every input a build reads is declared here and pinned by ``repro lock`` in
``repro.lock`` beside it (see ``repro.lock`` and docs/recipes.md). Every error names the
file and, where it can, the line.

    # recipes/hello/recipe.toml
    description = "A greeting on busybox"
    dockerfile = "Dockerfile"          # relative to the recipe directory
    context = "."                      # relative to the recipe directory
    target = ""                        # a stage name, or "" for the last stage
    platforms = ["linux/amd64"]        # empty: the builder's own platform
    source_date_epoch = 1700000000     # integer seconds, "git" or "lock"; required
    network = "none"                   # default | none | host, for RUN steps
    bases = ["127.0.0.1:5000/repro/busybox:1.35.0-4_deb12u1_b1", "recipe:other"]

    [publish]                          # where the image goes (default: repro.toml's
    repository = "127.0.0.1:5000/repro/hello"   # registry + "/" + the recipe name)
    tags = ["latest"]

    [packages.apt.tools]               # a Debian package set (apk: [packages.apk.NAME])
    suite = "bookworm"
    packages = ["curl"]
    keyring = "../keys/archive.gpg"    # apt: the OpenPGP keyring its Release is checked
                                       # against (apk: keys = "DIR"); see docs/recipes.md

    [downloads.src]                    # url = "...", or mirror = "NAME" + path = "..."
    url = "https://example.org/src.tar.gz"

    [git.lib]
    url = "https://example.org/lib.git"
    ref = "v1.0"

    [args]                             # build args, --build-arg NAME=value
    GREETING = "hello"

    [labels]                           # image labels
    "org.opencontainers.image.title" = "hello"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.errors import InputError, RecipeError
from repro.normalise import NormaliseSettings, parse_normalise_settings

if TYPE_CHECKING:
    from repro.rootfs import RootfsSpec

RECIPE_FILE = "recipe.toml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


EPOCH_POLICIES = ("git", "lock")
RECIPE_BASE_PREFIX = "recipe:"
# The build context through which repro hands a build its locked packages (repro.vault).
PACKAGE_CONTEXT = "repro-apt"


@dataclass(frozen=True)
class Base:
    """An image a FROM names: a registry reference with a tag, or another recipe."""

    ref: str  # as written: "host/repo:tag" or "recipe:NAME"
    line: int | None = None

    @property
    def recipe(self) -> str | None:
        if self.ref.startswith(RECIPE_BASE_PREFIX):
            return self.ref[len(RECIPE_BASE_PREFIX) :]
        return None


@dataclass(frozen=True)
class PackageSet:
    """A named set of distribution packages to resolve into a full closure."""

    kind: str  # "apt" or "apk"
    name: str
    packages: tuple[str, ...]
    suites: tuple[str, ...]  # apt: suites; apk: branches (e.g. v3.20)
    components: tuple[str, ...]  # apt: components; apk: repositories (main, community)
    architecture: str
    mirror: str  # a mirror name, or "apt" for the machine's apt sources
    assume_installed: tuple[str, ...] = ()
    line: int | None = None
    # apt: a release ("bookworm") whose suites (bookworm, -updates, -security) are
    # taken from the machine's apt sources when locking; then `suites` is empty.
    release: str = ""
    # The declared base the set is installed on ("" = the recipe's only base).
    base: str = ""
    # apt: lock Recommends too, for a Dockerfile that installs without
    # --no-install-recommends.
    recommends: bool = False
    # Signature checks (repro.packages.trust): an absolute keyring path (apt) or key
    # directory (apk), "" for the defaults; allow_expired (apt) accepts a past
    # Valid-Until or an expired key (snapshot mirrors); trusted turns the check off.
    keyring: str = ""
    keys: str = ""
    allow_expired: bool = False
    trusted: bool = False
    # Set when the set makes a [rootfs] (repro.rootfs): how the lock selects the closure.
    rootfs: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class Download:
    name: str
    url: str = ""
    mirror: str = ""
    path: str = ""
    line: int | None = None


@dataclass(frozen=True)
class GitInput:
    name: str
    url: str
    ref: str
    line: int | None = None


@dataclass(frozen=True)
class Publish:
    repository: str = ""  # "" = the repo-wide registry + "/" + the recipe name
    tags: tuple[str, ...] = ("latest",)


@dataclass(frozen=True)
class Recipe:
    name: str
    directory: Path
    dockerfile: Path
    context: Path
    # The fixed epoch; None when the policy is "git" or "lock" (the lock holds it).
    source_date_epoch: int | None
    description: str = ""
    target: str = ""
    platforms: tuple[str, ...] = ()
    network: str = "default"
    args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    epoch_policy: str = "fixed"  # "fixed", "git" or "lock"
    bases: tuple[Base, ...] = ()
    packages: tuple[PackageSet, ...] = ()
    downloads: tuple[Download, ...] = ()
    git: tuple[GitInput, ...] = ()
    publish: Publish = field(default_factory=Publish)
    normalise: NormaliseSettings = field(default_factory=NormaliseSettings)
    # A root filesystem made of packages instead of a Dockerfile (repro.rootfs).
    rootfs: RootfsSpec | None = None

    @property
    def file(self) -> Path:
        return self.directory / RECIPE_FILE

    @property
    def lock_file(self) -> Path:
        return self.directory / "repro.lock"

    @property
    def recipe_bases(self) -> tuple[str, ...]:
        """Names of the recipes this one builds on (edges of the build graph)."""
        return tuple(b.recipe for b in self.bases if b.recipe)

    @property
    def needs_lock(self) -> bool:
        """Whether anything here is resolved by `repro lock` (then a build needs the lock)."""
        return (
            bool(self.bases or self.packages or self.downloads or self.git)
            or self.epoch_policy != "fixed"
        )


MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: image configs carry RFC 3339 dates


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """Best-effort line number of a key (in a table) or of a table header."""
    lines = text.splitlines()
    current: str | None = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1).strip().strip('"')
            if key is None and current == table:
                return number
            continue
        if key is not None and current == table:
            m = re.match(r'^("?)([^"=]+?)\1\s*=', stripped)
            if m and m.group(2).strip() == key:
                return number
    return None


class _Reader:
    """Takes values out of one parsed TOML table, reporting errors with lines."""

    def __init__(self, data: dict[str, Any], text: str, file: Path, table: str | None = None):
        self.data = dict(data)
        self.text = text
        self.file = file
        self.table = table

    def error(self, message: str, key: str | None = None) -> RecipeError:
        line = (
            _line_of(self.text, self.table, key) if key else _line_of(self.text, self.table, None)
        )
        return RecipeError(message, file=str(self.file), line=line)

    def take(
        self, key: str, kind: type | tuple[type, ...], default: Any = ..., what: str = ""
    ) -> Any:
        if key not in self.data:
            if default is ...:
                where = f"[{self.table}] " if self.table else ""
                raise self.error(f"{where}missing required key {key!r}{what}")
            return default
        value = self.data.pop(key)
        if kind is int and isinstance(value, bool):
            raise self.error(f"{key!r} must be an integer, not a boolean", key)
        if not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            got = _TYPE_NAMES.get(type(value).__name__, type(value).__name__)
            raise self.error(f"{key!r} must be {_article(names)}, not {got}", key)
        return value

    def string_table(self, key: str) -> dict[str, str]:
        table = self.take(key, dict, {})
        out: dict[str, str] = {}
        for k, v in table.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                line = _line_of(self.text, key, k)
                raise RecipeError(
                    f"[{key}] {k!r} must be a string or number", file=str(self.file), line=line
                )
            out[k] = str(v)
        return out

    def finish(self) -> None:
        for key in self.data:
            raise self.error(f"unknown key {key!r}", key)


_TYPE_NAMES = {
    "int": "integer",
    "str": "string",
    "list": "list",
    "dict": "table",
    "bool": "boolean",
}


def _article(name: str) -> str:
    name = " or ".join(_TYPE_NAMES.get(n, n) for n in name.split(" or "))
    return ("an " if name[:1] in "aeiou" else "a ") + name


def load_recipe(directory: Path) -> Recipe:
    """Read and check ``directory/recipe.toml``."""
    directory = Path(directory)
    file = directory / RECIPE_FILE
    if not directory.is_dir():
        raise RecipeError(f"no recipe directory {directory}")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"missing {RECIPE_FILE}", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read: {exc}", file=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        from repro.config import toml_error

        raise toml_error(exc, file, text) from None

    r = _Reader(data, text, file)
    present = {key: key in data for key in _NOT_IN_ROOTFS}
    name = directory.name
    if not NAME_RE.match(name):
        raise RecipeError(
            f"recipe name {name!r} must be lower-case letters, digits, '.', '_' or '-'",
            file=str(file),
        )
    description = r.take("description", str, "")
    dockerfile_rel = r.take("dockerfile", str, "Dockerfile")
    context_rel = r.take("context", str, ".")
    target = r.take("target", str, "")
    platforms = r.take("platforms", list, [])
    for p in platforms:
        if not isinstance(p, str) or not PLATFORM_RE.match(p):
            raise r.error(f"platform {p!r} must look like os/arch or os/arch/variant", "platforms")
    epoch_value = r.take(
        "source_date_epoch", (int, str), what=' (integer seconds since 1970, "git" or "lock")'
    )
    epoch: int | None
    if isinstance(epoch_value, str):
        if epoch_value not in EPOCH_POLICIES:
            raise r.error(
                f'source_date_epoch {epoch_value!r} must be an integer, "git" or "lock"',
                "source_date_epoch",
            )
        epoch, policy = None, epoch_value
    else:
        if isinstance(epoch_value, bool):
            raise r.error(
                "'source_date_epoch' must be an integer, not a boolean", "source_date_epoch"
            )
        if epoch_value < 0:
            raise r.error("source_date_epoch must not be negative", "source_date_epoch")
        if epoch_value > MAX_EPOCH:
            raise r.error(
                f"source_date_epoch {epoch_value} is after the year 9999 (at most {MAX_EPOCH})",
                "source_date_epoch",
            )
        epoch, policy = epoch_value, "fixed"
    network = r.take("network", str, "default")
    if network not in ("default", "none", "host"):
        raise r.error(f"network {network!r} must be default, none or host", "network")
    args = r.string_table("args")
    labels = r.string_table("labels")
    bases = _bases(r)
    packages = _package_sets(r, [b.ref for b in bases])
    downloads = _downloads(r)
    git = _git_inputs(r)
    publish = _publish(r)
    normalise = _normalise(r)
    rootfs, packages = _rootfs(r, packages, present)
    r.finish()

    context = _inside(directory, context_rel, "context", r)
    dockerfile = _inside(directory, dockerfile_rel, "dockerfile", r)
    if rootfs is None and not context.is_dir():
        raise r.error(f"context {context_rel!r} is not a directory", "context")
    if rootfs is None and not dockerfile.is_file():
        raise r.error(f"Dockerfile {dockerfile_rel!r} does not exist", "dockerfile")
    return Recipe(
        name=name,
        directory=directory,
        dockerfile=dockerfile,
        context=context,
        source_date_epoch=epoch,
        description=description,
        target=target,
        platforms=tuple(platforms),
        network=network,
        args=args,
        labels=labels,
        epoch_policy=policy,
        bases=bases,
        packages=packages,
        downloads=downloads,
        git=git,
        publish=publish,
        normalise=normalise,
        rootfs=rootfs,
    )


# Keys of a Dockerfile recipe that a [rootfs] recipe must not have.
_NOT_IN_ROOTFS = (
    "dockerfile", "context", "target", "bases", "args", "network", "downloads", "git"
)


def _rootfs(
    r: _Reader, packages: tuple[PackageSet, ...], present: dict[str, bool]
) -> tuple[RootfsSpec | None, tuple[PackageSet, ...]]:
    """The [rootfs] table (repro.rootfs._spec), and the package set it names marked so
    that the lock resolves it as a root filesystem's."""
    if "rootfs" not in r.data:
        return None, packages
    import dataclasses

    from repro.rootfs import check_recipe, parse_rootfs

    t = _Reader(r.take("rootfs", dict), r.text, r.file, "rootfs")
    given = set(t.data)
    spec = parse_rootfs(
        t.data,
        t.take,
        lambda key, default: _strings(t, key, default),
        t.error,
        _line_of(r.text, "rootfs", None),
    )
    t.finish()
    # The set may be an apt set (Debian) or an apk set (Alpine: repro.rootfs._alpine).
    kinds = [(s.kind, s.name) for s in packages if s.kind in ("apt", "apk")]
    spec, kind = check_recipe(spec, kinds, present, t.error, r.error, given)
    marked = tuple(
        dataclasses.replace(s, rootfs=spec.selection())
        if s.kind == kind and s.name == spec.packages
        else s
        for s in packages
    )
    return spec, marked


def _normalise(r: _Reader) -> NormaliseSettings:
    """The ``[normalise]`` table (see repro.normalise._settings); rules off by default."""
    table = r.take("normalise", dict, {})

    def error(message: str, key: str | None) -> RecipeError:
        line = _line_of(r.text, "normalise", key) or _line_of(r.text, "normalise", None)
        return RecipeError(message, file=str(r.file), line=line)

    return parse_normalise_settings(table, error)


def _strings(r: _Reader, key: str, default: list[str] | None = None) -> list[str]:
    value = r.take(key, list, ... if default is None else default)
    for item in value:
        if not isinstance(item, str) or not item:
            raise r.error(f"{key!r} must be a list of non-empty strings", key)
    return list(value)


def _subtable(r: _Reader, key: str) -> dict[str, _Reader]:
    """The tables under `key` (e.g. [downloads.NAME]), each as its own reader."""
    table = r.take(key, dict, {})
    prefix = f"{r.table}.{key}" if r.table else key
    out: dict[str, _Reader] = {}
    for name, value in table.items():
        if not isinstance(value, dict):
            line = _line_of(r.text, prefix, name)
            raise RecipeError(f"[{prefix}] {name!r} must be a table", file=str(r.file), line=line)
        if not NAME_RE.match(name):
            line = _line_of(r.text, f"{prefix}.{name}", None)
            raise RecipeError(
                f"[{prefix}.{name}]: names must be lower-case letters, digits, '.', '_' or '-'",
                file=str(r.file),
                line=line,
            )
        out[name] = _Reader(value, r.text, r.file, f"{prefix}.{name}")
    return out


def _bases(r: _Reader) -> tuple[Base, ...]:
    line = _line_of(r.text, None, "bases")
    out: list[Base] = []
    for ref in _strings(r, "bases", []):
        if ref.startswith(RECIPE_BASE_PREFIX):
            if not NAME_RE.match(ref[len(RECIPE_BASE_PREFIX) :]):
                raise r.error(f"base {ref!r}: expected recipe:NAME", "bases")
        else:
            from repro.registry import parse_reference

            try:
                parsed = parse_reference(ref)
            except InputError as exc:
                raise r.error(f"base {ref!r}: {exc}", "bases") from None
            if parsed.digest or not parsed.tag:
                raise r.error(
                    f"base {ref!r} must name a tag (host/repo:tag); the lock holds the digest",
                    "bases",
                )
        if any(b.ref == ref for b in out):
            raise r.error(f"base {ref!r} is listed twice", "bases")
        out.append(Base(ref, line))
    return tuple(out)


def _package_sets(r: _Reader, declared: Sequence[str] = ()) -> tuple[PackageSet, ...]:
    kinds = _subtable_of_kinds(r)
    out: list[PackageSet] = []
    for kind, sets in kinds.items():
        for name, s in sets.items():
            line = _line_of(s.text, s.table, None)
            names = _strings(s, "packages")
            if not names:
                raise s.error("'packages' must name at least one package", "packages")
            release = ""
            if kind == "apt":
                given = [k for k in ("suite", "suites", "release") if k in s.data]
                if len(given) > 1:
                    raise s.error(f"give one of suite, suites or release, not {given}", given[1])
                if "release" in s.data:
                    release, suites = s.take("release", str), []
                    if not release or "/" in release:
                        raise s.error(
                            f"release {release!r} must be a name such as bookworm", "release"
                        )
                elif "suite" in s.data:
                    suites = [s.take("suite", str)]
                else:
                    suites = _strings(s, "suites")
                components = _strings(s, "components", ["main"])
                arch = s.take("architecture", str, "amd64")
            else:
                suites = [s.take("branch", str)]
                components = _strings(s, "repositories", ["main"])
                arch = s.take("architecture", str, "x86_64")
            mirror = s.take("mirror", str, "apt" if kind == "apt" else "alpine")
            assume = _strings(s, "assume_installed", [])
            recommends = s.take("recommends", bool, False) if kind == "apt" else False
            base = s.take("base", str, "")
            if base and base not in declared:
                raise s.error(f"base {base!r} is not one of the recipe's bases", "base")
            trust = _trust_keys(s, kind)
            s.finish()
            out.append(
                PackageSet(
                    kind=kind,
                    name=name,
                    packages=tuple(names),
                    suites=tuple(suites),
                    components=tuple(components),
                    architecture=arch,
                    mirror=mirror,
                    assume_installed=tuple(assume),
                    line=line,
                    release=release,
                    base=base,
                    recommends=recommends,
                    **trust,
                )
            )
    return tuple(out)


def _trust_keys(s: _Reader, kind: str) -> dict[str, Any]:
    """keyring (apt) or keys (apk), allow_expired (apt) and trusted, with paths resolved:
    relative to the recipe directory and inside the repository, or absolute."""
    from repro.config import key_path, repository_root

    path_key = "keyring" if kind == "apt" else "keys"
    out: dict[str, Any] = {"trusted": s.take("trusted", bool, False)}
    raw = s.take(path_key, str, "")
    if kind == "apt":
        out["allow_expired"] = s.take("allow_expired", bool, False)
    if raw:
        directory = s.file.parent
        try:
            out[path_key] = str(key_path(raw, directory, repository_root(directory.parent)))
        except InputError as exc:
            raise s.error(f"{path_key} {exc}", path_key) from None
        if out["trusted"]:
            raise s.error(f"'trusted = true' turns the signature check off: drop {path_key!r}")
    return out


def _subtable_of_kinds(r: _Reader) -> dict[str, dict[str, _Reader]]:
    table = r.take("packages", dict, {})
    holder = _Reader(table, r.text, r.file, "packages")
    out = {kind: _subtable(holder, kind) for kind in ("apt", "apk")}
    holder.finish()
    return out


def _downloads(r: _Reader) -> tuple[Download, ...]:
    out = []
    for name, d in _subtable(r, "downloads").items():
        url = d.take("url", str, "")
        mirror = d.take("mirror", str, "")
        path = d.take("path", str, "")
        if bool(url) == bool(mirror and path):
            raise d.error(f"[{d.table}] needs either url, or mirror and path")
        d.finish()
        out.append(Download(name, url, mirror, path, _line_of(d.text, d.table, None)))
    return tuple(out)


def _git_inputs(r: _Reader) -> tuple[GitInput, ...]:
    out = []
    for name, g in _subtable(r, "git").items():
        url = g.take("url", str)
        ref = g.take("ref", str)
        g.finish()
        out.append(GitInput(name, url, ref, _line_of(g.text, g.table, None)))
    return tuple(out)


def _publish(r: _Reader) -> Publish:
    table = r.take("publish", dict, {})
    p = _Reader(table, r.text, r.file, "publish")
    repository = p.take("repository", str, "")
    tags = _strings(p, "tags", ["latest"])
    p.finish()
    if repository:
        from repro.registry import parse_reference

        try:
            parsed = parse_reference(repository)
        except InputError as exc:
            raise p.error(f"repository {repository!r}: {exc}", "repository") from None
        if parsed.tag or parsed.digest:
            raise p.error(f"repository {repository!r} must not have a tag or digest", "repository")
    return Publish(repository, tuple(tags))


def _inside(directory: Path, rel: str, key: str, r: _Reader) -> Path:
    path = (directory / rel).resolve()
    root = directory.resolve()
    if path != root and root not in path.parents:
        raise r.error(f"{key} {rel!r} points outside the recipe directory", key)
    return path


def find_recipes(recipes_dir: Path, names: list[str] | None = None) -> list[Recipe]:
    """Load the named recipes, or every recipe under recipes_dir, sorted by name."""
    recipes_dir = Path(recipes_dir)
    if names:
        out = []
        for name in names:
            directory = Path(name) if ("/" in name or name == ".") else recipes_dir / name
            if not (directory / RECIPE_FILE).is_file() and not directory.is_dir():
                raise RecipeError(f"no recipe named {name!r} (looked in {directory})")
            out.append(load_recipe(directory))
        return out
    if not recipes_dir.is_dir():
        raise RecipeError(f"no recipes directory {recipes_dir}")
    dirs = sorted(p.parent for p in recipes_dir.glob(f"*/{RECIPE_FILE}"))
    if not dirs:
        raise RecipeError(f"no recipes found under {recipes_dir}")
    return [load_recipe(d) for d in dirs]
