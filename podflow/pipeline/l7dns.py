"""DNS messages -> what a flow's ``l7.dns`` records (pure; decoding by dpkt).

A packet source sees queries and responses as UDP (or TCP, length-prefixed) payloads on port
53. :func:`parse_dns` turns one message into a :class:`DnsMessage`: its id, whether it is a
response, the question (name without the trailing dot, type names), the response code and
the answer section (addresses, CNAMEs, smallest TTL). :func:`to_info` folds the messages of
one exchange into the model's :class:`~podflow.model.flow.DnsInfo`.

Example::

    >>> import dpkt
    >>> q = dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="db.example.com",
    ...                                           type=dpkt.dns.DNS_A)])
    >>> m = parse_dns(bytes(q))
    >>> m.id, m.response, m.query, m.qtypes
    (7, False, 'db.example.com', ('A',))
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

import dpkt

from podflow.model.flow import DnsInfo

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
"""DNS type numbers -> names (others are shown as ``TYPE<n>``, as RFC 3597 writes them)."""


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """One DNS message as seen on the wire."""

    id: int
    """Transaction id (pairs a response with its query)."""
    response: bool
    """QR bit: a response."""
    query: str
    """First question's name, lower-cased, without the trailing dot ('' if none)."""
    qtypes: tuple[str, ...]
    """Type names of the questions."""
    rcode: int
    """Response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN ...)."""
    ips: tuple[str, ...] = ()
    """A/AAAA addresses in the answer section."""
    cnames: tuple[str, ...] = ()
    """CNAME targets in the answer section."""
    ttl: int | None = None
    """Smallest TTL of the answers (None without answers)."""


def qtype_name(t: int) -> str:
    """``1`` -> ``A``; unknown types as ``TYPE<n>``."""
    return QTYPES.get(t, f"TYPE{t}")


def parse_dns(payload: bytes) -> DnsMessage | None:
    """One DNS message (UDP payload), or None when it is not a well-formed message."""
    try:
        d = dpkt.dns.DNS(payload)
    except (dpkt.UnpackError, IndexError, ValueError, UnicodeDecodeError):
        return None
    qname = d.qd[0].name.rstrip(".").lower() if d.qd else ""
    ips: list[str] = []
    cnames: list[str] = []
    ttls: list[int] = []
    for rr in d.an:
        if rr.type == dpkt.dns.DNS_A and len(rr.rdata) == 4:
            ips.append(socket.inet_ntop(socket.AF_INET, rr.rdata))
        elif rr.type == dpkt.dns.DNS_AAAA and len(rr.rdata) == 16:
            ips.append(socket.inet_ntop(socket.AF_INET6, rr.rdata))
        elif rr.type == dpkt.dns.DNS_CNAME:
            cnames.append(str(rr.cname).rstrip(".").lower())
        else:
            continue
        ttls.append(rr.ttl)
    return DnsMessage(id=d.id, response=bool(d.qr), query=qname,
                      qtypes=tuple(qtype_name(q.type) for q in d.qd), rcode=d.rcode,
                      ips=tuple(ips), cnames=tuple(cnames), ttl=min(ttls) if ttls else None)


def parse_dns_tcp(payload: bytes) -> DnsMessage | None:
    """The first DNS message of a TCP segment (2-byte length prefix, RFC 1035 4.2.2)."""
    if len(payload) < 14:
        return None
    n = int.from_bytes(payload[:2], "big")
    return parse_dns(payload[2:2 + n]) if len(payload) >= 2 + n else None


def to_info(messages: Iterable[DnsMessage]) -> DnsInfo | None:
    """The exchange's DnsInfo from its queries and responses (None if there are none).

    The query is the name that resolved (the first response with addresses): a stub
    resolver walks its search list on one socket (``db.example.com.app.svc.cluster.local``
    NXDOMAIN, ..., then ``db.example.com``), and the name that answered is the one the
    application meant; without an answer, the last name asked. Question types are the union
    in order of appearance; the response code is NOERROR when any response had one (an A
    query answered while AAAA got NXDOMAIN still resolved), else the last response's;
    addresses and CNAMEs are the union; the TTL the smallest.
    """
    msgs = list(messages)
    if not msgs:
        return None
    responses = [m for m in msgs if m.response]
    answered = next((m.query for m in responses if m.ips and m.query), None)
    asked = [m.query for m in msgs if m.query]
    query = answered or (asked[-1] if asked else "")
    qtypes = tuple(dict.fromkeys(t for m in msgs for t in m.qtypes))
    rcode = None
    if responses:
        rcode = 0 if any(m.rcode == 0 for m in responses) else responses[-1].rcode
    ttls = [m.ttl for m in responses if m.ttl is not None]
    return DnsInfo(query=query, qtypes=qtypes, rcode=rcode,
                   ips=tuple(dict.fromkeys(ip for m in responses for ip in m.ips)),
                   ttl=min(ttls) if ttls else None,
                   cnames=tuple(dict.fromkeys(c for m in responses for c in m.cnames)))
