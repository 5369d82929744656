"""An in-memory OCI registry behind httpx.MockTransport, for unit tests of pure logic.

It answers what the distribution spec says a registry answers: blobs (HEAD, GET,
POST + PUT uploads), manifests by tag or digest (with ETag, and If-Match honoured
when `conditional`), tags/list, and, when `referrers_api`, the OCI 1.1 referrers
API computed from the stored manifests' `subject` (filtered by `artifactType`).
Without it, /referrers/ is a 404 as on distribution 2.8. Every request is recorded
in `log` as "METHOD path".
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable

import httpx

_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?P<kind>blobs|manifests|referrers|tags)/(?P<rest>.*)$")


class FakeRegistry:
    def __init__(self, *, referrers_api: bool = False, conditional: bool = False) -> None:
        self.referrers_api = referrers_api
        self.conditional = conditional
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, digest)
        self.tags: dict[tuple[str, str], str] = {}  # (repo, tag) -> digest
        self.uploads: dict[str, bytes] = {}
        self.log: list[str] = []
        # Called after each manifest PUT by tag (repo, tag): lets a test play a second
        # writer that overwrites the tag right after ours.
        self.after_tag_put: Callable[[str, str], None] | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def put_tag(self, repo: str, tag: str, data: bytes, media_type: str) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.manifests[(repo, digest)] = (data, media_type)
        self.tags[(repo, tag)] = digest
        return digest

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append(f"{request.method} {path}")
        match = _PATH.match(path)
        if not match:
            return httpx.Response(404)
        repo, kind, rest = match["repo"], match["kind"], match["rest"]
        if kind == "blobs":
            return self._blobs(request, repo, rest)
        if kind == "manifests":
            return self._manifests(request, repo, rest)
        if kind == "tags":
            names = sorted(t for (r, t) in self.tags if r == repo)
            return httpx.Response(200, json={"name": repo, "tags": names})
        if not self.referrers_api:
            return httpx.Response(404)
        wanted = request.url.params.get("artifactType")
        found = []
        for (r, digest), (data, media_type) in sorted(self.manifests.items()):
            doc = json.loads(data)
            if r != repo or (doc.get("subject") or {}).get("digest") != rest:
                continue
            artifact_type = doc.get("artifactType") or doc.get("config", {}).get("mediaType")
            if wanted and artifact_type != wanted:
                continue
            entry = {
                "mediaType": media_type,
                "digest": digest,
                "size": len(data),
                "artifactType": artifact_type,
            }
            if doc.get("annotations"):
                entry["annotations"] = doc["annotations"]
            found.append(entry)
        body = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": found,
        }
        return httpx.Response(
            200, json=body, headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}
        )

    def _blobs(self, request: httpx.Request, repo: str, rest: str) -> httpx.Response:
        if rest == "uploads/" and request.method == "POST":
            upload = str(uuid.uuid4())
            self.uploads[upload] = b""
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{upload}"})
        if rest.startswith("uploads/") and request.method == "PUT":
            upload = rest.removeprefix("uploads/")
            data = self.uploads.pop(upload) + request.read()
            digest = request.url.params["digest"]
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = data
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        data = self.blobs.get(rest)
        if data is None:
            return httpx.Response(404)
        headers = {"Content-Length": str(len(data)), "Docker-Content-Digest": rest}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, content=data, headers=headers)

    def _manifests(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        digest = ref if ref.startswith("sha256:") else self.tags.get((repo, ref))
        if request.method == "PUT":
            data = request.read()
            new = "sha256:" + hashlib.sha256(data).hexdigest()
            match = request.headers.get("If-Match")
            if self.conditional and match and match != f'"{digest}"':
                return httpx.Response(412)
            self.manifests[(repo, new)] = (data, request.headers["Content-Type"])
            if not ref.startswith("sha256:"):
                self.tags[(repo, ref)] = new
                if self.after_tag_put is not None:
                    hook, self.after_tag_put = self.after_tag_put, None
                    hook(repo, ref)
            return httpx.Response(201, headers={"Docker-Content-Digest": new})
        if digest is None or (repo, digest) not in self.manifests:
            return httpx.Response(404)
        data, media_type = self.manifests[(repo, digest)]
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": digest,
            "Content-Length": str(len(data)),
            "ETag": f'"{digest}"',
        }
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, content=data, headers=headers)
