"""Header policy as data plus pure functions over multidicts.

Headers are copied as multidicts with every value kept: clients send several ``Accept`` headers
on one request, and collapsing them makes the registry pick the wrong manifest type.
"""

from __future__ import annotations

import ipaddress

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

# RFC 9110 7.6.1 connection-specific fields, plus the widespread non-standard one.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never forwarded upstream: credentials stay at the proxy; forwarding headers are ours to set
# (a client must not choose what the registry believes about scheme, host or origin); the proxy
# answers ``Expect: 100-continue`` itself.
REQUEST_DROP = frozenset(
    {
        "authorization",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)


def _connection_tokens(headers: MultiMapping[str]) -> frozenset[str]:
    """Header names listed in ``Connection``: hop-by-hop for this message only."""
    tokens = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def _copy(headers: MultiMapping[str], drop: frozenset[str]) -> CIMultiDict[str]:
    if tokens := _connection_tokens(headers):
        drop = drop | tokens
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def socket_authority(sockname: object) -> str | None:
    """``HOST:PORT`` as a URL writes the address a socket is bound to (``getsockname()``): IPv6
    in brackets (a zone as ``%25zone``), an IPv4-mapped IPv6 address as the IPv4 one it maps;
    None for anything else (a Unix socket's path)."""
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return None
    host, port = sockname[0], sockname[1]
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        return None
    address, _, zone = host.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"{ip.ipv4_mapped}:{port}"
        return f"[{ip}{'%25' + zone if zone else ''}]:{port}"
    return f"{ip}:{port}"


def client_host(incoming: MultiMapping[str], local: str | None) -> str | None:
    """The host the client addressed: its ``Host``, or, when it sent none or an empty one (HTTP/1.0
    may), ``local``, the proxy's address as the client reached it (socket_authority)."""
    host = incoming.get("Host", "").strip()
    return host or local


def upstream_request_headers(
    incoming: MultiMapping[str], *, client_ip: str | None, scheme: str, local: str | None = None
) -> CIMultiDict[str]:
    """Headers for the registry: the client's own (``Host`` included), minus hop-by-hop and
    credentials, plus the forwarding headers the registry uses to build ``Location`` URLs.

    Without a client ``Host`` the registry would build ``Location`` from an empty host (and the
    client would follow it to port 80): it gets ``local`` instead (client_host)."""
    headers = _copy(incoming, HOP_BY_HOP | REQUEST_DROP)
    host = client_host(incoming, local)
    headers.popall("Host", None)
    if host:
        headers["Host"] = host
    headers["X-Forwarded-Proto"] = scheme
    if client_ip:
        headers["X-Forwarded-For"] = client_ip
    return headers


def downstream_response_headers(
    upstream: CIMultiDictProxy[str] | MultiMapping[str], *, upstream_origin: str, public_origin: str
) -> CIMultiDict[str]:
    """The registry's headers for the client, minus hop-by-hop.

    ``Location`` normally already names the proxy (the registry builds it from the forwarded
    ``Host``); one that names the registry's own address is rewritten so that no client is sent
    around the proxy.
    """
    headers = _copy(upstream, HOP_BY_HOP)
    location = headers.get("Location")
    if location and location.startswith(upstream_origin + "/"):
        headers["Location"] = public_origin + location[len(upstream_origin):]
    return headers
