"""Small registry API calls through the proxy, shared by the integration tests."""

from __future__ import annotations

import hashlib
import json

from live import ADMIN, READER, Mreg, http
from mreg_proxy.spec.names import ACCEPT_ALL, OCI_MANIFEST

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"


def manifest_url(mreg: Mreg, repo: str, reference: str) -> str:
    return f"{mreg.url}/v2/{repo}/manifests/{reference}"


def digest_of(mreg: Mreg, repo: str, tag: str) -> str | None:
    status, headers, _ = http("HEAD", manifest_url(mreg, repo, tag), auth=READER, headers={"Accept": ACCEPT_ALL})
    return headers["Docker-Content-Digest"] if status == 200 else None


def retag(mreg: Mreg, repo: str, source: str, target: str) -> None:
    """Put the manifest of ``source`` under ``target`` too, byte for byte."""
    status, headers, body = http("GET", manifest_url(mreg, repo, source), auth=ADMIN, headers={"Accept": ACCEPT_ALL})
    assert status == 200, (status, body)
    status, _, body = http("PUT", manifest_url(mreg, repo, target), auth=ADMIN, data=body, headers={"Content-Type": headers["Content-Type"]})
    assert status == 201, (status, body)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_blob(mreg: Mreg, repo: str, data: bytes) -> str:
    """One blob, uploaded in one PUT through the HTTP API; its digest."""
    digest = sha256(data)
    status, headers, _ = http("POST", f"{mreg.url}/v2/{repo}/blobs/uploads/", auth=ADMIN)
    assert status == 202
    # a Content-Type of its own: urllib's default (a form) makes the registry read the body as one
    status, _, _ = http("PUT", f"{headers['Location']}&digest={digest}", auth=ADMIN, data=data, headers={"Content-Type": "application/octet-stream"})
    assert status == 201
    return digest


def push_tiny(mreg: Mreg, repo: str, tags: list[str], seed: str = "") -> str:
    """A config-only OCI manifest under every tag in ``tags``, through the HTTP API; its digest."""
    config = json.dumps({"seed": seed or repo}).encode()
    config_digest = upload_blob(mreg, repo, config)
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)}}
    ).encode()
    for tag in tags:
        status, _, _ = http("PUT", manifest_url(mreg, repo, tag), auth=ADMIN, data=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert status == 201
    return sha256(manifest)



def tag_list(mreg: Mreg, repo: str) -> list[str]:
    status, _, body = http("GET", f"{mreg.url}/v2/{repo}/tags/list", auth=READER)
    assert status == 200
    return json.loads(body)["tags"]


def put_manifest(mreg: Mreg, repo: str, reference: str, doc: dict, media_type: str = OCI_MANIFEST) -> tuple[int, dict[str, str], str]:
    body = json.dumps(doc).encode()
    status, headers, answer = http("PUT", manifest_url(mreg, repo, reference), auth=ADMIN, data=body, headers={"Content-Type": media_type})
    assert status == 201, answer
    return status, headers, sha256(body)


def artifact(mreg: Mreg, repo: str, subject: str, subject_type: str = OCI_MANIFEST, *, kind: str = SIGNATURE, note: str = "") -> tuple[dict, str]:
    """A signature-style artifact (artifactType, empty config, one layer) pushed by digest, as oras
    attach does; returns (manifest, response headers' OCI-Subject) and keeps its digest in the doc."""
    empty = upload_blob(mreg, repo, EMPTY)
    payload = f"signed {subject} {note}".encode()
    layer = upload_blob(mreg, repo, payload)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": kind,
        "config": {"mediaType": EMPTY_TYPE, "digest": empty, "size": len(EMPTY)},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": len(payload)}],
        "subject": {"mediaType": subject_type, "digest": subject, "size": 1},
        "annotations": {"org.opencontainers.image.created": "2026-12-02T00:00:00Z", "note": note},
    }
    digest = sha256(json.dumps(doc).encode())
    _, headers, _ = put_manifest(mreg, repo, digest, doc)
    return {**doc, "_digest": digest}, headers.get("OCI-Subject", "")
