"""repro lock / build against the loopback registry and the real engine.

Each test pushes its own small images under its own repository names, so tags can
be moved without touching anything else.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import tomllib
import uuid
from pathlib import Path

import pytest
from runner import run_repro

from repro import oci
from repro.registry import Registry

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent


def repro(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd or ROOT, timeout=timeout)


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    diff_id = oci.sha256_digest(raw.getvalue())
    return gzip.compress(raw.getvalue(), mtime=0), diff_id


def push_image(
    registry: str,
    repo_tag: str,
    files: dict[str, bytes],
    platforms: tuple[str, ...] = ("linux/amd64",),
) -> tuple[str, dict[str, str]]:
    """Push a tiny image (an index when several platforms); returns (top digest, per platform)."""
    repo = f"{registry}/{repo_tag}"
    per: dict[str, str] = {}
    descriptors = []
    with Registry() as client:
        for platform in platforms:
            os_name, arch = platform.split("/")[:2]
            layer, diff_id = _layer({**files, "platform": platform.encode()})
            config = oci.canonical_json(
                {
                    "architecture": arch,
                    "os": os_name,
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                }
            )
            for blob in (layer, config):
                client.push_blob(repo, oci.sha256_digest(blob), len(blob), io.BytesIO(blob))
            manifest = oci.canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
                    "config": {
                        "mediaType": oci.MEDIA_TYPE_OCI_CONFIG,
                        "digest": oci.sha256_digest(config),
                        "size": len(config),
                    },
                    "layers": [
                        {
                            "mediaType": oci.MEDIA_TYPE_OCI_LAYER_GZIP,
                            "digest": oci.sha256_digest(layer),
                            "size": len(layer),
                        }
                    ],
                }
            )
            digest = oci.sha256_digest(manifest)
            per[platform] = digest
            if len(platforms) == 1:
                client.put_manifest(
                    repo, repo_tag.rsplit(":", 1)[1], manifest, oci.MEDIA_TYPE_OCI_MANIFEST
                )
                return digest, per
            client.put_manifest(repo, digest, manifest, oci.MEDIA_TYPE_OCI_MANIFEST)
            descriptors.append(
                {
                    "mediaType": oci.MEDIA_TYPE_OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        index = oci.canonical_json(
            {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_OCI_INDEX, "manifests": descriptors}
        )
        client.put_manifest(repo, repo_tag.rsplit(":", 1)[1], index, oci.MEDIA_TYPE_OCI_INDEX)
    return oci.sha256_digest(index), per


def make_recipe(
    parent: Path, name: str, toml: str, dockerfile: str, files: dict[str, str] | None = None
) -> Path:
    d = parent / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "recipe.toml").write_text(toml)
    (d / "Dockerfile").write_text(dockerfile)
    for rel, text in (files or {}).items():
        (d / rel).write_text(text)
    return d


def read_lock(d: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads((d / "repro.lock").read_text())


def image_file(layout: Path, name: str) -> bytes:
    lay = oci.OCILayout(layout)
    image = oci.load_image(lay)
    found = b""
    for layer in image.layers:
        with (
            lay.open_blob(layer.digest, layer.size) as blob,
            tarfile.open(fileobj=blob, mode="r|*") as tar,
        ):
            for m in tar:
                if m.name.lstrip("./") == name and m.isfile():
                    f = tar.extractfile(m)
                    assert f is not None
                    found = f.read()
    return found


@pytest.fixture
def repo_name() -> str:
    return f"repro-test/lock-{uuid.uuid4().hex[:10]}"


def test_lock_pins_a_multi_platform_index(tmp_path: Path, registry: str, repo_name: str) -> None:
    top, per = push_image(
        registry, f"{repo_name}:v1", {"marker": b"one"}, ("linux/amd64", "linux/arm64")
    )
    ref = f"{registry}/{repo_name}:v1"
    d = make_recipe(
        tmp_path / "recipes",
        "multi",
        f'source_date_epoch = 1\nplatforms = ["linux/amd64", "linux/arm64"]\nbases = ["{ref}"]\n',
        f"FROM {ref}\n",
    )
    r = repro("lock", str(d))
    assert r.returncode == 0, r.stderr
    assert "[multi] created" in r.stdout
    entry = read_lock(d)["bases"][ref]
    assert entry["digest"] == top
    assert entry["media_type"] == oci.MEDIA_TYPE_OCI_INDEX
    assert entry["platforms"] == per
    # a second lock leaves the file alone
    before = (d / "repro.lock").read_bytes()
    r = repro("lock", str(d))
    assert r.returncode == 0 and "[multi] current" in r.stdout
    assert (d / "repro.lock").read_bytes() == before


def test_a_platform_the_base_lacks_is_an_error(
    tmp_path: Path, registry: str, repo_name: str
) -> None:
    push_image(registry, f"{repo_name}:v1", {"marker": b"one"})
    ref = f"{registry}/{repo_name}:v1"
    d = make_recipe(
        tmp_path,
        "p",
        f'source_date_epoch = 1\nplatforms = ["linux/s390x"]\nbases = ["{ref}"]\n',
        f"FROM {ref}\n",
    )
    r = repro("lock", str(d))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "has no image for linux/s390x" in r.stderr
    assert not (d / "repro.lock").exists()


def test_missing_tag_is_a_one_line_error_and_writes_nothing(
    tmp_path: Path, registry: str, repo_name: str
) -> None:
    ref = f"{registry}/{repo_name}:nope"
    d = make_recipe(tmp_path, "m", f'source_date_epoch = 1\nbases = ["{ref}"]\n', f"FROM {ref}\n")
    r = repro("lock", str(d))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "not found" in r.stderr and "Traceback" not in r.stderr
    assert not (d / "repro.lock").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_moved_tag_check_update_and_binding_build(
    tmp_path: Path, registry: str, repo_name: str
) -> None:
    v1, _ = push_image(registry, f"{repo_name}:stable", {"marker": b"one"})
    ref = f"{registry}/{repo_name}:stable"
    d = make_recipe(
        tmp_path,
        "mover",
        f'source_date_epoch = 1700000000\nnetwork = "none"\nbases = ["{ref}"]\n',
        f"FROM {ref}\nCOPY extra /extra\n",
        {"extra": "x\n"},
    )
    assert repro("lock", str(d)).returncode == 0
    assert read_lock(d)["bases"][ref]["digest"] == v1

    v2, _ = push_image(registry, f"{repo_name}:stable", {"marker": b"two"})
    assert v2 != v1
    r = repro("lock", "--check", str(d))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"[mover] base:{ref} {v1[:19]}… -> {v2[:19]}…" in r.stdout
    assert "lock check failed: mover (changed)" in r.stderr
    assert read_lock(d)["bases"][ref]["digest"] == v1  # --check writes nothing

    # The lock is binding: the build uses v1 although the tag now names v2.
    out = tmp_path / "o1"
    r = repro("build", str(d), "-o", f"oci:{out}", "--progress", "plain")
    assert r.returncode == 0, r.stderr[-2000:]
    assert image_file(out, "marker") == b"one"

    r = repro("lock", "--update", str(d))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"[mover] base:{ref} {v1[:19]}… -> {v2[:19]}…"
    assert read_lock(d)["bases"][ref]["digest"] == v2
    assert repro("lock", "--check", str(d)).returncode == 0
    out2 = tmp_path / "o2"
    r = repro("build", str(d), "-o", f"oci:{out2}", "--progress", "plain")
    assert r.returncode == 0, r.stderr[-2000:]
    assert image_file(out2, "marker") == b"two"


def test_build_refuses_missing_or_stale_lock_and_undeclared_from(
    tmp_path: Path, registry: str, repo_name: str
) -> None:
    push_image(registry, f"{repo_name}:v1", {"marker": b"one"})
    ref = f"{registry}/{repo_name}:v1"
    d = make_recipe(tmp_path, "s", f'source_date_epoch = 1\nbases = ["{ref}"]\n', f"FROM {ref}\n")
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}")
    assert (
        r.returncode == 2 and r.stderr.strip() == "repro: error: s: no repro.lock: run repro lock"
    )
    assert repro("lock", str(d)).returncode == 0
    (d / "recipe.toml").write_text(f'source_date_epoch = 2\nbases = ["{ref}"]\n')
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}")
    assert r.returncode == 2 and "stale" in r.stderr and "run repro lock" in r.stderr
    assert r.stderr.count("\n") == 1
    assert repro("lock", "--check", str(d)).returncode == 1
    (d / "Dockerfile").write_text(f"FROM {ref}\nFROM {registry}/{repo_name}:other\n")
    r = repro("lock", str(d))
    assert r.returncode == 2 and "not a declared base" in r.stderr and ":2:" in r.stderr
    assert not (tmp_path / "o").exists()


def test_build_graph_all(tmp_path: Path, registry: str, repo_name: str) -> None:
    """A recipe on another recipe: lock, build --all, a change cascades."""
    push_image(registry, f"{repo_name}/root:v1", {"marker": b"root"})
    root_ref = f"{registry}/{repo_name}/root:v1"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "repro.toml").write_text(f'registry = "{registry}/{repo_name}"\n')
    base = make_recipe(
        recipes,
        "base",
        f'source_date_epoch = 1\nnetwork = "none"\nbases = ["{root_ref}"]\n[args]\nV = "1"\n',
        f"FROM {root_ref}\nARG V\nCOPY v /v\n",
        {"v": "1\n"},
    )
    child = make_recipe(
        recipes,
        "child",
        'source_date_epoch = 1\nnetwork = "none"\nbases = ["recipe:base"]\n',
        "FROM recipe:base\nCOPY c /c\n",
        {"c": "c\n"},
    )
    r = repro("graph", "--recipes-dir", str(recipes))
    assert r.stdout.splitlines() == ["1. base", "2. child  <- base"]
    assert repro("lock", "base", "--recipes-dir", str(recipes)).returncode == 0
    r = repro("lock", "--recipes-dir", str(recipes))
    assert r.returncode == 2 and "recipe:base has no image" in r.stderr

    r = repro("build", "--all", "--recipes-dir", str(recipes), "--progress", "plain", cwd=tmp_path)
    assert r.returncode == 2 and "child: no repro.lock" in r.stderr  # base was built and pushed
    r = repro("lock", "--recipes-dir", str(recipes))
    assert r.returncode == 0, r.stderr
    base_digest = read_lock(child)["bases"]["recipe:base"]["digest"]
    r = repro(
        "build",
        "--all",
        "--recipes-dir",
        str(recipes),
        "--progress",
        "plain",
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    results = {x["recipe"]: x for x in json.loads(r.stdout)}
    assert list(results) == ["base", "child"]
    assert results["base"]["digest"] == base_digest
    assert image_file(tmp_path / "out" / "child", "marker") == b"root"
    assert image_file(tmp_path / "out" / "child", "c") == b"c\n"

    # Change the base: its digest moves, the child's lock is stale until re-locked.
    (base / "v").write_text("2\n")
    r = repro("build", "--all", "--recipes-dir", str(recipes), "--progress", "plain", cwd=tmp_path)
    assert r.returncode == 2 and "base recipe:base was rebuilt" in r.stderr
    r = repro("lock", "--recipes-dir", str(recipes))
    assert r.returncode == 0 and "[child] base:recipe:base" in r.stdout, r.stdout + r.stderr
    r = repro("build", "--all", "--recipes-dir", str(recipes), "--progress", "plain", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert image_file(tmp_path / "out" / "child", "v") == b"2\n"


def test_example_recipes_locks_are_current() -> None:
    r = repro("lock", "--check", "hello", "wordcount")
    assert r.returncode == 0, r.stdout + r.stderr


def test_build_all_spreads_independent_recipes_over_builders(tmp_path: Path) -> None:
    address = os.environ.get("BUILDKIT_HOST") or os.environ["DOCKER_HOST"]
    if address.startswith("unix://") and not os.environ.get("BUILDKIT_HOST"):
        address = "docker://" + address
    recipes = tmp_path / "recipes"
    for name in ("c", "a", "b"):
        make_recipe(
            recipes, name, "source_date_epoch = 1\n", "FROM scratch\nCOPY f /f\n", {"f": name}
        )
    r = repro(
        "build", "--all", "--recipes-dir", str(recipes), "--builder", address,
        "--builder", address, "--json", "--progress", "quiet", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout)
    assert [x["recipe"] for x in results] == ["a", "b", "c"]
    for x in results:
        assert image_file(tmp_path / "out" / x["recipe"], "f") == x["recipe"].encode()


def test_source_policy_converts_tags_and_denies_the_rest(
    tmp_path: Path, registry: str, repo_name: str
) -> None:
    """The engine enforces the lock too: a tag reaching BuildKit is converted to the
    locked digest, and an image the lock does not name is denied."""
    from repro.buildkit import BuildRequest, Output, build, connect
    from repro.errors import ReproError
    from repro.lock import source_policy
    from repro.recipe import load_recipe

    v1, _ = push_image(registry, f"{repo_name}:t", {"marker": b"one"})
    ref = f"{registry}/{repo_name}:t"
    d = make_recipe(tmp_path, "pol", f'source_date_epoch = 1\nbases = ["{ref}"]\n', f"FROM {ref}\n")
    rules = source_policy(load_recipe(d), {"bases": {ref: {"digest": v1}}})
    push_image(registry, f"{repo_name}:t", {"marker": b"two"})  # the tag moves on
    push_image(registry, f"{repo_name}:other", {"marker": b"other"})

    def run(dockerfile: str, out: Path) -> None:
        (d / "Dockerfile").write_text(dockerfile)
        req = BuildRequest(
            context=d, dockerfile=d / "Dockerfile", output=Output("oci", out), source_policy=rules
        )
        with connect(None) as conn:
            build(conn, req)

    # The raw Dockerfile names the tag (no rendering here): the policy converts it.
    run(f"FROM {ref}\n", tmp_path / "o1")
    assert image_file(tmp_path / "o1", "marker") == b"one"
    with pytest.raises(ReproError, match="denied by policy"):
        run(f"FROM {registry}/{repo_name}:other\n", tmp_path / "o2")


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (("source_date_epoch = 1\n", "source_date_epoch = 7\n"), "says source_date_epoch = 7"),
        (('recipe = "ed"', 'recipe = "other"'), "is for recipe 'other'"),
        (("version = 1\n", "version = 1\nsurprise = 1\n"), "unknown key 'surprise'"),
    ],
)
def test_an_edited_lock_is_refused_and_relocked(
    tmp_path: Path, registry: str, repo_name: str, edit: tuple[str, str], says: str
) -> None:
    push_image(registry, f"{repo_name}:v1", {"marker": b"one"})
    ref = f"{registry}/{repo_name}:v1"
    d = make_recipe(tmp_path, "ed", f'source_date_epoch = 1\nbases = ["{ref}"]\n', f"FROM {ref}\n")
    assert repro("lock", str(d)).returncode == 0
    lock = d / "repro.lock"
    good = lock.read_text()
    assert edit[0] in good
    lock.write_text(good.replace(edit[0], edit[1], 1))
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}", "--progress", "quiet")
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    r = repro("lock", "--check", str(d))
    assert r.returncode == 1, r.stdout + r.stderr
    r = repro("lock", str(d))
    assert r.returncode == 0, r.stderr
    assert lock.read_text() == good


def test_a_locked_base_the_registry_lacks_is_one_line_naming_the_lock(
    tmp_path: Path, registry: str, repo_name: str
) -> None:
    digest, _ = push_image(registry, f"{repo_name}:v1", {"marker": b"one"})
    ref = f"{registry}/{repo_name}:v1"
    toml = f'source_date_epoch = 1\nbases = ["{ref}"]\n'
    d = make_recipe(tmp_path, "gone", toml, f"FROM {ref}\n")
    assert repro("lock", str(d)).returncode == 0
    lock = d / "repro.lock"
    assert digest in lock.read_text()
    lock.write_text(lock.read_text().replace(digest, "sha256:" + "ab" * 32))
    r = repro("build", str(d), "-o", f"oci:{tmp_path / 'o'}", "--progress", "quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "repro.lock pins base" in lines[0], r.stderr
    assert lines[0].count("sha256:abab") == 1
