"""The dpkg database and the maintainer-script effects of a root filesystem.

Where the host has the real tools, they are the judges: dpkg-query and dpkg --audit
read the database repro wrote, update-alternatives --query reads its alternatives,
openssl computes the subject hashes of the certificate links.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from debs import EPOCH, E, Pkg, dirs, make_deb

from repro.rootfs._cacerts import pem_certificates, subject_hash, update_ca_certificates
from repro.rootfs._deb import DIR, FILE, SYMLINK, DebPackage, parse_control, read_deb
from repro.rootfs._dpkg import FIELD_ORDER, file_list, write_database
from repro.rootfs._effects import apply, parse_alternatives
from repro.rootfs._pam import pam_auth_update
from repro.rootfs._tree import Tree


@pytest.fixture
def opened() -> Iterator[list[DebPackage]]:
    packages: list[DebPackage] = []
    yield packages
    for p in packages:
        p.close()


def build(
    tmp_path: Path, opened: list[DebPackage], *pkgs: Pkg, prefer: tuple[str, ...] = ()
) -> tuple[Tree, list[DebPackage], object]:
    packages = []
    for pkg in pkgs:
        package = read_deb(make_deb(tmp_path, pkg), pkg.name)
        opened.append(package)
        packages.append(package)
    packages.sort(key=lambda p: p.name)
    tree = Tree(EPOCH, label="test")
    for package in packages:
        tree.add_package(package, prefer)
    effects = apply(tree, packages, EPOCH)
    write_database(tree, packages, effects.db, "amd64", tree.replaced)
    tree.check_links()
    return tree, packages, effects


def extract(tree: Tree, root: Path) -> Path:
    """Write the tree to disk as the image would hold it (for the real tools to read)."""
    for path, node in sorted(tree.nodes.items()):
        if path == ".":
            continue
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if node.kind == DIR:
            target.mkdir(parents=True, exist_ok=True)
        elif node.kind == SYMLINK:
            target.symlink_to(node.linkname)
        elif node.kind == FILE:
            target.write_bytes(node.content())
            target.chmod(node.mode & 0o777)
    return root


def paragraphs(status: bytes) -> list[dict[str, str]]:
    return [
        {f.name: f.value for f in parse_control(block)}
        for block in status.decode().split("\n\n")
        if block.strip()
    ]


APP = Pkg(
    "app",
    "1.2-3",
    fields={
        "Homepage": "https://example.org/app",
        "Description": "an app\n that does things",
        "Depends": "libthing (>= 1)",
        "Maintainer": "Someone <s@example.org>",
        "Priority": "optional",
        "Section": "utils",
        "Installed-Size": "12",
        "Essential": "no",
        "Built-Using": "foo (= 1)",
    },
    entries=[
        *dirs("./", "./etc", "./etc/app", "./bin", "./usr", "./usr/share", "./usr/share/app"),
        E("./etc/app/app.conf", b"setting=1\n"),
        E("./bin/app", b"#!/bin/sh\n", mode=0o755),
        E("./usr/share/app/data", b"data"),
    ],
    scripts={
        "conffiles": b"/etc/app/app.conf\n",
        "triggers": b"interest-noawait /usr/share/app\ninterest app-reload\nactivate-noawait x\n",
        "postinst": b"#!/bin/sh\nset -e\nexit 0\n",
    },
)
LIB = Pkg(
    "libthing",
    "1.0",
    fields={"Multi-Arch": "same", "Essential": "yes", "Priority": "required"},
    entries=[*dirs("./usr", "./usr/lib"), E("./usr/lib/libthing.so.1", b"ELF")],
    scripts={"triggers": b"interest-await ldconfig\n"},
)


def test_status_has_every_package_installed_with_dpkgs_field_order(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    tree, packages, _ = build(tmp_path, opened, APP, LIB)
    status = tree.read("var/lib/dpkg/status")
    found = paragraphs(status)
    assert [p["Package"] for p in found] == ["app", "libthing"]
    for p in found:
        assert p["Status"] == "install ok installed"
    app = found[0]
    assert "Essential" not in app  # "no" is not written, as dpkg does
    assert found[1]["Essential"] == "yes"
    assert app["Conffiles"] == "\n /etc/app/app.conf " + hashlib.md5(b"setting=1\n").hexdigest()
    names = [line.split(":", 1)[0] for line in status.decode().split("\n\n")[0].splitlines()]
    names = [n for n in names if n and not n.startswith(" ")]
    known = [n for n in names if n in FIELD_ORDER]
    assert known == sorted(known, key=FIELD_ORDER.index)
    assert names[-2:] == ["Homepage", "Built-Using"]  # unknown fields last, in control order
    assert names.index("Description") < names.index("Homepage")


def test_dpkg_itself_reads_the_database(tmp_path: Path, opened: list[DebPackage]) -> None:
    if not shutil.which("dpkg-query"):
        pytest.skip("dpkg is not installed")
    tree, _, _ = build(tmp_path, opened, APP, LIB)
    root = extract(tree, tmp_path / "root")
    admin = str(root / "var/lib/dpkg")
    query = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-W", "-f=${binary:Package} ${db:Status-Abbrev}\n"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert query.stdout.splitlines() == ["app ii ", "libthing:amd64 ii "]
    listed = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-L", "app"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert listed[:2] == ["/.", "/etc"] and "/bin/app" in listed  # the package's own paths
    owner = subprocess.run(
        ["dpkg-query", f"--admindir={admin}", "-S", "/usr/lib/libthing.so.1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert owner.startswith("libthing:amd64:")
    audit = subprocess.run(
        ["dpkg", f"--admindir={admin}", "--audit"], capture_output=True, text=True
    )
    assert audit.returncode == 0 and audit.stdout == "", audit.stdout + audit.stderr


def test_info_files_and_triggers(tmp_path: Path, opened: list[DebPackage]) -> None:
    tree, _, _ = build(tmp_path, opened, APP, LIB)
    info = "var/lib/dpkg/info"
    assert tree.read(f"{info}/app.conffiles") == b"/etc/app/app.conf\n"
    assert tree.get(f"{info}/app.postinst").mode == 0o755  # type: ignore[union-attr]
    assert tree.exists(f"{info}/libthing:amd64.list")  # Multi-Arch: same
    assert tree.exists(f"{info}/libthing:amd64.md5sums")
    assert tree.read(f"{info}/app.list").splitlines()[:3] == [b"/.", b"/etc", b"/etc/app"]
    assert tree.read("var/lib/dpkg/triggers/File") == b"/usr/share/app app/noawait\n"
    assert tree.read("var/lib/dpkg/triggers/app-reload") == b"app\n"
    assert tree.read("var/lib/dpkg/triggers/ldconfig") == b"libthing:amd64\n"
    assert tree.read("var/lib/dpkg/triggers/Unincorp") == b""
    assert not tree.exists("var/lib/dpkg/triggers/x")  # an activation leaves nothing


def test_a_replaced_path_leaves_the_losers_list(tmp_path: Path, opened: list[DebPackage]) -> None:
    a = Pkg("alpha", entries=[*dirs("./bin"), E("./bin/tool", b"alpha")])
    b = Pkg("beta", entries=[*dirs("./usr/bin"), E("./usr/bin/tool", b"beta")])
    tree, packages, _ = build(tmp_path, opened, a, b, prefer=("beta",))
    assert tree.read("bin/tool") == b"beta"
    assert b"/bin/tool" not in tree.read("var/lib/dpkg/info/alpha.list")
    assert b"/usr/bin/tool" in tree.read("var/lib/dpkg/info/beta.list")
    assert b"/bin/tool" in file_list(packages[0])  # without the replacement, it is there


AWK_POSTINST = b"""#!/bin/sh
set -e
if [ "$1" = "configure" ]; then
        update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\
            --slave /usr/bin/nawk nawk /usr/bin/mawk
