"""Tests for repro.registry: references, schemes, retries, auth, verification, push/pull.

Unit tests run against httpx.MockTransport. Tests marked `engine` talk to the
dev environment's real registry at $REPRO_REGISTRY (`scripts/dev-env up`) and
are skipped when it is not set or not answering.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from repro.dockerconfig import Credentials
from repro.errors import DigestMismatch, InputError, RegistryError
from repro.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    OCILayout,
    Platform,
    canonical_json,
    sha256_digest,
)
from repro.registry import Reference, Registry, is_loopback, parse_reference
from repro.registry._client import _parse_challenges

D1 = sha256_digest(b"one")
MANIFEST = canonical_json(
    {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST, "config": {}, "layers": []}
)
MANIFEST_DIGEST = sha256_digest(MANIFEST)

Handler = Callable[[httpx.Request], httpx.Response]


def make_registry(handler: Handler, **kwargs: object) -> tuple[Registry, list[float]]:
    sleeps: list[float] = []
    registry = Registry(
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        credentials=kwargs.pop("credentials", lambda host: None),  # type: ignore[arg-type]
        environ={},
        **kwargs,  # type: ignore[arg-type]
    )
    return registry, sleeps


def manifest_response(
    request: httpx.Request, body: bytes = MANIFEST, **headers: str
) -> httpx.Response:
    all_headers = {
        "Content-Type": MEDIA_TYPE_OCI_MANIFEST,
        "Docker-Content-Digest": sha256_digest(body),
        **headers,
    }
    if request.method == "HEAD":
        all_headers["Content-Length"] = str(len(body))
        return httpx.Response(200, headers=all_headers)
    return httpx.Response(200, headers=all_headers, content=body)


# --- references ---


@pytest.mark.parametrize(
    "text, host, repo, tag, digest",
    [
        ("busybox", "docker.io", "library/busybox", None, None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("user/img:tag", "docker.io", "user/img", "tag", None),
        ("index.docker.io/debian", "docker.io", "library/debian", None, None),
        ("localhost/foo", "localhost", "foo", None, None),
        ("localhost:5000/a/b:c@" + D1, "localhost:5000", "a/b", "c", D1),
        ("127.0.0.1:5000/repro/busybox@" + D1, "127.0.0.1:5000", "repro/busybox", None, D1),
        ("[::1]:5000/x/y", "[::1]:5000", "x/y", None, None),
        ("ghcr.io/org/some_repo.name-x:v1.2_3", "ghcr.io", "org/some_repo.name-x", "v1.2_3", None),
    ],
)
def test_parse_reference(
    text: str, host: str, repo: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == Reference(host, repo, tag, digest)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    "text, message",
    [
        ("Upper/x", "lowercase"),
        ("reg.example/x:bad tag", "bad tag"),
        ("reg.example/x@sha256:short", "bad digest"),
        ("reg.example/", "lowercase"),
        ("bad_host.example:99999999/x", "bad registry host"),
    ],
)
def test_parse_reference_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_reference(text)


def test_reference_helpers() -> None:
    ref = parse_reference("reg.example/a:t")
    assert ref.name == "reg.example/a" and ref.reference == "t"
    assert ref.with_digest(D1).reference == D1
    assert str(ref.with_tag(None)) == "reg.example/a"
    assert parse_reference("reg.example/a").reference == "latest"


# --- schemes ---


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1:5000", True),
        ("127.8.9.10", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("10.0.0.1:5000", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plain_http_only_for_loopback_and_insecure_hosts() -> None:
    registry = Registry(
        insecure=["reg.lan:5000"], environ={"REPRO_INSECURE_REGISTRIES": " other.lan ,"}
    )
    with registry:
        assert registry.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000/v2"
        assert registry.base_url("reg.lan:5000") == "http://reg.lan:5000/v2"
        assert registry.base_url("other.lan:443") == "http://other.lan:443/v2"
        assert registry.base_url("reg.lan:6000") == "https://reg.lan:6000/v2"
        assert registry.base_url("ghcr.io") == "https://ghcr.io/v2"
        assert registry.base_url("docker.io") == "https://registry-1.docker.io/v2"


# --- retries ---


def test_retries_5xx_with_exponential_backoff() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) <= 3:
            return httpx.Response(502 if len(calls) % 2 else 503)
        return manifest_response(request)

    registry, sleeps = make_registry(handler)
    desc = registry.resolve("reg.example/foo:1")
    assert desc == Descriptor(MEDIA_TYPE_OCI_MANIFEST, MANIFEST_DIGEST, len(MANIFEST))
    assert len(calls) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_honours_small_retry_after_and_fails_on_large() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "3"})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or manifest_response(request)

    registry, sleeps = make_registry(handler)
    registry.resolve("reg.example/foo:1")
    assert sleeps == [3.0]

    registry, sleeps = make_registry(lambda r: httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RegistryError, match="retry after 3600 s"):
        registry.resolve("reg.example/foo:1")
    assert sleeps == []


def test_gives_up_after_bounded_tries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            500, json={"errors": [{"code": "UNKNOWN", "message": "disk\non fire"}]}
        )

    registry, sleeps = make_registry(handler)
    with pytest.raises(RegistryError) as excinfo:
        registry.resolve("reg.example/foo:1")
    assert len(calls) == 5 and len(sleeps) == 4
    assert str(excinfo.value) == (
        "registry reg.example: resolve reg.example/foo:1 failed: disk on fire (UNKNOWN) (HTTP 500)"
    )


def test_connection_errors_are_retried_then_reported() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        return manifest_response(request)

    registry, sleeps = make_registry(handler)
    registry.resolve("reg.example/foo:1")
    assert len(calls) == 3 and sleeps == [0.5, 1.0]

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    registry, _ = make_registry(refused)
    with pytest.raises(RegistryError) as excinfo:
        registry.resolve("127.0.0.1:5000/foo:1")
    assert str(excinfo.value) == "registry 127.0.0.1:5000 unreachable: connection refused"


def test_real_connection_refused_on_loopback() -> None:
    import socket

    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        Registry(tries=2, sleep=lambda s: None, environ={}) as registry,
        pytest.raises(
            RegistryError, match=f"registry 127.0.0.1:{port} unreachable: connection refused"
        ),
    ):
        registry.resolve(f"127.0.0.1:{port}/foo:1")


# --- auth ---


def bearer_registry(
    token_check: Callable[[httpx.Request], bool] = lambda r: True,
) -> tuple[Handler, list[httpx.Request]]:
    token_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token_requests.append(request)
            if not token_check(request):
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "tok-123", "expires_in": 300})
        if request.headers.get("Authorization") != "Bearer tok-123":
            challenge = (
                'Bearer realm="https://auth.example/token",service="reg.example",'
                'scope="repository:foo:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return manifest_response(request)

    return handler, token_requests


def test_anonymous_bearer_token_is_fetched_and_cached() -> None:
    handler, token_requests = bearer_registry()
    registry, _ = make_registry(handler)
    registry.resolve("reg.example/foo:1")
    registry.get_manifest("reg.example/foo:1")
    assert len(token_requests) == 1
    request = token_requests[0]
    assert "Authorization" not in request.headers
    assert parse_qs(request.url.query.decode()) == {
        "scope": ["repository:foo:pull"],
        "service": ["reg.example"],
    }


def test_bearer_token_with_basic_credentials() -> None:
    expected = "Basic " + base64.b64encode(b"alice:pw").decode()
    handler, token_requests = bearer_registry(lambda r: r.headers.get("Authorization") == expected)
    registry, _ = make_registry(handler, credentials=lambda host: Credentials("alice", "pw"))
    registry.resolve("reg.example/foo:1")
    assert len(token_requests) == 1


def test_bearer_token_with_identity_token_uses_refresh_grant() -> None:
    def check(request: httpx.Request) -> bool:
        form = parse_qs(request.content.decode())
        return (
            request.method == "POST"
            and form["grant_type"] == ["refresh_token"]
            and form["refresh_token"] == ["idtok"]
            and form["service"] == ["reg.example"]
        )

    handler, token_requests = bearer_registry(check)
    creds = Credentials("<token>", "idtok", identity_token="idtok")
    registry, _ = make_registry(handler, credentials=lambda host: creds)
    registry.resolve("reg.example/foo:1")
    assert len(token_requests) == 1


def test_rejected_credentials_are_a_clear_error() -> None:
    handler, _ = bearer_registry(lambda r: False)
    registry, _ = make_registry(handler, credentials=lambda host: Credentials("a", "wrong"))
    with pytest.raises(RegistryError, match="credentials for reg.example from .* not accepted"):
        registry.resolve("reg.example/foo:1")
    registry, _ = make_registry(handler)
    with pytest.raises(RegistryError, match="docker login reg.example"):
        registry.resolve("reg.example/foo:1")


def test_basic_auth_challenge() -> None:
    expected = "Basic " + base64.b64encode(b"bob:pw").decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry"'})
        return manifest_response(request)

    registry, _ = make_registry(handler, credentials=lambda host: Credentials("bob", "pw"))
    registry.resolve("reg.example/foo:1")
    registry, _ = make_registry(handler)
    with pytest.raises(RegistryError, match="requires a login"):
        registry.resolve("reg.example/foo:1")


def test_token_service_over_plain_http_is_refused_for_remote_hosts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example/token"'}
        )

    registry, _ = make_registry(handler, credentials=lambda host: Credentials("a", "b"))
    with pytest.raises(RegistryError, match="unsafe token service"):
        registry.resolve("reg.example/foo:1")


def test_parse_challenges() -> None:
    parsed = _parse_challenges(
        [
            'Bearer realm="https://a/token",service="r",scope="repository:x:pull,push"',
            'Basic realm="quoted \\"name\\"", Bearer realm=https://b',
        ]
    )
    assert parsed == [
        ("bearer", {"realm": "https://a/token", "service": "r", "scope": "repository:x:pull,push"}),
        ("basic", {"realm": 'quoted "name"'}),
        ("bearer", {"realm": "https://b"}),
    ]


# --- manifests ---


def test_put_manifest_asks_again_when_a_blob_is_unknown_for_a_moment() -> None:
    """distribution 2.8 on a file system rewrites a repository's blob link, not
    atomically, when another client uploads the same blob: a manifest pushed meanwhile
    is refused with MANIFEST_BLOB_UNKNOWN. The push is tried again after a wait; a
    blob still unknown after the waits is the error, and other 400s are not retried."""
    unknown = {"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown"}]}
    answers = [httpx.Response(400, json=unknown)] * 2

    def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            return answers.pop(0)
        return httpx.Response(201, headers={"Docker-Content-Digest": MANIFEST_DIGEST})

    registry, sleeps = make_registry(handler)
    digest = registry.put_manifest("reg.example/foo", "v1", MANIFEST, MEDIA_TYPE_OCI_MANIFEST)
    assert digest == MANIFEST_DIGEST and sleeps == [0.1, 0.3]

    registry, sleeps = make_registry(lambda r: httpx.Response(400, json=unknown))
    with pytest.raises(RegistryError, match="blob unknown .*HTTP 400"):
        registry.put_manifest("reg.example/foo", "v1", MANIFEST, MEDIA_TYPE_OCI_MANIFEST)
    assert sleeps == [0.1, 0.3, 1.0]

    invalid = {"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid"}]}
    registry, sleeps = make_registry(lambda r: httpx.Response(400, json=invalid))
    with pytest.raises(RegistryError, match="manifest invalid"):
        registry.put_manifest("reg.example/foo", "v1", MANIFEST, MEDIA_TYPE_OCI_MANIFEST)
    assert sleeps == []


def test_get_manifest_verifies_digest_header() -> None:
    registry, _ = make_registry(lambda r: manifest_response(r, **{"Docker-Content-Digest": D1}))
    with pytest.raises(DigestMismatch) as excinfo:
        registry.get_manifest("reg.example/foo:1")
    assert D1 in str(excinfo.value) and MANIFEST_DIGEST in str(excinfo.value)


def test_get_manifest_by_digest_verifies_body() -> None:
    registry, _ = make_registry(
        lambda r: manifest_response(
            r, b'{"tampered": true}', **{"Docker-Content-Digest": MANIFEST_DIGEST}
        )
    )
    with pytest.raises(DigestMismatch):
        registry.get_manifest(f"reg.example/foo@{MANIFEST_DIGEST}")


def test_get_manifest_without_digest_header_hashes_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Type": MEDIA_TYPE_OCI_MANIFEST}, content=MANIFEST
        )

    registry, _ = make_registry(handler)
    assert registry.get_manifest("reg.example/foo:1") == (
        MANIFEST,
        MEDIA_TYPE_OCI_MANIFEST,
        MANIFEST_DIGEST,
    )
    # resolve() falls back to GET when HEAD does not say the digest
    assert registry.resolve("reg.example/foo:1").digest == MANIFEST_DIGEST


def test_resolve_sends_accept_and_maps_404() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Accept"])
        return httpx.Response(404)

    registry, _ = make_registry(handler)
    with pytest.raises(RegistryError, match="image reg.example/foo:1 not found"):
        registry.resolve("reg.example/foo:1")
    assert MEDIA_TYPE_OCI_INDEX in seen[0] and MEDIA_TYPE_OCI_MANIFEST in seen[0]


def test_put_manifest_checks_returned_digest() -> None:
    received: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(
            201, headers={"Docker-Content-Digest": sha256_digest(request.content)}
        )

    registry, _ = make_registry(handler)
    assert registry.put_manifest("reg.example/foo", "v1", MANIFEST, MEDIA_TYPE_OCI_MANIFEST) == (
        MANIFEST_DIGEST
    )
    assert received[0].url.path == "/v2/foo/manifests/v1"
    assert received[0].headers["Content-Type"] == MEDIA_TYPE_OCI_MANIFEST

    registry, _ = make_registry(
        lambda r: httpx.Response(201, headers={"Docker-Content-Digest": D1})
    )
    with pytest.raises(DigestMismatch):
        registry.put_manifest("reg.example/foo", "v1", MANIFEST, MEDIA_TYPE_OCI_MANIFEST)
    with pytest.raises(DigestMismatch):
        registry.put_manifest("reg.example/foo", D1, MANIFEST, MEDIA_TYPE_OCI_MANIFEST)
    with pytest.raises(InputError, match="invalid tag"):
        registry.put_manifest("reg.example/foo", "no good", MANIFEST, MEDIA_TYPE_OCI_MANIFEST)


# --- blobs ---


class FakeUploads:
    """Just enough of the blob upload API: HEAD, POST (relative Location), PUT."""

    def __init__(self, put_failures: int = 0) -> None:
        self.blobs: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.put_failures = put_failures

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "HEAD" and "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            return httpx.Response(200 if digest in self.blobs else 404)
        if request.method == "POST" and path.endswith("/blobs/uploads/"):
            return httpx.Response(202, headers={"Location": "/v2/foo/blobs/uploads/u1?_state=abc"})
        if request.method == "PUT" and "/blobs/uploads/" in path:
            body = request.read()
            if self.put_failures:
                self.put_failures -= 1
                return httpx.Response(500)
            digest = request.url.params["digest"]
            assert request.url.params["_state"] == "abc"
            assert request.headers["Content-Length"] == str(len(body))
            if sha256_digest(body) != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = body
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if request.method == "GET" and "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            if digest not in self.blobs:
                return httpx.Response(404)
            return httpx.Response(200, content=self.blobs[digest])
        return httpx.Response(405)


def test_push_blob_streams_monolithic_upload() -> None:
    fake = FakeUploads()
    registry, _ = make_registry(fake)
    data = b"layer" * 100_000
    assert registry.push_blob("reg.example/foo", sha256_digest(data), len(data), io.BytesIO(data))
    assert fake.blobs == {sha256_digest(data): data}
    put = next(r for r in fake.requests if r.method == "PUT")
    assert put.url.host == "reg.example" and put.url.path == "/v2/foo/blobs/uploads/u1"
    # Already there: one HEAD, nothing uploaded.
    fake.requests.clear()
    assert not registry.push_blob(
        "reg.example/foo", sha256_digest(data), len(data), io.BytesIO(data)
    )
    assert [r.method for r in fake.requests] == ["HEAD"]
    assert registry.blob_exists("reg.example/foo", sha256_digest(data))


def test_push_blob_aborts_on_bytes_not_matching_digest() -> None:
    fake = FakeUploads()
    registry, _ = make_registry(fake)
    with pytest.raises(DigestMismatch):
        registry.push_blob("reg.example/foo", D1, 3, io.BytesIO(b"two"))
    assert fake.blobs == {}


def test_push_blob_restarts_upload_after_server_error() -> None:
    fake = FakeUploads(put_failures=2)
    registry, sleeps = make_registry(fake)
    assert registry.push_blob("reg.example/foo", D1, 3, io.BytesIO(b"one"))
    assert fake.blobs == {D1: b"one"}
    assert [r.method for r in fake.requests].count("POST") == 3
    assert len(sleeps) == 2


def test_push_blob_resends_whole_body_after_401_on_put() -> None:
    fake = FakeUploads()
    puts: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "fresh"})
        if request.method == "PUT" and not puts:
            puts.append(request.read())
            challenge = 'Bearer realm="https://auth.example/token",service="reg.example"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.method == "PUT":
            assert request.headers["Authorization"] == "Bearer fresh"
        return fake(request)

    registry, _ = make_registry(handler)
    data = b"x" * 3_000_000
    assert registry.push_blob("reg.example/foo", sha256_digest(data), len(data), io.BytesIO(data))
    assert puts == [data] and fake.blobs == {sha256_digest(data): data}


def test_get_blob_verifies_and_writes_atomically(tmp_path: Path) -> None:
    fake = FakeUploads()
    fake.blobs[D1] = b"one"
    fake.blobs[sha256_digest(b"two")] = b"TWO"  # corrupt in the registry
    registry, _ = make_registry(fake)
    assert registry.get_blob("reg.example/foo", D1, tmp_path / "b", size=3) == 3
    assert (tmp_path / "b").read_bytes() == b"one"
    with pytest.raises(DigestMismatch):
        registry.get_blob("reg.example/foo", sha256_digest(b"two"), tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    with pytest.raises(RegistryError, match="not found"):
        registry.get_blob("reg.example/foo", sha256_digest(b"three"), io.BytesIO())


# --- against the real registry ---


@pytest.fixture
def registry_host() -> str:
    host = os.environ.get("REPRO_REGISTRY")
    if not host:
        pytest.skip("REPRO_REGISTRY is not set (run scripts/dev-env up)")
    try:
        httpx.get(f"http://{host}/v2/", timeout=3)
    except httpx.HTTPError as e:
        pytest.skip(f"registry REPRO_REGISTRY={host} is not answering: {e}")
    return host


def build_layout(path: Path, salt: str) -> tuple[OCILayout, Descriptor]:
    """A two-platform image (index of two manifests sharing a layer) in a layout."""
    layout = OCILayout.create(path)
    shared = layout.write_blob(f"shared layer {salt}".encode(), MEDIA_TYPE_OCI_LAYER_GZIP)
    manifests = []
    for arch in ("amd64", "arm64"):
        config = layout.write_blob(
            canonical_json({"architecture": arch, "os": "linux", "salt": salt}),
            MEDIA_TYPE_OCI_CONFIG,
        )
        own = layout.write_blob(f"{arch} layer {salt}".encode(), MEDIA_TYPE_OCI_LAYER_GZIP)
        manifest = layout.write_blob(
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                    "config": config.to_json(),
                    "layers": [shared.to_json(), own.to_json()],
                }
            ),
            MEDIA_TYPE_OCI_MANIFEST,
        )
        manifest.platform = Platform(arch, "linux")
        manifests.append(manifest)
    index = layout.write_blob(
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_INDEX,
                "manifests": [m.to_json() for m in manifests],
            }
        ),
        MEDIA_TYPE_OCI_INDEX,
    )
    layout.write_index([index])
    return layout, index


@pytest.mark.engine
def test_push_layout_round_trip(registry_host: str, tmp_path: Path) -> None:
    salt = uuid.uuid4().hex
    layout, index = build_layout(tmp_path / "l", salt)
    ref = parse_reference(f"{registry_host}/repro-test/roundtrip-{salt[:12]}:v1")
    with Registry() as registry:
        assert registry.push_layout(layout, ref) == index.digest
        resolved = registry.resolve(ref)
        assert resolved == Descriptor(MEDIA_TYPE_OCI_INDEX, index.digest, index.size)
        data, media_type, digest = registry.get_manifest(
            ref.with_tag(None).with_digest(digest=index.digest)
        )
        assert (data, media_type, digest) == (
            layout.read_blob(index.digest),
            MEDIA_TYPE_OCI_INDEX,
            index.digest,
        )
        for desc in layout.walk():
            if desc.is_manifest:
                assert registry.resolve(ref.with_digest(desc.digest)).digest == desc.digest
            else:
                assert registry.blob_exists(ref, desc.digest)
                out = tmp_path / desc.digest[7:]
                assert registry.get_blob(ref, desc.digest, out, desc.size) == desc.size
                assert out.read_bytes() == layout.read_blob(desc.digest)
        # Pushing again changes nothing and uploads nothing.
        assert registry.push_layout(layout, ref) == index.digest
        # By digest, without a tag.
        untagged = ref.with_tag(None).with_digest(index.digest)
        assert registry.push_layout(layout, untagged) == index.digest


@pytest.mark.engine
def test_push_layout_refuses_tampered_blob(registry_host: str, tmp_path: Path) -> None:
    salt = uuid.uuid4().hex
    layout, _ = build_layout(tmp_path / "l", salt)
    layer = sha256_digest(f"shared layer {salt}".encode())
    path = layout.blob_path(layer)
    path.write_bytes(path.read_bytes().upper())  # same size, other bytes
    ref = parse_reference(f"{registry_host}/repro-test/tampered-{salt[:12]}:v1")
    with Registry() as registry:
        with pytest.raises(DigestMismatch) as excinfo:
            registry.push_layout(layout, ref)
        assert layer in str(excinfo.value)
        assert not registry.blob_exists(ref, layer)
        with pytest.raises(RegistryError, match="not found"):
            registry.resolve(ref)


@pytest.mark.engine
def test_resolve_unknown_tag(registry_host: str) -> None:
    with Registry() as registry, pytest.raises(RegistryError, match="not found"):
        registry.resolve(f"{registry_host}/repro-test/nothing-here:{uuid.uuid4().hex[:8]}")


@pytest.mark.engine
def test_registry_rejects_manifest_with_missing_blob(registry_host: str) -> None:
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": 3},
            "layers": [],
        }
    )
    with Registry() as registry, pytest.raises(RegistryError) as excinfo:
        registry.put_manifest(
            f"{registry_host}/repro-test/missing", "v1", manifest, MEDIA_TYPE_OCI_MANIFEST
        )
    message = str(excinfo.value)
    assert "HTTP 400" in message and "\n" not in message
    assert json.dumps(message)  # one printable line


# --- chunked uploads, resume, mounts ---


class FakeChunked:
    """The upload API with PATCH chunks, upload status and mounts, like distribution's:
    each PATCH must start where the upload stands (else 416); GET says `Range: 0-N`."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, bytearray] = {}
        self.requests: list[httpx.Request] = []
        self.other_repo: set[str] = set()  # digests another repository holds
        self.fail: Callable[[httpx.Request], httpx.Response | None] = lambda r: None
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        failure = self.fail(request)
        if failure is not None:
            return failure
        path = request.url.path
        if request.method == "HEAD" and "/blobs/" in path:
            return httpx.Response(200 if path.rsplit("/", 1)[1] in self.blobs else 404)
        if request.method == "POST":
            mount = request.url.params.get("mount")
            if mount and mount in self.other_repo:
                self.blobs[mount] = b"(mounted)"
                return httpx.Response(201, headers={"Docker-Content-Digest": mount})
            self.count += 1
            uid = f"u{self.count}"
            self.uploads[uid] = bytearray()
            return httpx.Response(202, headers={"Location": f"/v2/foo/blobs/uploads/{uid}"})
        uid = path.rsplit("/", 1)[1]
        if uid not in self.uploads:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        held = self.uploads[uid]
        status = {"Range": f"0-{max(len(held) - 1, 0)}", "Location": path}
        if request.method == "GET":
            return httpx.Response(204, headers=status)
        if request.method == "PATCH":
            start, _, end = request.headers["Content-Range"].partition("-")
            if int(start) != len(held):
                return httpx.Response(416, headers=status)
            body = request.read()
            assert len(body) == int(end) - int(start) + 1
            held.extend(body)
            return httpx.Response(202, headers={**status, "Range": f"0-{len(held) - 1}"})
        if request.method == "PUT":
            held.extend(request.read())
            digest = request.url.params["digest"]
            if sha256_digest(bytes(held)) != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = bytes(held)
            del self.uploads[uid]
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if request.method == "DELETE":
            del self.uploads[uid]
            return httpx.Response(204)
        return httpx.Response(405)

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]


