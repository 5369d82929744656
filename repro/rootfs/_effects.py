"""What the maintainer scripts of a fresh install would have done, done by repro instead.

repro never runs a package's scripts: they would run the image's binaries on the build
machine, and their output depends on the clock, the host and the order things happen
in. Instead, for each package whose ``preinst``, ``postinst`` or ``config`` has an
effect on a freshly installed system, this module makes that effect directly and
deterministically (see docs/rootfs.md for the list). `KNOWN` says, for every package
repro has read the scripts of, what it does about them; a package with scripts that is
not in it is reported (`Effects.unreproduced`), so nobody mistakes an unconfigured
package for a configured one.

Deliberately not reproduced (documented, never warned about): the ldconfig cache
(``/etc/ld.so.cache``; the dynamic loader searches the standard directories without
it, and the next ``apt-get install`` writes it), the debconf database
(``/var/cache/debconf``; debconf creates it on first use with the templates' defaults),
systemd unit enablement and sysvinit rc links (a container does not boot), and the
backup copies (``passwd-``, ``*-old``) and lock files that tools leave behind.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from repro.rootfs._deb import DIR, FILE, SYMLINK, DebPackage
from repro.rootfs._dpkg import Alternative, Database
from repro.rootfs._tree import Node, RootfsError, Tree

NONROOT_UID = 65532
NONROOT = "nonroot"
NOLOGIN = "/usr/sbin/nologin"

# Packages whose maintainer scripts repro has read, and what it does for a fresh install.
KNOWN: dict[str, str] = {
    "adduser": "preinst acts on upgrades only",
    "apt": "_apt is in base-passwd's passwd.master; apt-daily timers are not enabled",
    "base-files": "root's dot files, /etc/profile, /etc/motd, info dir, /mnt /srv /opt "
    "/media /var/opt /etc/opt, /var/mail, /run/lock, /var/run and /var/lock links, "
    "/usr/local tree, wtmp/btmp/lastlog, /etc/dpkg/origins/default",
    "base-passwd": "/etc/passwd and /etc/group from the master files",
    "bash": "update-alternatives (builtins.7.gz); /bin/sh is dash's",
    "ca-certificates": "/etc/ca-certificates.conf (every certificate trusted) and "
    "update-ca-certificates: /etc/ssl/certs links, hash links, ca-certificates.crt",
    "coreutils": "/usr/bin/touch exists on merged /usr",
    "dash": "/bin/sh -> dash and its man page, diverted as dpkg-divert records it",
    "debconf": "nothing without a debconf database",
    "debian-archive-keyring": "removes old conffiles on upgrades only",
    "debianutils": "/etc/shells and /var/lib/shells.state (update-shells); "
    "update-alternatives (which)",
    "dpkg": "the dpkg-db-backup timer is not enabled",
    "init-system-helpers": "acts on upgrades only",
    "libc-bin": "/etc/nsswitch.conf; no ldconfig cache",
    "libc6": "/lib64 exists on merged /usr; ld.so.nohwcap is made and removed again",
    "libgcrypt20": "acts on upgrades only",
    "libpam-modules": "/etc/security/opasswd, /etc/environment",
    "libpam-runtime": "pam-auth-update: /etc/pam.d/common-* and /var/lib/pam",
    "libpam0g": "acts on upgrades only",
    "libstdc++6": "prerm only",
    "login": "/var/log/faillog, /etc/subuid, /etc/subgid",
    "mawk": "update-alternatives (awk, nawk)",
    "openssl": "/usr/lib/ssl is shipped",
    "passwd": "shadowconfig on: /etc/shadow and /etc/gshadow",
    "perl-base": "acts on upgrades only",
    "tar": "update-alternatives (rmt)",
    "usr-is-merged": "the root filesystem is merged /usr",
    "util-linux": "update-alternatives (pager); the fstrim timer is not enabled",
    "util-linux-extra": "no hwclock rc links",
}
SCRIPTS = ("preinst", "postinst", "config")


@dataclass
class Context:
    tree: Tree
    packages: Mapping[str, DebPackage]
    epoch: int
    db: Database = field(default_factory=Database)

    def has(self, name: str) -> bool:
        return name in self.packages

    def copy_if_absent(self, source: str, dest: str, mode: int | None = None) -> bool:
        """``cp -p source dest`` unless dest exists (mode and time of the source kept)."""
        if self.tree.exists(dest):
            return False
        node = self.tree.get(source)
        if node is None or node.kind != FILE:
            return False
        self.tree.put_file(
            dest,
            node.content(),
            mode=node.mode if mode is None else mode,
            uid=node.uid,
            gid=node.gid,
            mtime=node.mtime,
        )
        return True

    def touch(self, path: str, mode: int, uid: int = 0, gid: int = 0) -> None:
        node = self.tree.get(path)
        if node is None:
            self.tree.put_file(path, b"", mode=mode, uid=uid, gid=gid)
        elif node.kind == FILE:
            node.mode, node.uid, node.gid = mode, uid, gid

    def group_id(self, name: str, default: int = 0) -> int:
        for line in _lines(self.tree, "etc/group"):
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
        return default


def _lines(tree: Tree, path: str) -> list[str]:
    node = tree.get(path)
    if node is None or node.kind != FILE:
        return []
    return node.content().decode("utf-8", "replace").splitlines()


# --- update-alternatives -------------------------------------------------------------


_UA = re.compile(r"(?:^|[;&|(!{]|\bthen|\bdo|\belse)\s*update-alternatives\s")


def parse_alternatives(script: str) -> list[list[str]] | None:
    """The argument lists of the ``update-alternatives`` commands in a shell script.

    Only commands with literal arguments are understood; None if one uses a variable,
    a command substitution or anything else repro cannot read without running it.
    """
    joined = re.sub(r"\\\n", " ", script)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or "update-alternatives" not in stripped:
            continue
        match = _UA.search(stripped)
        if match is None:
            if re.search(r"\bupdate-alternatives\b", stripped.split("#", 1)[0]):
                return None  # used in some way that is not a plain command
            continue
        rest = stripped[match.end() :]
        try:
            lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:
            return None
        args: list[str] = []
        for token in tokens:
            if token in ("||", "&&", ";", "|", ")", ">", ">>", "2>", "&"):
                break
            if "$" in token or "`" in token:
                return None
            args.append(token)
        commands.append(args)
    return commands


def apply_alternatives(
    ctx: Context, package: DebPackage, commands: Sequence[Sequence[str]]
) -> None:
    """Register ``--install`` commands in the database (links are made by `link_alternatives`)."""
    for args in commands:
        words = [a for a in args if a not in ("--quiet", "--force")]
        if not words:
            continue
        if words[0] != "--install" or len(words) < 5:
            raise RootfsError(
                f"{package.name}: postinst runs update-alternatives {' '.join(words[:2])}, "
                "which repro does not reproduce"
            )
        link, name, path, priority = words[1:5]
        if not priority.lstrip("-").isdigit():
            raise RootfsError(f"{package.name}: update-alternatives priority {priority!r}")
        slaves: list[tuple[str, str, str]] = []
        rest = list(words[5:])
        while rest:
            if rest[0] != "--slave" or len(rest) < 4:
                raise RootfsError(
                    f"{package.name}: cannot read update-alternatives arguments {rest[:4]}"
                )
            slaves.append((rest[2], rest[1], rest[3]))
            rest = rest[4:]
        group = ctx.db.alternatives.setdefault(name, Alternative(name, link))
        for slave_name, slave_link, _ in slaves:
            if all(s != slave_name for s, _ in group.slaves):
                group.slaves.append((slave_name, slave_link))
        group.choices[path] = (int(priority), {s: p for s, _, p in slaves})


def link_alternatives(ctx: Context) -> None:
    """The links auto mode makes: LINK -> /etc/alternatives/NAME -> the best choice."""
    tree = ctx.tree
    for name, group in sorted(ctx.db.alternatives.items()):
        best = group.best()
        target = tree.get(best.lstrip("/"))
        if target is None:
            continue  # update-alternatives refuses a choice whose file is missing
        tree.put_dir("etc/alternatives")
        tree.put_symlink(f"etc/alternatives/{name}", best, mtime=target.mtime)
        tree.put_symlink(group.link.lstrip("/"), f"/etc/alternatives/{name}", mtime=target.mtime)
        for slave_name, slave_link in group.slaves:
            path = group.choices[best][1].get(slave_name, "")
            slave_target = tree.get(path.lstrip("/")) if path else None
            if slave_target is None:
                continue  # skipped, as update-alternatives does for a missing slave file
            tree.put_symlink(f"etc/alternatives/{slave_name}", path, mtime=slave_target.mtime)
            tree.put_symlink(
                slave_link.lstrip("/"), f"/etc/alternatives/{slave_name}", mtime=slave_target.mtime
            )


# --- accounts -------------------------------------------------------------------------


def base_passwd(ctx: Context) -> None:
    ctx.copy_if_absent("usr/share/base-passwd/passwd.master", "etc/passwd", 0o644)
    ctx.copy_if_absent("usr/share/base-passwd/group.master", "etc/group", 0o644)


def accounts(ctx: Context) -> None:
    """root (if nothing made the files) and nonroot 65532, which repro adds to every base."""
    tree = ctx.tree
    if not tree.exists("etc/passwd"):
        tree.put_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    if not tree.exists("etc/group"):
        tree.put_file("etc/group", b"root:x:0:\n")
    passwd = _lines(tree, "etc/passwd")
    group = _lines(tree, "etc/group")
    pw = "*" if any(line.split(":")[1:2] == ["*"] for line in passwd) else "x"
    if not any(line.split(":", 1)[0] == NONROOT for line in passwd):
        passwd.append(
            f"{NONROOT}:{pw}:{NONROOT_UID}:{NONROOT_UID}:{NONROOT}:/home/{NONROOT}:{NOLOGIN}"
        )
    if not any(line.split(":", 1)[0] == NONROOT for line in group):
        group.append(f"{NONROOT}:{pw}:{NONROOT_UID}:")
    _rewrite(tree, "etc/passwd", passwd)
    _rewrite(tree, "etc/group", group)
    tree.put_dir("home")
    tree.put_dir(f"home/{NONROOT}", 0o700, uid=NONROOT_UID, gid=NONROOT_UID)


def _rewrite(
    tree: Tree, path: str, lines: Sequence[str], mode: int | None = None, **kw: int
) -> None:
    node = tree.get(path)
    keep = mode if mode is not None else (node.mode if node is not None else 0o644)
    tree.put_file(path, ("\n".join(lines) + "\n").encode(), mode=keep, **kw)


def shadowconfig(ctx: Context) -> None:
    """``shadowconfig on`` (pwconv, grpconv): passwords move to /etc/shadow and /etc/gshadow,
    last change on the epoch's day, aging from /etc/login.defs."""
    tree = ctx.tree
    defs: dict[str, str] = {}
    for line in _lines(tree, "etc/login.defs"):
        words = line.split()
        if len(words) >= 2 and not words[0].startswith("#"):
            defs[words[0]] = words[1]

    def age(key: str) -> str:
        value = defs.get(key, "-1")
        return "" if value.startswith("-") else value

    day = ctx.epoch // 86400
    passwd, shadow = [], []
    for line in _lines(tree, "etc/passwd"):
        f = line.split(":")
        if len(f) < 7:
            passwd.append(line)
            continue
        secret = f[1] if f[1] != "x" else "*"
        shadow.append(
            f"{f[0]}:{secret}:{day}:{age('PASS_MIN_DAYS')}:{age('PASS_MAX_DAYS')}:"
            f"{age('PASS_WARN_AGE')}:::"
        )
        passwd.append(":".join([f[0], "x", *f[2:]]))
    group, gshadow = [], []
    for line in _lines(tree, "etc/group"):
        f = line.split(":")
        if len(f) < 4:
            group.append(line)
            continue
        gshadow.append(f"{f[0]}:{f[1] if f[1] != 'x' else '*'}::{f[3]}")
        group.append(":".join([f[0], "x", *f[2:]]))
    shadow_gid = ctx.group_id("shadow", 42)
    _rewrite(tree, "etc/passwd", passwd)
    _rewrite(tree, "etc/group", group)
    _rewrite(tree, "etc/shadow", shadow, mode=0o640, gid=shadow_gid)
    _rewrite(tree, "etc/gshadow", gshadow, mode=0o640, gid=shadow_gid)


