"""pam-auth-update as libpam-runtime's postinst runs it on a fresh install.

The profiles in ``/usr/share/pam-configs`` with ``Default: yes`` are enabled, ordered
by ``Priority`` (highest first, then by name, descending, as pam-auth-update sorts).
Each ``/etc/pam.d/common-<type>`` is the template from ``/usr/share/pam`` with the
enabled profiles' lines put into its "Primary" and "Additional" blocks: the first
module of a block uses its ``<Type>-Initial`` lines where it has them, and ``end`` in
a jump (``[success=end ...]``) becomes the number of lines left in the block, so a
success skips the fallback ``pam_deny``. The state pam-auth-update keeps for later
runs goes to ``/var/lib/pam`` (one file per type and ``seen``).
"""

from __future__ import annotations

import re

from repro.rootfs._deb import FILE
from repro.rootfs._tree import Tree

CONFIGS = "usr/share/pam-configs"
TEMPLATES = "usr/share/pam"
TYPES = ("auth", "account", "password", "session", "session-noninteractive")
PRIMARY = '# here are the per-package modules (the "Primary" block)'
FALLBACK = "# here's the fallback if no module succeeds"
ADDITIONAL = '# and here are more per-package modules (the "Additional" block)'
END = "# end of pam-auth-update config"

Profile = dict[str, str]


def parse_profile(text: str) -> Profile:
    profile: Profile = {}
    name = ""
    for line in text.splitlines():
        m = re.match(r"^(\S+):\s*(.*?)\s*$", line)
        if m and not line[:1].isspace():
            name = m.group(1)
            if name.endswith("-Final"):
                name = name[: -len("-Final")]
            profile[name] = m.group(2)
            continue
        value = line.strip()
        if name and value:
            profile[name] = (profile.get(name, "") + "\n" + value).lstrip("\n ")
    if "Session-Interactive-Only" not in profile:
        for suffix in ("-Type", "", "-Initial"):
            if "Session" + suffix in profile:
                profile["Session-noninteractive" + suffix] = profile["Session" + suffix]
    return profile


def _priority(profile: Profile) -> int:
    try:
        return int(profile.get("Priority", "0"))
    except ValueError:
        return 0


def _lines_for(profile: Profile, kind: str, position: int) -> str:
    if position == 0 and profile.get(kind + "-Initial"):
        return profile[kind + "-Initial"]
    return profile.get(kind, "")


def _merge_line(line: str, count: int) -> str:
    m = re.match(r"^((\[[^]]+\]|\w+)\s+\S+)\s*(.*)", line)
    if m is None:
        return line + "\n"
    control = m.group(1).replace("end", str(count))
    options = m.group(3).split()
    return control + " " + " ".join(options) + "\n"


def _block(
    profiles: dict[str, Profile], enabled: list[str], kind: str, which: str, prefix: str
) -> str:
    chosen = [m for m in enabled if profiles[m].get(kind + "-Type") == which]
    lines_per_module = [
        [x for x in _lines_for(profiles[m], kind, i).split("\n") if x] for i, m in enumerate(chosen)
    ]
    count = sum(len(lines) for lines in lines_per_module)
    if which == "Additional":
        count -= 1
    out = ""
    if which == "Primary" and count == 0:
        out += f"{prefix}\t[default=1]\t\t\tpam_permit.so\n"
    for lines in lines_per_module:
        for line in lines:
            out += f"{prefix}\t{_merge_line(line, count)}"
            count -= 1
    return out


def _from_template(
    template: str, profiles: dict[str, Profile], enabled: list[str], kind: str, prefix: str
) -> str:
    out = []
    state = 0
    for line in template.splitlines(keepends=True):
        if state == 1:
            if line.startswith(FALLBACK):
                out.append(line)
                state = 2
            continue
        if state == 3:
            if line.startswith(END):
                out.append(line)
                state = 4
            continue
        out.append(line)
        if state == 0 and line.startswith(PRIMARY):
            out.append(_block(profiles, enabled, kind, "Primary", prefix))
            state = 1
        elif state == 2 and line.startswith(ADDITIONAL):
            out.append(_block(profiles, enabled, kind, "Additional", prefix))
            state = 3
    if state < 4:
        raise ValueError("the template lacks pam-auth-update's markers")
    return "".join(out)


def _saved(profiles: dict[str, Profile], enabled: list[str], kind: str) -> str:
    out = []
    primary = [m for m in enabled if profiles[m].get(kind + "-Type") == "Primary"]
    for i, m in enumerate(primary):
        lines = _lines_for(profiles[m], kind, i)
        if lines:
            out.append(f"Module: {m}\n{lines}\n")
    if not primary:
        out.append("Module: null\n[default=1]\t\t\tpam_permit.so\n")
    additional = [m for m in enabled if profiles[m].get(kind + "-Type") == "Additional"]
    for i, m in enumerate(additional):
        lines = _lines_for(profiles[m], kind, i)
        if lines:
            out.append(f"Module: {m}\n{lines}\n")
    return "".join(out)


def pam_auth_update(tree: Tree) -> None:
    """Write /etc/pam.d/common-* and /var/lib/pam as ``pam-auth-update --package``."""
    profiles: dict[str, Profile] = {}
    for name in tree.children(CONFIGS):
        if name.endswith("~") or (name.startswith("#") and name.endswith("#")):
            continue
        node = tree.get(f"{CONFIGS}/{name}")
        if node is not None and node.kind == FILE:
            profiles[name] = parse_profile(node.content().decode("utf-8", "replace"))
    ordered = sorted(profiles, key=lambda n: (-_priority(profiles[n]), _Desc(n)))
    enabled = [n for n in ordered if profiles[n].get("Default") == "yes"]
    tree.put_dir("var/lib/pam")
    for kind in TYPES:
        template = tree.get(f"{TEMPLATES}/common-{kind}")
        if template is None or template.kind != FILE:
            continue
        uc = kind[0].upper() + kind[1:]
        prefix = kind.replace("-noninteractive", "")
        text = _from_template(
            template.content().decode("utf-8", "replace"), profiles, enabled, uc, prefix
        )
        tree.put_file(f"etc/pam.d/common-{kind}", text.encode())
        tree.put_file(f"var/lib/pam/{kind}", _saved(profiles, enabled, uc).encode())
    tree.put_file("var/lib/pam/seen", "".join(f"{n}\n" for n in ordered).encode())


class _Desc(str):
    """Sorts names in descending order (pam-auth-update's ``$b cmp $a``)."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)
