from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from mreg_proxy.transport.headers import (
    client_host,
    downstream_response_headers,
    socket_authority,
    upstream_request_headers,
)
from mreg_proxy.transport.forwarder import forwarded_headers


def _up(pairs: list[tuple[str, str]], **kw: str) -> CIMultiDict[str]:
    return upstream_request_headers(CIMultiDict(pairs), client_ip=kw.get("ip", "10.0.0.9"), scheme=kw.get("scheme", "http"))


def test_every_accept_value_is_kept_in_order() -> None:
    accepts = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
    headers = _up([("Accept", a) for a in accepts])
    assert headers.getall("Accept") == accepts


def test_credentials_and_hop_by_hop_are_dropped() -> None:
    headers = _up(
        [
            ("Authorization", "Basic eDp5"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Expect", "100-continue"),
            ("Content-Length", "10"),
            ("Host", "reg.example:5000"),
        ]
    )
    assert sorted(headers.keys()) == sorted(["Content-Length", "Host", "X-Forwarded-Proto", "X-Forwarded-For"])
    assert headers["Host"] == "reg.example:5000"


def test_client_cannot_choose_forwarding_headers() -> None:
    headers = _up(
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil"), ("X-Forwarded-For", "1.2.3.4"), ("Forwarded", "for=x")],
        scheme="http",
        ip="127.0.0.1",
    )
    assert headers.getall("X-Forwarded-Proto") == ["http"]
    assert headers.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert "X-Forwarded-Host" not in headers and "Forwarded" not in headers


def test_forwarded_proto_follows_scheme() -> None:
    assert _up([], scheme="https")["X-Forwarded-Proto"] == "https"


def _down(pairs: list[tuple[str, str]]) -> CIMultiDict[str]:
    return downstream_response_headers(
        CIMultiDict(pairs), upstream_origin="http://127.0.0.1:5001", public_origin="https://reg.example:5000"
    )


def test_response_keeps_registry_headers() -> None:
    pairs = [
        ("Content-Length", "1234"),
        ("Docker-Content-Digest", "sha256:abc"),
        ("Content-Range", "bytes 0-9/1234"),
        ("Range", "0-9"),
        ("Docker-Upload-UUID", "u"),
        ("Content-Encoding", "gzip"),
        ("Link", '</v2/_catalog?last=a&n=1>; rel="next"'),
    ]
    assert list(_down(pairs).items()) == pairs


def test_response_drops_hop_by_hop() -> None:
    headers = _down([("Connection", "close, X-Conn"), ("X-Conn", "1"), ("Transfer-Encoding", "chunked"), ("Keep-Alive", "1")])
    assert list(headers.items()) == []


def test_location_naming_the_registry_is_rewritten_to_the_proxy() -> None:
    headers = _down([("Location", "http://127.0.0.1:5001/v2/a/blobs/uploads/u?_state=x%3D")])
    assert headers["Location"] == "https://reg.example:5000/v2/a/blobs/uploads/u?_state=x%3D"


def test_other_locations_are_untouched() -> None:
    for location in ["/v2/a/blobs/uploads/u", "https://reg.example:5000/v2/a/", "http://127.0.0.1:50010/v2/"]:
        assert _down([("Location", location)])["Location"] == location


def test_requests_sent_without_the_clients_body_do_not_announce_one() -> None:
    """A Content-Length for a body that never comes would hold the registry connection forever."""
    request = make_mocked_request(
        "GET", "/v2/a/tags/list",
        headers={"Content-Length": "40", "Content-Type": "text/plain", "Accept": "application/json"},
    )
    headers = forwarded_headers(request, with_body=False)
    assert "Content-Length" not in headers and "Content-Type" not in headers
    assert headers["Accept"] == "application/json"
    assert forwarded_headers(request, with_body=True)["Content-Length"] == "40"


@pytest.mark.parametrize(
    "sockname,authority",
    [
        (("127.0.0.1", 5000), "127.0.0.1:5000"),
        (("::1", 5000, 0, 0), "[::1]:5000"),
        (("2001:db8::1", 443, 0, 0), "[2001:db8::1]:443"),
        (("::ffff:127.0.0.1", 5000, 0, 0), "127.0.0.1:5000"),  # a dual-stack socket, reached over IPv4
        (("fe80::1%eth0", 5000, 0, 2), "[fe80::1%25eth0]:5000"),  # RFC 6874: the zone's % is written %25
        ("/run/mreg.sock", None),  # a Unix socket has no address a URL can name
        (None, None),
        (("not-an-address", 5000), None),
        (("127.0.0.1", "5000"), None),
        (("127.0.0.1",), None),
    ],
)
def test_socket_authority(sockname: object, authority: str | None) -> None:
    assert socket_authority(sockname) == authority


@pytest.mark.parametrize(
    "pairs,local,host",
    [
        ([("Host", "reg.example:5000")], "127.0.0.1:5000", "reg.example:5000"),  # the client's, always
        ([], "127.0.0.1:5000", "127.0.0.1:5000"),  # HTTP/1.0 without Host
        ([("Host", "")], "[::1]:5000", "[::1]:5000"),
        ([("Host", "  ")], "[::1]:5000", "[::1]:5000"),
        ([], None, None),
    ],
)
def test_the_registry_always_gets_the_host_the_client_reached(
    pairs: list[tuple[str, str]], local: str | None, host: str | None
) -> None:
    assert client_host(CIMultiDict(pairs), local) == host
    headers = upstream_request_headers(CIMultiDict(pairs), client_ip="10.0.0.9", scheme="http", local=local)
    assert headers.getall("Host", []) == ([host] if host else [])


def test_a_request_without_host_is_forwarded_with_the_proxys_address() -> None:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("::1", 5443, 0, 0) if name == "sockname" else default
    )
    request = make_mocked_request("POST", "/v2/a/blobs/uploads/", headers={}, transport=transport)
    assert forwarded_headers(request, with_body=True)["Host"] == "[::1]:5443"
