"""A hand-written, struct-based decoder for ctnetlink (netfilter conntrack over netlink).

Pure: bytes in, :class:`~podflow.model.conntrack.CtEntry` out, no sockets, no root. The I/O
lives in :mod:`podflow.sources.conntrack`.

Why hand-written rather than pyroute2's ``NFCTSocket``: the agent must keep up with the
kernel's event rate on a busy node. Measured on this project's machines (PLATFORM.md),
pyroute2's generic netlink parser plus attribute extraction handles ~6k entries/s, a
struct-based parser ~98k entries/s (this module: see ``bench/conntrack_ingest.py`` and the
module test), ``conntrack -L`` ~200k entries/s. At 6k/s a burst of short connections
overruns the socket buffer and we lose events; at ~100k/s we do not. The decoder walks the
attribute tree once with precompiled :class:`struct.Struct` objects, reads only the
attributes podflow uses, and caches the ``CtStatus`` flag objects.

Constants come from ``linux/netlink.h``, ``linux/netfilter/nfnetlink.h``,
``linux/netfilter/nfnetlink_conntrack.h`` and ``linux/netfilter/nf_conntrack_tcp.h``.
ctnetlink writes every multi-byte value in network byte order (``nla_put_be32`` and friends,
without setting ``NLA_F_NET_BYTEORDER``), so all numbers are read big-endian; the nested and
byte-order flag bits of the attribute type are masked off.

Hostile or broken input: :func:`parse` never raises. Every length is checked where it is
used (one comparison per attribute on the hot path): a message whose header, attribute
lengths or values do not fit is skipped and counted in :attr:`ParseResult.malformed`, by
reason in :attr:`ParseResult.reasons`; the rest of the buffer still decodes as long as the
netlink framing (``nlmsg_len``) holds. Framing follows :mod:`podflow.sources.netlink`, its
rules and loss reasons (messages as :func:`~podflow.sources.netlink.messages` walks them;
attribute types masked with ``NLA_TYPE_MASK`` = ``0x3FFF``, unknown types skipped, a
repeated attribute overrides the earlier one), except ``CTA_PROTOINFO_TCP_STATE``, where the
first one wins (this module's choice, kept from before the framing was shared). On this hot
path the two walks are written out inline rather than taken from the generators (see the
figures at ``_BE16``); ``tests/unit/sources/test_netlink.py`` checks that the reasons agree.

Example::

    >>> r = parse(dump_request(seq=1), received_at=0.0)   # a request holds no entries
    >>> r.entries, r.done, r.malformed
    ([], False, 0)
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from podflow.model.conntrack import CtEntry, CtEventType, CtStatus, CtTuple
from podflow.model.losses import DecodeError, reason_label
from podflow.sources import netlink
from podflow.sources.netlink import NETLINK_NETFILTER as NETLINK_NETFILTER
from podflow.sources.netlink import (
    NFGENMSG,
    NLA_TYPE_MASK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
    bad_attribute_length,
    nlmsg,
    nlmsg_error,
)

NFNL_SUBSYS_CTNETLINK = 1
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET_CTRZERO = 0, 1, 2, 3

# enum ctattr_type
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_TIMEOUT, CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY = 7, 8, 9, 10
CTA_ID, CTA_ZONE, CTA_TIMESTAMP = 12, 18, 20
# enum ctattr_tuple / ctattr_ip / ctattr_l4proto
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
# enum ctattr_protoinfo / ctattr_protoinfo_tcp
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
# enum ctattr_counters / ctattr_tstamp
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES, CTA_COUNTERS32_PACKETS, CTA_COUNTERS32_BYTES = 1, 2, 3, 4
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2

TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
              "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
"""``enum tcp_conntrack`` names, indexed by value (``conntrack -L`` spells them the same)."""

_PORT_PROTOS = frozenset({6, 17, 132, 33, 136})  # TCP, UDP, SCTP, DCCP, UDP-Lite
# The message loop in parse() and the attribute walks below are netlink.messages() and
# netlink.attributes() written out, with their structs, mask, checks and loss reasons
# (16 = NLMSG_HDRLEN, 4 = NLA_HDRLEN): the generators cost on every event (one message per
# recv()) and every nest. Measured (ct.parse over the 30 buffers of tests/data/conntrack/*.bin,
# 60 interleaved rounds of 300, median): inline 0.137 s, with messages() 0.142 s (+3%), with
# messages() and attributes() 0.171 s (+25%).
# The structs are bound by assignment, not `from ... import NLATTR`: CPython 3.11 compiles
# `Name.method()` on a name bound by an import as LOAD_ATTR + CALL instead of LOAD_METHOD
# (it expects a module there), which made every parse() ~10% slower.
_HDR, _NLA = netlink.NLMSGHDR, netlink.NLATTR
_BE16, _BE32, _BE64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_STATUS_CACHE: dict[int, CtStatus] = {}
_STATUS_CACHE_MAX = 1 << 12  # real status words are few; never let odd ones grow it
_TUPLE_CACHE: dict[bytes, CtTuple] = {}  # raw nest -> tuple: a connection's events repeat it
_TUPLE_CACHE_MAX = 1 << 16
_TUPLE_KEY_MAX = 128  # a real tuple nest is <= 88 bytes; larger ones are decoded, not kept
# ctattr_ip type -> (address family, smallest attribute length, is the source)
_IP_ATTRS = {CTA_IP_V4_SRC: (socket.AF_INET, 8, True), CTA_IP_V4_DST: (socket.AF_INET, 8, False),
             CTA_IP_V6_SRC: (socket.AF_INET6, 20, True),
             CTA_IP_V6_DST: (socket.AF_INET6, 20, False)}
_BE32_ATTRS = frozenset({CTA_STATUS, CTA_ID, CTA_TIMEOUT, CTA_MARK})
_DUMP_TYPES = frozenset({IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_GET_CTRZERO})


@dataclass(slots=True)
class ParseResult:
    """What one receive buffer held."""

    entries: list[CtEntry] = field(default_factory=list)
    """Decoded conntrack entries, in buffer order."""
    done: bool = False
    """An ``NLMSG_DONE`` was seen (end of a dump)."""
    errors: list[int] = field(default_factory=list)
    """Positive errno values of ``NLMSG_ERROR`` messages (acks with 0 are not errors)."""
    overrun: bool = False
    """An ``NLMSG_OVERRUN`` was seen (the kernel dropped messages)."""
    malformed: int = 0
    """Messages skipped because they were truncated or inconsistent."""
    reasons: dict[str, int] = field(default_factory=dict)
    """``malformed`` by reason (snake_case, see :mod:`podflow.model.losses`); adds up to it.

    ``bad_nlmsg_len`` (a length below 16 or beyond the buffer: the rest of the buffer is
    lost), ``truncated_nlmsg_header`` (1-15 bytes after the last message),
    ``short_nfgenmsg``, ``short_error_message``, ``bad_attribute_length`` (below 4 or
    beyond the enclosing attribute or message), ``short_attribute`` (a value shorter than
    its type), ``incomplete_tuple``, ``missing_tuple``; ``decoder_<error>`` would be a
    decoder defect caught by the safety net."""
    interrupted: bool = False
    """A dump message carried ``NLM_F_DUMP_INTR`` (the table changed under the walk)."""

    def count(self, reason: str) -> None:
        """Count one skipped message with ``reason``."""
        self.malformed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _status(value: int) -> CtStatus:
    s = _STATUS_CACHE.get(value)
    if s is None:
        s = CtStatus(value)
        if len(_STATUS_CACHE) < _STATUS_CACHE_MAX:
            _STATUS_CACHE[value] = s
    return s


def _short(what: str, alen: int) -> DecodeError:
    return DecodeError("short_attribute", f"{what} attribute of length {alen}")


def _tuple_ip(buf: bytes, q: int, qend: int) -> tuple[str, str]:
    """Source and destination address of a ``CTA_TUPLE_IP`` nest spanning ``buf[q:qend]``."""
    src = dst = ""
    while q + 4 <= qend:
        blen, btype = _NLA.unpack_from(buf, q)
        if blen < 4 or q + blen > qend:
            raise bad_attribute_length("CTA_TUPLE_IP", blen)
        spec = _IP_ATTRS.get(btype & NLA_TYPE_MASK)
        if spec is not None:
            family, need, is_src = spec
            if blen < need:
                raise _short("CTA_IP", blen)
            if is_src:
                src = socket.inet_ntop(family, buf[q + 4 : q + need])
            else:
                dst = socket.inet_ntop(family, buf[q + 4 : q + need])
        q += (blen + 3) & ~3
    return src, dst


def _tuple_proto(buf: bytes, q: int, qend: int) -> tuple[int, int | None, int | None]:
    """Protocol and ports of a ``CTA_TUPLE_PROTO`` nest spanning ``buf[q:qend]``."""
    proto = 0
    sport: int | None = None
    dport: int | None = None
    while q + 4 <= qend:
        blen, btype = _NLA.unpack_from(buf, q)
        if blen < 4 or q + blen > qend:
            raise bad_attribute_length("CTA_TUPLE_PROTO", blen)
        b = btype & NLA_TYPE_MASK
        if b == CTA_PROTO_NUM:
            if blen < 5:
                raise _short("CTA_PROTO_NUM", blen)
            proto = buf[q + 4]
        elif b in (CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT):
            if blen < 6:
                raise _short("CTA_PROTO_PORT", blen)
            if b == CTA_PROTO_SRC_PORT:
                sport = _BE16.unpack_from(buf, q + 4)[0]
            else:
                dport = _BE16.unpack_from(buf, q + 4)[0]
        q += (blen + 3) & ~3
    return proto, sport, dport


def _tuple(buf: bytes, p: int, end: int) -> CtTuple:
    """Decode a ``CTA_TUPLE_*`` nest spanning ``buf[p:end]``."""
    src = dst = ""
    proto = 0
    sport: int | None = None
    dport: int | None = None
    while p + 4 <= end:
        alen, atype = _NLA.unpack_from(buf, p)
        if alen < 4 or p + alen > end:
            raise bad_attribute_length("CTA_TUPLE", alen)
        t = atype & NLA_TYPE_MASK
        if t == CTA_TUPLE_IP:
            src, dst = _tuple_ip(buf, p + 4, p + alen)
        elif t == CTA_TUPLE_PROTO:
            proto, sport, dport = _tuple_proto(buf, p + 4, p + alen)
        p += (alen + 3) & ~3
    if not src or not dst or proto == 0:
        raise DecodeError("incomplete_tuple", "a tuple without both addresses or a protocol")
    if proto not in _PORT_PROTOS:
        sport = dport = None  # ICMP id/type/code are not ports
    return CtTuple(src, dst, proto, sport, dport)


def _cached_tuple(buf: bytes, v: int, end: int) -> CtTuple:
    """:func:`_tuple`, remembered by the nest's bytes (a connection's messages repeat it)."""
    raw = buf[v:end]
    tup = _TUPLE_CACHE.get(raw)
    if tup is None:
        tup = _tuple(buf, v, end)
        if len(raw) <= _TUPLE_KEY_MAX:
            if len(_TUPLE_CACHE) >= _TUPLE_CACHE_MAX:
                _TUPLE_CACHE.clear()
            _TUPLE_CACHE[raw] = tup
    return tup


def _two(buf: bytes, p: int, end: int, a: int, b: int, a32: int, b32: int
         ) -> tuple[int | None, int | None]:
    """Read attributes ``a`` and ``b`` (be64, or be32 as ``a32``/``b32``) of one nest."""
    va: int | None = None
    vb: int | None = None
    while p + 4 <= end:
        alen, atype = _NLA.unpack_from(buf, p)
        if alen < 4 or p + alen > end:
            raise bad_attribute_length("nested", alen)
        t = atype & NLA_TYPE_MASK
        if t in (a, b):
            if alen < 12:
                raise _short("64-bit", alen)
            if t == a:
                va = _BE64.unpack_from(buf, p + 4)[0]
            else:
                vb = _BE64.unpack_from(buf, p + 4)[0]
        elif t in (a32, b32):
            if alen < 8:
                raise _short("32-bit", alen)
            if t == a32:
                va = _BE32.unpack_from(buf, p + 4)[0]
            else:
                vb = _BE32.unpack_from(buf, p + 4)[0]
        p += (alen + 3) & ~3
    return va, vb


def _tcp_state(buf: bytes, p: int, end: int) -> str | None:
    """The TCP state name in a ``CTA_PROTOINFO`` nest (None for other protocols)."""
    while p + 4 <= end:
        alen, atype = _NLA.unpack_from(buf, p)
        if alen < 4 or p + alen > end:
            raise bad_attribute_length("CTA_PROTOINFO", alen)
        if atype & NLA_TYPE_MASK == CTA_PROTOINFO_TCP:
            q, qend = p + 4, p + alen
            while q + 4 <= qend:
                blen, btype = _NLA.unpack_from(buf, q)
                if blen < 4 or q + blen > qend:
                    raise bad_attribute_length("CTA_PROTOINFO_TCP", blen)
                if btype & NLA_TYPE_MASK == CTA_PROTOINFO_TCP_STATE:
                    if blen < 5:
                        raise _short("CTA_PROTOINFO_TCP_STATE", blen)
                    v = buf[q + 4]
                    return TCP_STATES[v] if v < len(TCP_STATES) else str(v)
                q += (blen + 3) & ~3
        p += (alen + 3) & ~3
    return None


def _entry(buf: bytes, p: int, end: int, event: CtEventType, received_at: float) -> CtEntry:
    """Decode the attributes of one conntrack message (after the nfgenmsg header)."""
    orig = reply = None
    status = zone = mark = 0
    cid = timeout = None
    tcp_state = None
    op = ob = rp = rb = start = stop = None
    while p + 4 <= end:
        alen, atype = _NLA.unpack_from(buf, p)
        if alen < 4 or p + alen > end:
            raise bad_attribute_length("top-level", alen)
        t = atype & NLA_TYPE_MASK
        v = p + 4
        if t == CTA_TUPLE_ORIG:
            orig = _cached_tuple(buf, v, p + alen)
        elif t == CTA_TUPLE_REPLY:
            reply = _cached_tuple(buf, v, p + alen)
        elif t in _BE32_ATTRS:
            if alen < 8:
                raise _short("32-bit", alen)
            if t == CTA_STATUS:
                status = _BE32.unpack_from(buf, v)[0]
            elif t == CTA_ID:
                cid = _BE32.unpack_from(buf, v)[0]
            elif t == CTA_TIMEOUT:
                timeout = _BE32.unpack_from(buf, v)[0]
            else:
                mark = _BE32.unpack_from(buf, v)[0]
        elif t == CTA_COUNTERS_ORIG:
            op, ob = _two(buf, v, p + alen, CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES,
                          CTA_COUNTERS32_PACKETS, CTA_COUNTERS32_BYTES)
        elif t == CTA_COUNTERS_REPLY:
            rp, rb = _two(buf, v, p + alen, CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES,
                          CTA_COUNTERS32_PACKETS, CTA_COUNTERS32_BYTES)
        elif t == CTA_TIMESTAMP:
            start, stop = _two(buf, v, p + alen, CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP, -1, -1)
        elif t == CTA_PROTOINFO:
            tcp_state = _tcp_state(buf, v, p + alen)
        elif t == CTA_ZONE:
            if alen < 6:
                raise _short("CTA_ZONE", alen)
            zone = _BE16.unpack_from(buf, v)[0]
        p += (alen + 3) & ~3
    if orig is None or reply is None:
        raise DecodeError("missing_tuple", "a message without both tuples")
    return CtEntry(event, orig, reply, _status(status), cid, zone, mark, timeout, tcp_state,
                   op, ob, rp, rb, start, stop, received_at)


def _decode_into(res: ParseResult, data: bytes, start: int, end: int, event: CtEventType,
                 received_at: float) -> None:
    """Decode the conntrack message whose body is ``data[start:end]`` into ``res``: its
    entry, or a counted reason."""
    if end - start < 4:
        res.count("short_nfgenmsg")
        return
    try:
        res.entries.append(_entry(data, start + 4, end, event, received_at))
    except DecodeError as exc:
        res.count(exc.reason)
    except Exception as exc:  # the safety net: a defect here must not stop the source
        res.count(reason_label(f"decoder_{type(exc).__name__}"))


def parse(buf: bytes | bytearray | memoryview, received_at: float, dump: bool = False
          ) -> ParseResult:
    """Decode every netlink message in one receive buffer; never raises on bad input.

    ``dump`` says the buffer answers a table dump (entries become ``DUMP``); otherwise
    ``IPCTNL_MSG_CT_NEW`` with ``NLM_F_CREATE|NLM_F_EXCL`` is ``NEW``, other ``CT_NEW``
    messages ``UPDATE`` and ``IPCTNL_MSG_CT_DELETE`` ``DESTROY``. Messages that do not
    decode are skipped and counted (:attr:`ParseResult.reasons`).
    """
    data = bytes(buf) if not isinstance(buf, bytes) else buf
    res = ParseResult()
    new_flags = NLM_F_CREATE | NLM_F_EXCL
    off, n = 0, len(data)
    while off + 16 <= n:
        mlen, mtype, mflags, _seq, _pid = _HDR.unpack_from(data, off)
        if mlen < 16 or off + mlen > n:
            res.count("bad_nlmsg_len")
            return res
        start, end = off + 16, off + mlen
        off += (mlen + 3) & ~3
        if mtype >> 8 == NFNL_SUBSYS_CTNETLINK:
            msg = mtype & 0xFF
            if dump and msg in _DUMP_TYPES:
                event = CtEventType.DUMP
            elif msg == IPCTNL_MSG_CT_NEW:
                new = mflags & new_flags == new_flags
                event = CtEventType.NEW if new else CtEventType.UPDATE
            elif msg == IPCTNL_MSG_CT_DELETE:
                event = CtEventType.DESTROY
            else:
                event = None
            if mflags & NLM_F_DUMP_INTR:
                res.interrupted = True
            if event is not None and mflags & NLM_F_REQUEST == 0:
                _decode_into(res, data, start, end, event, received_at)
        elif mtype == NLMSG_DONE:
            res.done = True
        elif mtype == NLMSG_ERROR:
            err = nlmsg_error(data, start, end)
            if err is None:
                res.count("short_error_message")
            elif err:
                res.errors.append(err)
        elif mtype == NLMSG_OVERRUN:
            res.overrun = True
    if off < n:
        res.count("truncated_nlmsg_header")
    return res


def dump_request(seq: int, family: int = socket.AF_UNSPEC, zero: bool = False) -> bytes:
    """An ``IPCTNL_MSG_CT_GET`` dump request for ``family`` (``AF_UNSPEC``: IPv4 and IPv6).

    ``zero`` asks for ``IPCTNL_MSG_CT_GET_CTRZERO`` (read and reset the counters); podflow
    does not use it, since other tools may read the same counters.
    """
    msg = IPCTNL_MSG_CT_GET_CTRZERO if zero else IPCTNL_MSG_CT_GET
    return nlmsg((NFNL_SUBSYS_CTNETLINK << 8) | msg, NLM_F_REQUEST | NLM_F_DUMP, seq,
                 NFGENMSG.pack(family, 0, 0))


def event_groups_mask() -> int:
    """The ``bind()`` group bitmask for NEW, UPDATE and DESTROY conntrack events."""
    groups = (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY)
    return sum(1 << (g - 1) for g in groups)
