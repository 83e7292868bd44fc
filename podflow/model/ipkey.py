"""Addresses as sortable keys, so that a CIDR test is a string range.

An address becomes 32 hex digits of its IPv6 form (IPv4 mapped into ``::ffff:0:0/96``), so
IPv4 and IPv6 share one ordering and a network is the range from its first to its last key.
The store keeps these keys in ``src_ipkey``/``dst_ipkey``; the filter compares with them.

Example::

    >>> ip_key("10.0.0.1")
    '00000000000000000000ffff0a000001'
    >>> lo, hi = cidr_key_range("10.0.0.0/8")
    >>> lo <= ip_key("10.1.2.3") <= hi
    True
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=65536)
def ip_key(ip: str) -> str:
    """The address as 32 hex digits (IPv4 mapped into ``::ffff:0:0/96``); ValueError if bad.

    >>> ip_key("10.0.0.1")
    '00000000000000000000ffff0a000001'
    """
    addr = ipaddress.ip_address(ip)
    n = int(addr) | (0xFFFF << 32) if addr.version == 4 else int(addr)
    return format(n, "032x")


def cidr_key_range(cidr: str) -> tuple[str, str]:
    """First and last :func:`ip_key` of a CIDR or single address; ValueError if bad.

    >>> cidr_key_range("10.0.0.0/8")[1]
    '00000000000000000000ffff0affffff'
    """
    net = ipaddress.ip_network(cidr, strict=False)
    return ip_key(str(net.network_address)), ip_key(str(net.broadcast_address))
