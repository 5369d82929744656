"""Attestations end to end: real builds (repro verify), the real registry
(distribution 2.8: no referrers API, so the tag fallback), and cosign 2 from the
Debian 13 package (`scripts/dev-env cosign`) checking what repro wrote."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from runner import run_repro
from test_verify_engine import second_engine  # noqa: F401 - a fixture used below

from repro import attest, oci
from repro.attest._dsse import Envelope
from repro.attest._store import attach_envelopes, fallback_tag, find_attestations, legacy_tag
from repro.build import SecretSpec
from repro.registry import Registry

# The examples' bases in the registry (jq on debian12, greet on hello): tests/conftest.py.
pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("example_images")]

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "REPRO_TEST_ATTEST_SECRET"
SECRET = "tok-" + uuid.uuid4().hex  # a value no statement could contain by chance


def repro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_repro(*args, cwd=ROOT, env=env, timeout=600)


@dataclass
class Verified:
    recipes: Path
    recipe: object
    result: object  # repro.verify.VerifyResult
    layout: Path
    keys: Path


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verified]:
    """The hello recipe with a RUN step that needs a build secret, verified (two real
    builds); the first build's image kept."""
    from repro.recipe import load_recipe
    from repro.verify import verify_recipe

    root = tmp_path_factory.mktemp("attest")
    recipes = root / "recipes"
    shutil.copytree(ROOT / "recipes" / "hello", recipes / "hello")
    shutil.copy(ROOT / "recipes" / "repro.toml", recipes / "repro.toml")
    with (recipes / "hello" / "Dockerfile").open("a") as dockerfile:
        # Fails the build unless the secret arrives; writes nothing of it.
        dockerfile.write("RUN --mount=type=secret,id=tok test -s /run/secrets/tok\n")
    os.environ[SECRET_ENV] = SECRET
    recipe = load_recipe(recipes / "hello")
    try:
        result = verify_recipe(
            recipe,
            keep=root / "keep",
            stagger=0.3,
            secrets=[SecretSpec.parse(f"id=tok,env={SECRET_ENV}")],
        )
    finally:
        del os.environ[SECRET_ENV]
    assert result.verdict == "identical", result.to_json()
    keys = root / "keys"
    keys.mkdir()
    for name in ("a", "b", "wrong"):
        attest.generate(keys / name)
    yield Verified(recipes, recipe, result, root / "keep" / "hello-a", keys)


@pytest.fixture(scope="module")
def cosign() -> str:
    """cosign 2 from the Debian 13 package, fetched once by scripts/dev-env."""
    cache = Path(os.environ.get("REPRO_DEV_ENV", ROOT / ".cache" / "dev-env")).parent
    out = subprocess.run(
        [str(ROOT / "scripts" / "dev-env"), "cosign"],
        env={**os.environ, "REPRO_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    path = out.stdout.strip().splitlines()[-1]
    # Debian's build reports no version of its own; the package's is kept beside it.
    assert (Path(path).parents[2] / "cosign.version").read_text().startswith("2.")
    return path


def push(v: Verified, registry: str) -> tuple[str, str]:
    repo = f"{registry}/repro-test/attest-{uuid.uuid4().hex[:10]}"
    with Registry() as client:
        digest = client.push_layout(oci.OCILayout(v.layout), f"{repo}:hello")
    return repo, digest


def statements(v: Verified, repo: str, digest: str, client: Registry, builder: str) -> list:  # type: ignore[type-arg]
    side = v.result.sides[0].result  # type: ignore[attr-defined]
    assert side.digest == digest
    return attest.recipe_statements(
        client,
        repo,
        digest,
        v.recipe,
        facts=attest.BuildFacts(buildkit_version=side.builder_version, builder_id=builder),
        comparison=attest.Comparison.from_verify(v.result),
    )


def cosign_verify(
    cosign: str, tmp: Path, key: Path, kind: str, ref: str, *, bundles: bool = False
) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    """cosign verify-attestation: from the `.att` tag, or with `bundles` from the
    Sigstore bundles among the image's referrers (an empty trusted root: keys only)."""
    config = tmp / "docker-config"
    config.mkdir(exist_ok=True)
    (config / "config.json").write_text("{}")
    extra = []
    if bundles:
        root = tmp / "trusted-root.json"
        root.write_text(
            '{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'
        )
        extra = ["--new-bundle-format", "--trusted-root", str(root)]
    out = subprocess.run(
        [
            cosign,
            "verify-attestation",
            *extra,
            "--key",
            str(key),
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            "--type",
            kind,
            ref,
        ],
        env={**os.environ, "DOCKER_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    payloads = []
    if out.returncode == 0:
        for line in out.stdout.splitlines():
            if line.strip():
                envelope = json.loads(line)
                payloads.append(json.loads(base64.b64decode(envelope["payload"])))
    return out.returncode, payloads


def test_cosign_verifies_provenance_and_reproduced(
    verified: Verified, cosign: str, registry: str, tmp_path: Path
) -> None:
    repo, digest = push(verified, registry)
    with Registry() as client:
        docs = statements(verified, repo, digest, client, "builder-a")
        key = attest.load_private_key(verified.keys / "a.key")
        result = attest.attach_statements(client, repo, digest, docs, key)
    assert result.path == "tag-fallback"  # distribution 2.8 answers 404 on /referrers/
    ref = f"{repo}@{digest}"
    rc, payloads = cosign_verify(
        cosign, tmp_path, verified.keys / "a.pub", attest.SLSA_PROVENANCE_V1, ref
    )
    assert rc == 0
    build_types = sorted(p["predicate"]["buildDefinition"]["buildType"] for p in payloads)
    assert build_types == sorted([attest.BUILD_TYPE, attest.REPRODUCED_TYPE])
    assert all(p["subject"][0]["digest"]["sha256"] == digest.split(":")[1] for p in payloads)
    rc, payloads = cosign_verify(cosign, tmp_path, verified.keys / "a.pub", "spdxjson", ref)
    assert rc == 0 and [p["predicate"]["spdxVersion"] for p in payloads] == ["SPDX-2.3"]

    r = repro("attest", "verify", f"{repo}:hello", "--key", str(verified.keys / "a.pub"), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    outcome = json.loads(r.stdout)
    assert outcome["digest"] == digest and outcome["builders"] == ["builder-a"]
    kinds = sorted(a["kind"] for a in outcome["attestations"])
    assert kinds == ["provenance", "reproduced", "sbom"]

    # A wrong key: cosign and repro both refuse.
    rc, _ = cosign_verify(
        cosign, tmp_path, verified.keys / "wrong.pub", attest.SLSA_PROVENANCE_V1, ref
    )
    assert rc != 0
    r = repro("attest", "verify", ref, "--key", str(verified.keys / "wrong.pub"))
    assert r.returncode == 1 and "NOT verified" in r.stdout


def test_cosign_verifies_the_bundles_in_the_referrers_fallback(
    verified: Verified, cosign: str, registry: str, tmp_path: Path
) -> None:
    """cosign 2.5's --new-bundle-format reads Sigstore bundles from OCI referrers
    (here through the sha256-<hex> fallback tag); with no .att tag written, that is
    the only place it can find them."""
    repo, digest = push(verified, registry)
    with Registry() as client:
        docs = statements(verified, repo, digest, client, "builder-a")
        key = attest.load_private_key(verified.keys / "a.key")
        result = attest.attach_statements(client, repo, digest, docs, key, legacy=False)
    assert result.path == "tag-fallback" and not result.legacy
    ref = f"{repo}@{digest}"
    pub = verified.keys / "a.pub"
    rc, payloads = cosign_verify(
        cosign, tmp_path, pub, attest.SLSA_PROVENANCE_V1, ref, bundles=True
    )
    assert rc == 0 and len(payloads) == 2  # provenance and reproduced
    rc, payloads = cosign_verify(cosign, tmp_path, pub, "spdxjson", ref, bundles=True)
    assert rc == 0 and len(payloads) == 1
    rc, _ = cosign_verify(
        cosign, tmp_path, verified.keys / "wrong.pub", attest.SLSA_PROVENANCE_V1, ref, bundles=True
    )
    assert rc != 0
    rc, _ = cosign_verify(cosign, tmp_path, pub, attest.SLSA_PROVENANCE_V1, ref)
    assert rc != 0  # no .att: the legacy path finds nothing


def test_tampered_envelope_is_rejected(
    verified: Verified, cosign: str, registry: str, tmp_path: Path
) -> None:
    repo, digest = push(verified, registry)
    with Registry() as client:
        docs = statements(verified, repo, digest, client, "builder-a")
        key = attest.load_private_key(verified.keys / "a.key")
        good = attest.sign_statement(docs[0], key)
        payload = good.payload.replace(b"builder-a", b"builder-x")
        assert payload != good.payload
        tampered = Envelope(good.payload_type, payload, good.signatures)
        attach_envelopes(client, repo, digest, [tampered], key)
    rc, _ = cosign_verify(
        cosign, tmp_path, verified.keys / "a.pub", attest.SLSA_PROVENANCE_V1, f"{repo}@{digest}"
    )
    assert rc != 0
    r = repro("attest", "verify", f"{repo}:hello", "--key", str(verified.keys / "a.pub"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "signature does not verify" in r.stdout


def test_attestation_about_another_image_fails(verified: Verified, registry: str) -> None:
    repo, digest = push(verified, registry)
    other = "sha256:" + "0" * 64
    with Registry() as client:
        docs = statements(verified, repo, digest, client, "builder-a")
        key = attest.load_private_key(verified.keys / "a.key")
        docs[0]["subject"][0]["digest"]["sha256"] = other.split(":")[1]
        with pytest.raises(Exception, match="not the image"):
            attest.attach_statements(client, repo, digest, docs[:1], key)
        # Stored anyway (as a hostile writer could): verification fails on it.
        attach_envelopes(client, repo, digest, [attest.sign_statement(docs[0], key)], key)
    r = repro("attest", "verify", f"{repo}:hello", "--key", str(verified.keys / "a.pub"))
    assert r.returncode == 1
    assert f"does not match {digest}" in r.stdout


def test_concurrent_attachers_lose_no_statement(verified: Verified, registry: str) -> None:
    repo, digest = push(verified, registry)
    args = [
        "attest",
        "attach",
        f"{repo}:hello",
        "--recipe",
        "hello",
        "--recipes-dir",
        str(verified.recipes),
        "--json",
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "repro",
                *args,
                "--key",
                str(verified.keys / f"{who}.key"),
                "--builder-id",
                f"builder-{who}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    referrers = {d for r in results for d in r["referrers"]}
    assert len(referrers) == 4  # provenance and SBOM from each
    with Registry() as client:
        data, _mt, _d = client.get_manifest(f"{repo}:{fallback_tag(digest)}")
        assert {m["digest"] for m in json.loads(data)["manifests"]} == referrers
        data, _mt, _d = client.get_manifest(f"{repo}:{legacy_tag(digest)}")
        assert len(json.loads(data)["layers"]) == 4
    both = ["--key", str(verified.keys / "a.pub"), "--key", str(verified.keys / "b.pub")]
    r = repro("attest", "verify", f"{repo}:hello", *both, "--policy", "builders>=2", "--json")
    assert r.returncode == 0, r.stdout
    assert sorted(json.loads(r.stdout)["builders"]) == ["builder-a", "builder-b"]
    r = repro(
        "attest",
        "verify",
        f"{repo}:hello",
        "--key",
        str(verified.keys / "a.pub"),
        "--policy",
        "builders>=2",
    )
    assert r.returncode == 1 and "1 builder(s) agree" in r.stdout


def test_many_writers_at_once_lose_nothing(verified: Verified, registry: str) -> None:
    """Six writers released together by a barrier, each with its own connection."""
    import threading

    repo, digest = push(verified, registry)
    key = attest.load_private_key(verified.keys / "a.key")
    barrier = threading.Barrier(6)
    results: list[attest.AttachResult] = []

    def writer(i: int) -> None:
        doc = attest.reproduced(
            repo,
            digest,
            None,
            "sha256:" + "1" * 64,
            attest.Comparison(
                "identical",
                [{"label": "a", "digest": digest, "builder": "x", "builder_version": ""}],
            ),
            builder_id=f"writer-{i}",
        )
        with Registry() as client:
            barrier.wait()
            results.append(attest.attach_statements(client, repo, digest, [doc], key))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    with Registry() as client:
        data, _mt, _d = client.get_manifest(f"{repo}:{fallback_tag(digest)}")
        listed = {m["digest"] for m in json.loads(data)["manifests"]}
        data, _mt, _d = client.get_manifest(f"{repo}:{legacy_tag(digest)}")
        layers = json.loads(data)["layers"]
    assert listed == {r.referrers[0] for r in results}
    assert len(layers) == 6


def test_build_secret_reaches_no_attestation(verified: Verified, registry: str) -> None:
    repo, digest = push(verified, registry)
    with Registry() as client:
        docs = statements(verified, repo, digest, client, "builder-a")
        key = attest.load_private_key(verified.keys / "a.key")
        attest.attach_statements(client, repo, digest, docs, key)
        stored = find_attestations(client, repo, digest)
    assert len(stored) == 6 and all(f.envelope is not None for f in stored)
    texts = [json.dumps(d) for d in docs] + [
        f.envelope.to_bytes().decode() + json.dumps(f.envelope.statement())  # type: ignore[union-attr]
        for f in stored
    ]
    needles = [SECRET, base64.b64encode(SECRET.encode()).decode(), SECRET_ENV]
    for text in texts:
        for needle in needles:
            assert needle not in text


def test_sbom_lists_exactly_the_dpkg_database_of_a_debian_image(tmp_path: Path) -> None:
    """jq on debian12: the SBOM from the locks (debian12's and jq's) against the
    package database in the built image's layers."""
    from repro.build import build_recipe
    from repro.lock import read_lock
    from repro.packages.installed import from_layout
    from repro.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "jq")
    result = build_recipe(recipe, output=f"oci:{tmp_path / 'jq'}")
    layout = oci.OCILayout(tmp_path / "jq")
    (top,) = [d for d in layout.image_manifests() if not d.is_attestation]
    doc = layout.read_json(top)
    layers = [oci.Descriptor.from_json(d) for d in doc["layers"]]
    db = from_layout(layout, layers)
    assert db is not None and db.kind == "dpkg"
    lock = read_lock(recipe)
    assert lock
    document = attest.sbom_document("127.0.0.1:5000/repro/jq", result.digest, recipe, lock)
    check = attest.check_sbom(document, db)
    assert check.ok, check.to_json()
    assert check.checked == len(db.packages) > 80
    assert ("jq", lock["packages"]["apt"]["tools"]["package"][0]["version"]) in {
        (p.name, p.version) for p in db.packages.values()
    }


# --- repro rebuild ---------------------------------------------------------------------


@dataclass
class Published:
    repo: str
    digest: str
    keys: Path
    checkout: Path  # a second checkout of the recipes, at another path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, registry: str) -> Published:
    """hello, built here and published with the publisher's provenance (key a)."""
    from repro.build import build_recipe
    from repro.recipe import load_recipe

    root = tmp_path_factory.mktemp("rebuild")
    recipe = load_recipe(ROOT / "recipes" / "hello")
    build_recipe(recipe, output=f"oci:{root / 'image'}", progress="quiet")
    repo = f"{registry}/repro-test/attest-rb-{uuid.uuid4().hex[:10]}"
    keys = root / "keys"
    keys.mkdir()
    for name in ("a", "b"):
        attest.generate(keys / name)
    with Registry() as client:
        digest = client.push_layout(oci.OCILayout(root / "image"), f"{repo}:hello")
        docs = attest.recipe_statements(client, repo, digest, recipe, builder_id="publisher")
        attest.attach_statements(
            client, repo, digest, docs, attest.load_private_key(keys / "a.key")
        )
    checkout = root / "checkout2" / "recipes"
    shutil.copytree(ROOT / "recipes", checkout)
    return Published(repo, digest, keys, checkout)


def test_rebuild_on_another_engine_countersigns(
    published: Published,
    second_engine: str,  # noqa: F811 - the fixture imported above
) -> None:
    both = ["--key", str(published.keys / "a.pub"), "--key", str(published.keys / "b.pub")]
    ref = f"{published.repo}:hello"
    r = repro("attest", "verify", ref, *both, "--policy", "builders>=2")
    assert r.returncode == 1, r.stdout  # only the publisher so far
    r = repro(
        "rebuild",
        ref,
        "--source",
        str(published.checkout / "hello"),
        "--key",
        str(published.keys / "a.pub"),
        "--sign",
        str(published.keys / "b.key"),
        "--builder",
        second_engine,
        "--builder-id",
        "rebuilder",
        "--json",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result["verdict"] == "identical" and result["rebuilt"] == published.digest
    assert result["publisher"] == "publisher" and result["attached"]["path"] == "tag-fallback"
    r = repro("attest", "verify", ref, *both, "--policy", "builders>=2", "--json")
    assert r.returncode == 0, r.stdout
    assert sorted(json.loads(r.stdout)["builders"]) == ["publisher", "rebuilder"]
    with Registry() as client:
        found = find_attestations(client, published.repo, published.digest)
    claims = [
        f.envelope.statement()["predicate"]
        for f in found
        if f.envelope is not None
        and f.source == "tag-fallback"
        and attest.REPRODUCED_TYPE in f.envelope.payload.decode()
    ]
    assert len(claims) == 1
    builds = claims[0]["buildDefinition"]["resolvedDependencies"]
    assert [b["annotations"]["builder"] for b in builds] == ["publisher", second_engine]


def test_rebuild_refuses_another_source_and_reports_a_lying_image(
    published: Published, registry: str, tmp_path: Path
) -> None:
    from repro.build import build_recipe
    from repro.recipe import load_recipe

    # A source that is not the recipe the provenance names: bad input, exit 2.
    other = tmp_path / "other" / "recipes"
    shutil.copytree(published.checkout, other)
    (other / "hello" / "notes.md").write_text("changed\n")
    r = repro("rebuild", f"{published.repo}:hello", "--source", str(other / "hello"))
    assert r.returncode == 2 and "is not the recipe the image was built from" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    # An image built from a modified Dockerfile, published with provenance naming the
    # clean recipe: the rebuild from the clean source differs, exit 1, with the diff.
    evil = tmp_path / "evil" / "recipes"
    shutil.copytree(published.checkout, evil)
    with (evil / "hello" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write("RUN echo planted > /etc/planted\n")
    build_recipe(
        load_recipe(evil / "hello"), output=f"oci:{tmp_path / 'evil-image'}", progress="quiet"
    )
    repo = f"{registry}/repro-test/attest-evil-{uuid.uuid4().hex[:10]}"
    clean = load_recipe(published.checkout / "hello")
    with Registry() as client:
        digest = client.push_layout(oci.OCILayout(tmp_path / "evil-image"), f"{repo}:hello")
        docs = attest.recipe_statements(client, repo, digest, clean, builder_id="liar")
        attest.attach_statements(
            client, repo, digest, docs, attest.load_private_key(published.keys / "a.key")
        )
    r = repro("rebuild", f"{repo}:hello", "--source", str(published.checkout / "hello"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "different" in r.stdout.splitlines()[0]
    assert "etc/planted" in r.stdout


def test_publish_with_a_key_attaches_what_cosign_and_attest_verify_accept(
    cosign: str, registry: str, tmp_path: Path
) -> None:
    """The whole flow a user runs: build, keygen, publish --key; then a stranger with
    the public key checks it with cosign and with repro attest verify."""
    namespace = f"repro-test/publish-key-{uuid.uuid4().hex[:10]}"
    work = tmp_path / "work"
    (work / "recipes").mkdir(parents=True)
    shutil.copytree(ROOT / "recipes" / "hello", work / "recipes" / "hello")
    (work / "recipes" / "repro.toml").write_text(f'registry = "{registry}/{namespace}"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "repro", *args],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )

    built = run("build", "hello", "--json", "--progress", "quiet")
    assert built.returncode == 0, built.stderr
    digest = json.loads(built.stdout)[0]["digest"]
    assert run("keygen", "key").returncode == 0
    published = run("publish", "hello", "--key", "key.key", "--builder-id", "ci-a", "--json")
    assert published.returncode == 0, published.stderr
    [result] = json.loads(published.stdout)
    assert result["digest"] == digest

    ref = f"{registry}/{namespace}/hello@{digest}"
    rc, payloads = cosign_verify(cosign, tmp_path, work / "key.pub", attest.SLSA_PROVENANCE_V1, ref)
    assert rc == 0
    [prov] = payloads
    external = prov["predicate"]["buildDefinition"]["externalParameters"]
    # The exporter options repro sent, from the build record, not left empty.
    assert external["buildkit"]["exporterOptions"]["oci-mediatypes"] == "true"
    assert external["lock"]["digest"]["sha256"] == result["lock"]["digest"].split(":")[1]
    rc, payloads = cosign_verify(cosign, tmp_path, work / "key.pub", "spdxjson", ref)
    assert rc == 0

    checked = run("attest", "verify", f"{registry}/{namespace}/hello:latest", "--key", "key.pub")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wrong = run("keygen", "other")
    assert wrong.returncode == 0
    refused = run("attest", "verify", ref, "--key", "other.pub")
    assert refused.returncode == 1, refused.stdout + refused.stderr


def test_verify_publish_pushes_only_what_verified_with_a_reproduced_statement(
    registry: str, tmp_path: Path
) -> None:
    """`repro verify --publish --key`: the CI step. A recipe that verifies is published
    with provenance, SBOM and a signed "reproduced" statement; one that does not is not
    published at all."""
    namespace = f"repro-test/verify-publish-{uuid.uuid4().hex[:10]}"
    work = tmp_path / "work"
    (work / "recipes").mkdir(parents=True)
    shutil.copytree(ROOT / "recipes" / "hello", work / "recipes" / "hello")
    (work / "recipes" / "repro.toml").write_text(f'registry = "{registry}/{namespace}"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "repro", *args],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
        )

    assert run("keygen", "key").returncode == 0
    verified = run("verify", "hello", "--publish", "--key", "key.key", "--json")
    assert verified.returncode == 0, verified.stderr
    [result] = json.loads(verified.stdout)
    digest = result["digest1"]
    assert result["published"]["digest"] == digest
    checked = run(
        "attest", "verify", f"{registry}/{namespace}/hello:latest", "--key", "key.pub", "--json"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = sorted(a["kind"] for a in json.loads(checked.stdout)["attestations"])
    assert kinds == ["provenance", "reproduced", "sbom"]

    # A recipe that does not reproduce: nothing is published.
    flaky = work / "recipes" / "flaky"
    shutil.copytree(work / "recipes" / "hello", flaky)
    dockerfile = flaky / "Dockerfile"
    random_line = "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
    dockerfile.write_text(dockerfile.read_text() + random_line)
    (flaky / "repro.lock").unlink()
    assert run("lock", "flaky").returncode == 0
    refused = run("verify", "flaky", "--publish", "--key", "key.key", "--vary", "none")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "not published" in refused.stderr
    with Registry() as client:
        assert "latest" not in client.list_tags(f"{registry}/{namespace}/flaky")
