"""`repro publish` against the real loopback registry, directly and through a proxy
that injects faults (tests/registryproxy.py): a connection dropped mid-blob, 500s,
429 with Retry-After, 401; and after any failure no tag points at an incomplete image.

The image pulled back by digest with `docker pull` and `skopeo inspect` has the digest
`repro build` printed; a second publish uploads no blob.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pushimages import random_image, random_index
from registryproxy import FaultProxy, Rule
from runner import run_repro

from repro import oci
from repro.errors import InputError, RegistryError
from repro.publish import Publication, publish_recipes
from repro.recipe import find_recipes
from repro.registry import Registry

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def workspace(tmp: Path, host: str) -> tuple[Path, str]:
    """A copy of recipes/hello whose repository is a fresh namespace on `host`."""
    namespace = f"repro-test/publish-{uuid.uuid4().hex[:10]}"
    (tmp / "recipes").mkdir(parents=True)
    shutil.copytree(ROOT / "recipes" / "hello", tmp / "recipes" / "hello")
    (tmp / "recipes" / "repro.toml").write_text(f'registry = "{host}/{namespace}"\n')
    return tmp, f"{namespace}/hello"


def repro(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=cwd, env=env, timeout=600)


def publish(work: Path, client: Registry, layout: Path, **kwargs: object) -> list[Publication]:
    recipes = find_recipes(work / "recipes", ["hello"])
    return publish_recipes(
        recipes,
        outputs={"hello": f"oci:{layout}"},
        registry=client,
        **kwargs,  # type: ignore[arg-type]
    )


def tag_digest(registry: str, repository: str, tag: str = "latest") -> str | None:
    with Registry() as client:
        try:
            return client.resolve(f"{registry}/{repository}:{tag}").digest
        except RegistryError as exc:
            assert "not found" in str(exc), exc
            return None


def has_image(registry: str, repository: str, digest: str) -> bool:
    with Registry() as client:
        try:
            client.resolve(f"{registry}/{repository}@{digest}")
            return True
        except RegistryError as exc:
            assert "not found" in str(exc), exc
            return False


def pull_back(registry: str, repository: str, layout: Path) -> None:
    """Every blob of the layout's image, fetched from the registry, matches its digest."""
    image = oci.OCILayout(layout)
    with Registry() as client:
        for d in image.walk([image.top_descriptor()]):
            if not d.is_manifest:
                got = client.get_blob(f"{registry}/{repository}", d.digest, io.BytesIO(), d.size)
                assert got == d.size


@pytest.fixture
def proxy(registry: str) -> Iterator[FaultProxy]:
    with FaultProxy(registry) as p:
        yield p


def quick_client(**kwargs: object) -> Registry:
    options: dict[str, object] = {"chunk_size": 1 * MiB, "backoff": 0.01, "tries": 3}
    options.update(kwargs)
    return Registry(**options)  # type: ignore[arg-type]


# --- the real thing -------------------------------------------------------------------


def _docker() -> str:
    dev = os.environ.get("REPRO_DEV_ENV", "")
    exe = Path(dev) / "root/usr/bin/docker" if dev else None
    path = str(exe) if exe and exe.exists() else shutil.which("docker")
    if not path:
        pytest.fail("no docker CLI: scripts/dev-env up installs one")
    return path


