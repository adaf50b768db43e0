"""Per-repository grants, CI tokens and anonymous pulls against the real registry with real clients.

One proxy of its own (its users file, its audit log) in front of the session's registry; every
repository here lives under the acl-* namespaces, so what other modules push does not matter.
Users: bob (no role, push on acl-team/*), eve (reader, but nothing under acl-team/**); anonymous
clients may pull acl-public/**. Grants and tokens are set with manage-user, while the proxy runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.services import start_proxy, stop
from helpers import make_user, require_tool
from imagegen import layout_digest, make_oci_layout, rootfs_tar
from live import ADMIN, Mreg, Registry, http, manage_user, run, token_secret
from mreg_proxy.auth.audit import read_events
from mreg_proxy.spec.names import ACCEPT_ALL
from mreg_proxy.auth.users import read_store, write_store
from registry_calls import push_tiny

pytestmark = pytest.mark.integration

BOB = ("bob", "bob-Secret1")
EVE = ("eve", "eve-Secret2")


@dataclasses.dataclass
class Guarded(Mreg):
    users_file: Path  # what manage-user edits here; the audit log and token-usage.json are beside it


@pytest.fixture(scope="module")
def guarded(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    users = {u.name: u for u in (make_user(*ADMIN, role="admin"), make_user(*EVE))}
    workdir = tmp_path_factory.mktemp("acl")
    service = start_proxy(registry.url, workdir, users)
    mreg = Guarded(service.url.removeprefix("http://"), service.url, workdir / "users.yml")
    try:
        for args, stdin in [
            (["add", BOB[0], "--role", "none"], BOB[1] + "\n"),
            (["grant", BOB[0], "acl-team/*", "push"], ""),
            (["grant", EVE[0], "acl-team/**", "none"], ""),
            (["grant", "--anonymous", "acl-public/**", "pull"], ""),
        ]:
            done = manage_user(mreg.users_file, *args, stdin=stdin)
            assert done.returncode == 0, done.stderr
        yield mreg
    finally:
        stop(service.process)


def events(mreg: Guarded, event: str) -> list[dict[str, Any]]:
    return [e for e in read_events(mreg.users_file.with_name("audit.log")) if e["event"] == event]


class Podman:
    """podman with storage of its own (vfs, in a temporary folder) and its own auth file."""

    def __init__(self, base: Path) -> None:
        self.binary = require_tool("podman")
        self.base = base
        self.authfile = base / "auth.json"

    def __call__(self, *args: str, stdin: str | None = None) -> Any:
        storage = ["--root", str(self.base / "root"), "--runroot", str(self.base / "run"), "--storage-driver", "vfs"]
        env = {**os.environ, "REGISTRY_AUTH_FILE": str(self.authfile)}
        return run([self.binary, *storage, *args], input=stdin, env=env)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    base = Path(run(["mktemp", "-d", "/tmp/mreg-acl-podman.XXXXXX"]).stdout.strip())
    try:
        yield Podman(base)
    finally:
        Podman(base)("rmi", "--all", "--force")
        run(["rm", "-rf", str(base)])


def podman_image(podman: Podman, tmp_path: Path, ref: str) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs_tar(rootfs, 1 << 20, seed=7)
    done = podman("import", str(rootfs), ref)
    assert done.returncode == 0, done.stderr


def test_podman_pushes_where_its_grant_allows_and_is_refused_elsewhere(guarded: Guarded, podman: Podman, tmp_path: Path) -> None:
    login = podman("login", "--tls-verify=false", "-u", BOB[0], "--password-stdin", guarded.host, stdin=BOB[1] + "\n")
    assert login.returncode == 0, login.stderr
    ref = f"{guarded.host}/acl-team/app:1"
    podman_image(podman, tmp_path, ref)
    push = podman("push", "--tls-verify=false", ref)
    assert push.returncode == 0, push.stderr
    assert len([e for e in events(guarded, "manifest_pushed") if e["repository"] == "acl-team/app"]) == 1
    for other in ("acl-other/app:1", "acl-team/a/b:1"):
        target = f"{guarded.host}/{other}"
        assert podman("tag", ref, target).returncode == 0
        refused = podman("push", "--tls-verify=false", target)
        assert refused.returncode != 0
        assert "requested access to the resource is denied: user 'bob' may not push" in refused.stderr, refused.stderr
    # live: a revoked grant stops the next push, no restart
    assert manage_user(guarded.users_file, "revoke", BOB[0], "acl-team/*").returncode == 0
    try:
        assert podman("push", "--tls-verify=false", ref).returncode != 0
    finally:
        assert manage_user(guarded.users_file, "grant", BOB[0], "acl-team/*", "push").returncode == 0


def test_anonymous_podman_pull_of_a_public_repository_works_and_of_a_private_one_is_refused(
    guarded: Guarded, podman: Podman
) -> None:
    admin_creds = ":".join(ADMIN)
    push_image(guarded, "acl-public/base:1", admin_creds)
    push_image(guarded, "acl-team/private:1", admin_creds)
    podman.authfile.write_text("{}")  # no credentials at all
    pulled = podman("pull", "--tls-verify=false", f"{guarded.host}/acl-public/base:1")
    assert pulled.returncode == 0, pulled.stderr
    refused = podman("pull", "--tls-verify=false", f"{guarded.host}/acl-team/private:1")
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "authentication required" in refused.stderr.lower()
    # anonymous clients never write, even where they may read
    status, headers, _ = http("POST", f"{guarded.url}/v2/acl-public/base/blobs/uploads/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")


def push_image(mreg: Mreg, ref: str, creds: str, seed: int = 3) -> tuple[Any, Path]:
    skopeo = require_tool("skopeo")
    layout = Path(run(["mktemp", "-d", "/tmp/mreg-acl-layout.XXXXXX"]).stdout.strip()) / "img"
    make_oci_layout(layout, [256 << 10], seed=seed)
    done = run([skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:latest", f"docker://{mreg.host}/{ref}"])
    return done, layout


def test_a_token_pushes_with_skopeo_within_its_grants_until_expired_or_removed(guarded: Guarded) -> None:
    secret = token_secret(manage_user(guarded.users_file, "token", "add", "acl-ci", "--grant", "acl-team/ci=push", "--expires", "1d"))
    creds = f"acl-ci:{secret}"
    done, layout = push_image(guarded, "acl-team/ci:1", creds)
    assert done.returncode == 0, done.stderr
    skopeo = require_tool("skopeo")
    inspect = [skopeo, "inspect", "--tls-verify=false", "--creds", creds, "--format", "{{.Digest}}", f"docker://{guarded.host}/acl-team/ci:1"]
    assert run(inspect).stdout.strip() == layout_digest(layout)
    refused, _ = push_image(guarded, "acl-team/other:1", creds)
    assert refused.returncode != 0 and "denied" in refused.stderr.lower()
    used = json.loads(guarded.users_file.with_name("token-usage.json").read_text())
    assert "acl-ci" in used
    # expired (the file edited as a clock moved past it would be): 401 from then on
    store = read_store(guarded.users_file)
    token = store.tokens["acl-ci"]
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    write_store(guarded.users_file, dataclasses.replace(store, tokens={**store.tokens, "acl-ci": dataclasses.replace(token, expires=past)}))
    expired = run(inspect)
    assert expired.returncode != 0 and "unauthorized" in expired.stderr.lower(), expired.stderr
    assert "token expired" in [e.get("reason") for e in events(guarded, "login_failed") if e.get("user") == "acl-ci"]
    write_store(guarded.users_file, store)
    assert run(inspect).returncode == 0
    assert manage_user(guarded.users_file, "token", "rm", "acl-ci").returncode == 0
    assert run(inspect).returncode != 0


def catalog(mreg: Mreg, auth: tuple[str, str] | None, n: int = 2) -> list[str]:
    names, url = [], f"{mreg.url}/v2/_catalog?n={n}"
    for _ in range(10_000):
        status, headers, body = http("GET", url, auth=auth)
        assert status == 200, body
        names += json.loads(body)["repositories"]
        if "Link" not in headers:
            return names
        url = mreg.url + headers["Link"].split(">")[0].lstrip("<")
    raise AssertionError("catalog paging never ended")


def test_catalog_shows_each_caller_exactly_what_it_may_pull(guarded: Guarded) -> None:
    for repo in ("acl-team/cat1", "acl-team/cat2", "acl-team/deep/cat", "acl-other/cat", "acl-public/cat"):
        push_tiny(guarded, repo, ["1"])
    everything = catalog(guarded, ADMIN, n=1000)
    assert {"acl-team/cat1", "acl-other/cat", "acl-public/cat"} <= set(everything)
    assert catalog(guarded, BOB) == [r for r in everything if r.startswith("acl-team/") and r.count("/") == 1]
    assert catalog(guarded, EVE) == [r for r in everything if not r.startswith("acl-team/")]
    assert catalog(guarded, None) == [r for r in everything if r.startswith("acl-public/")]
    secret = token_secret(manage_user(guarded.users_file, "token", "add", "acl-cat", "--grant", "acl-team/cat2=pull"))
    try:
        assert catalog(guarded, ("acl-cat", secret)) == ["acl-team/cat2"]
    finally:
        manage_user(guarded.users_file, "token", "rm", "acl-cat")


def test_a_hidden_repository_answers_exactly_like_a_missing_one(guarded: Guarded) -> None:
    digest = push_tiny(guarded, "acl-team/hidden", ["1"])
    for path in ("manifests/1", f"manifests/{digest}", f"blobs/{digest}", "tags/list"):
        hidden = http("GET", f"{guarded.url}/v2/acl-team/hidden/{path}", auth=EVE, headers={"Accept": ACCEPT_ALL})
        missing = http("GET", f"{guarded.url}/v2/acl-nothing/hidden/{path}", auth=EVE, headers={"Accept": ACCEPT_ALL})
        assert hidden[0] == missing[0] == 404, path
        assert hidden[2] == missing[2].replace(b"acl-nothing/hidden", b"acl-team/hidden"), path
        assert hidden[1]["Content-Type"] == missing[1]["Content-Type"]


def test_a_mount_from_a_repository_the_user_cannot_read_does_not_share_the_blob(guarded: Guarded) -> None:
    blob = b"secret layer " + os.urandom(16)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    status, headers, _ = http("POST", f"{guarded.url}/v2/acl-other/vault/blobs/uploads/", auth=ADMIN)
    assert status == 202
    status, _, _ = http("PUT", f"{headers['Location']}&digest={digest}", auth=ADMIN, data=blob,
                        headers={"Content-Type": "application/octet-stream"})
    assert status == 201
    mount = f"{guarded.url}/v2/acl-team/app/blobs/uploads/?mount={digest}&from=acl-other/vault"
    status, headers, _ = http("POST", mount, auth=BOB)
    assert status == 202 and "/blobs/uploads/" in headers["Location"]  # a plain upload, no mount
    assert http("HEAD", f"{guarded.url}/v2/acl-team/app/blobs/{digest}", auth=ADMIN)[0] == 404
    assert [e["source"] for e in events(guarded, "mount_refused")] == ["acl-other/vault"]
    # with pull on the source, the same request mounts
    assert manage_user(guarded.users_file, "grant", BOB[0], "acl-other/vault", "pull").returncode == 0
    try:
        assert http("POST", mount, auth=BOB)[0] == 201
        assert http("HEAD", f"{guarded.url}/v2/acl-team/app/blobs/{digest}", auth=ADMIN)[0] == 200
    finally:
        manage_user(guarded.users_file, "revoke", BOB[0], "acl-other/vault")


def test_every_event_lands_once_in_the_audit_log(guarded: Guarded) -> None:
    digest = push_tiny(guarded, "acl-team/audited", ["v1", "v2"])
    assert http("DELETE", f"{guarded.url}/v2/acl-team/audited/manifests/v1", auth=ADMIN)[0] == 202
    assert http("GET", f"{guarded.url}/v2/", auth=("bob", "wrong"))[0] == 401
    assert http("DELETE", f"{guarded.url}/v2/acl-team/audited/manifests/v2", auth=BOB)[0] == 403
    pushed = [e for e in events(guarded, "manifest_pushed") if e["repository"] == "acl-team/audited"]
    assert [(e["tag"], e["digest"], e["user"]) for e in pushed] == [("v1", digest, "admin"), ("v2", digest, "admin")]
    deleted = [e for e in events(guarded, "manifest_deleted") if e["repository"] == "acl-team/audited"]
    assert [(e["tag"], e["user"]) for e in deleted] == [("v1", "admin")]
    assert len([e for e in events(guarded, "login_failed") if e.get("user") == "bob"]) == 1
    denied = [e for e in events(guarded, "denied") if e.get("repository") == "acl-team/audited"]
    assert [(e["user"], e["action"], e["access"]) for e in denied] == [("bob", "delete", "push")]
    granted = [e for e in events(guarded, "grant") if e.get("user") == "bob" and e["pattern"] == "acl-team/*"]
    assert granted and all(e["by"] == "tests" for e in granted)
