"""repro verify (and repro diff on real builds) against the real BuildKit and diffoscope.

Each non-reproducible Dockerfile here is built twice by `repro verify`; the report
must name the file and its cause. A `.pyc` case is missing: the busybox base image
has no Python, and no other base image is available offline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner import run_repro

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
TOML = 'source_date_epoch = 1700000000\nnetwork = "none"\n'


def repro(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, env=env, timeout=timeout)


def recipe(tmp_path: Path, name: str, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text(dockerfile)
    (d / "recipe.toml").write_text(TOML)
    for rel, content in (files or {}).items():
        (d / rel).write_text(content)
    return d


def verify_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    r = repro("verify", "--json", *args, env=env)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    return r.returncode, json.loads(r.stdout)


def test_example_recipes_verify_identical() -> None:
    rc, results = verify_json("hello", "wordcount")
    assert rc == 0
    assert [(r["recipe"], r["verdict"], r["reproducible"]) for r in results] == [
        ("hello", "identical", True),
        ("wordcount", "identical", True),
    ]
    for r in results:
        assert r["digest1"] == r["digest2"]
        a, b = r["builds"]
        # Independent: different copies of the context, different sandbox hostnames.
        assert a["directory"] != b["directory"] and a["hostname"] != b["hostname"]


def test_concurrent_builds_of_random_bytes_are_not_merged(tmp_path: Path, base_image: str) -> None:
    """BuildKit merges identical steps of concurrent solves even with no-cache; verify's
    per-build sandbox hostname must keep them apart, so random bytes are caught even
    when both builds start at the same instant."""
    d = recipe(tmp_path, "rnd", f"FROM {base_image}\nRUN head -c 64 /dev/urandom > /random.bin\n")
    # --no-cache: both builds run the step (else the first may come from an earlier
    # run's cache, and the second then starts after it).
    rc, [result] = verify_json(str(d), "--stagger", "0", "--no-cache")
    assert rc == 1
    assert result["verdict"] == "different"
    a, b = result["builds"]
    assert a["started"] < b["finished"] and b["started"] < a["finished"]  # they overlapped
    assert [(f["path"], [c["id"] for c in f["causes"]]) for f in result["findings"]] == [
        ("/random.bin", ["random-data"])
    ]


def test_first_build_is_the_built_image_or_from_the_cache_and_checked_from_scratch(
    tmp_path: Path, base_image: str
) -> None:
    """By default verify's first build is the image `repro build` wrote from the same
    inputs (taken, not built again), else it may come from BuildKit's cache; the
    second, from scratch, must still catch a step that does not reproduce, and a
    reproducible recipe still verifies."""
    token = os.urandom(4).hex()  # a step no earlier run has cached
    bad = recipe(
        tmp_path,
        "rndc",
        f"FROM {base_image}\nRUN echo {token} > /token && head -c 64 /dev/urandom > /random.bin\n",
    )
    good = recipe(tmp_path, "okc", f"FROM {base_image}\nRUN echo {token} > /token\n")
    built = {}
    outs = {}
    for d in (bad, good):
        outs[d.name] = out = tmp_path / f"out-{d.name}"
        r = repro("build", str(d), "--output", f"oci:{out}", "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        built[d.name] = json.loads(r.stdout)[0]["digest"]

    # The image repro build wrote is build 1; the build from scratch catches the bytes.
    rc, [result] = verify_json(str(bad))
    assert rc == 1 and result["verdict"] == "different"
    a, b = result["builds"]
    assert a["reused"] == f"oci:{outs['rndc']}" and a["cached_steps"] == 0
    assert b["reused"] is None and b["cache"] is False and b["cached_steps"] == 0
    assert result["digest1"] == built["rndc"] != result["digest2"]
    assert [(f["path"], [c["id"] for c in f["causes"]]) for f in result["findings"]] == [
        ("/random.bin", ["random-data"])
    ]
    assert [p.name for p in outs["rndc"].iterdir()] != []  # the user's image stays

    r = repro("verify", str(good))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"build 1: the image repro build wrote to {outs['okc']} from the same inputs" in r.stdout
    assert built["okc"] in r.stdout

    # An input changed since (a file's mtime, which BuildKit does not key on): not
    # taken; BuildKit's cache serves the first build instead.
    os.utime(good / "Dockerfile", ns=(1_600_000_000_000_000_000,) * 2)
    rc, [result] = verify_json(str(good))
    assert rc == 0, result
    a, _ = result["builds"]
    assert a["reused"] is None and a["cache"] is True and a["cached_steps"] == 1

    # The image is no longer where repro build wrote it: BuildKit's cache again.
    shutil.rmtree(outs["rndc"])
    rc, [result] = verify_json(str(bad))
    assert rc == 1
    a, b = result["builds"]
    assert a["reused"] is None and (a["cache"], a["cached_steps"]) == (True, 1)
    assert result["digest1"] == built["rndc"]

    # --no-cache: neither build is taken or served from the cache.
    r = repro("build", str(bad), "--output", f"oci:{outs['rndc']}", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rc, [result] = verify_json(str(bad), "--no-cache")
    assert rc == 1
    builds = result["builds"]
    assert [(x["reused"], x["cache"], x["cached_steps"]) for x in builds] == [(None, False, 0)] * 2
    assert built["rndc"] not in (result["digest1"], result["digest2"])


def test_a_damaged_built_image_is_not_taken_as_the_first_build(
    tmp_path: Path, base_image: str
) -> None:
    """The image repro build wrote lies in a folder anyone may write to: one whose blob
    no longer matches its digest is passed over, with a warning naming the blob, and
    the first build is made again."""
    d = recipe(tmp_path, "dmg", f"FROM {base_image}\nRUN echo {os.urandom(4).hex()} > /t\n")
    out = tmp_path / "out-dmg"
    r = repro("build", str(d), "--output", f"oci:{out}")
    assert r.returncode == 0, r.stderr[-2000:]
    layer = max((out / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    rc, [result] = verify_json(str(d))
    assert rc == 0, result
    assert result["builds"][0]["reused"] is None and result["builds"][0]["cached_steps"] == 1
    r = repro("verify", str(d))
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("repro: warning:")]
    assert len(warnings) == 1 and str(out) in warnings[0] and layer.name in warnings[0], warnings


@pytest.mark.parametrize(
    ("run", "path", "cause"),
    [
        ("date > /etc/built-at", "/etc/built-at", "timestamp-in-content"),
        ("hostname > /etc/built-on", "/etc/built-on", "hostname"),
        (
            "mkdir -p /var/log && date > /var/log/setup.log",
            "/var/log/setup.log",
            "var-log",
        ),
        ("head -c 4096 /dev/urandom > /opt.key", "/opt.key", "random-data"),
        ("echo $$ > /pid && echo $RANDOM-$RANDOM > /seed", "/seed", "random-data"),
        # Not compiled: busybox has no Python. A file shaped like one (3.11 magic,
        # flags, then the source mtime, as py_compile writes it) with the build time.
        (
            "mkdir -p /app/__pycache__ && cd /app/__pycache__ && "
            "printf '\\247\\015\\015\\012\\0\\0\\0\\0' > m.cpython-311.pyc && "
            "date +%s%N >> m.cpython-311.pyc",
            "/app/__pycache__/m.cpython-311.pyc",
            "pyc",
        ),
    ],
)
def test_non_reproducible_dockerfiles_are_named_with_their_cause(
    tmp_path: Path, base_image: str, run: str, path: str, cause: str
) -> None:
    # Logs are what normalisation empties, so the log case compares the raw exports.
    raw = ["--raw"] if "/var/log" in path else []
    d = recipe(tmp_path, "nr", f"FROM {base_image}\nRUN {run}\n")
    report = tmp_path / "report"
    r = repro("verify", str(d), "--report-dir", str(report), *raw)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "NOT reproducible" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith(path + ":"))
    assert cause in line, r.stdout
    assert "diffoscope:" in r.stdout
    doc = json.loads((report / "report.json").read_text())
    found = {f["path"]: [c["id"] for c in f["causes"]] for f in doc["findings"]}
    assert cause in found[path]
    assert path in (report / "report.html").read_text()
    assert path in (report / "summary.md").read_text()


def test_umask_variation_is_detected_and_bisected(tmp_path: Path, base_image: str) -> None:
    d = recipe(tmp_path, "um", f"FROM {base_image}\nCOPY data.txt /data.txt\n", {"data.txt": "x\n"})
    rc, [result] = verify_json(str(d), "--vary", "umask,timezone", "--bisect")
    assert rc == 1
    found = {f["path"]: [c["id"] for c in f["causes"]] for f in result["findings"]}
    assert found["/data.txt"] == ["umask-mode"]
    assert result["bisect"] == {"none": "identical", "umask": "different", "timezone": "identical"}
    assert result["culprits"] == ["umask"]


def test_mtime_variation_is_told_apart_from_umask(tmp_path: Path, base_image: str) -> None:
    """A RUN step records the context file's mtime; --chmod makes the mode fixed, so
    bisect must blame mtime and not umask."""
    d = recipe(
        tmp_path,
        "mt",
        f"FROM {base_image}\nCOPY --chmod=0644 data.txt /data.txt\n"
        "RUN stat -c %Y /data.txt > /data.mtime\n",
        {"data.txt": "x\n"},
    )
    rc, [result] = verify_json(str(d), "--vary", "umask,mtime", "--bisect")
    assert rc == 1
    assert [f["path"] for f in result["findings"]] == ["/data.mtime"]
    assert result["culprits"] == ["mtime"]


def test_github_actions_annotations_and_step_summary(tmp_path: Path, base_image: str) -> None:
    d = recipe(tmp_path, "gh", f"FROM {base_image}\nRUN date > /etc/built-at\n")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    r = repro("verify", str(d), env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 1, r.stderr[-3000:]
    errors = [x for x in r.stdout.splitlines() if x.startswith("::error ")]
    assert errors == [
        "::error title=repro verify gh::gh is not reproducible: "
        "/etc/built-at (timestamp-in-content)"
    ]
    text = summary.read_text()
    assert text.startswith("earlier step\n")
    assert "| gh | different | **no** |" in text
    assert "| `/etc/built-at` | 1 | content | timestamp-in-content |" in text


def test_verify_bad_input_exits_2(tmp_path: Path) -> None:
    bad = (
        ["no-such-recipe"],
        ["hello", "--vary", "bogus"],
        ["hello", "--vary", "none", "--bisect"],
    )
    for args in bad:
        r = repro("verify", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().startswith("repro: error: ") and "Traceback" not in r.stderr


def test_diff_of_two_verify_builds(tmp_path: Path, base_image: str) -> None:
    """repro diff on the images verify kept: the same file and cause, oci and archive."""
    d = recipe(tmp_path, "kd", f"FROM {base_image}\nRUN date > /stamp && echo same > /same\n")
    keep = tmp_path / "keep"
    r = repro("verify", str(d), "--keep", str(keep))
    assert r.returncode == 1, r.stderr[-2000:]
    r = repro("diff", f"oci:{keep / 'kd-a'}", f"oci:{keep / 'kd-b'}", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [f["path"] for f in doc["findings"]] == ["/stamp"]
    r = repro("diff", f"oci:{keep / 'kd-a'}", f"oci:{keep / 'kd-a'}")
    assert r.returncode == 0 and "identical" in r.stdout


def test_keep_copies_the_built_image_taken_as_the_first_build(
    tmp_path: Path, base_image: str
) -> None:
    """--keep (and so --publish) keeps build 1: when that is the image repro build
    wrote, it is copied, and the user's output stays as it was."""
    d = recipe(tmp_path, "kc", f"FROM {base_image}\nRUN echo {os.urandom(4).hex()} > /t\n")
    out = tmp_path / "out-kc"
    r = repro("build", str(d), "--output", f"oci:{out}")
    assert r.returncode == 0, r.stderr[-2000:]

    def files(root: Path) -> list[tuple[Path, bytes]]:
        return sorted((p.relative_to(root), p.read_bytes()) for p in root.rglob("*") if p.is_file())

    before = files(out)
    keep = tmp_path / "keep"
    rc, [result] = verify_json(str(d), "--keep", str(keep))
    assert rc == 0 and result["builds"][0]["reused"] == f"oci:{out}", result
    assert files(out) == before
    assert files(keep / "kc-a") == before
    assert (keep / "kc-b" / "index.json").is_file()


