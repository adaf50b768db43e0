"""A registry 2.8 look-alike in memory, for the tests of immutable tags, retention and collection.

It keeps manifests per repository (by digest) and tags pointing at them, answers the manifest,
tag list, catalog and blob upload endpoints the proxy's own flows use, and behaves like
registry 2.8 where it matters: a delete by tag is 400, a delete by digest takes every tag
pointing at the digest with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from aiohttp import web

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Repository:
    manifests: dict[str, bytes] = field(default_factory=dict)  # digest -> body
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


STATE = web.AppKey("state", dict)
LOG = web.AppKey("log", list)


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def image(seed: str, layer_size: int = 1000) -> bytes:
    """A small image manifest, unique per ``seed``, with one layer of ``layer_size`` bytes."""
    layer = "sha256:" + hashlib.sha256(f"layer {seed}".encode()).hexdigest()
    config = "sha256:" + hashlib.sha256(f"config {seed}".encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 100},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    }).encode()


def _errors(status: int, code: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"errors": [{"code": code, "message": code}]}),
                        content_type="application/json")


async def manifest(request: web.Request) -> web.Response:
    state: dict[str, Repository] = request.app[STATE]
    name, reference = request.match_info["name"], request.match_info["reference"]
    request.app[LOG].append((request.method, name, reference))
    if request.method == "PUT":
        body = await request.read()
        digest = digest_of(body)
        repo = state.setdefault(name, Repository())
        repo.manifests[digest] = body
        if not reference.startswith("sha256:"):
            repo.tags[reference] = digest
        return web.Response(status=201, headers={"Docker-Content-Digest": digest})
    repo = state.get(name)
    if repo is None:
        return _errors(404, "NAME_UNKNOWN")
    if request.method == "DELETE":
        if not reference.startswith("sha256:"):
            return _errors(400, "DIGEST_INVALID")
        if repo.manifests.pop(reference, None) is None:
            return _errors(404, "MANIFEST_UNKNOWN")
        repo.tags = {tag: d for tag, d in repo.tags.items() if d != reference}
        return web.Response(status=202)
    digest = reference if reference.startswith("sha256:") else repo.tags.get(reference)
    if digest is None or digest not in repo.manifests:
        return _errors(404, "MANIFEST_UNKNOWN")
    body = repo.manifests[digest]
    media_type = json.loads(body).get("mediaType", OCI_MANIFEST)
    headers = {"Docker-Content-Digest": digest, "Content-Type": media_type}
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Length": str(len(body))})
    return web.Response(status=200, body=body, headers=headers)


async def tags_list(request: web.Request) -> web.Response:
    repo = request.app[STATE].get(request.match_info["name"])
    if repo is None:
        return _errors(404, "NAME_UNKNOWN")
    return web.json_response({"name": request.match_info["name"], "tags": list(repo.tags) or None})


async def catalog(request: web.Request) -> web.Response:
    return web.json_response({"repositories": sorted(request.app[STATE])})


async def start_upload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.Response(status=202, headers={"Location": f"/v2/{name}/blobs/uploads/u1?_state=x"})


async def finish_upload(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=201)


def make_registry() -> web.Application:
    app = web.Application()
    app[STATE] = {}
    app[LOG] = []
    name = r"{name:[a-z0-9._/-]+?}"
    app.router.add_get("/v2/_catalog", catalog)
    app.router.add_route("*", f"/v2/{name}/manifests/{{reference}}", manifest)
    app.router.add_get(f"/v2/{name}/tags/list", tags_list)
    app.router.add_post(f"/v2/{name}/blobs/uploads/", start_upload)
    app.router.add_put(f"/v2/{name}/blobs/uploads/{{uuid}}", finish_upload)
    return app


def store(app: web.Application, name: str, tag: str, body: bytes) -> str:
    """Put a manifest straight into the fake (as if pushed earlier); returns its digest."""
    repo = app[STATE].setdefault(name, Repository())
    digest = digest_of(body)
    repo.manifests[digest] = body
    repo.tags[tag] = digest
    return digest
