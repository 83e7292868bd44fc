"""Fuzz target: one read of the nfnetlink_log socket, through the NFLOG decoder.

The input is what the packets source reads from its NFLOG socket in one go. It goes through
:func:`podflow.sources.nflog.parse_messages`, which never raises: a message or attribute it
cannot decode is counted with a reason and skipped. The seeds are NFLOG packet messages the
way the kernel writes them (nfgenmsg, then hardware header, marks, interfaces, timestamp,
prefix and payload attributes) around the packet of the golden ``nflog.pcap``.
"""

from __future__ import annotations

import socket
import struct

from podflow.model.losses import Losses
from podflow.pcap import read_pcap_file
from podflow.sources import nflog
from tests.conftest import DATA
from tests.fuzz.targets import Target

_NLA = struct.Struct("=HH")


def _nla(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    return _NLA.pack(_NLA.size + len(value), kind) + value + bytes(-len(value) % 4)


def _message(ip: bytes, ts: float, seq: int) -> bytes:
    """An NFULNL_MSG_PACKET with the attributes a kernel sends for a forwarded packet."""
    sec = int(ts)
    attrs = (_nla(1, struct.pack("!HBx", 0x0800, 3))                 # NFULA_PACKET_HDR
             + _nla(nflog.NFULA_PREFIX, b"pf-test deny 81\0")
             + _nla(nflog.NFULA_IFINDEX_INDEV, struct.pack("!I", 4))
             + _nla(nflog.NFULA_IFINDEX_OUTDEV, struct.pack("!I", 5))
             + _nla(2, struct.pack("!I", 0))                          # NFULA_MARK
             + _nla(8, struct.pack("!H2x6s2x", 6, bytes(range(6))))   # NFULA_HWADDR
             + _nla(nflog.NFULA_TIMESTAMP, struct.pack("!QQ", sec, round((ts - sec) * 1e6)))
             + _nla(nflog.NFULA_PAYLOAD, ip))
    body = struct.pack("!BBH", socket.AF_INET, 0, 7) + attrs
    mtype = (nflog.NFNL_SUBSYS_ULOG << 8) | nflog.NFULNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, seq, 0) + body


def seeds() -> list[bytes]:
    """The golden packet as one message, as two in one read, and as ``build_packet`` makes it."""
    out: list[bytes] = []
    for ts, frame in read_pcap_file(DATA / "pcap" / "nflog.pcap"):
        ip = frame[14:]
        one = _message(ip, ts, 0)
        out += [one, one + _message(ip, ts + 1.0, 1),
                nflog.build_packet(7, ip, prefix="pf-test deny 81", ts=ts)]
    return out


def run(data: bytes) -> None:
    """Decode ``data``; nothing may be raised, and every packet must be well-formed."""
    for m in nflog.parse_messages(data, now=0.0, losses=Losses()):
        if not isinstance(m.payload, bytes) or not isinstance(m.prefix, str):
            raise AssertionError(f"bad packet {m!r}")


TARGET = Target("nflog", seeds, run, examples=1500)