def test_published_image_pulls_back_with_the_built_digest(tmp_path: Path, registry: str) -> None:
    work, repository = workspace(tmp_path, registry)
    built = repro("build", "hello", "--json", "--progress", "quiet", cwd=work)
    assert built.returncode == 0, built.stderr
    digest = json.loads(built.stdout)[0]["digest"]

    first = repro("publish", "hello", "--json", cwd=work)
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)
    assert result["digest"] == digest and result["tags"] == ["latest"]
    assert result["reference"] == f"{registry}/{repository}@{digest}"
    assert result["platforms"] == {"linux/amd64": digest}
    assert result["lock"]["path"] == "recipes/hello/repro.lock"
    lock_bytes = (work / "recipes/hello/repro.lock").read_bytes()
    assert result["lock"]["digest"] == "sha256:" + hashlib.sha256(lock_bytes).hexdigest()
    # The build record says how it was made: the pinned exporter options.
    assert result["build"]["exporter"]["oci-mediatypes"] == "true"
    assert result["build"]["lock"]["digest"] == result["lock"]["digest"]
    pushed = result["pushed"]
    # The busybox base's layer is mounted from its repository, not uploaded again.
    assert pushed["blobs_mounted"] >= 1, pushed
    assert pushed["blobs_uploaded"] + pushed["blobs_mounted"] + pushed["blobs_present"] == 4
    assert tag_digest(registry, repository) == digest

    ref = f"{registry}/{repository}@{digest}"
    skopeo = shutil.which("skopeo")
    assert skopeo, "skopeo is missing: scripts/test installs it (Debian 12 package)"
    inspected = subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == digest
    by_tag = subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", f"docker://{registry}/{repository}:latest"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(by_tag.stdout)["Digest"] == digest, by_tag.stderr

    docker = _docker()
    pulled = subprocess.run([docker, "pull", ref], capture_output=True, text=True, timeout=300)
    try:
        assert pulled.returncode == 0, pulled.stderr
        assert f"Digest: {digest}" in pulled.stdout, pulled.stdout
        inspect = subprocess.run(
            [docker, "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ref in json.loads(inspect.stdout), inspect.stdout
    finally:
        subprocess.run([docker, "rmi", ref], capture_output=True, timeout=60)

    again = repro("publish", "hello", "--json", cwd=work)
    assert again.returncode == 0, again.stderr
    pushed = json.loads(again.stdout)[0]["pushed"]
    assert pushed["blobs_uploaded"] == 0 and pushed["blobs_mounted"] == 0, pushed
    assert pushed["bytes_uploaded"] == 0 and pushed["manifests_put"] == 0, pushed
    assert pushed["images_present"] == 1, pushed


def test_publish_without_a_build_output_is_one_line(tmp_path: Path, registry: str) -> None:
    work, _ = workspace(tmp_path, registry)
    r = repro("publish", "hello", cwd=work)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "repro: error: hello: no build output at out/hello; run `repro build hello` first"
    ]


def test_publish_refuses_an_output_built_from_another_lock(tmp_path: Path, registry: str) -> None:
    work, repository = workspace(tmp_path, registry)
    built = repro("build", "hello", "--progress", "quiet", cwd=work)
    assert built.returncode == 0, built.stderr
    lock = work / "recipes/hello/repro.lock"
    lock.write_text(lock.read_text() + "\n# edited after the build\n")
    r = repro("publish", "hello", cwd=work)
    assert r.returncode == 2, r.stderr
    assert "was built from another repro.lock" in r.stderr and len(r.stderr.splitlines()) == 1
    assert tag_digest(registry, repository) is None


# --- faults ---------------------------------------------------------------------------


def test_publish_resumes_after_a_dropped_connection(
    tmp_path: Path, registry: str, proxy: FaultProxy
) -> None:
    work, repository = workspace(tmp_path, proxy.host)
    layout = tmp_path / "image"
    top = random_image(layout, [3 * MiB + 123, 2 * MiB], seed=1)
    # The third chunk is cut half way: the registry never sees it.
    proxy.add(Rule("PATCH", "/blobs/uploads/", "drop", skip=2))
    with quick_client() as client:
        [result] = publish(work, client, layout)
    assert proxy.statuses("PATCH").count("drop") == 1
    assert result.counters["resumed"] == 1 and result.counters["restarted"] == 0, result.counters
    assert result.counters["blobs_uploaded"] == 3  # two layers and the config
    assert tag_digest(registry, repository) == top.digest
    pull_back(registry, repository, layout)


def test_publish_survives_a_chunk_the_registry_got_half_of(
    tmp_path: Path, registry: str, proxy: FaultProxy
) -> None:
    # Distribution 2.8 keeps the half chunk and then refuses to resume that upload
    # (its size no longer matches the upload's state): repro starts the blob over.
    work, repository = workspace(tmp_path, proxy.host)
    layout = tmp_path / "image"
    top = random_image(layout, [3 * MiB + 17], seed=8)
    proxy.add(Rule("PATCH", "/blobs/uploads/", "cut", skip=1))
    with quick_client() as client:
        [result] = publish(work, client, layout)
    assert proxy.statuses("PATCH").count("cut") == 1
    counters = result.counters
    assert counters["resumed"] + counters["restarted"] >= 1, counters
    assert tag_digest(registry, repository) == top.digest
    pull_back(registry, repository, layout)


def test_publish_retries_server_errors(tmp_path: Path, registry: str, proxy: FaultProxy) -> None:
    work, repository = workspace(tmp_path, proxy.host)
    layout = tmp_path / "image"
    top = random_image(layout, [2 * MiB + 5], seed=2)
    proxy.add(Rule("HEAD", "/blobs/sha256:", "status", 500, times=2))
    proxy.add(Rule("PATCH", "/blobs/uploads/", "status", 503, skip=1))
    proxy.add(Rule("PUT", "/manifests/", "status", 500))
    with quick_client() as client:
        [result] = publish(work, client, layout)
    assert proxy.statuses("HEAD").count(500) == 2
    assert 503 in proxy.statuses("PATCH") and 500 in proxy.statuses("PUT", "/manifests/")
    assert result.counters["retries"] >= 4, result.counters
    assert tag_digest(registry, repository) == top.digest
    pull_back(registry, repository, layout)


def test_publish_waits_as_long_as_retry_after_says(
    tmp_path: Path, registry: str, proxy: FaultProxy
) -> None:
    work, repository = workspace(tmp_path, proxy.host)
    layout = tmp_path / "image"
    top = random_image(layout, [64 * 1024], seed=3)
    proxy.add(Rule("POST", "/blobs/uploads/", "status", 429, {"Retry-After": "2"}))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with quick_client(sleep=sleep) as client:
        publish(work, client, layout)
    assert 429 in proxy.statuses("POST")
    assert waits == [2.0]
    assert tag_digest(registry, repository) == top.digest


def test_publish_refused_with_401_is_one_line_and_moves_nothing(
    tmp_path: Path, registry: str, proxy: FaultProxy
) -> None:
    work, repository = workspace(tmp_path, proxy.host)
    random_image(work / "out" / "hello", [1024], seed=4)
    for method in ("HEAD", "GET", "POST", "PUT", "PATCH"):
        proxy.add(
            Rule(
                method,
                "/v2/",
                "status",
                401,
                {"WWW-Authenticate": 'Basic realm="test"'},
                times=None,
            )
        )
    config = tmp_path / "docker-config"
    config.mkdir()
    r = repro("publish", "hello", cwd=work, env={"DOCKER_CONFIG": str(config)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"registry {proxy.host}" in lines[0]
    assert str(config / "config.json") in lines[0] and "docker login" in lines[0]
    assert tag_digest(registry, repository) is None


def test_failed_publish_leaves_the_tag_on_the_last_complete_image(
    tmp_path: Path, registry: str, proxy: FaultProxy
) -> None:
    work, repository = workspace(tmp_path, proxy.host)
    old = random_image(tmp_path / "old", [1 * MiB], seed=5)
    with quick_client() as client:
        publish(work, client, tmp_path / "old")
    assert tag_digest(registry, repository) == old.digest

    # Every chunk of the new image's big layer is cut: the publish fails, bounded.
    new = random_image(tmp_path / "new", [3 * MiB, 4096], seed=6)
    proxy.add(Rule("PATCH", "/blobs/uploads/", "drop", times=None))
    with quick_client() as client, pytest.raises(RegistryError):
        publish(work, client, tmp_path / "new")
    assert tag_digest(registry, repository) == old.digest
    assert not has_image(registry, repository, new.digest)

    # A manifest refused for good: the blobs are in, the tag still is not moved.
    proxy.rules.clear()
    proxy.add(Rule("PUT", "/manifests/", "status", 500, times=None))
    with quick_client() as client, pytest.raises(RegistryError):
        publish(work, client, tmp_path / "new")
    assert tag_digest(registry, repository) == old.digest

    # The attach hook runs after the image is in by digest and before the tag moves.
    proxy.rules.clear()
    seen: list[tuple[str, dict[str, str]]] = []

    def attach(publication: Publication, client: Registry) -> None:
        assert has_image(registry, repository, publication.digest)
        seen.append((publication.digest, publication.platforms))
        raise RuntimeError("signing failed")

    with quick_client() as client, pytest.raises(RuntimeError):
        publish(work, client, tmp_path / "new", attach=attach)
    assert seen == [(new.digest, {"linux/amd64": new.digest})]
    assert tag_digest(registry, repository) == old.digest

    with quick_client() as client:
        [result] = publish(work, client, tmp_path / "new")
    assert tag_digest(registry, repository) == new.digest
    # The tag named another image: every blob checked (all there already), none sent.
    assert result.counters["blobs_uploaded"] == 0, result.counters
    assert result.counters["blobs_present"] == 3 and result.counters["images_present"] == 0


def test_a_multi_platform_image_is_published_as_its_index(tmp_path: Path, registry: str) -> None:
    work, repository = workspace(tmp_path, registry)
    layout = tmp_path / "image"
    top = random_index(layout, ["linux/amd64", "linux/arm64"], 4096, seed=7)
    children = {str(d.platform): d.digest for d in oci.OCILayout(layout).children(top)}
    with Registry() as client:
        [result] = publish(work, client, layout)
    assert result.digest == top.digest and result.media_type == oci.MEDIA_TYPE_OCI_INDEX
    assert result.platforms == children
    assert tag_digest(registry, repository) == top.digest
    inspected = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry}/{repository}:latest",
        ],
        capture_output=True,
        timeout=120,
    )
    assert inspected.returncode == 0, inspected.stderr
    assert hashlib.sha256(inspected.stdout).hexdigest() == top.digest.split(":")[1]
    for platform, digest in children.items():
        assert has_image(registry, repository, digest), platform


def test_recipes_are_published_in_graph_order(tmp_path: Path, registry: str) -> None:
    work, repository = workspace(tmp_path, registry)
    shutil.copytree(ROOT / "recipes" / "greet", work / "recipes" / "greet")
    layouts = {}
    for seed, name in enumerate(("hello", "greet")):
        layouts[name] = tmp_path / name
        random_image(layouts[name], [2048], seed=20 + seed)
    everything = find_recipes(work / "recipes")
    greet = [r for r in everything if r.name == "greet"]
    order: list[str] = []
    with Registry() as client:
        results = publish_recipes(
            greet + [r for r in everything if r.name == "hello"],
            everything,
            outputs={n: f"oci:{p}" for n, p in layouts.items()},
            registry=client,
            on_published=lambda p: order.append(p.recipe),
        )
    assert order == ["hello", "greet"] == [r.recipe for r in results]
    assert results[1].repository == f"{registry}/{repository.rsplit('/', 1)[0]}/greet"
    # A recipe whose output is missing fails before anything is pushed.
    shutil.rmtree(layouts["greet"])
    with Registry() as client, pytest.raises(InputError, match="no build output"):
        publish_recipes(
            everything, outputs={n: f"oci:{p}" for n, p in layouts.items()}, registry=client
        )