DATA = bytes(range(256)) * 40  # 10240 bytes: three chunks of 4096


def test_big_blobs_go_up_in_chunks() -> None:
    fake = FakeChunked()
    registry, _ = make_registry(fake, chunk_size=4096)
    assert registry.push_blob("reg.example/foo", sha256_digest(DATA), len(DATA), io.BytesIO(DATA))
    assert fake.blobs == {sha256_digest(DATA): DATA}
    assert fake.methods() == ["HEAD", "POST", "PATCH", "PATCH", "PATCH", "PUT"]
    ranges = [r.headers["Content-Range"] for r in fake.requests if r.method == "PATCH"]
    assert ranges == ["0-4095", "4096-8191", "8192-10239"]
    assert registry.counters.blobs_uploaded == 1 and registry.counters.bytes_uploaded == len(DATA)


def test_a_dropped_chunk_resumes_where_the_registry_stands() -> None:
    fake = FakeChunked()
    patches = iter(range(100))

    def drop_second_patch(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and next(patches) == 1:
            raise httpx.WriteError("connection reset by peer")
        return None

    fake.fail = drop_second_patch
    registry, sleeps = make_registry(fake, chunk_size=4096)
    assert registry.push_blob("reg.example/foo", sha256_digest(DATA), len(DATA), io.BytesIO(DATA))
    assert fake.blobs == {sha256_digest(DATA): DATA}
    assert fake.methods() == ["HEAD", "POST", "PATCH", "PATCH", "GET", "PATCH", "PATCH", "PUT"]
    ranges = [r.headers["Content-Range"] for r in fake.requests if r.method == "PATCH"]
    assert ranges == ["0-4095", "4096-8191", "4096-8191", "8192-10239"]
    assert registry.counters.resumed == 1 and registry.counters.restarted == 0
    assert len(sleeps) == 1


def test_an_upload_the_registry_lost_starts_over() -> None:
    fake = FakeChunked()
    state = {"patches": 0}

    def lose_upload(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH":
            state["patches"] += 1
            if state["patches"] == 2:
                fake.uploads.clear()  # the registry cancelled it
                return httpx.Response(500)
        return None

    fake.fail = lose_upload
    registry, _ = make_registry(fake, chunk_size=4096)
    assert registry.push_blob("reg.example/foo", sha256_digest(DATA), len(DATA), io.BytesIO(DATA))
    assert fake.blobs == {sha256_digest(DATA): DATA}
    assert fake.methods().count("POST") == 2 and registry.counters.restarted == 1


def test_chunked_bytes_that_do_not_match_are_cancelled_not_committed() -> None:
    fake = FakeChunked()
    registry, _ = make_registry(fake, chunk_size=4096)
    wrong = sha256_digest(b"something else")
    with pytest.raises(DigestMismatch):
        registry.push_blob("reg.example/foo", wrong, len(DATA), io.BytesIO(DATA))
    assert fake.blobs == {} and fake.uploads == {}
    assert "PUT" not in fake.methods() and fake.methods()[-1] == "DELETE"


def test_a_chunk_that_keeps_failing_gives_up_bounded() -> None:
    fake = FakeChunked()
    fake.fail = lambda r: httpx.Response(503) if r.method == "PATCH" else None
    registry, sleeps = make_registry(fake, chunk_size=4096, tries=3)
    with pytest.raises(RegistryError, match="HTTP 503"):
        registry.push_blob("reg.example/foo", sha256_digest(DATA), len(DATA), io.BytesIO(DATA))
    assert fake.methods().count("PATCH") == 3 and fake.blobs == {}


def test_blobs_seen_in_another_repository_are_mounted() -> None:
    fake = FakeChunked()
    registry, _ = make_registry(fake)
    digest = sha256_digest(b"layer")
    fake.blobs[digest] = b"layer"
    assert not registry.push_blob("reg.example/base", digest, 5, io.BytesIO(b"layer"))  # seen
    del fake.blobs[digest]
    fake.other_repo.add(digest)
    fake.requests.clear()
    assert registry.push_blob("reg.example/foo", digest, 5, io.BytesIO(b"layer"))
    post = next(r for r in fake.requests if r.method == "POST")
    assert post.url.params["mount"] == digest and post.url.params["from"] == "base"
    assert fake.methods() == ["HEAD", "POST"]
    assert registry.counters.blobs_mounted == 1 and registry.counters.blobs_uploaded == 0
    # Another registry's repositories are never a mount source.
    fake.requests.clear()
    other = sha256_digest(b"x")
    registry.push_blob("other.example/foo", other, 1, io.BytesIO(b"x"))
    assert "mount" not in next(r for r in fake.requests if r.method == "POST").url.params


def test_a_mount_the_registry_cannot_do_becomes_the_upload() -> None:
    fake = FakeChunked()
    registry, _ = make_registry(fake)
    digest = sha256_digest(b"layer")
    assert registry.push_blob(
        "reg.example/foo", digest, 5, io.BytesIO(b"layer"), mount_from=["base"]
    )
    assert fake.methods() == ["HEAD", "POST", "PUT"] and fake.blobs[digest] == b"layer"
    assert registry.counters.blobs_mounted == 0 and registry.counters.blobs_uploaded == 1


def test_401_without_credentials_names_the_registry_and_the_config(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    registry = Registry(
        transport=httpx.MockTransport(handler),
        credentials=lambda host: None,
        environ={"DOCKER_CONFIG": str(tmp_path)},
    )
    with pytest.raises(RegistryError) as info:
        registry.push_blob("reg.example/foo", D1, 3, io.BytesIO(b"one"))
    message = str(info.value)
    assert "registry reg.example requires a login" in message
    assert str(tmp_path / "config.json") in message and "docker login reg.example" in message
    assert "\n" not in message
