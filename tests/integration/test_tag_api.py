"""Single-tag deletion and spec paging of tag lists, against the real registry behind the proxy."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from live import ADMIN, READER, Mreg, error_code, http, run
from helpers import require_tool
from imagegen import make_oci_index_layout, make_oci_layout
from mreg_proxy.spec.names import ACCEPT_ALL
from registry_calls import digest_of, manifest_url, push_tiny, retag, tag_list

pytestmark = pytest.mark.integration


def tags_page(mreg: Mreg, path: str) -> tuple[int, dict[str, str], dict]:
    status, headers, body = http("GET", f"{mreg.url}{path}", auth=READER)
    return status, headers, json.loads(body)


def next_path(headers: dict[str, str]) -> str | None:
    link = headers.get("Link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"')
    return link[1 : link.index(">")]


def walk(mreg: Mreg, path: str, key: str) -> list[list[str]]:
    """Every page, following Link headers (bounded: a loop would fail the test, not hang it)."""
    pages: list[list[str]] = []
    next_page: str | None = path
    for _ in range(100):
        if next_page is None:
            return pages
        status, headers, body = tags_page(mreg, next_page)
        assert status == 200
        pages.append(body[key])
        next_page = next_path(headers)
    raise AssertionError("more than 100 pages")


def pulled_digest(ref: str, out: Path) -> str:
    """Pull with skopeo (every platform, digests kept) and return the digest of what came."""
    skopeo = require_tool("skopeo")
    result = run([skopeo, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--src-creds", ":".join(READER), ref, f"dir:{out}"])
    assert result.returncode == 0, result.stderr
    return "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()


# --- deleting one tag of an OCI image, a Docker schema 2 image, an OCI index, a manifest list ---

def _push_kind(kind: str, mreg: Mreg, base: Path, repo: str) -> None:
    skopeo = require_tool("skopeo")
    layout = base / "layout"
    options = ["--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN)]
    if kind in ("oci-index", "docker-list"):
        make_oci_index_layout(layout, ["linux/amd64", "linux/arm64"])
        options.append("--all")
    else:
        make_oci_layout(layout, [2048], seed=11)
    if kind.startswith("docker-"):
        options += ["--format", "v2s2"]  # with --all, skopeo turns the index into a manifest list
    result = run([skopeo, "copy", *options, f"oci:{layout}:latest", f"docker://{mreg.host}/{repo}:a"])
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module", params=["oci", "docker-v2s2", "oci-index", "docker-list"])
def untagged(request: pytest.FixtureRequest, mreg: Mreg, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """An image pushed as ``:a`` and ``:b``, then ``:a`` deleted: (repo, digest, status of the DELETE)."""
    repo = f"untag/{request.param}"
    _push_kind(request.param, mreg, tmp_path_factory.mktemp(request.param), repo)
    retag(mreg, repo, "a", "b")
    digest = digest_of(mreg, repo, "a")
    assert digest is not None
    status, _, _ = http("DELETE", manifest_url(mreg, repo, "a"), auth=ADMIN)
    return repo, digest, status


def test_tag_delete_answers_202(untagged: tuple[str, str, int]) -> None:
    assert untagged[2] == 202


def test_deleted_tag_is_unknown(untagged: tuple[str, str, int], mreg: Mreg) -> None:
    repo, _, _ = untagged
    status, _, body = http("GET", manifest_url(mreg, repo, "a"), auth=READER, headers={"Accept": ACCEPT_ALL})
    assert (status, error_code(body)) == (404, "MANIFEST_UNKNOWN")


def test_other_tag_pulls_the_same_digest(untagged: tuple[str, str, int], mreg: Mreg, tmp_path: Path) -> None:
    repo, digest, _ = untagged
    assert pulled_digest(f"docker://{mreg.host}/{repo}:b", tmp_path / "pulled") == digest


def test_image_stays_reachable_by_digest(untagged: tuple[str, str, int], mreg: Mreg) -> None:
    repo, digest, _ = untagged
    assert digest_of(mreg, repo, digest) == digest


def test_tag_list_keeps_only_the_other_tag(untagged: tuple[str, str, int], mreg: Mreg) -> None:
    assert tag_list(mreg, untagged[0]) == ["b"]


# --- verdicts and rights ---

def test_deleting_an_unknown_tag_is_manifest_unknown(mreg: Mreg) -> None:
    push_tiny(mreg, "untag/known", ["here"])
    status, _, body = http("DELETE", manifest_url(mreg, "untag/known", "absent"), auth=ADMIN)
    assert (status, error_code(body)) == (404, "MANIFEST_UNKNOWN")


def test_deleting_in_an_unknown_repository_is_404(mreg: Mreg) -> None:
    status, _, body = http("DELETE", manifest_url(mreg, "untag/never-pushed", "latest"), auth=ADMIN)
    # the registry's own code: 2.8 says MANIFEST_UNKNOWN for a manifest of an unknown repository
    assert status == 404 and error_code(body) in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")


def test_unknown_tag_is_not_created(mreg: Mreg) -> None:
    push_tiny(mreg, "untag/nocreate", ["here"])
    http("DELETE", manifest_url(mreg, "untag/nocreate", "absent"), auth=ADMIN)
    assert tag_list(mreg, "untag/nocreate") == ["here"]


def test_reader_cannot_delete_a_tag(mreg: Mreg) -> None:
    push_tiny(mreg, "untag/guarded", ["keep"])
    status, _, body = http("DELETE", manifest_url(mreg, "untag/guarded", "keep"), auth=READER)
    assert (status, error_code(body)) == (403, "DENIED")
    assert tag_list(mreg, "untag/guarded") == ["keep"]


def test_delete_by_digest_removes_every_tag_of_it(mreg: Mreg) -> None:
    digest = push_tiny(mreg, "untag/bydigest", ["x", "y"])
    push_tiny(mreg, "untag/bydigest", ["other"], seed="another image")
    status, _, _ = http("DELETE", manifest_url(mreg, "untag/bydigest", digest), auth=ADMIN)
    assert status == 202
    assert tag_list(mreg, "untag/bydigest") == ["other"]


def test_concurrent_deletes_of_different_tags_leave_the_rest(mreg: Mreg) -> None:
    repo = "untag/concurrent"
    doomed = [f"d{i}" for i in range(10)]
    digest = push_tiny(mreg, repo, [*doomed, "keep1", "keep2"])
    with ThreadPoolExecutor(max_workers=len(doomed)) as pool:
        statuses = list(pool.map(lambda tag: http("DELETE", manifest_url(mreg, repo, tag), auth=ADMIN)[0], doomed))
    assert statuses == [202] * len(doomed)
    assert tag_list(mreg, repo) == ["keep1", "keep2"]
    assert digest_of(mreg, repo, "keep1") == digest


def test_tag_deletes_while_other_tags_are_pushed_leave_nothing_dangling(mreg: Mreg) -> None:
    """registry 2.8 fails a delete by digest while another tag link of the repository is written;
    the proxy makes manifest writes of one repository take turns, so pushes cannot break deletes."""
    repo = "untag/busy"
    doomed = [f"d{i}" for i in range(30)]
    push_tiny(mreg, repo, doomed, seed="doomed")
    stop = threading.Event()

    def keep_pushing(worker: int) -> int:
        # each pusher its own manifest: pushes of one digest under several tags at once race
        # inside registry 2.8 itself (its revision link is rewritten in place)
        push_tiny(mreg, repo, [f"p{worker}"], seed=f"pusher{worker}")
        pushes = 1
        while not stop.is_set() and pushes < 500:  # bounded: stops when the deletes are done
            retag(mreg, repo, f"p{worker}", f"p{worker}")
            pushes += 1
        return pushes

    with ThreadPoolExecutor(max_workers=4) as pool:
        pushers = [pool.submit(keep_pushing, worker) for worker in range(4)]
        statuses = [http("DELETE", manifest_url(mreg, repo, tag), auth=ADMIN)[0] for tag in doomed[1:]]
        stop.set()
        assert all(p.result() > 1 for p in pushers)
    assert statuses == [202] * len(doomed[1:])
    assert tag_list(mreg, repo) == ["d0", "p0", "p1", "p2", "p3"]


# --- paging ---

PAGED = "paging/many"
PAGED_TAGS = [f"t{i}" for i in range(25)]  # t0, t1, t10, ...: lexical order is not numeric order


@pytest.fixture(scope="module")
def paged(mreg: Mreg) -> str:
    push_tiny(mreg, PAGED, PAGED_TAGS)
    return PAGED


def test_unpaged_list_is_lexical(paged: str, mreg: Mreg) -> None:
    assert tag_list(mreg, paged) == sorted(PAGED_TAGS)


def test_pages_hold_at_most_n_and_walk_every_tag_once_in_order(paged: str, mreg: Mreg) -> None:
    pages = walk(mreg, f"/v2/{paged}/tags/list?n=10", "tags")
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [t for p in pages for t in p] == sorted(PAGED_TAGS)


def test_link_names_the_next_page(paged: str, mreg: Mreg) -> None:
    _, headers, body = tags_page(mreg, f"/v2/{paged}/tags/list?n=10")
    assert headers["Link"] == f'</v2/{paged}/tags/list?last={body["tags"][-1]}&n=10>; rel="next"'


def test_last_page_has_no_link(paged: str, mreg: Mreg) -> None:
    _, headers, body = tags_page(mreg, f"/v2/{paged}/tags/list?n=5&last={sorted(PAGED_TAGS)[-6]}")
    assert body["tags"] == sorted(PAGED_TAGS)[-5:]
    assert "Link" not in headers


def test_last_alone_gives_every_later_tag(paged: str, mreg: Mreg) -> None:
    _, _, body = tags_page(mreg, f"/v2/{paged}/tags/list?last=t3")
    assert body["tags"] == [t for t in sorted(PAGED_TAGS) if t > "t3"]


def test_n_zero_is_an_empty_page_without_link(paged: str, mreg: Mreg) -> None:
    status, headers, body = tags_page(mreg, f"/v2/{paged}/tags/list?n=0")
    assert (status, body["tags"], "Link" in headers) == (200, [], False)


def test_bad_n_is_pagination_number_invalid(paged: str, mreg: Mreg) -> None:
    status, _, body = http("GET", f"{mreg.url}/v2/{paged}/tags/list?n=-1", auth=READER)
    assert (status, error_code(body)) == (400, "PAGINATION_NUMBER_INVALID")


def test_tags_list_of_unknown_repository_is_name_unknown(mreg: Mreg) -> None:
    status, _, body = http("GET", f"{mreg.url}/v2/paging/never-pushed/tags/list?n=2", auth=READER)
    assert (status, error_code(body)) == (404, "NAME_UNKNOWN")


def test_catalog_pages_walk_every_repository_once(mreg: Mreg) -> None:
    repos = [f"catalog/r{i}" for i in range(25)]
    for repo in repos:
        push_tiny(mreg, repo, ["1"])
    _, _, whole = tags_page(mreg, "/v2/_catalog")
    pages = walk(mreg, "/v2/_catalog?n=7", "repositories")
    assert all(len(p) <= 7 for p in pages)
    walked = [r for p in pages for r in p]
    assert walked == whole["repositories"]
    assert set(repos) <= set(walked)


def test_catalog_link_keeps_n(mreg: Mreg) -> None:
    push_tiny(mreg, "catalog/first", ["1"])
    push_tiny(mreg, "catalog/second", ["1"])
    _, headers, body = tags_page(mreg, "/v2/_catalog?n=1")
    last = urllib.parse.quote(body["repositories"][0], safe="")
    assert headers["Link"] == f'</v2/_catalog?last={last}&n=1>; rel="next"'
