"""A small OCI distribution (registry v2 API) client on httpx.

repro pushes and pulls images itself, so that every byte is checked against its
digest on the way in and out: manifests and blobs read from a registry are
verified, and blobs pushed are hashed while they stream.

One `Registry` object holds one pooled `httpx.Client` and may talk to several
registries. Plain HTTP is used only for loopback hosts and hosts the user marked
insecure; everything else is HTTPS. Authentication follows the registry's
`WWW-Authenticate` challenge (Bearer token or Basic) with credentials from the
user's Docker config. Transient failures (connection errors, 429, 5xx) are
retried a bounded number of times with exponential backoff.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import IO, Any

import httpx

from repro import __version__
from repro.dockerconfig import Credentials, config_path, get_credentials
from repro.errors import DigestMismatch, InputError, RegistryError, TransferInterrupted
from repro.oci import (
    CHUNK_SIZE,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Hasher,
    OCILayout,
    atomic_writer,
    is_digest,
    parse_digest,
    parse_json_document,
)
from repro.registry._reference import (
    Reference,
    _as_reference,
    _bare_host,
    api_host,
    insecure_hosts_from_env,
    is_loopback,
    is_valid_tag,
)

log = logging.getLogger(__name__)


# Index types first: when a registry holds a multi-platform image, ask for all of it.
MANIFEST_ACCEPT = ", ".join(
    [
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST,
    ]
)
# Registries must accept manifests of at least 4 MiB; refuse to load anything far bigger.
MAX_MANIFEST_SIZE = 8 * 1024 * 1024

DEFAULT_TRIES = 5
DEFAULT_BACKOFF = 0.5
MAX_BACKOFF = 8.0
# A Retry-After longer than this is not waited for: the call fails instead.
MAX_RETRY_AFTER = 30.0
# 501 and 505 say "never", not "later".
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
# Blobs larger than this go up in chunks of this size (PATCH with Content-Range), so a
# dropped connection costs at most one chunk: the upload resumes where the registry
# says it stands. Smaller blobs go up in one PUT.
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024
# Blobs of one image pushed at once.
PUSH_PARALLEL = 4
# Tokens without `expires_in` live 60 s (distribution spec); renew a little early.
_TOKEN_MIN_LIFETIME = 60
_TOKEN_MARGIN = 10



# Waits before pushing a manifest again that the registry refused for a blob it said
# was unknown (see `put_manifest`).
_BLOB_UNKNOWN_WAITS = (0.1, 0.3, 1.0)


# --- small helpers -----------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires_at: float

    def valid(self) -> bool:
        return time.monotonic() < self.expires_at


class ManifestNotFound(RegistryError):
    """The registry has no manifest under that tag or digest (HTTP 404)."""


class ManifestChanged(RegistryError):
    """A conditional manifest PUT was refused: the tag moved since it was read (HTTP 412)."""


class _Unreachable(RegistryError):
    """A request failed below HTTP (connection refused, reset, timeout)."""


class _RetryUpload(RegistryError):
    """An upload's PUT failed in a way that a fresh upload session may fix."""


class _UploadLost(RegistryError):
    """The registry no longer knows an upload session (or cannot resume it)."""


