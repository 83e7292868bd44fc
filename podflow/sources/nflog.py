"""NFLOG over nfnetlink_log: packets a netfilter rule logged before dropping them.

The kernel cannot say "this packet was dropped" by itself; the datapath has to log it.
Every DROP (or REJECT) that should show as a DROPPED flow needs an NFLOG rule with the same
match in front of it, e.g.::

    iptables -A FORWARD -d 10.244.1.7 -p tcp --dport 9000 \\
             -j NFLOG --nflog-group 5 --nflog-prefix "policy deny backend"
    iptables -A FORWARD -d 10.244.1.7 -p tcp --dport 9000 -j DROP

(nftables: ``log group 5 prefix "..."`` before ``drop``). The prefix becomes the flow's
``drop_reason_desc``. The agent binds group ``nflog_group`` in the node's namespace and asks
for packet copies (headers and the first 256 bytes are enough).

Messages are built and parsed here by hand (``struct``): the protocol is a handful of
fixed layouts (``linux/netfilter/nfnetlink_log.h``), and the only library for it, pyroute2,
has no NFLOG support. The netlink framing is :mod:`podflow.sources.netlink`'s (attribute
types masked with ``0x3FFF``, the last of a repeated type wins). :func:`parse_messages` is
pure and tested on recorded messages; it checks every length before it reads and counts what
it skips (see its doc).

Example::

    >>> msgs = parse_messages(build_packet(5, b"E" + bytes(19), prefix="deny", ts=1.5))
    >>> [(m.group, m.prefix, m.ts, len(m.payload)) for m in msgs]
    [(5, 'deny', 1.5, 20)]
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from podflow.model.losses import DecodeError, Losses
from podflow.sources import netlink
from podflow.sources.netlink import (
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    attribute_table,
    messages,
    nla,
    nlmsg,
    nlmsg_error,
)
from podflow.sources.netns import open_socket

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
CMD_BIND, CMD_UNBIND, CMD_PF_BIND, CMD_PF_UNBIND = 1, 2, 3, 4
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULA_TIMESTAMP, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV = 3, 4, 5
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10
COPY_PACKET = 2

_NFG = netlink.NFGENMSG  # assigned: Name.method() on an imported name skips LOAD_METHOD
_TS = struct.Struct("!QQ")  # struct nfulnl_msg_packet_timestamp: sec, usec
_BE32 = struct.Struct("!I")
_MAX_SEC = 1 << 34  # about the year 2514: later timestamps are not real
_PACKET_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET


@dataclass(frozen=True, slots=True)
class NflogPacket:
    """One logged packet."""

    group: int
    """The NFLOG group it was logged to."""
    ts: float
    """When it was logged (the kernel's timestamp, else when it was read)."""
    prefix: str
    """The rule's ``--nflog-prefix`` (may be empty)."""
    payload: bytes
    """The packet from its IP header on (as much as was copied)."""
    indev: int | None = None
    """ifindex it came in on."""
    outdev: int | None = None
    """ifindex it was going out on."""


def _msg(mtype: int, flags: int, family: int, res_id: int, attrs: bytes, seq: int) -> bytes:
    return nlmsg(mtype, flags, seq, _NFG.pack(family, 0, res_id) + attrs)


def config_messages(group: int, copy_range: int = 256) -> list[bytes]:
    """The configuration that binds ``group`` and asks for packet copies."""
    t = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    f = NLM_F_REQUEST | NLM_F_ACK
    return [
        _msg(t, f, socket.AF_INET, 0, nla(NFULA_CFG_CMD, bytes([CMD_PF_BIND])), 1),
        _msg(t, f, socket.AF_UNSPEC, group, nla(NFULA_CFG_CMD, bytes([CMD_BIND])), 2),
        _msg(t, f, socket.AF_UNSPEC, group,
             nla(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, COPY_PACKET)), 3),
    ]