# --- the other packages ------------------------------------------------------------------


def base_files(ctx: Context) -> None:
    tree = ctx.tree
    if not tree.exists("etc/dpkg/origins/default") and tree.exists("etc/dpkg/origins/debian"):
        tree.put_symlink("etc/dpkg/origins/default", "debian")
    for name, dest in (
        ("dot.profile", "root/.profile"),
        ("dot.bashrc", "root/.bashrc"),
        ("profile", "etc/profile"),
        ("motd", "etc/motd"),
    ):
        ctx.copy_if_absent(f"usr/share/base-files/{name}", dest)
    for path, mode, group in (
        ("mnt", 0o755, "root"),
        ("srv", 0o755, "root"),
        ("opt", 0o755, "root"),
        ("etc/opt", 0o755, "root"),
        ("var/opt", 0o755, "root"),
        ("media", 0o755, "root"),
        ("var/mail", 0o2775, "mail"),
    ):
        if not tree.exists(path):
            tree.put_dir(path, mode, gid=ctx.group_id(group))
    spool_mail = tree.get("var/spool/mail", follow=False)
    if spool_mail is None or spool_mail.kind != SYMLINK:
        tree.put_symlink("var/spool/mail", "../mail")
    if not tree.exists("run/lock"):
        tree.put_dir("run/lock", 0o1777)
    for old, new in (("var/run", "/run"), ("var/lock", "/run/lock")):
        node = tree.get(old, follow=False)
        if node is not None and node.kind == DIR:
            if tree.children(old):
                raise RootfsError(f"base-files: /{old} is not empty, it cannot become a link")
            tree.put_symlink(old, new)
    for sub in (
        "",
        "/share",
        "/share/man",
        "/bin",
        "/games",
        "/lib",
        "/include",
        "/sbin",
        "/src",
        "/etc",
    ):
        tree.put_dir("usr/local" + sub)
    tree.put_symlink("usr/local/man", "share/man")
    utmp = ctx.group_id("utmp")
    ctx.touch("var/log/wtmp", 0o664, gid=utmp)
    ctx.touch("var/log/btmp", 0o660, gid=utmp)
    ctx.touch("var/log/lastlog", 0o664, gid=utmp)
    info = tree.get("usr/share/info")
    if info is not None and info.kind == DIR and not tree.exists("usr/share/info/dir"):
        ctx.copy_if_absent("usr/share/base-files/info.dir", "usr/share/info/dir", 0o644)


