"""A small in-memory registry for the web page's unit tests: catalog, tags, manifests, blobs and
deletes by tag (the OCI 1.1 way, as distribution 3 answers them)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
STORE = web.AppKey("store", dict)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Images:
    """Repositories: name -> {"tags": {tag: digest}, "blobs": {digest: (media type, bytes)}}."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, Any]]] = {}

    def repo(self, name: str) -> dict[str, dict[str, Any]]:
        return self.repos.setdefault(name, {"tags": {}, "blobs": {}})

    def blob(self, name: str, data: bytes, media_type: str = "application/octet-stream") -> dict[str, Any]:
        digest = digest_of(data)
        self.repo(name)["blobs"][digest] = (media_type, data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, name: str, tag: str | None, *, config: dict[str, Any] | None = None, layers: int = 1,
              annotations: dict[str, str] | None = None, subject: str | None = None, artifact_type: str | None = None) -> str:
        conf = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z", **(config or {})}
        doc: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": self.blob(name, json.dumps(conf).encode(), OCI_CONFIG),
            "layers": [self.blob(name, f"layer {i} of {tag} {json.dumps(conf)}".encode(), "application/vnd.oci.image.layer.v1.tar+gzip") for i in range(layers)],
        }
        if annotations:
            doc["annotations"] = annotations
        if artifact_type:
            doc["artifactType"] = artifact_type
        if subject:
            doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        return self.put_manifest(name, tag, doc, OCI_MANIFEST)

    def put_manifest(self, name: str, tag: str | None, doc: dict[str, Any], media_type: str) -> str:
        data = json.dumps(doc).encode()
        digest = self.blob(name, data, media_type)["digest"]
        if tag:
            self.repo(name)["tags"][tag] = digest
        return digest


async def catalog(request: web.Request) -> web.Response:
    names = sorted(request.app[STORE]["images"].repos)
    last = request.query.get("last")
    n = int(request.query.get("n", "1000"))
    after = [x for x in names if last is None or x > last][:n]
    return web.json_response({"repositories": after})


async def tags(request: web.Request) -> web.Response:
    repo = request.app[STORE]["images"].repos.get(request.match_info["name"])
    if repo is None:
        return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
    return web.json_response({"name": request.match_info["name"], "tags": list(repo["tags"])})


async def manifest(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store["requests"].append((request.method, request.path))
    repo = store["images"].repos.get(request.match_info["name"])
    reference = request.match_info["reference"]
    if repo is None:
        return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
    digest = repo["tags"].get(reference, reference)
    if request.method == "DELETE":
        if reference not in repo["tags"]:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        del repo["tags"][reference]
        return web.Response(status=202)
    if digest not in repo["blobs"]:
        return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
    media_type, data = repo["blobs"][digest]
    return web.Response(body=data, headers={"Content-Type": media_type, "Docker-Content-Digest": digest})


async def blob(request: web.Request) -> web.Response:
    repo = request.app[STORE]["images"].repos.get(request.match_info["name"])
    found = repo and repo["blobs"].get(request.match_info["digest"])
    if not found:
        return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
    return web.Response(body=found[1], content_type="application/octet-stream")


def make_app(images: Images) -> web.Application:
    app = web.Application()
    app[STORE] = {"images": images, "requests": []}
    app.router.add_get("/v2/_catalog", catalog)
    app.router.add_get("/v2/{name:.+}/tags/list", tags)
    app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", manifest)
    app.router.add_get("/v2/{name:.+}/blobs/{digest}", blob)
    return app
