"""Fixtures for the cause table: one Dockerfile line per class, batched into recipes.

Each fixture is a step that breaks reproducibility in one known way and the path it
breaks; `test_causes_engine.py` builds the batch twice with `repro verify` (default
variations on) and checks that every path is named with its fixture's cause, and
`scripts/cause_table.py` writes the table in docs/verify.md from this list.

The base is busybox, so some tools are simulated with what busybox has: a fixture
marked `simulated` says how (GNU gzip's header mtime, a locale's collation, a step
that behaves differently on two hosts, told apart here by the builds' hostnames,
which `repro verify` always makes differ).
"""

from __future__ import annotations

from dataclasses import dataclass

# The second build's sandbox hostname is repro-verify-b-…; the first's is BuildKit's
# default, or repro-verify-a-… under --no-cache.
IN_BUILD_2 = "*-b-*"


@dataclass(frozen=True)
class Fixture:
    cause: str
    path: str  # the differing path in the image
    step: str  # the Dockerfile line(s) that produce it
    simulated: str = ""  # how the fixture stands in for the real tool, if it does
    files: tuple[tuple[str, str], ...] = ()  # context files


FIXTURES: tuple[Fixture, ...] = (
    Fixture("timestamp-in-content", "/etc/built-at", "date > /etc/built-at"),
    Fixture(
        "pyc",
        "/app/__pycache__/m.cpython-311.pyc",
        "mkdir -p /app/__pycache__ && cd /app/__pycache__ && "
        "printf '\\247\\015\\015\\012\\0\\0\\0\\0' > m.cpython-311.pyc && "
        "date +%s >> m.cpython-311.pyc",
        simulated="a .pyc header (3.11 magic, flags) followed by the build time, as py_compile "
        "writes the source mtime",
    ),
    Fixture("var-log", "/var/log/setup.log", "mkdir -p /var/log && date > /var/log/setup.log"),
    Fixture(
        "dpkg-apt",
        "/var/lib/dpkg/status-old",
        "mkdir -p /var/lib/dpkg && date > /var/lib/dpkg/status-old",
        simulated="a dated file where dpkg keeps its backups",
    ),
    Fixture(
        "apk",
        "/lib/apk/db/installed",
        "mkdir -p /lib/apk/db && date +%s > /lib/apk/db/installed",
        simulated="a dated file where apk keeps its database",
    ),
    Fixture(
        "ldconfig-aux-cache",
        "/var/cache/ldconfig/aux-cache",
        "mkdir -p /var/cache/ldconfig && date +%s > /var/cache/ldconfig/aux-cache",
        simulated="a dated file where ldconfig keeps its aux-cache",
    ),
    Fixture(
        "shadow-date",
        "/etc/shadow",
        'echo "app:!:$(date +%s):0:99999:7:::" > /etc/shadow',
        simulated="the seconds rather than the day number in field 3, so it differs within a day",
    ),
    Fixture(
        "machine-id",
        "/etc/machine-id",
        "tr -d - < /proc/sys/kernel/random/uuid > /etc/machine-id",
    ),
    Fixture(
        "ssh-host-keys",
        "/etc/ssh/ssh_host_ed25519_key",
        "mkdir -p /etc/ssh && head -c 64 /dev/urandom | base64 > /etc/ssh/ssh_host_ed25519_key",
        simulated="random bytes where ssh-keygen -A writes a host key",
    ),
    Fixture(
        "cache-with-times",
        "/var/cache/fontconfig/0123-le64.cache-7",
        "mkdir -p /var/cache/fontconfig && date +%s > /var/cache/fontconfig/0123-le64.cache-7",
        simulated="a dated file where fc-cache writes",
    ),
    Fixture(
        "file-set",
        "/opt/build.lock",
        f'mkdir -p /opt && case "$(hostname)" in {IN_BUILD_2}) '
        "echo locked > /opt/build.lock;; esac",
        simulated="a lock file left behind in one build only",
    ),
    Fixture(
        "hardlink-vs-copy",
        "/opt/hl/b",
        "mkdir -p /opt/hl && echo data > /opt/hl/a && "
        f'case "$(hostname)" in {IN_BUILD_2}) cp /opt/hl/a /opt/hl/b;; '
        "*) ln /opt/hl/a /opt/hl/b;; esac",
        simulated="cp -l in one build, a plain copy in the other",
    ),
    Fixture("symlink-target", "/opt/current", "ln -s /tmp/cache-$(date +%s) /opt/current"),
    Fixture(
        "gzip-header",
        "/usr/share/doc/app/notes.gz",
        "mkdir -p /usr/share/doc/app && cd /usr/share/doc/app && t=$(date +%s) && "
        "printf '\\037\\213\\010\\000' > notes.gz && "
        "printf \"$(printf '\\\\%03o\\\\%03o\\\\%03o\\\\%03o' $((t&255)) $((t>>8&255)) "
        '$((t>>16&255)) $((t>>24&255)))" >> notes.gz && '
        "echo same notes | gzip -c | tail -c +9 >> notes.gz",
        simulated="busybox gzip writes mtime 0; GNU gzip without -n writes the time, "
        "so the header is written by hand around busybox's deflate data",
    ),
    Fixture(
        "archive-member-times",
        "/opt/pkg.tar",
        "mkdir -p /tmp/t/pkg && echo hi > /tmp/t/pkg/a && tar -C /tmp/t -cf /opt/pkg.tar pkg",
    ),
    Fixture(
        "archive-member-times",
        "/opt/app.jar",
        # A stored zip with one member, as Info-ZIP writes it: DOS time plus the "UT"
        # extra field holding the member's mtime (the build time) in seconds.
        "le() { v=$1; n=$2; o=; while [ $n -gt 0 ]; do o=$o$(printf '\\\\%03o' $((v&255))); "
        'v=$((v>>8)); n=$((n-1)); done; printf "$o"; } && '
        "t=$(date +%s) && h=$(date +%H) && m=$(date +%M) && s=$(date +%S) && "
        "dt=$(( (${h#0}<<11) | (${m#0}<<5) | (${s#0}/2) )) && dd=$(( (43<<9) | (1<<5) | 1 )) && "
        "cd /opt && { "
        "printf 'PK\\003\\004'; le 20 2; le 0 2; le 0 2; le $dt 2; le $dd 2; "
        "le 909783072 4; le 6 4; le 6 4; le 9 2; le 9 2; printf 'hello.txt'; "
        "printf 'UT'; le 5 2; le 1 1; le $t 4; printf 'hello\\n'; "
        "printf 'PK\\001\\002'; le 798 2; le 20 2; le 0 2; le 0 2; le $dt 2; le $dd 2; "
        "le 909783072 4; le 6 4; le 6 4; le 9 2; le 9 2; le 0 2; le 0 2; le 0 2; "
        "le 2175008768 4; le 0 4; printf 'hello.txt'; printf 'UT'; le 5 2; le 1 1; le $t 4; "
        "printf 'PK\\005\\006'; le 0 2; le 0 2; le 1 2; le 1 2; le 64 4; le 54 4; le 0 2; "
        "} > app.jar",
        simulated="busybox has no zip: the member headers are written with printf "
        "(CRC computed beforehand), with the times Info-ZIP's zip records",
    ),
    Fixture(
        "archive-member-order",
        "/opt/order.tar",
        "mkdir -p /tmp/o && for f in a b c d e f g h; do echo $f > /tmp/o/$f; done && "
        "touch -d @1700000000 /tmp/o/* && cd /tmp/o && tar -cf /opt/order.tar $(ls | shuf)",
        simulated="shuf stands in for directory order",
    ),
    Fixture(
        "archive-member-owner",
        "/opt/owner.tar",
        "mkdir -p /tmp/w && echo x > /tmp/w/f && touch -d @1700000000 /tmp/w/f && "
        "chown $(( $(od -An -N2 -tu2 /dev/urandom) + 1 )) /tmp/w/f && "
        "tar -C /tmp/w -cf /opt/owner.tar f",
        simulated="a random uid stands in for the building user's",
    ),
    Fixture(
        "cpio-metadata",
        "/opt/initrd.cpio",
        "mkdir -p /tmp/c && echo x > /tmp/c/init && cd /tmp/c && "
        "echo init | cpio -o -H newc > /opt/initrd.cpio",
    ),
    Fixture(
        "filesystem-image",
        "/opt/fs.img",
        "dd if=/dev/zero of=/opt/fs.img bs=1024 count=128 2>/dev/null && "
        "mke2fs -F /opt/fs.img > /dev/null",
    ),
    Fixture(
        "owner",
        "/opt/owned",
        "echo x > /opt/owned && chown $(( $(od -An -N2 -tu2 /dev/urandom) + 1 )) /opt/owned",
        simulated="a random uid stands in for the building user's",
    ),
    Fixture(
        "mtime",
        "/opt/old",
        "echo x > /opt/old && touch -d @$(( 1600000000 + $(date +%s) % 100000 )) /opt/old",
        simulated="a time before SOURCE_DATE_EPOCH that depends on the clock, "
        "as files unpacked from a download keep",
    ),
    Fixture("hostname", "/etc/built-on", "hostname > /etc/built-on"),
    Fixture(
        "build-path",
        "/etc/app-prefix.conf",
        'd=$(mktemp -d) && echo "prefix=$d" > /etc/app-prefix.conf',
    ),
    Fixture("random-data", "/opt/random.bin", "head -c 64 /dev/urandom > /opt/random.bin"),
    Fixture(
        "uuid",
        "/etc/app.conf",
        'echo "instance=$(cat /proc/sys/kernel/random/uuid)" > /etc/app.conf',
    ),
    Fixture(
        "gettext-date",
        "/usr/share/locale/app.pot",
        "mkdir -p /usr/share/locale && "
        'echo "\\"POT-Creation-Date: $(date \'+%Y-%m-%d %H:%M:%S%z\')\\\\n\\"" '
        "> /usr/share/locale/app.pot",
        simulated="the header line xgettext writes (with seconds, so it differs within a minute)",
    ),
    Fixture(
        "derived-checksums",
        "/opt/SHA256SUMS",
        "date > /opt/stamp && cd /opt && sha256sum stamp > /opt/SHA256SUMS",
    ),
    Fixture("random-order", "/opt/applets.txt", "ls /bin | shuf > /opt/applets.txt"),
    Fixture(
        "umask-mode",
        "/opt/data.txt",
        "COPY data.txt /opt/data.txt",
        files=(("data.txt", "context file copied without --chmod\n"),),
    ),
    # The build-arg variations: declared late, so the steps above do not see them.
    Fixture("timezone", "/etc/tz-stamp", "ARG TZ\nRUN date -d @1700000000 > /etc/tz-stamp"),
    Fixture(
        "locale",
        "/opt/ratio.txt",
        "ARG LC_ALL\n"
        "RUN case \"$LC_ALL\" in fr_*) echo 'ratio 1,5';; *) echo 'ratio 1.5';; esac "
        "> /opt/ratio.txt",
        simulated="busybox has no locales: the step prints a decimal comma under fr_FR, "
        "as printf and many tools do",
    ),
    Fixture(
        "locale-sort",
        "/opt/sorted.txt",
        "RUN case \"$LC_ALL\" in fr_*) printf 'apple\\nBanana\\ncherry\\n';; "
        "*) printf 'Banana\\napple\\ncherry\\n';; esac > /opt/sorted.txt",
        simulated="busybox sort has no collation: the step sorts as GNU sort does under "
        "fr_FR.UTF-8 (case-insensitive) and under C (bytes)",
    ),
)


def dockerfile(base_image: str, fixtures: tuple[Fixture, ...] = FIXTURES) -> str:
    """One RUN step for every shell fixture (each in a subshell), so that all of them
    read the clock in the step verify staggers by its --stagger; then the COPY and
    the build-arg fixtures, whose steps start with a Dockerfile instruction."""
    shell = [f.step for f in fixtures if not f.step.split(" ", 1)[0].isupper()]
    rest = [f.step for f in fixtures if f.step.split(" ", 1)[0].isupper()]
    run = "RUN set -e; " + " \\\n && ".join(f"( {cmd} )" for cmd in shell)
    return f"FROM {base_image}\n{run}\n" + "".join(step + "\n" for step in rest)


def context_files(fixtures: tuple[Fixture, ...] = FIXTURES) -> dict[str, str]:
    return {name: content for f in fixtures for name, content in f.files}