def build_packet(group: int, payload: bytes, prefix: str = "", ts: float | None = None,
                 seq: int = 0) -> bytes:
    """An NFULNL_MSG_PACKET as the kernel sends it (for tests and golden data)."""
    attrs = b""
    if ts is not None:
        sec = int(ts)
        attrs += nla(NFULA_TIMESTAMP, struct.pack("!QQ", sec, round((ts - sec) * 1e6)))
    attrs += nla(NFULA_PREFIX, prefix.encode() + b"\0") + nla(NFULA_PAYLOAD, payload)
    return _msg((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET, 0, socket.AF_INET, group, attrs,
                seq)


def _timestamp(raw: bytes | None, now: float, losses: Losses) -> float:
    """``NFULA_TIMESTAMP`` as Unix seconds; ``now`` when absent or unusable (counted)."""
    if raw is None:
        return now
    if len(raw) < _TS.size:
        losses.count("short_attribute")
        return now
    sec, usec = _TS.unpack_from(raw)
    if sec > _MAX_SEC or usec >= 1_000_000:
        losses.count("bad_timestamp")
        return now
    return float(sec + usec / 1e6)


def _ifindex(raw: bytes | None, losses: Losses) -> int | None:
    """An ``NFULA_IFINDEX_*`` value (None when absent or too short, counted)."""
    if raw is None:
        return None
    if len(raw) < _BE32.size:
        losses.count("short_attribute")
        return None
    return int(_BE32.unpack_from(raw)[0])


def _packet(data: bytes, start: int, end: int, now: float | None, losses: Losses
            ) -> NflogPacket | None:
    """The packet in the NFULNL_MSG_PACKET whose body is ``data[start:end]`` (None: skipped,
    counted)."""
    if end - start < _NFG.size:
        losses.count("short_nfgenmsg")
        return None
    _fam, _ver, group = _NFG.unpack_from(data, start)
    try:
        a = attribute_table(data, start + _NFG.size, end)
    except DecodeError as exc:
        losses.count(exc.reason)
        return None
    ts = _timestamp(a.get(NFULA_TIMESTAMP), now if now is not None else time.time(), losses)
    prefix = a.get(NFULA_PREFIX, b"").split(b"\0")[0].decode(errors="replace")
    return NflogPacket(group, ts, prefix, a.get(NFULA_PAYLOAD, b""),
                       _ifindex(a.get(NFULA_IFINDEX_INDEV), losses),
                       _ifindex(a.get(NFULA_IFINDEX_OUTDEV), losses))


def parse_messages(data: bytes, now: float | None = None, losses: Losses | None = None
                   ) -> list[NflogPacket]:
    """The logged packets in one netlink read (other messages are skipped).

    Never raises. What it cannot use is counted in ``losses`` by reason: ``bad_nlmsg_len``
    (a length below 16 or beyond the data: the rest is lost), ``truncated_nlmsg_header``,
    ``short_nfgenmsg`` and ``bad_attribute_length`` (the packet is skipped),
    ``short_attribute`` and ``bad_timestamp`` (the packet is kept without that value).
    """
    lost = losses if losses is not None else Losses()
    out: list[NflogPacket] = []
    for mtype, _flags, start, end in messages(data, lost):
        if mtype == _PACKET_TYPE and (p := _packet(data, start, end, now, lost)) is not None:
            out.append(p)
    return out


def _check_ack(data: bytes) -> None:
    """Raise ``OSError`` if the reply to a configuration message refuses it (a reply that
    is not well framed refuses nothing)."""
    for mtype, _flags, start, end in messages(data, Losses()):
        if mtype == NLMSG_ERROR:
            err = nlmsg_error(data, start, end)
            if err is not None and err > 0:
                raise OSError(err, f"nfnetlink_log config refused: errno {err}")


def open_nflog(netns: str | None, group: int, rcvbuf: int = 4 << 20) -> socket.socket:
    """A non-blocking nfnetlink_log socket bound to ``group`` inside ``netns``."""
    sock = open_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(2.0)
        for msg in config_messages(group):
            sock.send(msg)
            _check_ack(sock.recv(65536))
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise
