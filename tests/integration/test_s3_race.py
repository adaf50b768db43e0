"""A delete by digest on one replica racing a push of the same manifest on another.

registry 2.8 deletes the manifest's revision link, then untags every tag it finds. A push to the
other replica writes the revision link, then the tag. When the delete falls between those two
writes, the new tag points at a manifest the registry no longer knows: a dangling tag, although
the push answered 201 (measured: 3 in 200 rounds across two replicas on Ceph; 0 through one
replica, where the proxy's per-repository lock orders the two). The proxy verifies each push by
tag and repairs it (manifestguard.py). Here the race is made certain: the S3 write of the new tag
is held until the delete has finished.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from bench.ceph import Ceph
from live import ADMIN, READER, http
from mreg_proxy.spec.names import ACCEPT_ALL, OCI_MANIFEST
from registry_calls import manifest_url, push_tiny
from s3hold import S3Hold
from s3live import replicas_on
from test_s3_replicas import WAIT

pytestmark = pytest.mark.integration

REPO = "race/app"


def test_push_racing_a_delete_by_digest_on_the_other_replica_leaves_no_dangling_tag(ceph: Ceph, tmp_path: Path) -> None:
    with replicas_on(ceph, tmp_path, "race", count=1) as group:
        with S3Hold(group.s3.endpoint) as s3hold:
            group.members.append(group.start(1, replace(group.s3, endpoint=s3hold.url)))
            a, b = group.a, group.b
            digest = push_tiny(a, REPO, ["old"], seed="race")
            status, _, manifest = http("GET", manifest_url(a, REPO, "old"), auth=READER, headers={"Accept": ACCEPT_ALL})
            assert status == 200

            s3hold.hold(f"/repositories/{REPO}/_manifests/tags/new/")
            answer: dict[str, int] = {}
            push = threading.Thread(target=lambda: answer.update(status=http(
                "PUT", manifest_url(b, REPO, "new"), auth=ADMIN, data=manifest, headers={"Content-Type": OCI_MANIFEST}
            )[0]))
            push.start()
            try:
                assert s3hold.held.wait(WAIT), "the push never wrote its tag"
                # b has written the revision link and is about to write the tag: delete now
                status, _, body = http("DELETE", manifest_url(a, REPO, digest), auth=ADMIN)
                assert status == 202, body
            finally:
                s3hold.release()
                push.join(WAIT)
            assert answer.get("status") == 201

            status, _, body = http("GET", f"{a.url}/v2/{REPO}/tags/list", auth=READER)
            tags = json.loads(body).get("tags") or [] if status == 200 else []
            resolved = http("HEAD", manifest_url(a, REPO, "new"), auth=READER, headers={"Accept": ACCEPT_ALL})
            # pushed last, so the tag must stand, and resolve
            assert "new" in tags
            assert resolved[0] == 200, "the pushed tag dangles: listed, but its manifest is gone"
            assert resolved[1]["Docker-Content-Digest"] == digest