def login(ctx: Context) -> None:
    if not ctx.tree.exists("var/log/faillog"):
        ctx.touch("var/log/faillog", 0o644)
    for path in ("etc/subuid", "etc/subgid"):
        if not ctx.tree.exists(path):
            ctx.tree.put_file(path, b"", mode=0o644)


def libpam_modules(ctx: Context) -> None:
    if not ctx.tree.exists("etc/security/opasswd"):
        ctx.tree.put_file("etc/security/opasswd", b"", mode=0o600)
    if not ctx.tree.exists("etc/environment"):
        ctx.tree.put_file("etc/environment", b"", mode=0o644)


def libc_bin(ctx: Context) -> None:
    ctx.copy_if_absent("usr/share/libc-bin/nsswitch.conf", "etc/nsswitch.conf")


def dash(ctx: Context) -> None:
    """dash's postinst claims /bin/sh: a diversion with --no-rename and the link to dash."""
    ctx.db.divert("/bin/sh", "/bin/sh.distrib", "dash")
    ctx.tree.put_symlink("bin/sh", "dash")
    man = ctx.tree.get("usr/share/man/man1")
    if man is not None and man.kind == DIR:
        ctx.db.divert("/usr/share/man/man1/sh.1.gz", "/usr/share/man/man1/sh.distrib.1.gz", "dash")
        ctx.tree.put_symlink("usr/share/man/man1/sh.1.gz", "dash.1.gz")


