"""Referrers (OCI 1.1) with two replicas on one S3 bucket: the index one replica keeps is the
index the other answers from, delete and prune included, and mreg-manage sees it as on a folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ceph import Ceph
from live import ADMIN, READER, http
from registry_calls import artifact, digest_of, manifest_url, push_tiny, tag_list
from s3live import Replicas, bucket_env, operator_env, replicas_on
from test_manage import manage
from test_oci import digests, fallback_index, referrers

pytestmark = pytest.mark.integration


def index_tag(digest: str) -> str:
    return "sha256-" + digest.removeprefix("sha256:")


def test_a_referrer_pushed_through_one_is_listed_through_the_other(replicas: Replicas) -> None:
    repo = "team/signed"
    image = push_tiny(replicas.a, repo, ["v1"])
    signature, oci_subject = artifact(replicas.a, repo, image, note="through a")
    assert oci_subject == image
    status, _, index = referrers(replicas.b, repo, image)
    assert status == 200 and digests(index) == [signature["_digest"]]
    assert digests(fallback_index(replicas.b, repo, image) or {"manifests": []}) == [signature["_digest"]]
    assert index_tag(image) in tag_list(replicas.b, repo)


def test_a_referrer_deleted_through_one_leaves_the_index_of_the_other(replicas: Replicas) -> None:
    repo = "team/unsigned"
    image = push_tiny(replicas.a, repo, ["v1"])
    doomed, _ = artifact(replicas.a, repo, image, note="doomed")
    kept, _ = artifact(replicas.a, repo, image, note="kept")
    status, _, body = http("DELETE", manifest_url(replicas.b, repo, doomed["_digest"]), auth=ADMIN)
    assert status == 202, body
    assert digests(referrers(replicas.a, repo, image)[2]) == [kept["_digest"]]
    assert digests(fallback_index(replicas.a, repo, image) or {"manifests": []}) == [kept["_digest"]]


def test_manage_ls_through_the_other_hides_the_index_tags(replicas: Replicas, tmp_path: Path) -> None:
    repo = "team/listed"
    image = push_tiny(replicas.a, repo, ["v1"])
    artifact(replicas.a, repo, image, note="one")
    artifact(replicas.a, repo, image, note="two")
    env = operator_env(tmp_path, replicas.a, replicas.b)
    result = manage("--plain-http", "ls", f"{replicas.b.host}/{repo}", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"v1  {image}  2 referrers"]
    everything = manage("--plain-http", "ls", replicas.b.host, env=env)
    assert everything.returncode == 0, everything.stderr
    assert f"{repo}:v1" in everything.stdout.splitlines()
    assert f"{repo}:{index_tag(image)}" not in everything.stdout
    shown = manage("--plain-http", "ls", "--all", f"{replicas.b.host}/{repo}", env=env)
    assert [line.split()[0] for line in shown.stdout.splitlines()] == sorted([index_tag(image), "v1"])


def test_prune_on_the_bucket_keeps_the_referrers_of_a_kept_image_only(ceph: Ceph, tmp_path: Path) -> None:
    repo = "team/app"
    with replicas_on(ceph, tmp_path, "refprune") as group:
        a, b = group.a, group.b
        kept = push_tiny(a, repo, ["kept"], seed="kept")
        kept_signature, _ = artifact(a, repo, kept, note="kept")
        old = push_tiny(b, repo, ["1"], seed="old")
        old_signature, _ = artifact(b, repo, old, note="old")
        new = push_tiny(a, repo, ["1"], seed="new")  # the old image is untagged now
        assert new != old
        old_index = digest_of(b, repo, index_tag(old))
        assert old_index is not None
        pruned = subprocess.run([sys.executable, "-m", "mreg_proxy.storage.prune", "--s3", "--min-age", "0"],
                                env=bucket_env(group.s3), capture_output=True, text=True, timeout=120)
        assert pruned.returncode == 0, pruned.stderr
        forgotten = set(re.findall(r"prune: (\S+) is untagged and nothing tagged refers to it", pruned.stderr))
        assert forgotten == {f"{repo}@{old}", f"{repo}@{old_signature['_digest']}",
                             f"{repo}@{old_index}"}, pruned.stderr
        for replica in (a, b):
            assert tag_list(replica, repo) == sorted(["1", "kept", index_tag(kept)])
            assert digests(referrers(replica, repo, kept)[2]) == [kept_signature["_digest"]]
            assert referrers(replica, repo, old)[2]["manifests"] == []
            status, _, _ = http("HEAD", manifest_url(replica, repo, old_signature["_digest"]), auth=READER)
            assert status == 404
