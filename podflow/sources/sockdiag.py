"""NETLINK_SOCK_DIAG / inet_diag: request builder and reply parser (pure, no I/O).

The kernel's socket diagnostics (``linux/inet_diag.h``, ``linux/sock_diag.h``): a
``SOCK_DIAG_BY_FAMILY`` dump request carries an ``inet_diag_req_v2`` (family, protocol,
wanted extensions, a bit mask of TCP states); the reply is one ``inet_diag_msg`` per socket
(state, both addresses as the application sees them, inode, uid, a unique cookie) followed by
netlink attributes, among them ``INET_DIAG_INFO`` = ``struct tcp_info`` for TCP sockets.
:func:`build_request` makes the bytes to send, :func:`parse` turns received bytes into
:class:`DiagSocket` values; both are pure so golden recordings decode without root
(``tests/data/sockdiag``). :func:`parse` checks every length before it reads and counts
what it skips (see its doc); the only thing it raises is the ``OSError`` of an error reply.

Example::

    >>> req = build_request(socket.AF_INET, IPPROTO_TCP, seq=7)
    >>> len(req), struct.unpack_from("=IHH", req)
    (72, (72, 20, 769))
    >>> parse(b"")
    ([], False)
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from socket import inet_ntop

from podflow.model.losses import DecodeError, Losses
from podflow.model.sockets import CLOSE as CLOSE
from podflow.model.sockets import ESTABLISHED as ESTABLISHED
from podflow.model.sockets import LISTEN as LISTEN
from podflow.model.sockets import TCP_STATES as TCP_STATES
from podflow.model.sockets import TIME_WAIT as TIME_WAIT
from podflow.model.sockets import DiagSocket, TcpStats
from podflow.sources.netlink import NETLINK_SOCK_DIAG as NETLINK_SOCK_DIAG
from podflow.sources.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attributes,
    messages,
    nlmsg,
    nlmsg_error,
)

SOCK_DIAG_BY_FAMILY = 20
"""Request type of an inet_diag_req_v2 dump."""
IPPROTO_TCP, IPPROTO_UDP = 6, 17
INET_DIAG_INFO = 2
"""Attribute carrying ``struct tcp_info``."""

ALL_STATES = 0xFFFFFFFF
DEFAULT_STATES = ALL_STATES & ~((1 << TIME_WAIT) | (1 << 3) | (1 << 12))
"""Everything but TIME_WAIT and half-open (SYN_RECV) request sockets: a connection in
TIME_WAIT has ended, and its minisocket carries no tcp_info."""

_REQ = struct.Struct("=BBBBI")  # + inet_diag_sockid
_SOCKID = struct.Struct(">HH16s16s")  # ports and addresses are big-endian
# inet_diag_msg: family, state, timer, retrans, sockid (ports big-endian, read native and
# swapped), if, cookie[2], expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBxxHH16s16sIII12xII")
_MSG_LEN = _MSG.size  # 72
# struct tcp_info (linux/tcp.h): offsets of the fields used.
# state, retransmits (at 2), rtt and rttvar (at 68), total_retrans (at 100)
_TI_OLD = struct.Struct("=BxBx64xII24xI")
# ... and bytes_acked, bytes_received, segs_out, segs_in (at 120, kernels >= 4.2)
_TI_NEW = struct.Struct("=BxBx64xII24xI16xQQII")


def build_request(family: int, proto: int, *, states: int = DEFAULT_STATES,
                  info: bool = True, seq: int = 1) -> bytes:
    """A ``SOCK_DIAG_BY_FAMILY`` dump request for every socket of ``family``/``proto``.

    ``states`` is a bit mask of TCP state numbers; ``info`` asks for ``tcp_info``.
    """
    ext = (1 << (INET_DIAG_INFO - 1)) if info else 0
    body = _REQ.pack(family, proto, ext, 0, states) + _SOCKID.pack(0, 0, b"", b"") + \
        struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    return nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


_MAPPED = b"\0" * 10 + b"\xff\xff"


def _ip6(raw: bytes) -> str:
    """An IPv6 address as text; IPv4-mapped ones (dual-stack sockets) as IPv4."""
    if raw[:12] == _MAPPED:
        return inet_ntop(socket.AF_INET, raw[12:])
    return str(ipaddress.IPv6Address(raw))


def parse_tcp_info(data: bytes) -> TcpStats | None:
    """The used fields of a ``struct tcp_info`` (None when shorter than its first 104 bytes)."""
    if len(data) >= _TI_NEW.size:
        st, re, rtt, var, tot, acked, rcvd, sout, sin = _TI_NEW.unpack_from(data)
        return TcpStats(st, rtt, var, re, tot, acked, rcvd, sout, sin)
    if len(data) >= _TI_OLD.size:
        st, re, rtt, var, tot = _TI_OLD.unpack_from(data)
        return TcpStats(st, rtt, var, re, tot, None, None, None, None)
    return None


def _swap16(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8) if _NATIVE_LE else v


_NATIVE_LE = struct.pack("=H", 1) == b"\x01\x00"


def _strerror(code: int) -> str:
    """``os.strerror`` for any int (an errno the kernel cannot send gets a plain text)."""
    if 0 < code < 4096:
        return os.strerror(code)
    return f"invalid error code {code}"


def _attributes(data: bytes, pos: int, end: int, proto: int, losses: Losses) -> TcpStats | None:
    """``tcp_info`` from the attributes in ``data[pos:end]``; a bad length ends the walk
    (counted), and what was read so far is kept. Framing as :mod:`.netlink` walks it: a
    repeated ``INET_DIAG_INFO`` overrides the earlier one (last wins)."""
    tcp = None
    try:
        for atype, start, stop in attributes(data, pos, end):
            if atype == INET_DIAG_INFO and proto == IPPROTO_TCP:
                tcp = parse_tcp_info(data[start:stop])
                if tcp is None:
                    losses.count("short_tcp_info")
    except DecodeError as exc:
        losses.count(exc.reason)
    return tcp


def _parse_msg(data: bytes, off: int, end: int, proto: int, losses: Losses
               ) -> DiagSocket | None:
    """One socket from the ``inet_diag_msg`` at ``data[off:end]`` (None: skipped, counted)."""
    family, state, sport, dport, src, dst, _if, c0, c1, uid, inode = \
        _MSG.unpack_from(data, off)
    if family == socket.AF_INET:
        lip, rip = inet_ntop(socket.AF_INET, src[:4]), inet_ntop(socket.AF_INET, dst[:4])
    elif family == socket.AF_INET6:
        lip, rip = _ip6(src), _ip6(dst)
    else:
        losses.count("bad_address_family")
        return None
    tcp = _attributes(data, off + _MSG_LEN, end, proto, losses)
    return DiagSocket(family, proto, state, lip, _swap16(sport), rip, _swap16(dport), inode,
                      uid, c0 | (c1 << 32), tcp)


def parse(data: bytes, proto: int = IPPROTO_TCP, losses: Losses | None = None
          ) -> tuple[list[DiagSocket], bool]:
    """Sockets in one or more received netlink messages, and whether the dump is over.

    ``proto`` is the protocol the request asked for. Raises ``OSError`` on an NLMSG_ERROR
    reply with a non-zero error (the dump failed); any other input is decoded as far as it
    goes, and what is skipped is counted in ``losses`` by reason: ``bad_nlmsg_len`` (a
    length below 16 or beyond the data: the rest is lost), ``truncated_nlmsg_header``,
    ``short_error_message`` (taken as the end of the dump), ``short_inet_diag_msg``,
    ``bad_address_family`` (the socket is skipped), ``bad_attribute_length`` and
    ``short_tcp_info`` (the socket is kept, without what could not be read).
    """
    lost = losses if losses is not None else Losses()
    out: list[DiagSocket] = []
    for mtype, _flags, start, end in messages(data, lost):
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            err = nlmsg_error(data, start, end)
            if err is None:
                lost.count("short_error_message")
            elif err:
                raise OSError(err, f"inet_diag: {_strerror(err)}")
            return out, True
        if mtype == SOCK_DIAG_BY_FAMILY:
            if end - start < _MSG_LEN:
                lost.count("short_inet_diag_msg")
            elif (sock := _parse_msg(data, start, end, proto, lost)) is not None:
                out.append(sock)
    return out, False


def dump(sock: socket.socket, family: int, proto: int, *, states: int = DEFAULT_STATES,
         seq: int = 1, bufsize: int = 65536, raw: list[bytes] | None = None,
         losses: Losses | None = None) -> list[DiagSocket]:
    """Send one dump request on a NETLINK_SOCK_DIAG socket and read every reply.

    ``raw``, when given, collects the received datagrams (for golden recordings); what the
    decoder skips is counted in ``losses`` (see :func:`parse`).
    """
    sock.send(build_request(family, proto, states=states, seq=seq))
    found: list[DiagSocket] = []
    while True:
        data = sock.recv(bufsize)
        if raw is not None:
            raw.append(data)
        got, done = parse(data, proto, losses)
        found.extend(got)
        if done or not data:
            return found
