"""Normalisation against the real BuildKit: one digest whatever the exporter did."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from test_build_engine import ROOT, build_json, image_files, recipe, repro

from repro import oci
from repro.build import build_recipe
from repro.recipe import load_recipe

pytestmark = pytest.mark.engine


def test_same_digest_with_rewrite_timestamp_on_off_and_gzip_or_zstd(tmp_path: Path) -> None:
    """How BuildKit exports makes no difference to the normalised image: by default
    (layers uncompressed, no rewrite-timestamp: the normaliser does both jobs), as
    repro used to ask (gzip with rewrite-timestamp), or zstd standing in for another
    compressor."""
    rec = load_recipe(ROOT / "recipes" / "wordcount")
    variants: dict[str, dict[str, object]] = {
        "default": {},
        "gzip": {"exporter_attrs": {"compression": "gzip"}},
        "gzip-rewrite": {"rewrite_timestamp": True, "exporter_attrs": {"compression": "gzip"}},
        "zstd": {"exporter_attrs": {"compression": "zstd"}},
        "zstd-rewrite": {"rewrite_timestamp": True, "exporter_attrs": {"compression": "zstd"}},
        # the base image's layer recompressed too: the lock names the base, and its
        # own layer blob comes back from the registry
        "zstd-forced": {"exporter_attrs": {"compression": "zstd", "force-compression": "true"}},
    }
    results = {
        name: build_recipe(
            rec,
            output=f"oci:{tmp_path / name}",
            progress="quiet",
            no_cache=True,
            **kw,  # type: ignore[arg-type]
        )
        for name, kw in variants.items()
    }
    raw = {r.raw_digest for r in results.values()}
    assert len(raw) == len(variants), "the variants should give BuildKit exports that differ"
    assert len({r.digest for r in results.values()}) == 1, {n: r.digest for n, r in results.items()}
    # The exporter options sent (kept in the build record for the provenance) say it.
    default = results["default"].exporter or {}
    assert default.get("compression") == "uncompressed" and "rewrite-timestamp" not in default
    assert (results["gzip-rewrite"].exporter or {}).get("rewrite-timestamp") == "true"
    for name, result in results.items():
        layout = oci.OCILayout(tmp_path / name)
        layout.verify(full=True)
        assert layout.index_manifests()[0].digest == result.digest
        assert result.normalised is not None
        # the base image's layer kept its bytes; the recipe's were re-encoded
        actions = [layer["action"] for layer in result.normalised["layers"]]
        base = "restored" if name == "zstd-forced" else "kept"
        assert actions[0] == base and set(actions[1:]) == {"rewritten"}, (name, actions)
    files = image_files(tmp_path / "default")
    assert files["usr/local/share/wordcount/tested"] == b"words: 13\n"


def test_normalise_off_is_buildkit_export(tmp_path: Path) -> None:
    on = build_json(ROOT / "recipes" / "hello", tmp_path / "on")
    off = build_json(ROOT / "recipes" / "hello", tmp_path / "off", "--normalise", "off")
    assert off["digest"] != on["digest"]
    assert off["normalised"] is None
    # Raw, BuildKit clamps the file times (rewrite-timestamp); normalised, repro does,
    # and BuildKit is not asked to (test_same_digest_as_buildx compares the two ways).
    assert off["exporter"]["rewrite-timestamp"] == "true"
    assert "rewrite-timestamp" not in on["exporter"]
    index = json.loads((tmp_path / "off" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == off["digest"]
    # nothing is left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off", "on"]


def test_archive_output_is_normalised(tmp_path: Path) -> None:
    layout_result = build_json(ROOT / "recipes" / "hello", tmp_path / "layout")
    r = repro(
        "build", str(ROOT / "recipes" / "hello"), "-o", f"oci-archive:{tmp_path / 'img.tar'}",
        "--json", "--progress", "quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["digest"] == layout_result["digest"]
    dest = oci.extract_oci_archive(tmp_path / "img.tar", tmp_path / "unpacked")
    assert dest.index_manifests()[0].digest == layout_result["digest"]


# The busybox base has no useradd/adduser: the RUN does what they do, writing
# today's day number as the password's last change in /etc/shadow.
LOGGY = """\
FROM {base}
RUN mkdir -p /var/log/app \\
 && cat /proc/sys/kernel/random/uuid > /var/log/app/build.log \\
 && echo 'root:*:19000:0:99999:7:::' > /etc/shadow \\
 && echo 'app:x:1001:1001::/home/app:/bin/sh' >> /etc/passwd \\
 && echo "app:!:$(( $(date +%s) / 86400 )):0:99999:7:::" >> /etc/shadow
