#!/usr/bin/env python3
"""Benchmarks of ``repro verify`` and ``repro diff``.

    .venv/bin/python bench/bench_verify.py [--quick] [--repeat N] [--skip-verify]
                                           [--skip-diff] [--diff-size MiB] [--json FILE]

Cases:

- ``verify/<recipe>``: wall time of ``repro verify <recipe>`` against one cold
  ``repro build --no-cache`` of the same recipe, medians of N runs (default 5),
  alternating. Target: verify <= 1.3x build.
Machines shared with other work inflate wall times unevenly (repro uses two
threads, diffoscope one), so CPU seconds (user + sys of the measured process) are
reported beside them.

- ``diff-1gib``: two generated OCI images, each one uncompressed layer of ~1 GiB
  (files of 512 KiB of seeded random bytes), differing in one file. Wall time and
  peak RSS of ``repro diff --json`` on the two layouts, against ``diffoscope`` on the
  same pair of layer blobs (the baseline; the issue quotes 27.5 s for 256 MiB).
  Both must name the differing file. Targets: repro <= 1/10 of diffoscope's time,
  peak RSS <= 200 MB.

Each measured command is a direct child (no shell); peak RSS comes from
``os.wait4`` of that very process (diffoscope's children are not counted for
either side). Timings are reported, never asserted; the exit status is non-zero
only when a command fails or a tool misses the differing file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from repro import oci  # noqa: E402

MiB = 1024 * 1024
PY = sys.executable


def dev_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("BUILDKIT_HOST") or env.get("DOCKER_HOST"):
        return env
    out = subprocess.run(
        [str(PROJECT / "scripts" / "dev-env"), "env"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            k, _, v = line[len("export ") :].partition("=")
            env[k] = v.strip("'")
    return env


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run one command as a direct child; wall seconds, peak RSS (MB), exit code, stdout."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=PROJECT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "seconds": round(wall, 3),
            "rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "rc": proc.returncode,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace")[-2000:],
        }


# ---------------------------------------------------------------- verify vs build


def bench_verify(recipes: list[str], repeat: int, env: dict[str, str]) -> list[dict[str, Any]]:
    results = []
    for name in recipes:
        builds: list[float] = []
        verifies: list[float] = []
        with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
            for i in range(repeat):
                order = ("build", "verify") if i % 2 == 0 else ("verify", "build")
                for what in order:
                    if what == "build":
                        r = run(
                            [
                                PY,
                                "-m",
                                "repro",
                                "build",
                                name,
                                "--no-cache",
                                "--progress",
                                "quiet",
                                "-o",
                                f"oci:{tmp}/out-{i}",
                            ],
                            env,
                        )
                        if r["rc"] != 0:
                            raise SystemExit(f"build {name} failed: {r['stderr']}")
                        builds.append(r["seconds"])
                    else:
                        r = run([PY, "-m", "repro", "verify", name], env)
                        if r["rc"] != 0:
                            raise SystemExit(f"verify {name} failed ({r['rc']}): {r['stderr']}")
                        verifies.append(r["seconds"])
        b, v = statistics.median(builds), statistics.median(verifies)
        row = {
            "case": f"verify/{name}",
            "build_s": round(b, 2),
            "verify_s": round(v, 2),
            "ratio": round(v / b, 2),
            "target": "<= 1.3",
            "runs": repeat,
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


# ---------------------------------------------------------------- diff of 1 GiB images


def _write_layer(
    layout: oci.OCILayout, files: int, size: int, changed: int | None, compress: bool = False
) -> tuple[oci.Descriptor, str]:
    """One layer of `files` seeded-random files, streamed to a blob (gzip level 1
    with `compress`); its descriptor and diffID."""
    import gzip

    blob_dir = layout.path / "blobs" / "sha256"
    tmp = blob_dir / ".tmp-layer"
    h = hashlib.sha256()
    h_tar = hashlib.sha256()

    class Hashing:
        def __init__(self, f: Any, hasher: Any) -> None:
            self.f = f
            self.hasher = hasher

        def write(self, data: bytes) -> int:
            self.hasher.update(data)
            return self.f.write(data)  # type: ignore[no-any-return]

        def flush(self) -> None:
            self.f.flush()

    with open(tmp, "wb") as raw:
        sink: Any = Hashing(raw, h)
        gz = None
        if compress:
            gz = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=1, mtime=0)
            sink = gz
        _write_tar(Hashing(sink, h_tar), files, size, changed)
        if gz is not None:
            gz.close()
    digest = "sha256:" + h.hexdigest()
    size_total = tmp.stat().st_size
    os.replace(tmp, layout.blob_path(digest))
    media = oci.MEDIA_TYPE_OCI_LAYER_GZIP if compress else oci.MEDIA_TYPE_OCI_LAYER
    return oci.Descriptor(media, digest, size_total), "sha256:" + h_tar.hexdigest()


def _write_tar(out: Any, files: int, size: int, changed: int | None) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        rng = random.Random(42)
        for i in range(files):
            data = rng.randbytes(size)
            if i == changed:
                data = data[:100] + b"CHANGED" + data[107:]
            info = tarfile.TarInfo(f"data/d{i // 100:03d}/file{i:05d}.bin")
            info.size = size
            info.mtime = 1_700_000_000
            info.mode = 0o644
            import io

            tar.addfile(info, io.BytesIO(data))


def make_big_image(
    path: Path, files: int, size: int, changed: int | None, compress: bool = False
) -> Path:
    layout = oci.OCILayout.create(path)
    layer, diff_id = _write_layer(layout, files, size, changed, compress)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    }
    config_d = layout.write_blob(oci.canonical_json(config), oci.MEDIA_TYPE_OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
        "config": config_d.to_json(),
        "layers": [layer.to_json()],
    }
    m = layout.write_blob(oci.canonical_json(manifest), oci.MEDIA_TYPE_OCI_MANIFEST)
    m.platform = oci.Platform(architecture="amd64", os="linux")
    layout.write_index([m])
    return layout.blob_path(layer.digest)


def bench_diff(total_mib: int, skip_diffoscope: bool) -> dict[str, Any]:
    size = 512 * 1024
    files = total_mib * MiB // size
    changed = files // 2
    expected = f"data/d{changed // 100:03d}/file{changed:05d}.bin"
    work = Path(tempfile.mkdtemp(prefix="bench-diff-", dir=os.environ.get("BENCH_TMP")))
    try:
        t0 = time.monotonic()
        blob_a = make_big_image(work / "a", files, size, None)
        blob_b = make_big_image(work / "b", files, size, changed)
        gen = time.monotonic() - t0
        r = run([PY, "-m", "repro", "diff", f"oci:{work / 'a'}", f"oci:{work / 'b'}", "--json"])
        if r["rc"] != 1:
            raise SystemExit(f"repro diff: exit {r['rc']}: {r['stderr']}")
        found = [f["path"] for f in json.loads(r["stdout"])["findings"]]
        row: dict[str, Any] = {
            "case": f"diff-{total_mib}mib",
            "layer_mib": round(blob_a.stat().st_size / MiB),
            "files": files,
            "generate_s": round(gen, 1),
            "repro_s": r["seconds"],
            "repro_rss_mb": r["rss_mb"],
            "repro_cpu_s": r["cpu_s"],
            "repro_found": found,
            "repro_ok": found == ["/" + expected],
        }
        if not skip_diffoscope:
            # diffoscope recognises tar by content; names ending .tar keep it honest.
            os.link(blob_a, work / "a.tar")
            os.link(blob_b, work / "b.tar")
            exe = str(Path(PY).parent / "diffoscope")
            d = run([exe, "--text", "-", str(work / "a.tar"), str(work / "b.tar")])
            row["diffoscope_s"] = d["seconds"]
            row["diffoscope_rss_mb"] = d["rss_mb"]
            row["diffoscope_cpu_s"] = d["cpu_s"]
            row["diffoscope_ok"] = expected in d["stdout"]
            row["ratio"] = round(r["seconds"] / d["seconds"], 3)
            row["target"] = "ratio <= 0.1, rss <= 200 MB"
        print(json.dumps(row), flush=True)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


# One pass over both gzip blobs, as a floor: what reading each layer once costs.
_ONE_PASS = """
import gzip, hashlib, sys
for path in sys.argv[1:]:
    outer, inner = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as raw:
        class R:
            def read(self, n=-1):
                b = raw.read(n)
                outer.update(b)
                return b
        with gzip.GzipFile(fileobj=R()) as z:
            while chunk := z.read(1 << 20):
                inner.update(chunk)
