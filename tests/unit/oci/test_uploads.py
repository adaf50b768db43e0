"""Upload state decoding, Content-Range checks and the bounded memory of upload states: pure."""

from __future__ import annotations

import base64
import json
import os

import pytest

from mreg_proxy.oci.upload_state import (
    Latest,
    Standing,
    UploadMemory,
    UploadState,
    chunk_refusal,
    decode_state,
    parse_content_range,
    range_header,
    standing,
    state_of_url,
)


def token(doc: object, *, mac: bytes | None = None) -> str:
    """A _state value as registry 2.8 writes it: base64url(HMAC + JSON), padded."""
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return base64.urlsafe_b64encode((mac if mac is not None else os.urandom(32)) + payload).decode()


def state_doc(offset: object = 0, name: object = "team/app", uuid: object = "u-1") -> dict:
    return {"Name": name, "UUID": uuid, "Offset": offset, "StartedAt": "2026-12-02T15:24:31.39Z"}


def location(offset: int, uuid: str = "u-1", host: str = "http://mreg.example:5000") -> str:
    value = token(state_doc(offset, uuid=uuid)).replace("=", "%3D")
    return f"{host}/v2/team/app/blobs/uploads/{uuid}?_state={value}"


# --- decoding ---

def test_a_registry_state_decodes() -> None:
    assert decode_state(token(state_doc(20))) == UploadState("team/app", "u-1", 20)


def test_a_real_registry_2_8_state_decodes() -> None:
    # taken from a Location of docker-registry 2.8.2 (percent-decoded)
    real = ("aFDD5Ym4UEnGDn4OC-OOW8NS_5_BboG8jN7Y_IIjudR7Ik5hbWUiOiJyIiwiVVVJRCI6IjQ0NzM3MjdmLWUzM2MtNDM1NC05OTIyLTIx"
            "NmRmOWQ2YzViOSIsIk9mZnNldCI6MCwiU3RhcnRlZEF0IjoiMjAyNi0xMi0wMlQxNToyNDozMS4zOTI3MTUwNjNaIn0=")
    assert decode_state(real) == UploadState("r", "4473727f-e33c-4354-9922-216df9d6c5b9", 0)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 at all!",
        "YWJj",  # valid base64, shorter than the HMAC
        token(b""),  # an HMAC and nothing after it
        token(b"\xff\xfe garbage"),  # not UTF-8
        token(b"{not json"),
        token([1, 2, 3]),  # JSON, not an object
        token(state_doc(-1)),  # a negative offset
        token(state_doc("20")),  # offset as a string
        token(state_doc(20.5)),
        token(state_doc(True)),  # a bool is an int in Python, not in Go
        token(state_doc(0, name="")),
        token(state_doc(0, name=7)),
        token(state_doc(0, uuid=None)),
        token({"Name": "team/app", "UUID": "u-1"}),  # no offset
        token(state_doc(20)).rstrip("="),  # padding dropped: the registry's decoder refuses it too
        token(state_doc(20)).replace("-", "+").replace("_", "/") + "+/",  # the other alphabet
        "A" * 5000,  # beyond the size decoded at all
    ],
)
def test_garbage_is_no_state(value: str) -> None:
    assert decode_state(value) is None


def test_a_forged_state_decodes_as_what_it_claims() -> None:
    # without the registry's secret the proxy cannot tell: it only ever uses a state to refuse
    assert decode_state(token(state_doc(10**12), mac=b"\0" * 32)) == UploadState("team/app", "u-1", 10**12)


def test_state_of_an_upload_url() -> None:
    assert state_of_url(location(5)) == UploadState("team/app", "u-1", 5)
    assert state_of_url("/v2/team/app/blobs/uploads/u-1") is None
    twice = location(5) + "&_state=" + token(state_doc(9))
    assert state_of_url(twice) is None  # which one would the registry read? neither, here


# --- Content-Range and Range ---