@dataclass
class PushCounters:
    """What a `Registry` did while pushing: blobs found, mounted, uploaded; bytes sent.

    Counted over the client's life; `since` gives the part of one operation.
    """

    images_present: int = 0  # every tag already named the image: nothing checked below it
    blobs_present: int = 0  # HEAD found the blob: nothing sent
    blobs_mounted: int = 0  # mounted from another repository of the same registry
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0  # blob bytes the registry accepted (a resent chunk counts twice)
    manifests_put: int = 0  # manifests stored, by digest or under a tag
    retries: int = 0  # waits before a retry (backoff or Retry-After)
    resumed: int = 0  # uploads continued after a dropped or failed chunk
    restarted: int = 0  # uploads started over in a fresh session

    def since(self, before: PushCounters) -> PushCounters:
        return PushCounters(
            **{k: getattr(self, k) - getattr(before, k) for k in self.__dataclass_fields__}
        )

    def to_json(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class PushedImage:
    """The outcome of `Registry.push_image`: where the image is, and what it took."""

    repository: str  # host/repository
    digest: str  # the top manifest or index
    media_type: str
    tags: tuple[str, ...]
    manifests: dict[str, str] = field(default_factory=dict)  # platform -> manifest digest
    counters: PushCounters = field(default_factory=PushCounters)

    @property
    def reference(self) -> str:
        """`host/repository@digest`: the image, by digest."""
        return f"{self.repository}@{self.digest}"


def _describe_transport_error(error: httpx.TransportError) -> str:
    """A short, one-line, lowercase reason: `connection refused`, `timed out`."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = str(error).strip() or type(error).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.splitlines()[0]).rstrip(".")
    return text[:1].lower() + text[1:]


_CHALLENGE_ITEM = re.compile(
    r"""\s*([A-Za-z0-9_.!#$%&'*+^`|~-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?\s*,?"""
)


def _parse_challenges(headers: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Parse WWW-Authenticate values into (scheme, params) pairs, scheme lowercased.

    A bare token starts a new challenge; `key=value` items are its parameters.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    for header in headers:
        for match in _CHALLENGE_ITEM.finditer(header):
            key, value = match.group(1), match.group(2)
            if value is None:
                challenges.append((key.lower(), {}))
            elif challenges:
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                challenges[-1][1][key.lower()] = value
    return challenges


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait, if it said (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        import email.utils  # only for a Retry-After date

        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_detail(response: httpx.Response) -> str:
    """The registry's own error message (distribution error JSON) on one line."""
    detail = ""
    try:
        errors = response.json().get("errors")
        parts = []
        for error in errors if isinstance(errors, list) else []:
            message, code = error.get("message") or "", error.get("code") or ""
            parts.append(f"{message} ({code})" if code and message else message or code)
        detail = "; ".join(p for p in parts if p)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        pass
    detail = detail or response.reason_phrase or "error"
    return " ".join(detail.split())[:300]


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip()


def _basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _upload_body(stream: IO[bytes], digest: str, size: int, what: str) -> Iterator[bytes]:
    """Yield exactly `size` bytes of `stream`, failing (and so aborting the upload)
    if they do not hash to `digest`. The registry then never commits bad bytes."""
    hasher = Hasher.for_digest(digest)
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(CHUNK_SIZE, remaining))
        if not chunk:
            break
        hasher.update(chunk)
        remaining -= len(chunk)
        yield chunk
    hasher.check(digest, size, what)


def _replayable_body(stream: IO[bytes], digest: str, size: int, what: str) -> Content:
    """A body factory that starts from the same place each time it is called.

    The PUT may be sent twice (a 401 answered with a fresh token); a stream that
    cannot seek can only be sent once.
    """
    start = stream.tell() if stream.seekable() else None
    calls = 0

    def body() -> Iterator[bytes]:
        nonlocal calls
        calls += 1
        if start is not None:
            stream.seek(start)
        elif calls > 1:
            raise RegistryError(f"{what}: the upload cannot be resent from a stream")
        return _upload_body(stream, digest, size, what)

    return body


Content = Callable[[], bytes | Iterator[bytes]]


# --- the client --------------------------------------------------------------


class Registry:
    """A client for OCI distribution registries; one pooled HTTP client per object."""

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        credentials: Callable[[str], Credentials | None] = get_credentials,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        tries: int = DEFAULT_TRIES,
        backoff: float = DEFAULT_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
        environ: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self._environ = environ
        self._chunk_size = max(1, chunk_size)
        self.counters = PushCounters()
        self._counter_lock = threading.Lock()
        # Where each blob digest is known to be: (host, repository) pairs, from pushes,
        # HEADs and downloads; the source of cross-repository mounts.
        self._known: dict[str, set[tuple[str, str]]] = {}
        self._insecure = {h.lower() for h in insecure} | set(insecure_hosts_from_env(environ))
        self._get_credentials = credentials
        self._tries = max(1, tries)
        self._backoff = backoff
        self._sleep = sleep
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._basic: dict[str, Credentials] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self._client_args: dict[str, object] = dict(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            follow_redirects=True,
            # Blobs must arrive as stored; a transfer encoding would only cost CPU.
            headers={"User-Agent": f"repro/{__version__}", "Accept-Encoding": "identity"},
        )
        # Made on first use, one for https and one for plain http: loading the CA
        # bundle for an SSL context costs 0.1-0.2 s, which a build that only talks to a
        # loopback registry (or to none at all) should not pay.
        self._clients: dict[bool, httpx.Client] = {}
        self._clients_lock = threading.Lock()

    def _client_for(self, url: str) -> httpx.Client:
        https = not url.startswith("http://")
        with self._clients_lock:
            client = self._clients.get(https)
            if client is None:
                args = dict(self._client_args)
                if not https:
                    args["verify"] = False  # never used for http:// URLs; skips the CA bundle
                client = self._clients[https] = httpx.Client(**args)  # type: ignore[arg-type]
            return client

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs and schemes --

    def plain_http(self, host: str) -> bool:
        """Whether `host` is spoken to over plain HTTP (loopback or marked insecure)."""
        host = host.lower()
        return is_loopback(host) or host in self._insecure or _bare_host(host) in self._insecure

    def base_url(self, host: str) -> str:
        scheme = "http" if self.plain_http(host) else "https"
        return f"{scheme}://{api_host(host)}/v2"

    def _url(self, ref: Reference, kind: str, name: str) -> str:
        return f"{self.base_url(ref.host)}/{ref.repository}/{kind}/{name}"

    # -- sending, retrying, authenticating --

    def _count(self, **amounts: int) -> None:
        with self._counter_lock:
            for name, amount in amounts.items():
                setattr(self.counters, name, getattr(self.counters, name) + amount)

    def _remember(self, ref: Reference, digest: str) -> None:
        with self._counter_lock:
            self._known.setdefault(digest, set()).add((ref.host, ref.repository))

    def _pause(self, attempt: int, delay: float | None) -> None:
        self._count(retries=1)
        if delay is None:
            delay = min(MAX_BACKOFF, self._backoff * 2 ** (attempt - 1))
        self._sleep(delay)

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        host: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        content: Content | None = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str | list[str]] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send a request, retrying transport errors, 429 and 5xx with backoff."""
        tries = self._tries if retry else 1
        for attempt in range(1, tries + 1):
            client = self._client_for(str(url))
            request = client.build_request(
                method,
                url,
                headers=headers,
                content=content() if content else None,
                data=data,
                params=params,
            )
            try:
                response = client.send(request, stream=stream)
            except httpx.TransportError as e:
                reason = _describe_transport_error(e)
                log.debug("%s: %s (try %d of %d)", what, reason, attempt, tries)
                if attempt == tries:
                    if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
                        raise _Unreachable(f"registry {host} unreachable: {reason}") from None
                    raise _Unreachable(f"registry {host}: {what} failed: {reason}") from None
                self._pause(attempt, None)
                continue
            if response.status_code not in _RETRY_STATUSES or attempt == tries:
                return response
            delay = _retry_after(response)
            response.close()
            if delay is not None and delay > MAX_RETRY_AFTER:
                raise RegistryError(
                    f"registry {host}: {what} failed: asked to retry after {delay:.0f} s "
                    f"(HTTP {response.status_code})"
                )
            log.debug("%s: HTTP %d (try %d of %d)", what, response.status_code, attempt, tries)
            self._pause(attempt, delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _credentials_for(self, host: str) -> Credentials | None:
        if host not in self._credentials:
            self._credentials[host] = self._get_credentials(host)
        return self._credentials[host]

    def _auth_header(self, host: str, scope: str) -> dict[str, str]:
        token = self._tokens.get((host, scope))
        if token is not None and token.valid():
            return {"Authorization": f"Bearer {token.value}"}
        basic = self._basic.get(host)
        return {"Authorization": _basic_header(basic)} if basic else {}

    def _request(
        self,
        method: str,
        url: str | httpx.URL,
        ref: Reference,
        *,
        scope: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        content: Content | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send a request to `ref`'s registry, answering one authentication challenge."""
        target = httpx.URL(url)
        # Credentials go only to the registry itself, never to a storage backend
        # an upload Location might point at.
        same_host = target.netloc.decode("ascii").lower() == api_host(ref.host).lower()
        answered = False
        while True:
            merged = dict(headers or {})
            if same_host:
                merged.update(self._auth_header(ref.host, scope))
            response = self._send(
                method,
                target,
                host=ref.host,
                what=what,
                headers=merged,
                content=content,
                stream=stream,
                retry=retry,
            )
            if response.status_code != 401 or answered or not same_host:
                return response
            challenges = response.headers.get_list("WWW-Authenticate")
            response.close()
            self._authenticate(ref.host, scope, challenges, what)
            answered = True

    def _authenticate(self, host: str, scope: str, challenges: list[str], what: str) -> None:
        parsed = _parse_challenges(challenges)
        bearer = next((params for scheme, params in parsed if scheme == "bearer"), None)
        if bearer is not None:
            self._tokens[(host, scope)] = self._fetch_token(host, bearer, scope)
            return
        if any(scheme == "basic" for scheme, _ in parsed):
            credentials = self._credentials_for(host)
            if credentials is None:
                raise RegistryError(
                    f"registry {host} requires a login for {what}: {self._login_hint(host)}"
                )
            self._basic[host] = credentials
            return
        raise RegistryError(
            f"registry {host} refused {what} (HTTP 401) without a usable challenge: "
            f"{self._login_hint(host)}"
        )

    def _login_hint(self, host: str) -> str:
        """Where credentials for `host` were looked up, and how to add some."""
        where = config_path(self._environ)
        if self._credentials_for(host) is None:
            return (
                f"no credentials for {host} in {where} (auths, credHelpers, credsStore); "
                f"run `docker login {host}`"
            )
        return f"the credentials for {host} from {where} were not accepted"

    def _fetch_token(self, host: str, challenge: Mapping[str, str], scope: str) -> _Token:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError(f"registry {host} sent a Bearer challenge without a realm")
        realm_url = httpx.URL(realm)
        realm_host = realm_url.netloc.decode("ascii")
        if realm_url.scheme not in ("https", "http") or (
            realm_url.scheme == "http" and not self.plain_http(realm_host)
        ):
            raise RegistryError(f"registry {host} sent an unsafe token service URL {realm}")
        scopes = [scope]
        if challenge.get("scope") and challenge["scope"] != scope:
            scopes.append(challenge["scope"])
        credentials = self._credentials_for(host)
        what = f"get a token for {scope}"
        if credentials is not None and credentials.identity_token:
            # OAuth2 refresh-token grant, as `docker login` with an identity token does.
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "service": challenge.get("service", ""),
                "scope": " ".join(scopes),
                "client_id": "repro",
            }
            response = self._send("POST", realm_url, host=realm_host, what=what, data=form)
        else:
            params: dict[str, str | list[str]] = {"scope": scopes}
            if challenge.get("service"):
                params["service"] = challenge["service"]
            headers = {"Authorization": _basic_header(credentials)} if credentials else {}
            response = self._send(
                "GET", realm_url, host=realm_host, what=what, headers=headers, params=params
            )
        return self._parse_token(host, response, credentials is not None)

    def _parse_token(self, host: str, response: httpx.Response, with_login: bool) -> _Token:
        if response.status_code in (401, 403):
            hint = self._login_hint(host)
            raise RegistryError(
                f"registry {host} refused a token: {hint} (HTTP {response.status_code})"
            )
        self._check(response, host, "get a token", (200,))
        try:
            doc = response.json()
            value = doc.get("token") or doc.get("access_token")
            lifetime = int(doc.get("expires_in") or _TOKEN_MIN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value = None
            lifetime = 0
        if not isinstance(value, str) or not value:
            raise RegistryError(f"registry {host}'s token service sent no token")
        lifetime = max(lifetime, _TOKEN_MIN_LIFETIME) - _TOKEN_MARGIN
        return _Token(value, time.monotonic() + lifetime)

    def _check(self, response: httpx.Response, host: str, what: str, ok: Container[int]) -> None:
        """Raise a one-line RegistryError unless the status is one of `ok`."""
        status = response.status_code
        if status in ok:
            return
        if not response.is_closed:
            response.read()
        response.close()
        detail = _error_detail(response)
        if status == 401:
            raise RegistryError(
                f"registry {host} refused {what}: not authorized (HTTP 401): "
                f"{self._login_hint(host)}"
            )
        if status == 403:
            raise RegistryError(
                f"registry {host} refused {what}: access denied ({detail}, HTTP 403)"
            )
        raise RegistryError(f"registry {host}: {what} failed: {detail} (HTTP {status})")

    # -- manifests --

    def resolve(self, ref: Reference | str) -> Descriptor:
        """The descriptor (media type, digest, size) of the manifest `ref` names."""
        ref = _as_reference(ref)
        what = f"resolve {ref}"
        response = self._request(
            "HEAD",
            self._url(ref, "manifests", ref.reference),
            ref,
            scope=f"repository:{ref.repository}:pull",
            what=what,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            raise RegistryError(f"image {ref} not found")
        self._check(response, ref.host, what, (200,))
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = _media_type(response)
        length = response.headers.get("Content-Length", "")
        if is_digest(digest) and media_type in MANIFEST_MEDIA_TYPES and length.isdigit():
            if ref.digest and digest != ref.digest:
                raise DigestMismatch(
                    f"registry {ref.host} answered {ref} with a different digest: "
                    f"expected {ref.digest}, got {digest}"
                )
            return Descriptor(media_type=media_type, digest=digest, size=int(length))
        # Some registries do not say on HEAD; fetch the manifest and hash it.
        data, media_type, digest = self.get_manifest(ref)
        return Descriptor(media_type=media_type, digest=digest, size=len(data))

    def get_manifest(self, ref: Reference | str) -> tuple[bytes, str, str]:
        """The manifest `ref` names: (bytes, media type, digest), digest verified."""
        data, media_type, digest, _etag = self.get_manifest_with_etag(ref)
        return data, media_type, digest

    def get_manifest_with_etag(self, ref: Reference | str) -> tuple[bytes, str, str, str | None]:
        """Like `get_manifest`, plus the ETag the registry sent (for `put_manifest`'s
        `if_match`); raises ManifestNotFound when there is no such manifest.

        A connection lost while the body arrives, or a body that does not match the
        digest asked for or announced, is fetched again (the same bounded tries as any
        request): both are what a flaky network or proxy does."""
        ref = _as_reference(ref)
        for attempt in range(1, self._tries + 1):
            try:
                return self._get_manifest_once(ref)
            except (TransferInterrupted, DigestMismatch) as e:
                log.debug("get manifest %s: %s (try %d of %d)", ref, e, attempt, self._tries)
                if attempt == self._tries:
                    raise
                self._pause(attempt, None)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _get_manifest_once(self, ref: Reference) -> tuple[bytes, str, str, str | None]:
        what = f"get manifest {ref}"
        response = self._request(
            "GET",
            self._url(ref, "manifests", ref.reference),
            ref,
            scope=f"repository:{ref.repository}:pull",
            what=what,
            headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
        )
        with contextlib.closing(response):
            if response.status_code == 404:
                raise ManifestNotFound(f"image {ref} not found")
            self._check(response, ref.host, what, (200,))
            data = self._read_limited(response, ref.host, what, MAX_MANIFEST_SIZE)
        expected = self._expected_manifest_digest(ref, response)
        hasher = Hasher.for_digest(expected) if expected else Hasher()
        hasher.update(data)
        if expected:
            hasher.check(expected, None, f"manifest {ref} from registry {ref.host}")
        media_type = _media_type(response)
        if media_type not in MANIFEST_MEDIA_TYPES:
            declared = parse_json_document(data, f"manifest {ref}").get("mediaType")
            if declared not in MANIFEST_MEDIA_TYPES:
                raise RegistryError(
                    f"registry {ref.host} sent {ref} as {media_type or 'no media type'}, "
                    "which is not an image manifest or index"
                )
            media_type = str(declared)
        return data, media_type, hasher.digest(), response.headers.get("ETag")

    def _expected_manifest_digest(self, ref: Reference, response: httpx.Response) -> str | None:
        header = response.headers.get("Docker-Content-Digest")
        if header is not None and not is_digest(header):
            raise RegistryError(f"registry {ref.host} sent an invalid digest {header[:80]!r}")
        if ref.digest and header and header != ref.digest:
            raise DigestMismatch(
                f"registry {ref.host} answered {ref} with a different digest: "
                f"expected {ref.digest}, got {header}"
            )
        return ref.digest or header

    def _read_limited(self, response: httpx.Response, host: str, what: str, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise RegistryError(f"registry {host}: {what}: more than {limit} bytes")
                chunks.append(chunk)
        except httpx.TransportError as e:
            reason = _describe_transport_error(e)
            raise TransferInterrupted(f"registry {host}: {what} failed: {reason}") from None
        return b"".join(chunks)

    def put_manifest(
        self,
        repo: Reference | str,
        tag_or_digest: str,
        data: bytes,
        media_type: str,
        *,
        if_match: str | None = None,
    ) -> str:
        """Store a manifest under a tag or its digest; returns the (verified) digest.

        With `if_match` (an ETag from `get_manifest_with_etag`), a registry that honours
        conditional requests refuses the write when the tag moved since (ManifestChanged);
        one that ignores If-Match (distribution 2.8) stores it anyway.
        """
        ref = _as_reference(repo)
        if is_digest(tag_or_digest):
            hasher = Hasher.for_digest(tag_or_digest)
            hasher.update(data)
            hasher.check(tag_or_digest, None, f"manifest pushed as {tag_or_digest}")
        elif not is_valid_tag(tag_or_digest):
            raise InputError(f"invalid tag {tag_or_digest!r}")
        else:
            hasher = Hasher()
            hasher.update(data)
        digest = hasher.digest()
        what = f"push manifest {ref.name}{'@' if is_digest(tag_or_digest) else ':'}{tag_or_digest}"
        for attempt in range(len(_BLOB_UNKNOWN_WAITS) + 1):
            response = self._request(
                "PUT",
                self._url(ref, "manifests", tag_or_digest),
                ref,
                scope=f"repository:{ref.repository}:pull,push",
                what=what,
                headers={
                    "Content-Type": media_type,
                    **({"If-Match": if_match} if if_match else {}),
                },
                content=lambda: data,
            )
            if response.status_code != 400 or attempt == len(_BLOB_UNKNOWN_WAITS):
                break
            response.read()
            response.close()
            if "MANIFEST_BLOB_UNKNOWN" not in response.text:
                break
            # A blob this client pushed (or found) a moment ago is unknown: on
            # distribution's file-system storage, another client uploading the same blob
            # rewrites the repository's link to it, not atomically, and a manifest
            # checked meanwhile names a blob that seems missing. Wait and ask again; a
            # blob that is really missing stays so, and is reported below.
            self._sleep(_BLOB_UNKNOWN_WAITS[attempt])
        with contextlib.closing(response):
            if response.status_code == 412 and if_match:
                raise ManifestChanged(f"registry {ref.host}: {ref.name}:{tag_or_digest} moved")
            self._check(response, ref.host, what, (200, 201))
            stored = response.headers.get("Docker-Content-Digest")
        self._count(manifests_put=1)
        if stored and stored != digest:
            raise DigestMismatch(
                f"registry {ref.host} stored manifest {ref.name}:{tag_or_digest} under a "
                f"different digest: expected {digest}, got {stored}"
            )
        return digest

    # -- blobs --

    def _blob_exists(self, ref: Reference, digest: str, scope: str) -> bool:
        what = f"check blob {digest} in {ref.name}"
        response = self._request(
            "HEAD", self._url(ref, "blobs", digest), ref, scope=scope, what=what
        )
        with contextlib.closing(response):
            if response.status_code == 404:
                return False
            self._check(response, ref.host, what, (200,))
        self._remember(ref, digest)
        return True

    def blob_exists(self, repo: Reference | str, digest: str) -> bool:
        """Whether the repository already has the blob."""
        ref = _as_reference(repo)
        return self._blob_exists(ref, digest, f"repository:{ref.repository}:pull")

    def get_blob(
        self,
        repo: Reference | str,
        digest: str,
        dest: str | os.PathLike[str] | IO[bytes],
        size: int | None = None,
    ) -> int:
        """Download a blob into a file (path: written atomically), verifying digest and size.

        Returns the number of bytes written. A connection lost mid-download is
        retried from the start when the destination can be rewound.
        """
        ref = _as_reference(repo)
        if not is_digest(digest):
            raise InputError(f"invalid digest {digest!r}")
        if isinstance(dest, str | os.PathLike):
            with atomic_writer(dest) as out:
                return self._download(ref, digest, out, size)
        return self._download(ref, digest, dest, size)

    def _download(self, ref: Reference, digest: str, out: IO[bytes], size: int | None) -> int:
        what = f"get blob {digest} from {ref.name}"
        start = out.tell() if out.seekable() else None
        for attempt in range(1, self._tries + 1):
            response = self._request(
                "GET",
                self._url(ref, "blobs", digest),
                ref,
                scope=f"repository:{ref.repository}:pull",
                what=what,
                stream=True,
            )
            with contextlib.closing(response):
                if response.status_code == 404:
                    raise RegistryError(f"blob {digest} not found in {ref.name}")
                self._check(response, ref.host, what, (200,))
                try:
                    written = self._stream_blob(response, out, ref, digest, size)
                    self._remember(ref, digest)
                    return written
                except httpx.TransportError as e:
                    reason = _describe_transport_error(e)
                    if attempt == self._tries or start is None:
                        raise TransferInterrupted(
                            f"registry {ref.host}: {what} failed: {reason}"
                        ) from None
                except DigestMismatch:
                    # Wrong bytes: fetched again, from the start, when `out` can go back.
                    if attempt == self._tries or start is None:
                        raise
            assert start is not None
            out.seek(start)
            out.truncate()
            self._pause(attempt, None)
        raise AssertionError("unreachable")

    def _stream_blob(
        self,
        response: httpx.Response,
        out: IO[bytes],
        ref: Reference,
        digest: str,
        size: int | None,
    ) -> int:
        hasher = Hasher.for_digest(digest)
        what = f"blob {digest} from registry {ref.host}"
        for chunk in response.iter_bytes(CHUNK_SIZE):
            hasher.update(chunk)
            if size is not None and hasher.size > size:
                raise DigestMismatch(f"{what} is longer than the expected {size} bytes")
            out.write(chunk)
        hasher.check(digest, size, what)
        return hasher.size

    def push_blob(
        self,
        repo: Reference | str,
        digest: str,
        size: int,
        stream: IO[bytes],
        *,
        mount_from: Iterable[str] = (),
    ) -> bool:
        """Put a blob in the repository unless it has it; True if it was sent or mounted.

        HEAD first. A blob the client saw in another repository of the same registry
        (or in one of `mount_from`, repository paths) is mounted from there
        (`?mount=&from=`); a registry that cannot mount answers with an upload
        session, which is used as is. Blobs up to the chunk size go up in one PUT;
        bigger ones in PATCH chunks, and a chunk that fails (dropped connection,
        5xx) is followed by a GET of the upload's status and the upload continues
        from the registry's Range. The bytes are hashed as they go; an upload
        whose bytes do not match `digest` is cancelled before it is committed.
        """
        ref = _as_reference(repo)
        if not is_digest(digest):
            raise InputError(f"invalid digest {digest!r}")
        scope = f"repository:{ref.repository}:pull,push"
        if self._blob_exists(ref, digest, scope):
            log.debug("blob %s already in %s", digest, ref.name)
            self._count(blobs_present=1)
            return False
        what = f"push blob {digest} to {ref.name}"
        start = stream.tell() if stream.seekable() else None
        source = self._mount_source(ref, digest, mount_from)
        for attempt in range(1, self._tries + 1):
            location = self._start_upload(ref, scope, what, digest if source else None, source)
            if location is None:
                self._count(blobs_mounted=1)
                self._remember(ref, digest)
                log.debug("blob %s mounted into %s from %s", digest, ref.name, source)
                return True
            source = None  # a mount that did not happen is not tried again
            try:
                if size > self._chunk_size and start is not None:
                    self._upload_chunks(ref, location, digest, size, stream, start, scope, what)
                else:
                    self._finish_upload(ref, location, digest, size, stream, scope, what)
                    self._count(bytes_uploaded=size)
                self._count(blobs_uploaded=1)
                self._remember(ref, digest)
                return True
            except _Unreachable:
                if attempt == self._tries or start is None:
                    raise
            except (_RetryUpload, _UploadLost) as e:
                if attempt == self._tries or start is None:
                    raise RegistryError(e.message) from None
            # A failed PUT may have ended the upload session: start a new one.
            self._count(restarted=1)
            stream.seek(start)
            self._pause(attempt, None)
        raise AssertionError("unreachable")

    def _mount_source(self, ref: Reference, digest: str, candidates: Iterable[str]) -> str | None:
        """A repository of `ref`'s registry that has (or may have) the blob, if any."""
        with self._counter_lock:
            known = sorted(
                repo
                for host, repo in self._known.get(digest, ())
                if host == ref.host and repo != ref.repository
            )
        choices = known + [c for c in candidates if c != ref.repository]
        return choices[0] if choices else None

    def _start_upload(
        self,
        ref: Reference,
        scope: str,
        what: str,
        mount: str | None = None,
        source: str | None = None,
    ) -> httpx.URL | None:
        """POST a new upload session and return its URL; None when the blob was mounted."""
        url = httpx.URL(f"{self.base_url(ref.host)}/{ref.repository}/blobs/uploads/")
        if mount and source:
            url = url.copy_merge_params({"mount": mount, "from": source})
        response = self._request(
            "POST", url, ref, scope=scope, what=what, headers={"Content-Length": "0"}
        )
        with contextlib.closing(response):
            if mount and source and response.status_code == 201:
                return None
            self._check(response, ref.host, what, (202,))
            location = response.headers.get("Location")
            if not location:
                raise RegistryError(f"registry {ref.host}: {what} failed: no upload Location")
            # Location may be relative to the request URL.
            return response.url.join(location)

    def _finish_upload(
        self,
        ref: Reference,
        location: httpx.URL,
        digest: str,
        size: int,
        stream: IO[bytes],
        scope: str,
        what: str,
    ) -> None:
        url = location.copy_merge_params({"digest": digest})
        body = f"blob {digest} pushed to {ref.name}"
        response = self._request(
            "PUT",
            url,
            ref,
            scope=scope,
            what=what,
            # An explicit length: some registries refuse chunked uploads.
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=_replayable_body(stream, digest, size, body),
            retry=False,
        )
        self._check_committed(ref, response, digest, what)

    def _check_committed(
        self, ref: Reference, response: httpx.Response, digest: str, what: str
    ) -> None:
        with contextlib.closing(response):
            if response.status_code in _RETRY_STATUSES:
                response.read()
                raise _RetryUpload(
                    f"registry {ref.host}: {what} failed: {_error_detail(response)} "
                    f"(HTTP {response.status_code})"
                )
            self._check(response, ref.host, what, (201,))
            stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise DigestMismatch(
                f"registry {ref.host} stored blob under a different digest: "
                f"expected {digest}, got {stored}"
            )

    def _upload_chunks(
        self,
        ref: Reference,
        location: httpx.URL,
        digest: str,
        size: int,
        stream: IO[bytes],
        start: int,
        scope: str,
        what: str,
    ) -> None:
        """PATCH the blob in chunks, resuming from the registry's Range after a failure,
        then commit it with an empty PUT once our own hash of the bytes matches."""
        algorithm = parse_digest(digest)[0]
        hashed = hashlib.new(algorithm)  # over stream[start : start + offset]
        offset = 0
        failures = 0
        while offset < size:
            end = min(size, offset + self._chunk_size)
            chunk = _Chunk(stream, start, offset, end, hashed)
            try:
                response = self._request(
                    "PATCH",
                    location,
                    ref,
                    scope=scope,
                    what=what,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end - 1}",
                        "Content-Length": str(end - offset),
                    },
                    content=chunk.body,
                    retry=False,
                )
            except _Unreachable as e:
                response = None
                reason = e.message
            if response is not None and response.status_code == 202:
                with contextlib.closing(response):
                    moved = response.headers.get("Location")
                    confirmed = _range_end(response.headers.get("Range"))
                if moved:
                    location = response.url.join(moved)
                if confirmed is not None and confirmed != end:
                    raise _UploadLost(
                        f"registry {ref.host}: {what}: the upload stands at byte {confirmed} "
                        f"after a chunk that ended at {end}"
                    )
                hashed = chunk.hashed
                self._count(bytes_uploaded=end - offset)
                offset = end
                continue
            if response is not None:
                with contextlib.closing(response):
                    response.read()
                    status = response.status_code
                    if status not in _RETRY_STATUSES and status != 416:
                        self._check(response, ref.host, what, (202,))
                    reason = f"{_error_detail(response)} (HTTP {status})"
            failures += 1
            if failures >= self._tries:
                raise RegistryError(f"registry {ref.host}: {what} failed: {reason}")
            self._pause(failures, None)
            location, offset = self._upload_status(ref, location, scope, what)
            if offset > end or offset > size:
                raise _UploadLost(f"registry {ref.host}: {what}: the upload is past what was sent")
            hashed = _rehash(stream, start, offset, algorithm, chunk, hashed)
            self._count(resumed=1)
            log.debug("%s: resuming at byte %d after %s", what, offset, reason)
        actual = f"{algorithm}:{hashed.hexdigest()}"
        if actual != digest:
            self._cancel_upload(ref, location, scope, what)
            raise DigestMismatch(
                f"blob {digest} pushed to {ref.name} does not match its digest: got {actual}"
            )
        url = location.copy_merge_params({"digest": digest})
        response = self._request(
            "PUT",
            url,
            ref,
            scope=scope,
            what=what,
            headers={"Content-Length": "0"},
            content=lambda: b"",
        )
        self._check_committed(ref, response, digest, what)

    def _upload_status(
        self, ref: Reference, location: httpx.URL, scope: str, what: str
    ) -> tuple[httpx.URL, int]:
        """Where an upload stands: (its URL, the number of bytes the registry holds)."""
        response = self._request("GET", location, ref, scope=scope, what=f"{what} (status)")
        with contextlib.closing(response):
            if response.status_code in (400, 404, 410, 416):
                response.read()
                raise _UploadLost(
                    f"registry {ref.host}: {what}: the upload could not be resumed "
                    f"({_error_detail(response)}, HTTP {response.status_code})"
                )
            self._check(response, ref.host, f"{what} (status)", (204, 200))
            moved = response.headers.get("Location")
            held = _range_end(response.headers.get("Range"))
        return (response.url.join(moved) if moved else location), held or 0

    def _cancel_upload(self, ref: Reference, location: httpx.URL, scope: str, what: str) -> None:
        with contextlib.suppress(RegistryError):
            response = self._request(
                "DELETE", location, ref, scope=scope, what=f"{what} (cancel)", retry=False
            )
            response.close()

    # -- images --

    def push_layout(
        self, layout: OCILayout, ref: Reference | str, *, top: Descriptor | None = None
    ) -> str:
        """Push an OCI layout's image and return its digest (see `push_image`).

        The image goes under `ref`'s tag if it has one, else by digest only.
        """
        ref = _as_reference(ref)
        tags = (ref.tag,) if ref.tag else ()
        return self.push_image(layout, ref.with_tag(None), tags, top=top).digest

    def push_image(
        self,
        layout: OCILayout,
        repo: Reference | str,
        tags: Sequence[str] = (),
        *,
        top: Descriptor | None = None,
        mount_from: Sequence[str] = (),
        before_tags: Callable[[PushedImage], None] | None = None,
    ) -> PushedImage:
        """Push an OCI layout's image to a repository, then point `tags` at it.

        Every blob reachable from `top` (default: the one image `index.json` names)
        goes first, several at once, each only if the registry lacks it; then the
        manifests by digest, children before the index that lists them; the tags
        last, once everything below them is in the registry. A push that fails
        on the way moves no tag. `before_tags` is called with the image, in the
        registry by digest, just before the tags move (attestations go there); if it
        raises, no tag moves.
        """
        ref = _as_reference(repo)
        for tag in tags:
            if not is_valid_tag(tag):
                raise InputError(f"invalid tag {tag!r}")
        layout.check_layout_file()
        top = top or layout.top_descriptor()
        if not top.is_manifest:
            raise InputError(f"{top.digest} in {layout.path} is a {top.media_type}, not an image")
        if ref.digest and ref.digest != top.digest:
            raise InputError(f"{ref} does not name the layout's image {top.digest}")
        before = replace(self.counters)
        descriptors = list(layout.walk([top]))
        manifests: dict[str, str] = {}
        for descriptor in descriptors:
            if descriptor.is_manifest and descriptor.platform and not descriptor.is_attestation:
                manifests.setdefault(str(descriptor.platform), descriptor.digest)
        if not manifests and not top.is_index:
            manifests.update(_single_platform(layout, top))
        top_data = layout.read_blob(top.digest, top.size, MAX_MANIFEST_SIZE)
        # Already published: every tag names this digest. A registry stores a manifest
        # only when everything it refers to is there, so nothing below is missing.
        unchanged = bool(tags) and all(self._tag_names(ref, t, top.digest) for t in tags)
        if unchanged:
            self._count(images_present=1)
        else:
            self._push_blobs(layout, ref, [d for d in descriptors if not d.is_manifest], mount_from)
            for descriptor in descriptors:
                if descriptor.is_manifest:
                    data = layout.read_blob(descriptor.digest, descriptor.size, MAX_MANIFEST_SIZE)
                    self.put_manifest(ref, descriptor.digest, data, descriptor.media_type)
        if before_tags is not None:
            before_tags(
                PushedImage(
                    repository=ref.name,
                    digest=top.digest,
                    media_type=top.media_type,
                    tags=tuple(tags),
                    manifests=dict(manifests),
                    counters=self.counters.since(before),
                )
            )
        for tag in tags if not unchanged else ():
            self.put_manifest(ref, tag, top_data, top.media_type)
        counters = self.counters.since(before)
        log.info(
            "pushed %s@%s (%d blobs uploaded, %d mounted, %d present)",
            ref.name,
            top.digest,
            counters.blobs_uploaded,
            counters.blobs_mounted,
            counters.blobs_present,
        )
        return PushedImage(
            repository=ref.name,
            digest=top.digest,
            media_type=top.media_type,
            tags=tuple(tags),
            manifests=manifests,
            counters=counters,
        )

    def _tag_names(self, ref: Reference, tag: str, digest: str) -> bool:
        """Whether `ref`'s repository has `tag` pointing at `digest` (a 404 is no)."""
        try:
            return self.resolve(ref.with_tag(tag).with_digest(None)).digest == digest
        except DigestMismatch:
            return False
        except RegistryError as exc:
            if "not found" in str(exc):
                return False
            raise

    def _push_blobs(
        self,
        layout: OCILayout,
        ref: Reference,
        blobs: Sequence[Descriptor],
        mount_from: Sequence[str],
    ) -> None:
        """Push blobs, PUSH_PARALLEL at a time; the first failure stops the rest."""
        failed = threading.Event()

        def push(descriptor: Descriptor) -> None:
            if failed.is_set():
                return
            try:
                self._push_layout_blob(layout, ref, descriptor, mount_from)
            except BaseException:
                failed.set()
                raise

        if len(blobs) <= 1:
            for descriptor in blobs:
                push(descriptor)
            return
        # Biggest first, so that the last to finish is not a big one started late.
        ordered = sorted(blobs, key=lambda d: -d.size)
        with ThreadPoolExecutor(max_workers=min(PUSH_PARALLEL, len(ordered))) as pool:
            futures = [pool.submit(push, d) for d in ordered]
            try:
                for future in futures:
                    future.exception()  # waits; an interrupt here stops what has not started
            except BaseException:
                failed.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def _push_layout_blob(
        self,
        layout: OCILayout,
        ref: Reference,
        descriptor: Descriptor,
        mount_from: Sequence[str] = (),
    ) -> bool:
        path = layout.blob_path(descriptor.digest)
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise InputError(
                f"blob {descriptor.digest} is missing from OCI layout {layout.path}"
            ) from None
        with stream:
            actual = os.fstat(stream.fileno()).st_size
            if actual != descriptor.size:
                raise DigestMismatch(
                    f"blob {descriptor.digest} in OCI layout {layout.path} has {actual} bytes, "
                    f"expected {descriptor.size}"
                )
            return self.push_blob(
                ref, descriptor.digest, descriptor.size, stream, mount_from=mount_from
            )

    # -- referrers and tags (attestations) --

    def referrers(
        self, repo: Reference | str, digest: str, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """The manifests whose `subject` is `digest`, from the OCI 1.1 referrers API, or
        None when the registry has none (404, as distribution 2.8, GHCR, Docker Hub):
        the probe itself, rather than a header, says which."""
        ref = _as_reference(repo)
        if not is_digest(digest):
            raise InputError(f"invalid digest {digest!r}")
        url: str | httpx.URL = self._url(ref, "referrers", digest)
        if artifact_type:
            url = httpx.URL(url, params={"artifactType": artifact_type})
        found: list[Descriptor] = []
        what = f"list referrers of {ref.name}@{digest}"
        for page in range(100):
            response = self._request(
                "GET",
                url,
                ref,
                scope=f"repository:{ref.repository}:pull",
                what=what,
                headers={"Accept": MEDIA_TYPE_OCI_INDEX},
            )
            with contextlib.closing(response):
                if response.status_code == 404 and page == 0:
                    return None
                self._check(response, ref.host, what, (200,))
                if _media_type(response) != MEDIA_TYPE_OCI_INDEX and page == 0:
                    return None  # something answered, but not the referrers API
                doc = parse_json_document(response.read(), what)
                link = response.headers.get("Link")
            for i, item in enumerate(doc.get("manifests") or []):
                found.append(Descriptor.from_json(item, f"{what}: manifests[{i}]"))
            if not link:
                break
            url = response.url.join(link.split(";", 1)[0].strip().strip("<>"))
        return found

    def list_tags(self, repo: Reference | str) -> list[str]:
        """Every tag of a repository (following pagination); [] when it has none."""
        ref = _as_reference(repo)
        url: str | httpx.URL = f"{self.base_url(ref.host)}/{ref.repository}/tags/list?n=1000"
        what = f"list tags of {ref.name}"
        tags: list[str] = []
        for _page in range(1000):
            response = self._request(
                "GET", url, ref, scope=f"repository:{ref.repository}:pull", what=what
            )
            with contextlib.closing(response):
                if response.status_code == 404:
                    return tags
                self._check(response, ref.host, what, (200,))
                doc = parse_json_document(response.read(), what)
                link = response.headers.get("Link")
            tags.extend(t for t in doc.get("tags") or [] if isinstance(t, str))
            if not link:
                break
            url = response.url.join(link.split(";", 1)[0].strip().strip("<>"))
        return tags


def _single_platform(layout: OCILayout, top: Descriptor) -> dict[str, str]:
    """{platform: digest} for a layout whose top is one image manifest."""
    from repro.oci import Platform, read_config, read_manifest

    try:
        config = read_config(layout, read_manifest(layout, top))[1]
        return {str(Platform.from_json(config, f"config of {top.digest}")): top.digest}
    except (InputError, DigestMismatch, OSError):
        return {"": top.digest}


def _range_end(value: str | None) -> int | None:
    """The byte count an upload's `Range: 0-<last>` header says the registry holds.

    Distribution answers `0-0` for an empty upload as well as for one byte; callers
    only compare it with chunk boundaries, where the difference does not arise.
    """
    if not value:
        return None
    match = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", value)
    if not match:
        return None
    last = int(match.group(1))
    return 0 if last == 0 else last + 1


class _Chunk:
    """One PATCH body: bytes [offset, end) of the blob, hashed as they are sent.

    Each call of `body` starts from `offset` again with a copy of the hash so far,
    so a body resent after a 401 is hashed once; `hashed` is the last call's hash.
    """

    def __init__(self, stream: IO[bytes], start: int, offset: int, end: int, hashed: Any) -> None:
        self.stream, self.start, self.offset, self.end = stream, start, offset, end
        self.base = hashed
        self.hashed = hashed.copy()

    def body(self) -> Iterator[bytes]:
        self.hashed = self.base.copy()
        self.stream.seek(self.start + self.offset)
        return self._read(self.hashed)

    def _read(self, hashed: Any) -> Iterator[bytes]:
        remaining = self.end - self.offset
        while remaining > 0:
            data = self.stream.read(min(CHUNK_SIZE, remaining))
            if not data:
                raise DigestMismatch("the blob's file is shorter than its descriptor says")
            hashed.update(data)
            remaining -= len(data)
            yield data


def _rehash(
    stream: IO[bytes], start: int, offset: int, algorithm: str, chunk: _Chunk, hashed: Any
) -> Any:
    """The hash of the blob's first `offset` bytes, reusing what is already hashed."""
    if offset == chunk.offset:
        return hashed
    result = hashlib.new(algorithm)
    stream.seek(start)
    remaining = offset
    while remaining > 0:
        data = stream.read(min(CHUNK_SIZE, remaining))
        if not data:
            raise DigestMismatch("the blob's file is shorter than its descriptor says")
        result.update(data)
        remaining -= len(data)
    return result