"""


def bench_diff_gzip(total_mib: int) -> dict[str, Any]:
    """Two gzip images with small files, one differing deep in the layer: repro diff
    against one decompressing, hashing pass over both blobs (the floor)."""
    size = 64 * 1024
    files = total_mib * MiB // size
    changed = files * 3 // 4
    expected = f"/data/d{changed // 100:03d}/file{changed:05d}.bin"
    work = Path(tempfile.mkdtemp(prefix="bench-diff-gz-", dir=os.environ.get("BENCH_TMP")))
    try:
        blob_a = make_big_image(work / "a", files, size, None, compress=True)
        blob_b = make_big_image(work / "b", files, size, changed, compress=True)
        r = run([PY, "-m", "repro", "diff", f"oci:{work / 'a'}", f"oci:{work / 'b'}", "--json"])
        if r["rc"] != 1:
            raise SystemExit(f"repro diff: exit {r['rc']}: {r['stderr']}")
        found = [f["path"] for f in json.loads(r["stdout"])["findings"]]
        floor = run([PY, "-c", _ONE_PASS, str(blob_a), str(blob_b)])
        row = {
            "case": f"diff-gzip-{total_mib}mib",
            "files": files,
            "repro_s": r["seconds"],
            "repro_cpu_s": r["cpu_s"],
            "repro_rss_mb": r["rss_mb"],
            "repro_ok": found == [expected],
            "one_pass_s": floor["seconds"],
            "one_pass_cpu_s": floor["cpu_s"],
            "cpu_ratio": round(r["cpu_s"] / max(floor["cpu_s"], 0.01), 2),
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 repetition, a 64 MiB diff case")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--recipes", default="hello,wordcount")
    ap.add_argument("--diff-size", type=int, default=1024, help="MiB per image layer")
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--skip-diff", action="store_true")
    ap.add_argument("--skip-diffoscope", action="store_true")
    ap.add_argument("--gzip-size", type=int, default=0, help="MiB: also a gzip diff case")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    size = 64 if args.quick else args.diff_size
    out: dict[str, Any] = {"python": sys.version.split()[0], "cases": []}
    env = dev_env()
    failed = False
    if not args.skip_verify:
        out["cases"] += bench_verify(args.recipes.split(","), repeat, env)
    if not args.skip_diff:
        row = bench_diff(size, args.skip_diffoscope)
        failed = not row["repro_ok"] or row.get("diffoscope_ok") is False
        out["cases"].append(row)
    if args.gzip_size:
        row = bench_diff_gzip(args.gzip_size)
        failed = failed or not row["repro_ok"]
        out["cases"].append(row)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
