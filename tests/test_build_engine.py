"""repro build against the real BuildKit (Docker Engine 26 from scripts/dev-env).

Every test here runs the real `repro` command line against the engine and the
loopback registry, and looks inside the OCI image it wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from runner import run_repro

from repro import oci

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent


def repro(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd or ROOT, env=env, timeout=timeout)


def recipe(
    tmp_path: Path,
    dockerfile: str,
    files: dict[str, str | bytes] | None = None,
    toml: str = 'source_date_epoch = 1700000000\nnetwork = "none"\n',
    name: str = "t",
) -> Path:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text(dockerfile)
    (d / "recipe.toml").write_text(toml)
    for rel, content in (files or {}).items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return d


def image_files(layout_dir: Path) -> dict[str, bytes]:
    """Regular files of the image (layers applied in order, whiteouts honoured)."""
    layout = oci.OCILayout(layout_dir)
    image = oci.load_image(layout)
    files: dict[str, bytes] = {}
    for layer in image.layers:
        with (
            layout.open_blob(layer.digest, layer.size) as blob,
            tarfile.open(fileobj=blob, mode="r|*") as tar,
        ):
            for m in tar:
                name = m.name.lstrip("./")
                base = os.path.basename(name)
                if base.startswith(".wh."):
                    gone = os.path.join(os.path.dirname(name), base[4:])
                    files = {
                        k: v for k, v in files.items() if k != gone and not k.startswith(gone + "/")
                    }
                elif m.isfile():
                    fh = tar.extractfile(m)
                    assert fh is not None
                    files[name] = fh.read()
    return files


def all_blob_bytes(layout_dir: Path) -> bytes:
    """Every blob of a layout, with gzip layers decompressed, concatenated."""
    import gzip

    out = []
    for blob in sorted((layout_dir / "blobs" / "sha256").iterdir()):
        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        out.append(data)
    return b"".join(out)


def build_json(recipe_dir: Path, out: Path, *extra: str) -> dict[str, str]:
    r = repro(
        "build", str(recipe_dir), "--output", f"oci:{out}", "--json", "--progress", "plain", *extra
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout)
    assert len(results) == 1
    return results[0]  # type: ignore[no-any-return]


# --- the example recipes ---------------------------------------------------------


def test_example_recipes_build_and_match_their_digest_twice(tmp_path: Path) -> None:
    """Every example builds; two no-cache builds give the same manifest digest."""
    for name in ("hello", "wordcount"):
        first = build_json(ROOT / "recipes" / name, tmp_path / f"{name}-1", "--no-cache")
        second = build_json(ROOT / "recipes" / name, tmp_path / f"{name}-2", "--no-cache")
        assert first["digest"].startswith("sha256:")
        assert first["digest"] == second["digest"], name
        assert first["config_digest"] == second["config_digest"]
        index = json.loads((tmp_path / f"{name}-1" / "index.json").read_text())
        assert index["manifests"][0]["digest"] == first["digest"]
        for key in ("recipe", "digest", "config_digest", "output"):
            assert key in first


def test_multi_stage_build_runs_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "wc"
    result = build_json(ROOT / "recipes" / "wordcount", out)
    files = image_files(out)
    assert files["usr/local/share/wordcount/tested"] == b"words: 13\n"
    assert b"wordcount 1.0" in files["usr/local/bin/wordcount"]
    # the test stage's own file system is not in the shipped image
    assert "tested" not in files
    config = oci.load_image(oci.OCILayout(out)).config
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/wordcount"]
    assert config["created"] == "2025-01-01T00:00:00Z"
    assert result["config_digest"] == oci.load_image(oci.OCILayout(out)).config_descriptor.digest


def test_build_arg_reaches_the_image(tmp_path: Path, base_image: str) -> None:
    d = recipe(
        tmp_path,
        f'FROM {base_image}\nARG COLOUR=none\nRUN echo "$COLOUR" > /colour\n',
        toml='source_date_epoch = 1700000000\nnetwork = "none"\n[args]\nCOLOUR = "blue"\n',
    )
    build_json(d, tmp_path / "a")
    assert image_files(tmp_path / "a")["colour"] == b"blue\n"
    # --build-arg overrides the recipe's value
    build_json(d, tmp_path / "b", "--build-arg", "COLOUR=green")
    assert image_files(tmp_path / "b")["colour"] == b"green\n"


def test_dockerignored_files_do_not_reach_the_build(tmp_path: Path, base_image: str) -> None:
    d = recipe(
        tmp_path,
        f"FROM {base_image}\nCOPY . /ctx/\n"
        "RUN --mount=type=bind,target=/m find /m | sort > /seen\n",
        files={
            ".dockerignore": "secret.txt\nlogs/\n*.tmp\n!keep.tmp\n",
            "secret.txt": "do not send",
            "logs/a.log": "x",
            "junk.tmp": "x",
            "keep.tmp": "kept",
            "src/main.sh": "echo hi",
        },
    )
    build_json(d, tmp_path / "o")
    files = image_files(tmp_path / "o")
    seen = files["seen"].decode().split()
    assert "ctx/keep.tmp" in files and "ctx/src/main.sh" in files
    for gone in ("secret.txt", "logs/a.log", "junk.tmp"):
        assert f"ctx/{gone}" not in files
        assert f"/m/{gone}" not in seen
    assert b"do not send" not in all_blob_bytes(tmp_path / "o")


def test_secret_reaches_run_but_not_the_image(tmp_path: Path, base_image: str) -> None:
    token = "s3cr3t-" + os.urandom(8).hex()
    (tmp_path / "token").write_text(token)
    d = recipe(
        tmp_path,
        f"FROM {base_image}\n"
        "RUN --mount=type=secret,id=tok,required=true "
        "sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha256\n",
    )
    r = repro(
        "build",
        str(d),
        "-o",
        f"oci:{tmp_path / 'o'}",
        "--progress",
        "plain",
        "--secret",
        f"id=tok,src={tmp_path / 'token'}",
        "--no-cache",  # secrets are not part of BuildKit's cache key
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import hashlib

    files = image_files(tmp_path / "o")
    assert files["tok.sha256"].decode().strip() == hashlib.sha256(token.encode()).hexdigest()
    assert token.encode() not in all_blob_bytes(tmp_path / "o")
    assert token not in r.stdout and token not in r.stderr
    # from the environment too
    r2 = repro(
        "build",
        str(d),
        "-o",
        f"oci:{tmp_path / 'o2'}",
        "--progress",
        "quiet",
        "--secret",
        "id=tok,env=REPRO_TEST_TOKEN",
        env={"REPRO_TEST_TOKEN": token},
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    # a missing secret source is bad input, found before building
    r3 = repro(
        "build",
        str(d),
        "-o",
        f"oci:{tmp_path / 'o3'}",
        "--secret",
        f"id=tok,src={tmp_path / 'nope'}",
    )
    assert r3.returncode == 2 and "does not exist" in r3.stderr
    assert not (tmp_path / "o3").exists()
    # verify gives the secret to both builds, and keeps it out of its report
    report = tmp_path / "report"
    r4 = repro(
        "verify",
        str(d),
        "--secret",
        f"id=tok,src={tmp_path / 'token'}",
        "--report-dir",
        str(report),
        "--json",
    )
    assert r4.returncode == 0, r4.stderr[-3000:]
    assert json.loads(r4.stdout)[0]["verdict"] == "identical"
    assert token not in r4.stdout and token not in r4.stderr
    for f in report.rglob("*") if report.exists() else []:
        assert token.encode() not in f.read_bytes()
    r5 = repro("verify", str(d), "--json")
    assert r5.returncode != 0  # required=true: without the secret the build fails


def test_failing_run_gives_exit_1_and_the_step_output(tmp_path: Path, base_image: str) -> None:
    d = recipe(tmp_path, f"FROM {base_image}\nRUN echo marker-before-failure && exit 3\n")
    out = tmp_path / "o"
    r = repro("build", str(d), "-o", f"oci:{out}", "--progress", "plain")
    assert r.returncode == 1
    assert "marker-before-failure" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("repro: error:") and "exit code: 3" in last
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")], "staging left behind"


def test_dockerfile_syntax_error_names_the_line(tmp_path: Path) -> None:
    d = recipe(tmp_path, "FROM scratch\nCOPY a /a\nFROOM nothing\n", files={"a": "a"})
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"{d / 'Dockerfile'}:3:" in line and "unknown instruction" in line.lower()
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_missing_recipe_and_dockerfile(tmp_path: Path) -> None:
    r = repro("build", "no-such-recipe")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no-such-recipe" in r.stderr
    d = recipe(tmp_path, "FROM scratch\n")
    (d / "Dockerfile").unlink()
    r = repro("build", str(d))
    assert r.returncode == 2 and "Dockerfile" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_builder(tmp_path: Path) -> None:
    d = recipe(tmp_path, "FROM scratch\n")
    for addr in (
        "unix:///nonexistent/buildkitd.sock",
        "docker://unix:///nonexistent/d.sock",
        "tcp://127.0.0.1:1",
    ):
        r = repro("build", str(d), "--builder", addr, "-o", f"oci:{tmp_path / 'o'}", timeout=60)
        assert r.returncode == 2, (addr, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_oci_archive_output(tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    r = repro("build", "hello", "-o", f"oci-archive:{out}", "--json", "--progress", "quiet")
    assert r.returncode == 0, r.stderr
    digest = json.loads(r.stdout)[0]["digest"]
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["digest"] == digest
    assert not [p for p in tmp_path.iterdir() if p.name != "img.tar"]


def test_large_context(tmp_path: Path, base_image: str) -> None:
    """10,000 small files and one 200 MB file reach the build intact."""
    d = tmp_path / "big"
    d.mkdir()
    for i in range(100):
        sub = d / "files" / f"d{i:02d}"
        sub.mkdir(parents=True)
        for j in range(100):
            (sub / f"f{j:03d}.txt").write_text(f"{i}-{j}\n")
    chunk = os.urandom(1 << 20)
    with open(d / "big.bin", "wb") as fh:
        for k in range(200):
            fh.write(chunk[k:] + chunk[:k])
    (d / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "RUN --mount=type=bind,target=/ctx "
        "find /ctx/files -type f | wc -l > /count "
        "&& cat /ctx/files/d42/f042.txt > /sample "
        "&& sha256sum /ctx/big.bin | cut -d' ' -f1 > /big.sha256\n"
    )
    (d / "recipe.toml").write_text('source_date_epoch = 1700000000\nnetwork = "none"\n')
    import hashlib

    h = hashlib.sha256()
    with open(d / "big.bin", "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    build_json(d, tmp_path / "o")
    files = image_files(tmp_path / "o")
    assert files["count"].strip() == b"10000"
    assert files["sample"] == b"42-42\n"
    assert files["big.sha256"].decode().strip() == h.hexdigest()


def test_same_digest_as_buildx(tmp_path: Path, buildx: list[str]) -> None:
    """repro and `docker buildx build` give the same image for the same options; and
    buildx's export (times rewritten by BuildKit), normalised, is the image `repro build`
    makes by default (times clamped by the normaliser, BuildKit asked for no rewrite)."""
    from repro.build import normalise_output
    from repro.lockfile import read_lock
    from repro.oci import Output
    from repro.recipe import load_recipe

    for name in ("hello", "wordcount"):
        # BuildKit's raw export: buildx does not normalise
        ours = build_json(
            ROOT / "recipes" / name, tmp_path / f"{name}-ours", "--no-cache", "--normalise", "off"
        )
        assert ours["exporter"]["rewrite-timestamp"] == "true"
        normalised = build_json(ROOT / "recipes" / name, tmp_path / f"{name}-norm", "--no-cache")
        assert "rewrite-timestamp" not in normalised["exporter"]
        assert normalised["exporter"]["compression"] == "uncompressed"

        rec = load_recipe(ROOT / "recipes" / name)
        dest = tmp_path / f"{name}-buildx.tar"
        cmd = [
            *buildx,
            "build",
            "--no-cache",
            "--provenance=false",
            "--sbom=false",
            "--progress=plain",
            "--network",
            rec.network if rec.network != "default" else "default",
            "--build-arg",
            f"SOURCE_DATE_EPOCH={rec.source_date_epoch}",
            "--output",
            f"type=oci,dest={dest},rewrite-timestamp=true",
        ]
        for k, v in rec.args.items():
            cmd += ["--build-arg", f"{k}={v}"]
        for k, v in rec.labels.items():
            cmd += ["--label", f"{k}={v}"]
        if rec.target:
            cmd += ["--target", rec.target]
        cmd += ["-f", str(rec.dockerfile), str(rec.context)]
        env = {**os.environ}
        env.pop("BUILDKIT_HOST", None)
        if os.environ.get("REPRO_DEV_ENV"):  # keep buildx's state out of ~/.docker
            env["DOCKER_CONFIG"] = os.path.join(os.environ["REPRO_DEV_ENV"], "docker-config")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        with tarfile.open(dest) as tar:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["digest"] == ours["digest"], name
        raw = oci.extract_oci_archive(dest, tmp_path / f"{name}-buildx")
        result = normalise_output(
            rec, raw.path, Output.parse(f"oci:{tmp_path / f'{name}-buildx-norm'}"),
            rec.source_date_epoch, read_lock(rec),
        )  # fmt: skip
        assert result.digest == normalised["digest"], name


def start_long_build(
    recipe_dir: Path, out: Path, *extra: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `repro build` of a recipe whose RUN prints a marker and then sleeps;
    return once the marker is in the output (or after 60 s), with the lines seen."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "repro",
            "build",
            str(recipe_dir),
            "-o",
            f"oci:{out}",
            "--no-cache",
            "--progress",
            "plain",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        seen.append(line)
        if "started-long-step" in line or time.monotonic() > deadline:
            break
    return proc, seen


def test_ctrl_c_cancels_and_leaves_nothing(tmp_path: Path, base_image: str) -> None:
    d = recipe(tmp_path, f"FROM {base_image}\nRUN echo started-long-step && sleep 60\n")
    out = tmp_path / "o"
    proc, seen = start_long_build(d, out)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 130, "".join(seen) + err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def test_sigterm_cancels_and_leaves_nothing(tmp_path: Path, base_image: str) -> None:
    """SIGTERM (a cancelled CI job, `timeout`, `docker stop`) is handled as Ctrl-C:
    the build is cancelled, no staged output or temporary directory is left, one
    line says so, and the exit status is 143."""
    d = recipe(tmp_path, f"FROM {base_image}\nRUN echo started-long-step && sleep 60\n")
    out = tmp_path / "o"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "build", str(d), "-o", f"oci:{out}", "--no-cache",
         "--progress", "plain"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "started-long-step" in line:
            break
    assert list(tmp.iterdir()), "the build's session lives in TMPDIR"
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 143, "".join(seen) + err
    assert err.strip().splitlines()[-1] == "repro: terminated"
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]
    assert list(tmp.iterdir()) == []


class _Proxy:
    """A unix-socket proxy to the Docker socket that can 'kill the daemon' on demand."""

    def __init__(self, target: str, path: str):
        self.target = target
        self.path = path
        self.conns: list[socket.socket] = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        from repro.buildkit._connect import splice

        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            self.conns += [c, u]
            splice(c, u)

    def kill(self) -> None:
        self.listener.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_daemon_dying_mid_build_fails_fast(tmp_path: Path, base_image: str) -> None:
    docker = os.environ.get("DOCKER_HOST", "")
    if not docker.startswith("unix://"):
        pytest.skip("needs the dev engine's Docker socket")
    proxy = _Proxy(docker[len("unix://") :], str(tmp_path / "d.sock"))
    d = recipe(tmp_path, f"FROM {base_image}\nRUN echo started-long-step && sleep 60\n")
    out = tmp_path / "o"
    proc, _ = start_long_build(d, out, "--builder", f"docker://unix://{tmp_path / 'd.sock'}")
    proxy.kill()
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, "no error within 10 s of the daemon going away"
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("repro: error:")
    assert not out.exists()


class _StallingProxy:
    """A unix-socket proxy to the Docker socket that can stop forwarding bytes while
    keeping every connection open: a stalled route, not a dead daemon."""

    def __init__(self, target: str, path: str):
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            self.flowing.wait()
            try:
                dst.sendall(data)
            except OSError:
                return

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.flowing.set()
        self.listener.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.close()


def test_a_stalled_engine_connection_fails_within_10_s(tmp_path: Path, base_image: str) -> None:
    docker = os.environ.get("DOCKER_HOST", "")
    if not docker.startswith("unix://"):
        pytest.skip("needs the dev engine's Docker socket")
    proxy = _StallingProxy(docker[len("unix://") :], str(tmp_path / "s.sock"))
    try:
        d = recipe(tmp_path, f"FROM {base_image}\nRUN echo started-long-step && sleep 60\n")
        out = tmp_path / "o"
        proc, seen = start_long_build(d, out, "--builder", f"docker://unix://{tmp_path / 's.sock'}")
        assert any("started-long-step" in line for line in seen), "".join(seen)
        proxy.flowing.clear()  # the route stalls; nothing is closed
        t0 = time.monotonic()
        try:
            _, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("repro still waiting 40 s after the connection stalled")
        took = time.monotonic() - t0
        assert took < 10, f"the stall was reported after {took:.1f} s"
        assert proc.returncode == 2, err
        last = err.strip().splitlines()[-1]
        assert "stopped answering" in last and "Traceback" not in err, err
        assert not out.exists()
    finally:
        proxy.close()


def test_doctor_reports_the_dev_engine() -> None:
    r = repro("doctor", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"]
    assert report["facts"]["containerd_store"] is True
    assert report["facts"]["engine_version"].startswith("26.")


def test_unreachable_registry_is_an_environment_error(tmp_path: Path) -> None:
    d = recipe(tmp_path, "FROM 127.0.0.1:1/nothing@sha256:" + "0" * 64 + "\nRUN true\n")
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}", "--progress", "quiet")
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("repro: error: registry unreachable") and "127.0.0.1:1" in last
    assert not (tmp_path / "o").exists()


def test_json_result_names_the_engine(tmp_path: Path) -> None:
    result = build_json(ROOT / "recipes" / "hello", tmp_path / "o")
    assert result["builder_version"].startswith("Docker Engine 26.")
    assert result["source_date_epoch"] == 1735689600


def test_session_over_control_session_tunnel(tmp_path: Path) -> None:
    """The buildkitd way (Control.Session bidi stream) gives the same image.

    Docker serves this too; REPRO_SESSION_TRANSPORT=grpc makes repro use it instead
    of Docker's /session upgrade, so the tunnel code is tested on the same engine.
    """
    a = build_json(ROOT / "recipes" / "hello", tmp_path / "a", "--no-cache")
    r = repro(
        "build",
        "hello",
        "-o",
        f"oci:{tmp_path / 'b'}",
        "--json",
        "--no-cache",
        "--progress",
        "quiet",
        env={"REPRO_SESSION_TRANSPORT": "grpc"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)[0]["digest"] == a["digest"]


def test_layers_at_hand_are_not_sent_again(tmp_path: Path, base_image: str) -> None:
    """The export comes blob by blob into repro's content store (``tar=false``): the
    base's layer, on the blob shelf after the first build, is not sent by BuildKit
    again; the image is the same. A shelf file that no longer matches its digest is
    dropped and the layer received instead."""
    d = recipe(
        tmp_path,
        f"FROM {base_image}\nCOPY app.bin /app.bin\n",
        files={"app.bin": os.urandom(300_000)},
    )
    env = {"REPRO_CACHE_DIR": str(tmp_path / "cache")}

    def build(out: str) -> dict[str, Any]:
        r = repro(
            "build", str(d), "-o", f"oci:{tmp_path / out}", "--json", "--no-cache",
            "--progress", "quiet", env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)[0]  # type: ignore[no-any-return]

    first, second = build("a"), build("b")
    layout = oci.OCILayout(tmp_path / "a")
    base_layer = oci.read_image(layout, layout.image_manifests()[0]).layers[0]
    assert base_layer.size >= oci.SHELF_MIN_SIZE
    assert first["export"]["at_hand_blobs"] == 0
    assert first["export"]["received_bytes"] > base_layer.size + 300_000
    assert second["export"] == {
        **second["export"], "at_hand_blobs": 1, "at_hand_bytes": base_layer.size,
    }  # fmt: skip
    assert second["export"]["received_bytes"] == first["export"]["received_bytes"] - base_layer.size
    assert second["digest"] == first["digest"]

    shelved = tmp_path / "cache" / "blobs" / "sha256" / base_layer.digest[7:]
    shelved.unlink()  # (a hard link to out a's blob: damage a copy, not the image)
    shelved.write_bytes(b"\0" * base_layer.size)
    third = build("c")
    assert third["export"]["at_hand_blobs"] == 0
    assert third["digest"] == first["digest"]
    assert os.path.samefile(shelved, tmp_path / "c" / "blobs" / "sha256" / base_layer.digest[7:])