fi
"""


def test_alternatives_are_parsed_from_literal_commands_only() -> None:
    assert parse_alternatives(AWK_POSTINST.decode()) == [
        [
            "--install",
            "/usr/bin/awk",
            "awk",
            "/usr/bin/mawk",
            "5",
            "--slave",
            "/usr/share/man/man1/awk.1.gz",
            "awk.1.gz",
            "/usr/share/man/man1/mawk.1.gz",
            "--slave",
            "/usr/bin/nawk",
            "nawk",
            "/usr/bin/mawk",
        ]
    ]
    assert parse_alternatives('update-alternatives --install /usr/bin/x x "$BIN" 10\n') is None
    assert parse_alternatives("# update-alternatives --install a b c 1\necho hi\n") == []


def test_alternatives_links_and_state_as_update_alternatives_reads_them(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    mawk = Pkg(
        "mawk",
        entries=[
            *dirs("./usr/bin", "./usr/share/man/man1"),
            E("./usr/bin/mawk", b"ELF", mode=0o755),
            E("./usr/share/man/man1/mawk.1.gz", b"man"),
        ],
        scripts={"postinst": AWK_POSTINST},
    )
    tree, _, effects = build(tmp_path, opened, mawk)
    assert effects.unreproduced == {}  # type: ignore[attr-defined]  # mawk's script is known
    assert tree.get("usr/bin/awk", follow=False).linkname == "/etc/alternatives/awk"  # type: ignore[union-attr]
    assert tree.get("etc/alternatives/awk", follow=False).linkname == "/usr/bin/mawk"  # type: ignore[union-attr]
    assert tree.read("usr/bin/nawk") == b"ELF"
    if not shutil.which("update-alternatives"):
        pytest.skip("update-alternatives is not installed")
    root = extract(tree, tmp_path / "root")
    query = subprocess.run(
        ["update-alternatives", "--root", str(root), "--query", "awk"],
        capture_output=True,
        text=True,
    )
    assert query.returncode == 0, query.stderr
    fields = dict(
        line.split(": ", 1) for line in query.stdout.splitlines() if ": " in line and line[0] != " "
    )
    assert fields["Status"] == "auto" and fields["Best"] == "/usr/bin/mawk"
    assert fields["Value"] == "/usr/bin/mawk"


def test_an_unknown_packages_scripts_are_reported(tmp_path: Path, opened: list[DebPackage]) -> None:
    odd = Pkg("oddity", entries=[*dirs("./etc")], scripts={"postinst": b"#!/bin/sh\ntouch /x\n"})
    _, _, effects = build(tmp_path, opened, odd)
    assert effects.unreproduced == {"oddity": ["postinst"]}  # type: ignore[attr-defined]


PASSWD = b"root:*:0:0:root:/root:/bin/bash\n_apt:*:42:65534::/nonexistent:/usr/sbin/nologin\n"
GROUP = b"root:*:0:\nshadow:*:42:\nutmp:*:43:\nmail:*:8:\n"


def test_accounts_shadow_and_nonroot(tmp_path: Path, opened: list[DebPackage]) -> None:
    base_passwd = Pkg(
        "base-passwd",
        entries=[
            *dirs("./usr/share/base-passwd"),
            E("./usr/share/base-passwd/passwd.master", PASSWD),
            E("./usr/share/base-passwd/group.master", GROUP),
        ],
        scripts={"postinst": b"#!/bin/sh\n"},
    )
    login_defs = b"# comment\nPASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\t0\nPASS_WARN_AGE\t7\n"
    passwd = Pkg(
        "passwd",
        entries=[*dirs("./etc"), E("./etc/login.defs", login_defs)],
        scripts={"postinst": b"#!/bin/sh\nshadowconfig on\n"},
    )
    tree, _, _ = build(tmp_path, opened, base_passwd, passwd)
    day = EPOCH // 86400
    assert tree.read("etc/passwd").decode().splitlines() == [
        "root:x:0:0:root:/root:/bin/bash",
        "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin",
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin",
    ]
    shadow = tree.read("etc/shadow").decode().splitlines()
    assert shadow[0] == f"root:*:{day}:0:99999:7:::"
    assert len(shadow) == 3 and shadow[2].startswith("nonroot:*:")
    node = tree.get("etc/shadow")
    assert node is not None and (node.mode, node.gid) == (0o640, 42)
    assert "nonroot:x:65532:" in tree.read("etc/group").decode().splitlines()
    assert tree.read("etc/gshadow").decode().splitlines()[0] == "root:*::"
    home = tree.get("home/nonroot")
    assert home is not None and (home.kind, home.uid, home.mode) == (DIR, 65532, 0o700)


def test_without_base_passwd_root_and_nonroot_still_exist(
    tmp_path: Path, opened: list[DebPackage]
) -> None:
    tree, _, _ = build(tmp_path, opened, Pkg("tiny", entries=[*dirs("./etc")]))
    names = [line.split(":")[0] for line in tree.read("etc/passwd").decode().splitlines()]
    assert names == ["root", "nonroot"]
    assert not tree.exists("etc/shadow")  # nothing uses shadow passwords without passwd


def test_shells_from_the_template_and_shells_d(tmp_path: Path, opened: list[DebPackage]) -> None:
    du = Pkg(
        "debianutils",
        entries=[
            *dirs("./usr/share/debianutils/shells.d"),
            E("./usr/share/debianutils/shells", b"# /etc/shells: valid login shells\n/bin/sh\n"),
        ],
        scripts={"postinst": b"#!/bin/sh\nupdate-shells\n"},
    )
    zsh = Pkg(
        "zsh",
        entries=[
            *dirs("./usr/share/debianutils/shells.d", "./bin"),
            E("./usr/share/debianutils/shells.d/zsh", b"/bin/zsh\n/usr/bin/zsh\n"),
        ],
    )
    tree, _, _ = build(tmp_path, opened, du, zsh)
    assert tree.read("etc/shells").decode().splitlines() == [
        "# /etc/shells: valid login shells",
        "/bin/sh",
        "/usr/bin/sh",  # /bin is /usr/bin on merged /usr, as dpkg-realpath says
        "/bin/zsh",
        "/usr/bin/zsh",
    ]
    # update-shells keeps every package line and its real path, repeats included
    assert tree.read("var/lib/shells.state").decode().splitlines() == [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/zsh",
        "/usr/bin/zsh",
        "/usr/bin/zsh",
    ]


TEMPLATE = """#
# /etc/pam.d/common-auth - header
#
# here are the per-package modules (the "Primary" block)
auth\tstale-line-from-the-template
# here's the fallback if no module succeeds
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
# and here are more per-package modules (the "Additional" block)
# end of pam-auth-update config
"""


def test_pam_auth_update_blocks_and_jumps(tmp_path: Path) -> None:
    tree = Tree(EPOCH)
    tree.put_file("usr/share/pam/common-auth", TEMPLATE.encode())
    tree.put_file(
        "usr/share/pam-configs/unix",
        b"Name: Unix\nDefault: yes\nPriority: 256\nAuth-Type: Primary\nAuth:\n"
        b"\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass\n"
        b"Auth-Initial:\n\t[success=end default=ignore]\tpam_unix.so nullok\n",
    )
    tree.put_file(
        "usr/share/pam-configs/sss",
        b"Name: SSS\nDefault: yes\nPriority: 128\nAuth-Type: Primary\nAuth:\n"
        b"\t[success=end default=ignore]\tpam_sss.so use_first_pass\n",
    )
    tree.put_file(
        "usr/share/pam-configs/off",
        b"Name: Off\nDefault: no\nPriority: 512\nAuth-Type: Primary\n"
        b"Auth:\n\trequired\tpam_off.so\n",
    )
    pam_auth_update(tree)
    text = tree.read("etc/pam.d/common-auth").decode()
    block = text.split('(the "Primary" block)\n')[1].split("# here's the fallback")[0]
    # highest priority first, its -Initial lines; each success jumps past the rest of
    # the block and the pam_deny fallback
    assert block.splitlines() == [
        "auth\t[success=2 default=ignore]\tpam_unix.so nullok",
        "auth\t[success=1 default=ignore]\tpam_sss.so use_first_pass",
    ]
    assert "stale-line" not in text and "pam_off" not in text
    assert text.endswith("# end of pam-auth-update config\n")
    assert tree.read("var/lib/pam/seen") == b"off\nunix\nsss\n"  # every profile, by priority
    saved = tree.read("var/lib/pam/auth").decode()
    assert saved.startswith("Module: unix\n[success=end default=ignore]\tpam_unix.so nullok\n")


def _make_certificate(directory: Path, name: str, subject: str) -> Path:
    key, crt = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-utf8",
            "-subj", subject, "-multivalue-rdn",
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return crt


def test_subject_hashes_agree_with_openssl(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    subjects = {
        "plain": "/CN=Example Root CA/O=Example/C=DE",
        "spaces": "/CN=  Lots   of\tSpace  /O=MiXeD CaSe",
        "utf8": "/CN=Főtanúsítvány Ünïcode/O=Ärger",
        "multi": "/CN=Two+OU=Values/O=Multi-valued RDN",
    }
    for name, subject in subjects.items():
        crt = _make_certificate(tmp_path, name, subject)
        expected = subprocess.run(
            ["openssl", "x509", "-noout", "-subject_hash", "-in", str(crt)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert subject_hash(pem_certificates(crt.read_bytes())[0]) == expected, name


def test_update_ca_certificates_links_hashes_and_bundle(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    tree = Tree(EPOCH)
    pems = {}
    for name in ("Zeta_Root", "alpha (test), CA"):
        crt = _make_certificate(tmp_path, "c" + str(len(pems)), f"/CN={name}")
        pems[name] = crt.read_bytes().rstrip(b"\n")  # the bundle adds the missing newline
        tree.put_file(f"usr/share/ca-certificates/mozilla/{name}.crt", pems[name])
    tree.put_dir("usr/local/share/ca-certificates")
    update_ca_certificates(tree)
    conf = tree.read("etc/ca-certificates.conf").decode().splitlines()
    entries = [line for line in conf if not line.startswith("#")]
    assert entries == ["mozilla/Zeta_Root.crt", "mozilla/alpha (test), CA.crt"]  # bytewise
    link = tree.get("etc/ssl/certs/alpha_=test=__CA.pem", follow=False)
    assert link is not None and link.linkname.endswith("/mozilla/alpha (test), CA.crt")
    bundle = tree.read("etc/ssl/certs/ca-certificates.crt")
    assert bundle == pems["Zeta_Root"] + b"\n" + pems["alpha (test), CA"] + b"\n"
    hashed = [n for n in tree.children("etc/ssl/certs") if n.endswith(".0")]
    assert len(hashed) == 2
    for h in hashed:
        target = tree.get(f"etc/ssl/certs/{h}", follow=False)
        assert target is not None and target.linkname.endswith(".pem")  # relative, as rehash
        source = tree.read(f"etc/ssl/certs/{target.linkname}")
        expected = (
            subprocess.run(
                ["openssl", "x509", "-noout", "-subject_hash"],
                input=source,
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        assert h == expected + ".0"
