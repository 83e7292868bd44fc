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
from dataclasses import dataclass
from socket import inet_ntop

from podflow.model.losses import Losses

NETLINK_SOCK_DIAG = 4
"""Netlink protocol number of socket diagnostics."""
SOCK_DIAG_BY_FAMILY = 20
"""Request type of an inet_diag_req_v2 dump."""
IPPROTO_TCP, IPPROTO_UDP = 6, 17
INET_DIAG_INFO = 2
"""Attribute carrying ``struct tcp_info``."""
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3

TCP_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
              "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
              "NEW_SYN_RECV")
"""Kernel TCP state numbers (``include/net/tcp_states.h``) -> names; UDP uses 1 and 7."""
ESTABLISHED, TIME_WAIT, CLOSE, LISTEN = 1, 6, 7, 10
ALL_STATES = 0xFFFFFFFF
DEFAULT_STATES = ALL_STATES & ~((1 << TIME_WAIT) | (1 << 3) | (1 << 12))
"""Everything but TIME_WAIT and half-open (SYN_RECV) request sockets: a connection in
TIME_WAIT has ended, and its minisocket carries no tcp_info."""

_NLHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI")  # + inet_diag_sockid
_SOCKID = struct.Struct(">HH16s16s")  # ports and addresses are big-endian
# inet_diag_msg: family, state, timer, retrans, sockid (ports big-endian, read native and
# swapped), if, cookie[2], expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBxxHH16s16sIII12xII")
_ATTR = struct.Struct("=HH")
_ERR = struct.Struct("=i")
_MSG_LEN = _MSG.size  # 72
# struct tcp_info (linux/tcp.h): offsets of the fields used.
# state, retransmits (at 2), rtt and rttvar (at 68), total_retrans (at 100)
_TI_OLD = struct.Struct("=BxBx64xII24xI")
# ... and bytes_acked, bytes_received, segs_out, segs_in (at 120, kernels >= 4.2)
_TI_NEW = struct.Struct("=BxBx64xII24xI16xQQII")


@dataclass(frozen=True, slots=True)
class TcpStats:
    """The fields of ``struct tcp_info`` podflow uses."""

    state: int
    """tcpi_state (a TCP state number)."""
    rtt_us: int
    """Smoothed RTT, microseconds (tcpi_rtt)."""
    rttvar_us: int
    """RTT variance, microseconds (tcpi_rttvar)."""
    retransmits: int
    """Retransmits of the segment now outstanding (tcpi_retransmits)."""
    total_retrans: int
    """Segments retransmitted over the connection's life (tcpi_total_retrans)."""
    bytes_acked: int | None
    """Bytes sent and acknowledged by the peer (tcpi_bytes_acked; None if too short)."""
    bytes_received: int | None
    """Bytes received in order (tcpi_bytes_received)."""
    segs_out: int | None
    """Segments sent (tcpi_segs_out)."""
    segs_in: int | None
    """Segments received (tcpi_segs_in)."""


@dataclass(frozen=True, slots=True)
class DiagSocket:
    """One socket as inet_diag reports it (addresses as the application sees them)."""

    family: int
    """AF_INET or AF_INET6."""
    proto: int
    """IPPROTO_TCP or IPPROTO_UDP (from the request: the reply does not say)."""
    state: int
    """TCP state number (UDP: 1 connected, 7 unconnected)."""
    local_ip: str
    """Local address; IPv4-mapped IPv6 addresses are given as IPv4."""
    local_port: int
    """Local port."""
    remote_ip: str
    """Peer address (``0.0.0.0`` / ``::`` when none)."""
    remote_port: int
    """Peer port (0 when none)."""
    inode: int
    """Socket inode (``socket:[N]`` in /proc/PID/fd); 0 for sockets without a file."""
    uid: int
    """Owner uid."""
    cookie: int
    """The kernel's unique id of the socket (never reused while the system runs)."""
    tcp: TcpStats | None = None
    """tcp_info, when asked for and present."""

    @property
    def state_name(self) -> str:
        """``ESTABLISHED``, ``LISTEN`` ..."""
        return TCP_STATES[self.state] if self.state < len(TCP_STATES) else str(self.state)


def build_request(family: int, proto: int, *, states: int = DEFAULT_STATES,
                  info: bool = True, seq: int = 1) -> bytes:
    """A ``SOCK_DIAG_BY_FAMILY`` dump request for every socket of ``family``/``proto``.

    ``states`` is a bit mask of TCP state numbers; ``info`` asks for ``tcp_info``.
    """
    ext = (1 << (INET_DIAG_INFO - 1)) if info else 0
    body = _REQ.pack(family, proto, ext, 0, states) + _SOCKID.pack(0, 0, b"", b"") + \
        struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    return _NLHDR.pack(_NLHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                       NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


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
    (counted), and what was read so far is kept. A repeated ``INET_DIAG_INFO`` overrides the
    earlier one (last wins); the type is masked with ``0x3FFF``."""
    tcp = None
    while pos + 4 <= end:
        alen, atype = _ATTR.unpack_from(data, pos)
        if alen < 4 or pos + alen > end:
            losses.count("bad_attribute_length")
            break
        if atype & 0x3FFF == INET_DIAG_INFO and proto == IPPROTO_TCP:
            tcp = parse_tcp_info(data[pos + 4:pos + alen])
            if tcp is None:
                losses.count("short_tcp_info")
        pos += (alen + 3) & ~3
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
    off = 0
    while off + _NLHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLHDR.unpack_from(data, off)
        if length < _NLHDR.size or off + length > len(data):
            lost.count("bad_nlmsg_len")
            return out, False
        body = off + _NLHDR.size
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            if length < _NLHDR.size + 4:
                lost.count("short_error_message")
                return out, True
            (err,) = _ERR.unpack_from(data, body)
            if err:
                raise OSError(-err, f"inet_diag: {_strerror(-err)}")
            return out, True
        if mtype == SOCK_DIAG_BY_FAMILY:
            if length < _NLHDR.size + _MSG_LEN:
                lost.count("short_inet_diag_msg")
            elif (sock := _parse_msg(data, body, off + length, proto, lost)) is not None:
                out.append(sock)
        off += (length + 3) & ~3
    if off < len(data):
        lost.count("truncated_nlmsg_header")
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