def debianutils(ctx: Context) -> None:
    """/etc/shells from the template, then update-shells (template and shells.d/*)."""
    tree = ctx.tree
    ctx.copy_if_absent("usr/share/debianutils/shells", "etc/shells")
    sources = ["usr/share/debianutils/shells"] + [
        f"usr/share/debianutils/shells.d/{name}"
        for name in sorted(
            tree.children("usr/share/debianutils/shells.d"), key=lambda n: n.encode()
        )
    ]
    package_shells: list[str] = []
    for source in sources:
        for line in _lines(tree, source):
            shell = line.split("#", 1)[0]
            if not shell:
                continue
            package_shells.append(shell)
            directory, _, base = shell.rpartition("/")
            real = "/" + tree.realpath(directory.lstrip("/")) if directory else ""
            if real == "/.":
                real = ""
            if f"{real}/{base}" != shell:
                package_shells.append(f"{real}/{base}")
    etc: list[str] = []
    seen: set[str] = set()
    for line in _lines(tree, "etc/shells"):
        shell = line.split("#", 1)[0]
        if not shell or shell not in seen:
            etc.append(line)
            seen.add(shell)
    for shell in package_shells:
        if shell not in seen:
            etc.append(shell)
            seen.add(shell)
    _rewrite(tree, "etc/shells", etc)
    tree.put_file("var/lib/shells.state", ("\n".join(package_shells) + "\n").encode())


