"""Pure parts of the BuildKit client: addresses, the SolveRequest, error mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.buildkit import BuildRequest, Output, parse_address, solve_request
from repro.buildkit._build import classify_solve_error
from repro.buildkit._connect import find_builder
from repro.buildkit._session import new_session_id
from repro.errors import BuilderError, BuildFailed, InputError


def test_parse_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    a = parse_address("docker://unix:///tmp/x/docker.sock", "t")
    assert (a.kind, a.target) == ("docker", "/tmp/x/docker.sock")
    assert parse_address("docker://", "t").target == "/var/run/docker.sock"
    t = parse_address("tcp://10.0.0.1:1234?ca=/ca.pem", "t")
    assert (t.kind, t.target, t.tls) == ("tcp", "10.0.0.1:1234", {"ca": "/ca.pem"})
    # a unix socket that does not answer the Docker API is taken as buildkitd
    u = parse_address("unix:///nonexistent/buildkitd.sock", "t")
    assert (u.kind, u.target) == ("buildkitd-unix", "/nonexistent/buildkitd.sock")
    for bad in ("http://x", "tcp://nohost", "unix://relative", "docker://tcp://x"):
        with pytest.raises(InputError):
            parse_address(bad, "t")


def test_find_builder_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDKIT_HOST", "tcp://h:1")
    monkeypatch.setenv("DOCKER_HOST", "unix:///d.sock")
    assert find_builder("tcp://x:2").source == "--builder"
    assert find_builder(None).source == "BUILDKIT_HOST"
    monkeypatch.delenv("BUILDKIT_HOST")
    got = find_builder(None)
    assert (got.kind, got.target, got.source) == ("docker", "/d.sock", "DOCKER_HOST")
    monkeypatch.setenv("DOCKER_HOST", "tcp://h:2375")
    with pytest.raises(BuilderError):
        find_builder(None)


def test_solve_request_has_reproducibility_attrs(tmp_path: Path) -> None:
    req = BuildRequest(
        context=tmp_path,
        dockerfile=tmp_path / "sub" / "Dockerfile.x",
        output=Output.parse("oci:out/x"),
        build_args={"B": "2", "A": "1"},
        labels={"l": "v"},
        target="final",
        platforms=["linux/amd64"],
        source_date_epoch=42,
        no_cache=True,
        network="none",
    )
    sr = solve_request(req, "sess", "ref1")
    attrs = dict(sr.frontend_attrs)
    assert attrs["filename"] == "Dockerfile.x"
    assert attrs["build-arg:SOURCE_DATE_EPOCH"] == "42"
    assert attrs["build-arg:A"] == "1" and attrs["label:l"] == "v"
    assert attrs["no-cache"] == "" and attrs["force-network-mode"] == "none"
    assert attrs["target"] == "final" and attrs["platform"] == "linux/amd64"
    assert not any(k.startswith("attest:") for k in attrs), "no provenance/SBOM in the image"
    assert sr.session == "sess" and sr.ref == "ref1" and sr.frontend == "dockerfile.v0"
    assert [e.type for e in sr.exporters] == ["oci"]
    pinned = {"rewrite-timestamp": "true", "oci-mediatypes": "true"}
    assert dict(sr.exporters[0].attrs) == pinned
    assert sr.exporter_deprecated == "oci"
    assert dict(sr.exporter_attrs_deprecated) == pinned


@pytest.mark.parametrize(
    "version, sent",
    [
        ("", False),
        ("v0.0.0+unknown", False),  # Debian's Docker 26.1 engine
        ("v0.13.2", False),
        ("v0.30.1", False),
        ("v0.31.0", True),
        ("v0.33.0-rc1", True),
        ("v1.0.0", True),
        ("garbage", False),
    ],
)
def test_compatibility_version_only_where_the_buildkit_knows_it(
    tmp_path: Path, version: str, sent: bool
) -> None:
    req = BuildRequest(
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        output=Output.parse("oci:out/x"),
        buildkit_version=version,
        exporter_attrs={"compression": "zstd"},
    )
    attrs = dict(solve_request(req, "s", "r").exporters[0].attrs)
    assert attrs["oci-mediatypes"] == "true" and attrs["compression"] == "zstd"
    assert attrs.get("compatibility-version") == ("30" if sent else None)
    req.rewrite_timestamp = False
    assert "rewrite-timestamp" not in dict(solve_request(req, "s", "r").exporters[0].attrs)


def test_export_options_ask_buildkit_for_less_when_normalising() -> None:
    from repro.build import export_options

    # A raw export: BuildKit's usual one, with rewrite-timestamp, unless told not.
    assert export_options(False) == (True, {})
    assert export_options(False, False, {"compression": "zstd"}) == (False, {"compression": "zstd"})
    # Normalised: no rewrite and new layers uncompressed, unless the caller says.
    assert export_options(True) == (False, {"compression": "uncompressed"})
    assert export_options(True, True, {"compression": "gzip"}) == (True, {"compression": "gzip"})


def test_output_parse() -> None:
    assert Output.parse("oci-archive:a.tar").kind == "oci-archive"
    for bad in ("docker:x", "oci:", "x"):
        with pytest.raises(InputError):
            Output.parse(bad)


def test_error_classification(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    e = classify_solve_error(
        "failed to solve: dockerfile parse error on line 3: unknown instruction: FOO", df
    )
    assert isinstance(e, InputError) and e.line == 3 and "unknown instruction" in str(e)
    e2 = classify_solve_error(
        'process "/bin/sh -c false" did not complete successfully: exit code: 1', df
    )
    assert isinstance(e2, BuildFailed) and e2.exit_code == 1


def test_session_ids() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 25 and i.isalnum() and i.islower() or i.isdigit() for i in ids)


def test_chunk_reader_small_and_large_reads() -> None:
    import os
    import random

    from repro.buildkit._build import _ChunkReader

    data = os.urandom(100_000)
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)] + [b""]
    reader = _ChunkReader(iter(chunks))
    out = []
    rng = random.Random(1)
    while block := reader.read(rng.choice([1, 512, 10240, 99999])):
        out.append(block)
    assert b"".join(out) == data and reader.count == len(data)
    assert _ChunkReader(iter(chunks)).read() == data