@pytest.mark.parametrize(
    "value,expected",
    [
        ("0-19", (0, 19)),
        ("22-41", (22, 41)),
        ("bytes 0-19", (0, 19)),
        ("bytes=5-5", (5, 5)),
        (" 3-4 ", (3, 4)),
        ("19-0", None),  # backwards
        ("0-", None),
        ("-19", None),
        ("bytes 0-19/20", (0, 19)),  # RFC 9110's form, total size and all
        ("0-19/*", (0, 19)),
        ("0-19/x", None),
        ("a-b", None),
        ("1" * 19 + "-" + "1" * 19, None),  # beyond any real size
        ("", None),
    ],
)
def test_parse_content_range(value: str, expected: tuple[int, int] | None) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize("offset,expected", [(0, "0-0"), (1, "0-0"), (20, "0-19")])
def test_range_header_as_registry_2_8_writes_it(offset: int, expected: str) -> None:
    assert range_header(offset) == expected


# --- standing and refusals ---

CLAIMED = UploadState("team/app", "u-1", 20)


def test_standing_without_memory_is_the_claim() -> None:
    assert standing(CLAIMED, None, "/v2/x?_state=a") == Standing(20, "/v2/x?_state=a", stale=False)


def test_standing_of_a_stale_url_is_the_latest() -> None:
    assert standing(CLAIMED, Latest(40, "/v2/y?_state=b"), "/v2/x?_state=a") == Standing(40, "/v2/y?_state=b", stale=True)


def test_a_newer_claim_wins_over_the_memory() -> None:
    # another replica took a chunk this one did not see
    assert standing(CLAIMED, Latest(10, "/v2/y"), "/v2/x") == Standing(20, "/v2/x", stale=False)


HERE = Standing(20, "/v2/x", stale=False)


@pytest.mark.parametrize(
    "where,content_range,length,refused",
    [
        (HERE, "20-39", 20, False),
        (HERE, "20-39", None, False),
        (HERE, None, None, False),  # streamed: appended where the upload stands
        (HERE, "22-41", 20, True),  # out of order
        (HERE, "0-19", 20, True),  # a retried chunk
        (HERE, "20-39", 19, True),  # the body is not the announced range
        (HERE, "garbage", 20, True),  # the spec: an invalid Content-Range is a 416
        (Standing(40, "/v2/y", stale=True), "40-59", 20, True),  # the right range on a stale URL
        (Standing(40, "/v2/y", stale=True), None, 20, True),
    ],
)
def test_chunk_refusal(where: Standing, content_range: str | None, length: int | None, refused: bool) -> None:
    assert (chunk_refusal(where, content_range, length) is not None) is refused


# --- memory ---

def test_memory_keeps_the_latest_location_as_path_and_query() -> None:
    memory = UploadMemory()
    memory.learn(location(0))
    newest = location(20)
    memory.learn(newest)
    latest = memory.latest("team/app", "u-1")
    assert latest is not None and latest.offset == 20
    assert latest.target == newest.removeprefix("http://mreg.example:5000")


def test_memory_never_goes_back_to_an_older_offset() -> None:
    memory = UploadMemory()
    memory.learn(location(20))
    memory.learn(location(0))  # the answer to an earlier request, arriving late
    latest = memory.latest("team/app", "u-1")
    assert latest is not None and latest.offset == 20


def test_memory_ignores_locations_without_a_state() -> None:
    memory = UploadMemory()
    memory.learn("http://mreg.example/v2/team/app/blobs/sha256:" + "a" * 64)
    memory.learn("/v2/team/app/blobs/uploads/u-1?_state=garbage")
    assert len(memory) == 0


def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    memory = UploadMemory(limit=3)
    for n in range(5):
        memory.learn(location(0, uuid=f"u-{n}"))
    assert len(memory) == 3
    assert memory.latest("team/app", "u-0") is None and memory.latest("team/app", "u-4") is not None


def test_memory_forgets_a_finished_upload() -> None:
    memory = UploadMemory()
    memory.learn(location(20))
    memory.forget("team/app", "u-1")
    memory.forget("team/app", "never-seen")
    assert memory.latest("team/app", "u-1") is None