"""


def test_presets_make_logs_and_useradd_reproducible(tmp_path: Path, base_image: str) -> None:
    epoch = 1735689600
    toml = f'source_date_epoch = {epoch}\nnetwork = "none"\n'
    plain = recipe(tmp_path, LOGGY.format(base=base_image), toml=toml, name="plain")
    with_presets = recipe(
        tmp_path,
        LOGGY.format(base=base_image),
        toml=toml + '\n[normalise]\npresets = ["debian"]\n',
        name="presets",
    )
    # without the rules: the random log makes every build differ
    a = build_json(plain, tmp_path / "plain-1", "--no-cache")
    b = build_json(plain, tmp_path / "plain-2", "--no-cache")
    assert a["digest"] != b["digest"]
    # with them: identical, and each change is recorded
    c = build_json(with_presets, tmp_path / "presets-1", "--no-cache")
    d = build_json(with_presets, tmp_path / "presets-2", "--no-cache")
    assert c["digest"] == d["digest"]
    changes = {(x["path"], x["rule"].split()[0]) for x in c["normalised"]["changes"]}
    assert ("/var/log/app/build.log", "truncate") in changes
    assert ("/etc/shadow", "shadow") in changes
    files = image_files(tmp_path / "presets-1")
    assert files["var/log/app/build.log"] == b""
    shadow = files["etc/shadow"].decode()
    assert f"app:!:{epoch // 86400}:" in shadow, shadow
    assert "root:*:" + str(epoch // 86400) in shadow


def _docker() -> list[str] | None:
    dev = os.environ.get("REPRO_DEV_ENV", "")
    exe = Path(dev) / "root" / "usr" / "bin" / "docker"
    return [str(exe)] if dev and exe.exists() else None


def test_normalised_image_pushes_and_serves_as_a_base(
    tmp_path: Path, registry: str, base_image: str
) -> None:
    from repro.registry import Registry

    built = build_json(ROOT / "recipes" / "hello", tmp_path / "hello")
    repo = f"{registry}/repro/normalised-{uuid.uuid4().hex[:8]}"
    with Registry() as client:
        pushed = client.push_layout(oci.OCILayout(tmp_path / "hello"), f"{repo}:hello")
    assert pushed == built["digest"]

    # A RUN-less FROM of it builds, and its layers are the pushed image's: all
    # of them are the base's, so normalisation keeps them as BuildKit exported them.
    # (Their contents, not always their bytes: BuildKit may export another
    # compressed blob with the same diff_id from its content store.)
    child = recipe(tmp_path, f'FROM {repo}@{pushed}\nCMD ["/usr/local/bin/greeting"]\n')
    result = build_json(child, tmp_path / "child")
    parent = oci.load_image(oci.OCILayout(tmp_path / "hello"))
    child_image = oci.load_image(oci.OCILayout(tmp_path / "child"))
    assert child_image.config["rootfs"] == parent.config["rootfs"]
    assert all(layer["action"] == "kept" for layer in result["normalised"]["layers"])

    docker = _docker()
    if docker is None:
        pytest.skip("no docker CLI in the dev environment to run the image")
    env = {
        **os.environ,
        "DOCKER_CONFIG": os.path.join(os.environ["REPRO_DEV_ENV"], "docker-config"),
    }
    env.pop("BUILDKIT_HOST", None)
    ref = f"{repo}@{pushed}"
    r = subprocess.run(
        [*docker, "run", "--rm", "--network", "none", "--pull", "always", ref],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "hello from a reproducible image"
    finally:
        subprocess.run([*docker, "rmi", ref], capture_output=True, env=env, timeout=60)


def test_removed_base_file_stays_removed_without_warning(tmp_path: Path, base_image: str) -> None:
    d = recipe(tmp_path, f"FROM {base_image}\nRUN rm /etc/group && rm -r /usr/sbin\n")
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'out'}", "--json", "--progress", "plain")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning" not in r.stderr
    result = json.loads(r.stdout)[0]
    assert result["normalised"]["warnings"] == []
    files = image_files(tmp_path / "out")
    assert "etc/group" not in files and "etc/passwd" in files