def test_diff_pulls_registry_images(tmp_path: Path, base_image: str) -> None:
    r = repro("diff", f"docker://{base_image}", f"registry:{base_image}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(": identical")
    r = repro("diff", f"docker://{base_image.split('@')[0]}-missing:nope", f"docker://{base_image}")
    assert r.returncode == 2 and r.stderr.startswith("repro: error: ")


def test_two_builder_arguments_build_one_side_each() -> None:
    """The plumbing for two builders (here both name the one dev engine: starting a
    second engine with its own data root is not done by this suite yet)."""
    host = os.environ.get("BUILDKIT_HOST") or "docker://" + os.environ["DOCKER_HOST"]
    rc, [result] = verify_json("hello", "--builder", host, "--builder", host)
    assert rc == 0 and result["verdict"] == "identical"
    assert [b["builder"] for b in result["builds"]] == [host, host]


@pytest.fixture
def second_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Docker Engine, from the dev-env packages, with its own data root,
    sockets and bridge, and no iptables or forwarding changes, so it cannot disturb
    the first. Stopped (by its pid) when the test ends.

    Not `--bridge=none`: with it, dockerd deletes the host's docker0 at start-up,
    which takes the first engine's default network away."""
    root = Path(os.environ.get("REPRO_DEV_ENV", ROOT / ".cache" / "dev-env")) / "root"
    dockerd = root / "usr" / "sbin" / "dockerd"
    if not dockerd.exists() or os.geteuid() != 0:
        pytest.skip("no dev-env dockerd to start a second engine with (or not root)")
    # Short paths: containerd's sockets live under the exec root (108-byte limit).
    d = Path(tempfile.mkdtemp(prefix="r2-", dir="/tmp"))
    (d / "daemon.json").write_text('{"features": {"containerd-snapshotter": true}}\n')
    sock = d / "d.sock"
    env = {
        **os.environ,
        "PATH": f"{root}/usr/bin:{root}/usr/sbin:/usr/local/sbin:/usr/local/bin:"
        "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    bridge = f"r2br{os.getpid() % 10000}"
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "172.31.254.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    with open(d / "log", "wb") as log:
        proc = subprocess.Popen(
            [str(dockerd), "--config-file", str(d / "daemon.json"), "--data-root", str(d / "data"),
             "--exec-root", str(d / "x"), "-H", f"unix://{sock}", "--pidfile", str(d / "d.pid"),
             f"--bridge={bridge}", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
             "--ip-forward=false", "--userland-proxy=false"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _ping(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("second dockerd did not start: " + (d / "log").read_text()[-2000:])
            time.sleep(0.2)
        yield f"docker://unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-R", str(d / "data")], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        shutil.rmtree(d, ignore_errors=True)


def _ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        return b"OK" in s.recv(4096)
    except OSError:
        return False
    finally:
        s.close()


def test_verify_on_two_engines(second_engine: str) -> None:
    """Each side on its own engine (separate data roots): the examples still agree,
    and the first engine's docker0 is still there afterwards."""
    first = os.environ.get("BUILDKIT_HOST") or "docker://" + os.environ["DOCKER_HOST"]
    rc, results = verify_json("hello", "wordcount", "--builder", first, "--builder", second_engine)
    assert rc == 0, results
    for result in results:
        assert result["verdict"] == "identical"
        assert [b["builder"] for b in result["builds"]] == [first, second_engine]
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0


def test_several_recipes_verify_at_once_in_order(tmp_path: Path, base_image: str) -> None:
    """`--jobs 3`: three recipes are verified at the same time (the run takes less
    than their verifications one after another), and their results come in the
    order given, the non-reproducible one among them."""
    dirs = [
        recipe(tmp_path, "slow-a", f"FROM {base_image}\nRUN sleep 4 && echo a > /a\n"),
        recipe(tmp_path, "rnd", f"FROM {base_image}\nRUN sleep 4 && head -c 32 /dev/urandom >/r\n"),
        recipe(tmp_path, "slow-c", f"FROM {base_image}\nRUN sleep 4 && echo c > /c\n"),
    ]
    t0 = time.monotonic()
    rc, results = verify_json(*map(str, dirs), "--jobs", "3")
    wall = time.monotonic() - t0
    assert rc == 1
    assert [(r["recipe"], r["verdict"]) for r in results] == [
        ("slow-a", "identical"),
        ("rnd", "different"),
        ("slow-c", "identical"),
    ]
    # Each verification alone takes more than 4 s (its builds sleep 4 s): run one
    # after another, they would take more than the sum of their own times.
    assert wall < sum(r["seconds"] for r in results)


def test_a_failing_recipe_stops_the_others(tmp_path: Path, base_image: str) -> None:
    """A build error in one recipe ends `repro verify` with that error (exit 1, one
    line) and cancels the recipes still building, instead of waiting for them."""
    slow = recipe(tmp_path, "slow", f"FROM {base_image}\nRUN sleep 120\n")
    bad = recipe(tmp_path, "bad", f"FROM {base_image}\nRUN exit 3\n")
    t0 = time.monotonic()
    r = repro("verify", str(slow), str(bad), "--jobs", "2")
    assert time.monotonic() - t0 < 90, "the sleeping build was waited for"
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    # The user's Dockerfile is named, not verify's copy of it in a temporary directory.
    assert last.startswith(f"repro: error: {bad / 'Dockerfile'}:2: "), last
    assert last.endswith("exit code: 3"), last


def test_a_failing_step_is_told_once_with_the_users_paths(tmp_path: Path, base_image: str) -> None:
    """Both builds fail at the same step: verify says what one failing `repro build`
    says (the step's log, the Dockerfile lines), once, naming the user's files rather
    than verify's copies of them."""
    d = recipe(tmp_path, "fails", f"FROM {base_image}\nRUN echo step-output-7f3a && exit 3\n")
    built = repro("build", str(d), "-o", f"oci:{tmp_path / 'out'}", "--progress", "quiet")
    assert built.returncode == 1, built.stderr[-2000:]
    told = built.stderr.count("step-output-7f3a")
    assert told >= 2  # the step's log and its Dockerfile line, at least
    r = repro("verify", str(d))
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.count("step-output-7f3a") == told, r.stderr
    assert "repro-verify-" not in r.stderr, r.stderr
