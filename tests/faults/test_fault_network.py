"""Network faults between repro and the registry, and between repro and the package
mirror: a loopback proxy (tests/registryproxy.py, on 127.0.0.1 only) in front of each
answers 500s and 429 with Retry-After, resets the connection mid-answer, stalls, and
flips bytes, on the real `repro lock`, `repro publish` and `repro build`.

Each fault: the command recovered (exit 0, the clean run's result) or ended with one
clear line; nothing half-written; a clean re-run succeeds. Outcomes go to the suite's
tally (tests/faults/conftest.py prints it).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from faultlib import Work, assert_fine, check_tag, inspect, record, run, workspace
from registryproxy import FaultProxy, Rule

# The examples' bases in the registry (jq on debian12, greet on hello): tests/conftest.py.
pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("example_images")]


@pytest.fixture
def proxy(registry: str) -> Iterator[FaultProxy]:
    with FaultProxy(registry) as p:
        yield p


Fault = tuple[str, Callable[[], list[Rule]]]


def both(path: str, action: str, **kw: object) -> Callable[[], list[Rule]]:
    return lambda: [Rule(m, path, action, **kw) for m in ("HEAD", "GET")]  # type: ignore[arg-type]


def one(method: str, path: str, action: str, **kw: object) -> Callable[[], list[Rule]]:
    return lambda: [Rule(method, path, action, **kw)]  # type: ignore[arg-type]


LOCK_FAULTS: list[Fault] = [
    ("registry: 500 twice on the manifest", both("/manifests/", "status", status=500, times=2)),
    (
        "registry: 429 Retry-After 1 on the manifest",
        both("/manifests/", "status", status=429, headers={"Retry-After": "1"}),
    ),
    ("registry: connection reset before the answer", both("/manifests/", "drop")),
    ("registry: connection reset mid-manifest", one("GET", "/manifests/", "reset")),
    ("registry: stall 2 s, then hang up", both("/manifests/", "stall", delay=2.0, status=0)),
    ("registry: wrong bytes in the manifest", one("GET", "/manifests/", "corrupt")),
    ("registry: 500 on every manifest request", both("/manifests/", "status", times=None)),
]


def test_lock_through_a_faulty_registry(tmp_path: Path, proxy: FaultProxy) -> None:
    work = workspace(tmp_path / "w", "127.0.0.1:5000", base_host=proxy.host)
    clean = run(work, "lock", "hello")
    assert clean.returncode == 0, clean.stderr
    new = work.lock("hello").read_bytes()

    def correct() -> str:
        return "" if work.lock("hello").read_bytes() == new else "another lock"

    def rerun() -> bool:
        again = run(work, "lock", "hello")
        return again.returncode == 0 and work.lock("hello").read_bytes() == new

    outcomes = []
    for fault, rules in LOCK_FAULTS:
        work.lock("hello").unlink()
        for rule in rules():
            proxy.add(rule)
        r = run(work, "lock", "hello")
        proxy.rules.clear()
        state = inspect(work, killed=False, locks={"hello": [None, new]})
        outcomes.append(record(fault, "lock", r.returncode, r.stderr, correct, state, rerun=rerun))
    for o in outcomes:
        assert_fine(o)
    # Every transient fault is retried; the permanent one ends in one line.
    assert all(o.result == "recovered" for o in outcomes[:-1]), outcomes
    assert outcomes[-1].result == "failed cleanly", outcomes[-1]


PUBLISH_FAULTS: list[Fault] = [
    ("registry: 500 twice on the manifest PUT", one("PUT", "/manifests/", "status", times=2)),
    (
        "registry: 429 Retry-After 1 on the upload",
        one("POST", "/blobs/uploads/", "status", status=429, headers={"Retry-After": "1"}),
    ),
    ("registry: connection reset mid-blob upload", one("PUT", "/blobs/uploads/", "drop")),
    ("registry: stall 3 s on a blob check", one("HEAD", "/blobs/", "stall", delay=3.0)),
    (
        "registry: stall 2 s, then hang up on the PUT",
        one("PUT", "/manifests/", "stall", delay=2.0, status=0),
    ),
    (
        "registry: 503 on every manifest PUT",
        one("PUT", "/manifests/", "status", status=503, times=None),
    ),
]


def test_publish_through_a_faulty_registry(
    tmp_path: Path, proxy: FaultProxy, registry: str
) -> None:
    work = workspace(tmp_path / "w", proxy.host)
    built = run(work, "build", "hello", "--json", "--progress", "quiet")
    assert built.returncode == 0, built.stderr
    digest = json.loads(built.stdout)[0]["digest"]
    outcomes = []
    for fault, rules in PUBLISH_FAULTS:
        # A namespace of its own for each fault: every blob and the tag are new.
        namespace = f"repro-test/faults-{uuid.uuid4().hex[:10]}"
        (work.path / "recipes/repro.toml").write_text(f'registry = "{proxy.host}/{namespace}"\n')
        tag = f"{registry}/{namespace}/hello:latest"  # checked directly, not through the proxy
        for rule in rules():
            proxy.add(rule)
        r = run(work, "publish", "hello", "--json")
        proxy.rules.clear()

        def correct(r: CompletedProcess[str] = r) -> str:
            got = json.loads(r.stdout)[0]["digest"]
            return "" if got == digest else f"published {got}"

        def rerun(tag: str = tag) -> bool:
            again = run(work, "publish", "hello")
            return again.returncode == 0 and not check_tag(tag, [digest])

        state = inspect(work, killed=False, tags={tag: [None, digest]})
        outcomes.append(
            record(fault, "publish", r.returncode, r.stderr, correct, state, rerun=rerun)
        )
    for o in outcomes:
        assert_fine(o)
    assert all(o.result == "recovered" for o in outcomes[:-1]), outcomes
    assert outcomes[-1].result == "failed cleanly", outcomes[-1]


# --- blobs and packages: `repro build jq`, reading its base's package database from
# the registry and its packages from the mirror -----------------------------------------


def apt_routes() -> Callable[[str], str]:
    """Where the mirror proxy sends a path: security pool files to the machine's apt
    source for bookworm-security, everything else to its source for bookworm."""
    from repro.config import machine_apt_sources

    sources = machine_apt_sources()
    main = next(s.uri for s in sources if "bookworm" in s.suites)
    security = next((s.uri for s in sources if "bookworm-security" in s.suites), main)
    return lambda path: security if path.startswith("/pool/updates/") else main


@pytest.fixture
def mirror() -> Iterator[FaultProxy]:
    with FaultProxy("", route=apt_routes()) as p:
        yield p


def jq_workspace(tmp: Path, registry_host: str) -> Work:
    """recipes/jq, reading recipe:debian12 from the shared namespace through
    `registry_host` (nothing is pushed), with a vault of its own that is empty: a
    mirror fault is not papered over by the vault."""
    vault = f"127.0.0.1:5000/repro-test/faults-{uuid.uuid4().hex[:10]}/vault"
    work = workspace(
        tmp, registry_host, ("debian12", "jq"), namespace="repro", extra=f'vault = "{vault}"\n'
    )
    lock = work.lock("jq")  # the base's repository, as `repro lock` would name it
    lock.write_text(lock.read_text().replace('"127.0.0.1:5000/', f'"{registry_host}/'))
    return work


JQ_FAULTS: list[tuple[str, str, Callable[[], list[Rule]]]] = [
    ("registry", "registry: connection reset mid-blob", one("GET", "/blobs/sha256:", "reset")),
    ("registry", "registry: wrong bytes in a blob", one("GET", "/blobs/sha256:", "corrupt")),
    (
        "mirror",
        "mirror: 429 Retry-After 1 on a package",
        one("GET", "/pool/", "status", status=429, headers={"Retry-After": "1"}),
    ),
    ("mirror", "mirror: connection reset mid-package", one("GET", "/pool/", "reset")),
    (
        "mirror",
        "mirror: stall 2 s, then hang up",
        one("GET", "/pool/", "stall", delay=2.0, status=0),
    ),
    ("mirror", "mirror: wrong bytes in a package", one("GET", "/pool/", "corrupt")),
    (
        "mirror",
        "mirror: 503 on every package",
        one("GET", "/pool/", "status", status=503, times=None),
    ),
]


@pytest.mark.mirror
def test_build_through_a_faulty_registry_and_mirror(
    tmp_path: Path, proxy: FaultProxy, mirror: FaultProxy
) -> None:
    work = jq_workspace(tmp_path / "w", proxy.host)
    env = work.env(REPRO_MIRROR_APT=f"http://{mirror.host}")
    args = ("build", "jq", "--json", "--progress", "quiet")
    clean = run(work, *args, env=env)
    assert clean.returncode == 0, clean.stderr
    digest = json.loads(clean.stdout)[0]["digest"]
    out = work.path / "out" / "jq"

    def rerun() -> bool:
        again = run(work, *args, env=env)
        return again.returncode == 0 and json.loads(again.stdout)[0]["digest"] == digest

    outcomes = []
    for where, fault, rules in JQ_FAULTS:
        # Forget what the fault is about: the base's package database (read from the
        # registry) or the packages (from the mirror).
        cached = work.cache / "repro" / ("installed" if where == "registry" else "packages")
        shutil.rmtree(cached)
        target = proxy if where == "registry" else mirror
        for rule in rules():
            target.add(rule)
        r = run(work, *args, env=env)
        target.rules.clear()

        def correct(r: CompletedProcess[str] = r) -> str:
            got = json.loads(r.stdout)[0]["digest"]
            return "" if got == digest else f"built {got}"

        state = inspect(work, killed=False, layouts=[out])
        outcomes.append(record(fault, "build", r.returncode, r.stderr, correct, state, rerun=rerun))
    for o in outcomes:
        assert_fine(o)
    assert outcomes[-1].result == "failed cleanly", outcomes[-1]
