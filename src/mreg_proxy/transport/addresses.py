"""Who a client is, as far as its address tells: the address behind trusted front proxies, and
the key that counts one host once (an IPv6 host usually owns a whole /64).

The login throttle (auth/throttle.py) and the connection cap (openconns.py) count by these keys.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

from ..config import Network

IPV6_PREFIX = 64  # one host usually owns a whole /64: count it as one address


def address_key(address: str) -> str:
    """What the address counters are keyed by: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


def client_address(peer: str | None, forwarded: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the direct peer, or, when the peer is a trusted front proxy, the
    rightmost X-Forwarded-For hop that is not itself a trusted proxy. Hops left of a malformed
    one cannot be trusted: the last trusted peer is used then."""
    if peer is None:
        return "unknown"
    if not trusted or not _trusted(peer, trusted):  # no front proxy (the default): no parsing
        return peer
    current = peer
    for hop in reversed([part.strip() for value in forwarded for part in value.split(",")]):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return current
        current = hop
    return current


def _trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