def libpam_runtime(ctx: Context) -> None:
    from repro.rootfs._pam import pam_auth_update

    pam_auth_update(ctx.tree)


def ca_certificates(ctx: Context) -> None:
    from repro.rootfs._cacerts import update_ca_certificates

    local = ctx.tree.get("usr/local")
    ctx.tree.put_dir(
        "usr/local/share/ca-certificates",
        local.mode if local is not None else 0o755,
        gid=local.gid if local is not None else 0,
    )
    update_ca_certificates(ctx.tree)


# The handlers, in the order they run: accounts before the files that need their ids,
# shadow after every account exists.
HANDLERS: list[tuple[str, Callable[[Context], None]]] = [
    ("base-passwd", base_passwd),
    ("", accounts),
    ("base-files", base_files),
    ("login", login),
    ("libpam-modules", libpam_modules),
    ("libc-bin", libc_bin),
    ("dash", dash),
    ("debianutils", debianutils),
    ("libpam-runtime", libpam_runtime),
    ("ca-certificates", ca_certificates),
    ("passwd", shadowconfig),
]


@dataclass
class Effects:
    db: Database
    unreproduced: dict[str, list[str]]  # package -> its scripts nobody reproduced


def apply(tree: Tree, packages: Sequence[DebPackage], epoch: int) -> Effects:
    """Make the effects of a fresh install's maintainer scripts in `tree`."""
    by_name = {p.name: p for p in packages}
    ctx = Context(tree, by_name, epoch)
    unreproduced: dict[str, list[str]] = {}
    for package in sorted(packages, key=lambda p: p.name):
        scripts = [s for s in SCRIPTS if s in package.control_files]
        if not scripts:
            continue
        if package.name not in KNOWN:
            unreproduced[package.name] = scripts
        postinst = package.control_files.get("postinst", (b"", 0))[0].decode("utf-8", "replace")
        commands = parse_alternatives(postinst)
        if commands is None:
            unreproduced.setdefault(package.name, scripts)
            continue
        apply_alternatives(ctx, package, commands)
    for name, handler in HANDLERS:
        if not name or name in by_name:
            handler(ctx)
    link_alternatives(ctx)
    return Effects(ctx.db, unreproduced)


__all__ = ["KNOWN", "Effects", "Node", "apply", "parse_alternatives"]
