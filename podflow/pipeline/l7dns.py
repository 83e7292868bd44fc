"""DNS messages -> what a flow's ``l7.dns`` records (pure, hand-written decoder).

A packet source sees queries and responses as UDP (or TCP, length-prefixed) payloads on port
53. :func:`parse_dns` turns one message into a :class:`DnsMessage`: its id, whether it is a
response, the question (name without the trailing dot, type names), the response code and
the answer section (addresses, CNAMEs, smallest TTL). :func:`to_info` folds the messages of
one exchange into the model's :class:`~podflow.model.flow.DnsInfo`.

The decoder reads only what it keeps (header, questions, answers; the authority and
additional sections are not looked at) and checks every bound (RFC 1035 4.1): each
section's records must fit in the message, labels are at most 63 bytes (the ``0x40`` and
``0x80`` label types are refused), names at most 255 bytes, and a compression pointer must
point before the start of the labels it continues, so a chain of pointers always ends. A
message that breaks a rule is counted in the ``losses`` given, by reason (``short_dns``,
``bad_dns_pointer``, ``bad_dns_label``, ``long_dns_name``, ``bad_dns_rdata``, ...), and
yields None. Name bytes outside ``[a-z0-9-_*]`` and the dot inside a label are written as
``\\DDD`` (decimal, RFC 1035 5.1 presentation format), so any name is printable.

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
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from podflow.model.flow import DnsInfo
from podflow.model.losses import DecodeError, Losses

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
"""DNS type numbers -> names (others are shown as ``TYPE<n>``, as RFC 3597 writes them)."""
A, CNAME, AAAA = 1, 5, 28
_HEADER = struct.Struct("!HHHH")
_RR = struct.Struct("!HHIH")
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*")
_TEXT = [chr(b) if b in _PLAIN else f"\\{b:03d}" for b in range(256)]


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


def read_name(msg: bytes, at: int) -> tuple[str, int]:
    """The (possibly compressed) name at ``at``: (text, lower-cased, no trailing dot; the
    offset after it in the record). Raises :class:`DecodeError` on a broken name.

    >>> read_name(b"\\x02ab\\x00\\x01c\\xc0\\x00", 4)
    ('c.ab', 8)
    """
    labels: list[str] = []
    size, pos, after, floor = 0, at, -1, at
    while True:
        if pos >= len(msg):
            raise DecodeError("short_dns_name")
        n = msg[pos]
        if n == 0:
            break
        if n >= 0xC0:
            if pos + 1 >= len(msg):
                raise DecodeError("short_dns_name")
            ptr = (n & 0x3F) << 8 | msg[pos + 1]
            if ptr >= floor:
                raise DecodeError("bad_dns_pointer", f"pointer to {ptr} at {pos}")
            if after < 0:
                after = pos + 2
            pos = floor = ptr
            continue
        if n > 63:
            raise DecodeError("bad_dns_label", f"label type {n:#x} at {pos}")
        size += n + 1
        if size > 255:
            raise DecodeError("long_dns_name")
        if pos + 1 + n > len(msg):
            raise DecodeError("short_dns_name")
        labels.append("".join(_TEXT[b] for b in msg[pos + 1:pos + 1 + n]))
        pos += 1 + n
    return ".".join(labels).lower(), after if after >= 0 else pos + 1


def decode_dns(msg: bytes) -> DnsMessage:
    """One DNS message; raises :class:`DecodeError` (with the loss reason) on a broken one."""
    if len(msg) < 12:
        raise DecodeError("short_dns", f"{len(msg)} bytes")
    ident, flags, qdcount, ancount = _HEADER.unpack_from(msg)
    pos, first, qtypes = 12, "", []
    for k in range(qdcount):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise DecodeError("short_dns_question")
        qtypes.append(qtype_name(msg[pos] << 8 | msg[pos + 1]))
        pos += 4
        if k == 0:
            first = name
    ips: list[str] = []
    cnames: list[str] = []
    ttls: list[int] = []
    for _ in range(ancount):
        _owner, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DecodeError("short_dns_answer")
        rtype, _cls, ttl, rdlen = _RR.unpack_from(msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            raise DecodeError("short_dns_answer")
        if rtype in (A, AAAA):
            if rdlen != (4 if rtype == A else 16):
                raise DecodeError("bad_dns_rdata", f"type {rtype}, {rdlen} bytes")
            ips.append(socket.inet_ntop(socket.AF_INET if rtype == A else socket.AF_INET6,
                                        msg[pos:pos + rdlen]))
            ttls.append(ttl)
        elif rtype == CNAME:
            cname, stop = read_name(msg[:pos + rdlen], pos)
            if stop != pos + rdlen:
                raise DecodeError("bad_dns_rdata", f"CNAME of {rdlen} bytes")
            cnames.append(cname)
            ttls.append(ttl)
        pos += rdlen
    return DnsMessage(id=ident, response=bool(flags & 0x8000), query=first,
                      qtypes=tuple(dict.fromkeys(qtypes)), rcode=flags & 15, ips=tuple(ips),
                      cnames=tuple(cnames), ttl=min(ttls) if ttls else None)


def parse_dns(payload: bytes, losses: Losses | None = None) -> DnsMessage | None:
    """One DNS message (UDP payload), or None when it is not a well-formed message (then
    counted in ``losses`` by reason)."""
    try:
        return decode_dns(payload)
    except DecodeError as exc:
        if losses is not None:
            losses.count(exc.reason)
        return None


def parse_dns_tcp(payload: bytes, losses: Losses | None = None) -> DnsMessage | None:
    """The first DNS message of a TCP segment (2-byte length prefix, RFC 1035 4.2.2).

    A segment that does not hold a whole message (split across segments) is counted as
    ``short_dns_tcp``.
    """
    n = int.from_bytes(payload[:2], "big")
    if len(payload) < 14 or len(payload) < 2 + n:
        if losses is not None:
            losses.count("short_dns_tcp")
        return None
    return parse_dns(payload[2:2 + n], losses)


def to_info(messages: Iterable[DnsMessage]) -> DnsInfo | None:
    """The exchange's DnsInfo from its queries and responses (None if there are none).

    The query is the name that resolved (the first response with addresses): a stub
    resolver walks its search list on one socket (``db.example.com.app.svc.cluster.local``
    NXDOMAIN, ..., then ``db.example.com``), and the name that answered is the one the
    application meant; without an answer, the last name asked. Question types are the union
    in order of appearance; the response code is NOERROR when any response had one (an A
    query answered while AAAA got NXDOMAIN still resolved), else the last response's;
    addresses and CNAMEs are the union; the TTL the smallest. ``queries`` counts the query
    messages and ``rcodes`` lists each response's code, so that every message can be counted
    as Hubble counts its DNS events.
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
                   cnames=tuple(dict.fromkeys(c for m in responses for c in m.cnames)),
                   queries=len(msgs) - len(responses),
                   rcodes=tuple(m.rcode for m in responses))
