"""Unit tests of repro.attest: DSSE, keys, statements, SBOM, the storage protocol
against an in-memory registry (tests/fakeregistry.py), the policy."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fakeregistry import FakeRegistry
from typer.testing import CliRunner

from repro import attest
from repro.attest._dsse import Envelope
from repro.attest._store import DSSE_MEDIA_TYPE, fallback_tag, find_attestations, legacy_tag
from repro.errors import InputError, SigningKeyError
from repro.lock import read_lock
from repro.packages.installed import InstalledDb, InstalledPackage
from repro.recipe import load_recipe
from repro.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1:5999"
IMAGE_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 2,
        },
        "layers": [],
    }
).encode()
IMAGE_DIGEST = "sha256:" + hashlib.sha256(IMAGE_MANIFEST).hexdigest()


@pytest.fixture()
def key(tmp_path: Path) -> attest.PrivateKey:
    private, _public = attest.generate(tmp_path / "k")
    return attest.load_private_key(private)


def _statement(digest: str = IMAGE_DIGEST, builder: str = "b1") -> dict[str, object]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": f"{HOST}/app", "digest": {"sha256": digest.split(":")[1]}}],
        "predicateType": attest.SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": attest.BUILD_TYPE,
                "externalParameters": {"lock": {"digest": {"sha256": "1" * 64}}},
            },
            "runDetails": {"builder": {"id": builder}},
        },
    }


# --- DSSE and keys ----------------------------------------------------------------------


def test_pae_is_the_dsse_encoding() -> None:
    # The example of the DSSE v1 protocol document.
    assert attest.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_signature_verifies_and_tampering_is_caught(key: attest.PrivateKey, tmp_path: Path) -> None:
    envelope = attest.sign_statement(_statement(), key)
    assert envelope.verified_by([key.public]) == key.public
    other = attest.load_private_key(attest.generate(tmp_path / "other")[0])
    assert envelope.verified_by([other.public]) is None
    tampered = Envelope(
        envelope.payload_type, envelope.payload.replace(b"b1", b"b2"), envelope.signatures
    )
    assert tampered.verified_by([key.public]) is None
    # A signature over the same body under another payload type does not verify (PAE).
    retyped = Envelope("text/plain", envelope.payload, envelope.signatures)
    assert retyped.verified_by([key.public]) is None
    again = Envelope.from_json(json.loads(envelope.to_bytes()))
    assert again == envelope


def test_keygen_writes_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    private, public = attest.generate(tmp_path / "a")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"ENCRYPTED" not in private.read_bytes()
    assert (
        attest.load_public_key(public).fingerprint
        == attest.load_private_key(private).public.fingerprint
    )
    with pytest.raises(SigningKeyError, match="exists already"):
        attest.generate(tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "a.pub"]


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    private, _ = attest.generate(tmp_path / "e", password="s3cret")
    assert b"ENCRYPTED" in private.read_bytes()
    with pytest.raises(SigningKeyError, match=r"is encrypted: set \$REPRO_KEY_PASSWORD"):
        attest.load_private_key(private, environ={})
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        attest.load_private_key(private, environ={attest.PASSWORD_ENV: "nope"})
    assert attest.load_private_key(private, environ={attest.PASSWORD_ENV: "s3cret"})
    assert attest.load_private_key(private, environ={}, passphrase=lambda: "s3cret")


def test_wrong_key_files_are_one_line_errors(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    p384 = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "p384.key").write_bytes(
        p384.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "junk").write_text("hello\n")
    _private, public = attest.generate(tmp_path / "ok")
    cases = [
        (lambda: attest.load_public_key(tmp_path / "rsa.pub"), "not an ECDSA P-256 key"),
        (lambda: attest.load_private_key(tmp_path / "p384.key"), "not an ECDSA P-256 key"),
        (lambda: attest.load_public_key(tmp_path / "junk"), "not a PEM public key"),
        (lambda: attest.load_private_key(tmp_path / "junk"), "not a PEM private key"),
        (lambda: attest.load_private_key(public), "is a public key"),
        (lambda: attest.load_public_key(tmp_path / "missing.pub"), "no such public key file"),
    ]
    for call, message in cases:
        with pytest.raises(SigningKeyError, match=message) as info:
            call()
        assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_cli_bad_keys_exit_2_with_one_line(tmp_path: Path) -> None:
    from repro.cli import app

    private, _ = attest.generate(tmp_path / "e", password="pw")
    result = CliRunner().invoke(
        app,
        ["attest", "attach", f"{HOST}/app:1", "--key", str(private)],
        env={"REPRO_KEY_PASSWORD": ""},
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is encrypted" in lines[0], result.output
    result = CliRunner().invoke(
        app, ["attest", "verify", f"{HOST}/app:1", "--key", str(private), "--policy", "k>=2"]
    )
    assert result.exit_code == 2 and "--policy" in result.output


# --- statements and SBOM from the repository's own locks -------------------------------


def _jq() -> tuple[object, dict[str, object]]:
    recipe = load_recipe(ROOT / "recipes" / "jq")
    lock = read_lock(recipe)
    assert lock
    return recipe, lock


def test_provenance_lists_every_pin_of_the_lock() -> None:
    recipe, lock = _jq()
    digest = "sha256:" + "b" * 64
    doc = attest.provenance(
        f"{HOST}/jq",
        digest,
        recipe,
        lock,
        attest.lock_digest(recipe.lock_file),  # type: ignore[attr-defined]
        attest.BuildFacts(buildkit_version="v0.13.2", builder_id="ci"),
    )
    predicate = doc["predicate"]
    params = predicate["buildDefinition"]["externalParameters"]
    assert params["sourceDateEpoch"] == lock["source_date_epoch"]
    assert params["buildkit"] == {"version": "v0.13.2", "exporterOptions": None}
    assert (
        params["lock"]["digest"]["sha256"]
        == hashlib.sha256(
            recipe.lock_file.read_bytes()  # type: ignore[attr-defined]
        ).hexdigest()
    )
    assert params["recipe"]["name"] == "jq" and len(params["recipe"]["digest"]["sha256"]) == 64
    deps = predicate["buildDefinition"]["resolvedDependencies"]
    uris = {d["uri"]: d for d in deps}
    base = lock["bases"]["recipe:debian12"]  # type: ignore[index]
    assert any(d["digest"] == {"sha256": base["digest"].split(":")[1]} for d in deps)
    pins = lock["packages"]["apt"]["tools"]["package"]  # type: ignore[index]
    for pin in pins:
        purl = f"pkg:deb/debian/{pin['name']}@{pin['version'].replace('+', '%2B')}?arch=amd64"
        assert uris[purl]["digest"] == {"sha256": pin["sha256"]}
    assert predicate["runDetails"]["builder"]["id"] == "ci"
    assert doc["subject"][0]["digest"]["sha256"] == "b" * 64


def test_sbom_lists_the_base_recipe_packages_too() -> None:
    recipe, lock = _jq()
    base_lock = read_lock(load_recipe(ROOT / "recipes" / "debian12"))
    assert base_lock
    document = attest.sbom_document(f"{HOST}/jq", "sha256:" + "c" * 64, recipe, lock)
    assert document["spdxVersion"] == "SPDX-2.3"
    listed = {
        (p["name"], p["versionInfo"])
        for p in document["packages"]
        if p.get("primaryPackagePurpose") == "LIBRARY"
    }
    expected = {(p["name"], p["version"]) for p in base_lock["packages"]["apt"]["base"]["package"]}
    expected |= {(p["name"], p["version"]) for p in lock["packages"]["apt"]["tools"]["package"]}  # type: ignore[index]
    assert listed == expected and len(expected) > 80
    for package in document["packages"]:
        if package.get("primaryPackagePurpose") == "LIBRARY":
            assert package["checksums"][0]["algorithm"] == "SHA256"
            assert package["externalRefs"][0]["referenceLocator"].startswith("pkg:deb/debian/")
    # Byte-stable: the same lock gives the same document.
    assert document == attest.sbom_document(f"{HOST}/jq", "sha256:" + "c" * 64, recipe, lock)


def test_check_sbom_names_what_differs() -> None:
    recipe, lock = _jq()
    document = attest.sbom_document(f"{HOST}/jq", "sha256:" + "c" * 64, recipe, lock)
    pins = lock["packages"]["apt"]["tools"]["package"]  # type: ignore[index]
    packages = {p["name"]: InstalledPackage(p["name"], p["version"]) for p in pins}
    db = InstalledDb("dpkg", packages)
    check = attest.check_sbom(document, db)
    assert not check.ok and not check.missing and "jq" not in " ".join(check.extra)
    packages["extra-pkg"] = InstalledPackage("extra-pkg", "1.0")
    check = attest.check_sbom(document, InstalledDb("dpkg", packages))
    assert check.missing == ["extra-pkg 1.0"]


def test_reproduced_statement_from_a_verify_result() -> None:
    from repro.build import RecipeResult
    from repro.diff import IDENTICAL, PlatformVerdict
    from repro.verify import Side, VerifyResult

    digest = "sha256:" + "d" * 64

    def side(label: str, builder: str) -> Side:
        result = RecipeResult(
            recipe="jq",
            digest=digest,
            config_digest=digest,
            output="oci:x",
            seconds=1.0,
            builder=builder,
            builder_version="26.1.5",
            source_date_epoch=1,
            normalised={"changes": [{"layer": 1, "path": "var/log/dpkg.log", "rule": "truncate"}]},
        )
        return Side(label, Path("/x"), "h", builder, {}, result=result)

    result = VerifyResult(
        recipe="jq",
        verdict=IDENTICAL,
        digest1=digest,
        digest2=digest,
        platforms=[PlatformVerdict("linux/amd64", IDENTICAL, digest, digest)],
        seconds=2.0,
        sides=[side("a", "docker://one"), side("b", "docker://two")],
        variations=["umask"],
    )
    comparison = attest.Comparison.from_verify(result)
    recipe, _lock = _jq()
    doc = attest.reproduced(
        f"{HOST}/jq", digest, recipe, "sha256:" + "1" * 64, comparison, builder_id="verifier"
    )
    predicate = doc["predicate"]
    assert predicate["buildDefinition"]["buildType"] == attest.REPRODUCED_TYPE
    assert predicate["buildDefinition"]["externalParameters"]["variations"] == ["umask"]
    builders = [
        d["annotations"]["builder"] for d in predicate["buildDefinition"]["resolvedDependencies"]
    ]
    assert builders == ["docker://one", "docker://two"]
    byproducts = {b["name"]: b for b in predicate["runDetails"]["byproducts"]}
    assert byproducts["verdict"]["annotations"]["level"] == "identical"
    assert base64.b64decode(byproducts["verdict"]["content"]) == b"identical"
    assert byproducts["normalisation"]["annotations"]["changes"] == [
        {"rule": "truncate", "path": "var/log/dpkg.log"}
    ]
    assert "diff-report" not in byproducts  # identical: no report


# --- storage ------------------------------------------------------------------------------


def _registry(fake: FakeRegistry) -> Registry:
    fake.put_tag("app", "1", IMAGE_MANIFEST, "application/vnd.oci.image.manifest.v1+json")
    return Registry(transport=fake.transport(), tries=1)


def test_referrers_api_path(key: attest.PrivateKey) -> None:
    fake = FakeRegistry(referrers_api=True)
    with _registry(fake) as client:
        result = attest.attach_statements(
            client, f"{HOST}/app", IMAGE_DIGEST, [_statement()], key, settle=0.01
        )
        assert result.path == "referrers"
        # No fallback index: the registry lists referrers itself.
        assert ("app", fallback_tag(IMAGE_DIGEST)) not in fake.tags
        assert f"GET /v2/app/referrers/{IMAGE_DIGEST}" in fake.log
        found = find_attestations(client, f"{HOST}/app", IMAGE_DIGEST)
        sources = sorted(f.source for f in found)
        assert sources == ["legacy", "referrers"]
        manifest = json.loads(fake.manifests[("app", result.referrers[0])][0])
        assert manifest["artifactType"] == attest.BUNDLE_MEDIA_TYPE
        assert manifest["subject"]["digest"] == IMAGE_DIGEST
        assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        outcome = attest.verify_image(client, f"{HOST}/app:1", [key.public])
        assert outcome.ok, outcome.failures
        assert [a.source for a in outcome.attestations] == ["referrers"]  # .att copy: same


def test_tag_fallback_and_legacy_layout(key: attest.PrivateKey) -> None:
    fake = FakeRegistry()
    with _registry(fake) as client:
        result = attest.attach_statements(
            client,
            f"{HOST}/app",
            IMAGE_DIGEST,
            [_statement(), _statement(builder="b2")],
            key,
            settle=0.01,
        )
    assert result.path == "tag-fallback"
    index = json.loads(fake.manifests[("app", fake.tags[("app", fallback_tag(IMAGE_DIGEST))])][0])
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["digest"] for m in index["manifests"]) == sorted(result.referrers)
    att = json.loads(fake.manifests[("app", fake.tags[("app", legacy_tag(IMAGE_DIGEST))])][0])
    assert [layer["mediaType"] for layer in att["layers"]] == [DSSE_MEDIA_TYPE] * 2
    for layer in att["layers"]:
        assert layer["annotations"] == {
            "dev.cosignproject.cosign/signature": "",
            "predicateType": attest.SLSA_PROVENANCE_V1,
        }
    config = json.loads(fake.blobs[att["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in att["layers"]]


def test_no_legacy_writes_no_att_tag(key: attest.PrivateKey) -> None:
    fake = FakeRegistry()
    with _registry(fake) as client:
        attest.attach_statements(
            client, f"{HOST}/app", IMAGE_DIGEST, [_statement()], key, legacy=False, settle=0.01
        )
    assert ("app", legacy_tag(IMAGE_DIGEST)) not in fake.tags
    assert ("app", fallback_tag(IMAGE_DIGEST)) in fake.tags


def test_an_overwritten_fallback_index_is_merged_again(key: attest.PrivateKey) -> None:
    """A second writer that read the tag before our write overwrites it right after:
    ignored If-Match (distribution 2.8). The re-read after `settle` catches it."""
    fake = FakeRegistry()
    with _registry(fake) as client:
        other = attest.attach_statements(
            client,
            f"{HOST}/app",
            IMAGE_DIGEST,
            [_statement(builder="other")],
            key,
            legacy=False,
            settle=0.01,
        )
        stale = fake.manifests[("app", fake.tags[("app", fallback_tag(IMAGE_DIGEST))])][0]

        def overwrite(repo: str, tag: str) -> None:
            if tag == fallback_tag(IMAGE_DIGEST):
                fake.put_tag(repo, tag, stale, "application/vnd.oci.image.index.v1+json")

        fake.after_tag_put = overwrite
        ours = attest.attach_statements(
            client,
            f"{HOST}/app",
            IMAGE_DIGEST,
            [_statement(builder="ours")],
            key,
            legacy=False,
            settle=0.01,
        )
    assert ours.rounds[fallback_tag(IMAGE_DIGEST)] == 2
    index = json.loads(fake.manifests[("app", fake.tags[("app", fallback_tag(IMAGE_DIGEST))])][0])
    assert {m["digest"] for m in index["manifests"]} == set(other.referrers + ours.referrers)


def test_if_match_conflict_is_retried(key: attest.PrivateKey) -> None:
    fake = FakeRegistry(conditional=True)
    with _registry(fake) as client:
        first = attest.attach_statements(
            client, f"{HOST}/app", IMAGE_DIGEST, [_statement()], key, legacy=False, settle=0.01
        )
        second = attest.attach_statements(
            client,
            f"{HOST}/app",
            IMAGE_DIGEST,
            [_statement(builder="b2")],
            key,
            legacy=False,
            settle=0.01,
        )
    index = json.loads(fake.manifests[("app", fake.tags[("app", fallback_tag(IMAGE_DIGEST))])][0])
    assert {m["digest"] for m in index["manifests"]} == set(first.referrers + second.referrers)
    puts = [x for x in fake.log if x.startswith("PUT") and fallback_tag(IMAGE_DIGEST) in x]
    assert len(puts) == 2


def test_statement_about_another_image_is_refused(key: attest.PrivateKey) -> None:
    fake = FakeRegistry()
    with _registry(fake) as client, pytest.raises(InputError, match="not the image"):
        attest.attach_statements(
            client, f"{HOST}/app", IMAGE_DIGEST, [_statement(digest="sha256:" + "9" * 64)], key
        )
    assert not [x for x in fake.log if x.startswith(("PUT", "POST"))]


def test_policy_counts_distinct_builders(key: attest.PrivateKey) -> None:
    assert attest.parse_policy("builders>=2") == 2
    assert attest.parse_policy(" builders >= 3 ") == 3
    for bad in ("builders>=0", "builders>2", "k>=1", ""):
        with pytest.raises(InputError):
            attest.parse_policy(bad)
    fake = FakeRegistry()
    with _registry(fake) as client:
        attest.attach_statements(
            client,
            f"{HOST}/app",
            IMAGE_DIGEST,
            [_statement(builder="b1"), _statement(builder="b1")],
            key,
            settle=0.01,
        )
        assert not attest.verify_image(client, f"{HOST}/app:1", [key.public], required=2).ok
        attest.attach_statements(
            client, f"{HOST}/app", IMAGE_DIGEST, [_statement(builder="b2")], key, settle=0.01
        )
        outcome = attest.verify_image(client, f"{HOST}/app:1", [key.public], required=2)
    assert outcome.ok and sorted(outcome.best[1]) == ["b1", "b2"]


def test_downloads_and_git_inputs_without_credentials() -> None:
    from repro.recipe import Download, GitInput

    @dataclass
    class FakeRecipe:  # the fields the statements read
        name: str = "tool"
        directory: Path = ROOT / "recipes" / "hello"
        downloads: tuple[Download, ...] = (
            Download("src", url="https://user:pw@example.org/src.tar.gz?token=abc#x"),
        )
        git: tuple[GitInput, ...] = (GitInput("lib", "https://tok@example.org/lib.git", "v1"),)

    lock = {
        "source_date_epoch": 0,
        "downloads": {"src": {"sha256": "sha256:" + "e" * 64, "size": 3}},
        "git": {"lib": {"ref": "v1", "commit": "f" * 40}},
    }
    deps = attest.provenance(
        f"{HOST}/tool", IMAGE_DIGEST, FakeRecipe(), lock, "sha256:" + "1" * 64, attest.BuildFacts()
    )
    resolved = deps["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {
        "name": "download src",
        "digest": {"sha256": "e" * 64},
        "uri": "https://example.org/src.tar.gz",
    } in resolved
    assert {
        "name": "git lib",
        "digest": {"gitCommit": "f" * 40},
        "uri": "git+https://example.org/lib.git@v1",
    } in resolved
    document = attest.sbom_document(f"{HOST}/tool", IMAGE_DIGEST, FakeRecipe(), lock)
    text = json.dumps([deps, document])
    assert "pw" not in text and "abc" not in text and "tok@" not in text
    names = {p["name"]: p for p in document["packages"]}
    assert names["src"]["checksums"] == [{"algorithm": "SHA256", "checksumValue": "e" * 64}]
    assert names["lib"]["versionInfo"] == "f" * 40


def test_build_facts_from_a_build_result() -> None:
    from repro.build import RecipeResult

    result = RecipeResult(
        recipe="x",
        digest=IMAGE_DIGEST,
        config_digest=IMAGE_DIGEST,
        output="oci:x",
        seconds=1.0,
        builder="b",
        builder_version="26.1.5",
        source_date_epoch=0,
    )
    facts = attest.BuildFacts.from_result(result, builder_id="ci")
    # builder_version is the engine's (Docker 26.1.5); the BuildKit version is its own
    assert facts.buildkit_version == "" and facts.exporter_options is None
    assert facts.builder_id == "ci"
    result.buildkit_version = "v0.13.2"
    result.exporter = {"oci-mediatypes": "true"}
    facts = attest.BuildFacts.from_result(result)
    assert facts.buildkit_version == "v0.13.2"
    assert facts.exporter_options == {"oci-mediatypes": "true"}
    record = {"buildkit_version": "v0.13.2", "exporter": {"oci-mediatypes": "true"}}
    assert attest.BuildFacts.from_record(record) == facts
    assert attest.BuildFacts.from_record(None).exporter_options is None


def test_list_tags() -> None:
    fake = FakeRegistry()
    with _registry(fake) as client:
        assert client.list_tags(f"{HOST}/app") == ["1"]
        assert client.list_tags(f"{HOST}/none") == []


def test_a_missing_bundle_blob_is_listed_not_fatal(key: attest.PrivateKey) -> None:
    fake = FakeRegistry()
    with _registry(fake) as client:
        result = attest.attach_statements(
            client, f"{HOST}/app", IMAGE_DIGEST, [_statement()], key, settle=0.01
        )
        manifest = json.loads(fake.manifests[("app", result.referrers[0])][0])
        del fake.blobs[manifest["layers"][0]["digest"]]
        outcome = attest.verify_image(client, f"{HOST}/app:1", [key.public])
    assert outcome.ok, outcome.failures  # the .att copy still verifies
    problems = [a.problem for a in outcome.attestations if a.problem]
    assert len(problems) == 1 and problems[0].startswith("unreadable: blob")


def test_keygen_command(tmp_path: Path) -> None:
    from repro.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["keygen", str(tmp_path / "ci")], env={"REPRO_KEY_PASSWORD": ""})
    assert result.exit_code == 0, result.output
    assert b"ENCRYPTED" not in (tmp_path / "ci.key").read_bytes()
    result = runner.invoke(
        app, ["keygen", str(tmp_path / "enc"), "--encrypt"], env={"REPRO_KEY_PASSWORD": "pw"}
    )
    assert result.exit_code == 0 and "encrypted" in result.output
    assert attest.load_private_key(tmp_path / "enc.key", environ={attest.PASSWORD_ENV: "pw"})
    # --encrypt with no passphrase and no terminal: one line, exit 2, nothing written.
    result = runner.invoke(
        app, ["keygen", str(tmp_path / "none"), "--encrypt"], env={"REPRO_KEY_PASSWORD": ""}
    )
    assert result.exit_code == 2 and "--encrypt needs a passphrase" in result.output
    assert not list(tmp_path.glob("none*"))
    result = runner.invoke(app, ["keygen", str(tmp_path / "ci")])
    assert result.exit_code == 2 and "exists already" in result.output
