"""Standard libpcap files: write what was captured, read it back (no root, no libpcap).

The format is the classic one every tool reads (``tcpdump -r``, Wireshark, softflowd
``-r``): a 24-byte global header (magic, version 2.4, snaplen, link type) and a 16-byte
record header per packet (seconds, sub-second part, captured length, original length).
:class:`PcapWriter` writes microsecond files (magic ``0xa1b2c3d4``), link type 1
(Ethernet), in the machine's byte order as libpcap does; :func:`read_pcap` reads both byte
orders and both microsecond and nanosecond (``0xa1b23c4d``) files.

A file that cannot be read is refused with :class:`PcapError` (one error type, a message
naming the record and its byte offset), never anything else, whatever its bytes: a record
claiming more than :data:`MAX_CAPLEN` bytes (what libpcap accepts for Ethernet; it would
otherwise be allocated) and a file that ends inside a record (a cut copy, or a capture
still being written) both raise it, after every whole record before them was yielded, as
``tcpdump -r`` reports "truncated dump file" after printing the packets it read. A file that
ends exactly after a record ends cleanly.

Example::

    >>> import io
    >>> buf = io.BytesIO()
    >>> w = PcapWriter(buf)
    >>> w.write(1700000000.25, b"\\x00" * 60)
    >>> w.count
    1
    >>> [(ts, len(data)) for ts, data in read_pcap(io.BytesIO(buf.getvalue()))]
    [(1700000000.25, 60)]
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
"""Link type of every file podflow writes (all captured interfaces are Ethernet-like)."""
LINKTYPE_RAW = 101
"""Raw IP (no link header): what NFLOG payloads are."""
DEFAULT_SNAPLEN = 262144
"""Largest packet kept whole, as tcpdump's default."""

MAX_CAPLEN = 262144
"""Largest captured length a record may claim (libpcap's limit for Ethernet, tcpdump's
default snap length); more is refused as a broken file."""

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_REC = struct.Struct("=IIII")


class PcapError(ValueError):
    """The file is not a pcap podflow can read (the message says where and why)."""


class PcapWriter:
    """Append packets to a pcap stream (a file object opened ``wb``)."""

    def __init__(self, out: BinaryIO, snaplen: int = DEFAULT_SNAPLEN,
                 linktype: int = LINKTYPE_ETHERNET) -> None:
        """Write the global header at once."""
        self.out = out
        self.snaplen = snaplen
        self.count = 0
        """Packets written so far."""
        out.write(struct.pack("=IHHiIII", _MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts: float, data: bytes, orig_len: int | None = None) -> None:
        """One packet captured at ``ts`` (Unix seconds); longer than snaplen is cut."""
        sec = int(ts)
        usec = round((ts - sec) * 1_000_000)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        cap = data[: self.snaplen]
        self.out.write(_REC.pack(sec, usec, len(cap), orig_len or len(data)))
        self.out.write(cap)
        self.count += 1

    def flush(self) -> None:
        """Flush the underlying stream."""
        self.out.flush()


def open_writer(path: Path, snaplen: int = DEFAULT_SNAPLEN,
                linktype: int = LINKTYPE_ETHERNET) -> PcapWriter:
    """A writer on a new file at ``path`` (close it with ``writer.out.close()``)."""
    return PcapWriter(open(path, "wb"), snaplen, linktype)


def read_header(inp: BinaryIO) -> tuple[str, float, int]:
    """Read the global header: (struct byte-order prefix, time divisor, link type)."""
    head = inp.read(24)
    if len(head) < 24:
        raise PcapError("truncated pcap header")
    for order in ("<", ">"):
        magic = struct.unpack(order + "I", head[:4])[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            linktype = struct.unpack(order + "I", head[20:24])[0]
            return order, 1e6 if magic == _MAGIC_US else 1e9, linktype & 0xFFFF
    raise PcapError(f"not a pcap file (magic {head[:4].hex()}); pcapng is not supported")


def read_pcap(inp: BinaryIO) -> Iterator[tuple[float, bytes]]:
    """Every (timestamp, bytes) of a pcap stream, in file order.

    Raises :class:`PcapError` for a broken header, a record longer than
    :data:`MAX_CAPLEN` or a file cut inside a record (after yielding the records before).
    """
    order, div, _link = read_header(inp)
    rec = struct.Struct(order + "IIII")
    read = inp.read
    n, at = 0, 24
    while True:
        h = read(16)
        if len(h) < 16:
            if h:
                raise PcapError(f"truncated pcap: record {n + 1} at byte {at} has "
                                f"{len(h)} of its 16 header bytes")
            return
        sec, frac, caplen, _orig = rec.unpack(h)
        if caplen > MAX_CAPLEN:
            raise PcapError(f"broken pcap: record {n + 1} at byte {at} claims {caplen} "
                            f"bytes, more than the {MAX_CAPLEN} a record may hold")
        data = read(caplen)
        if len(data) < caplen:
            raise PcapError(f"truncated pcap: record {n + 1} at byte {at} has {len(data)} "
                            f"of its {caplen} bytes")
        n, at = n + 1, at + 16 + caplen
        yield sec + frac / div, data


def read_pcap_file(path: Path) -> Iterator[tuple[float, bytes]]:
    """:func:`read_pcap` over a file path (the file is closed when exhausted)."""
    with open(path, "rb") as f:
        yield from read_pcap(f)


# -- synthetic frames (tests, benchmarks, golden data) -----------------------------------

_MAC_A, _MAC_B = bytes.fromhex("0a0000000001"), bytes.fromhex("0a0000000002")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_frame(src: str, dst: str, proto: int, l4: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    """An Ethernet + IPv4 frame around the L4 bytes ``l4`` (IPv4 header checksum filled)."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, 0x4000, ttl,
                      proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return _MAC_B + _MAC_A + b"\x08\x00" + hdr + l4


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int = 0x10, seq: int = 1,
              ack: int = 0, payload: bytes = b"", ident: int = 0) -> bytes:
    """An Ethernet/IPv4/TCP frame (TCP checksum left 0: nothing here verifies it)."""
    tcp = struct.pack("!HHIIHHHH", sport, dport, seq, ack, (5 << 12) | flags, 65535, 0, 0)
    return ip_frame(src, dst, 6, tcp + payload, ident)


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"",
              ident: int = 0) -> bytes:
    """An Ethernet/IPv4/UDP frame (checksum 0 = none, as IPv4 allows)."""
    return ip_frame(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
                    + payload, ident)


def icmp_error_frame(src: str, dst: str, quoted_frame: bytes, type_: int = 3,
                     code: int = 1) -> bytes:
    """An ICMP error from ``src`` to ``dst`` quoting the IP header + 8 bytes of a frame."""
    ihl = (quoted_frame[14] & 15) * 4
    body = quoted_frame[14:14 + ihl + 8]
    icmp = struct.pack("!BBHI", type_, code, 0, 0) + body
    icmp = icmp[:2] + struct.pack("!H", _csum(icmp)) + icmp[4:]
    return ip_frame(src, dst, 1, icmp)


def vxlan_frame(outer_src: str, outer_dst: str, inner_frame: bytes, vni: int = 1,
                port: int = 8472) -> bytes:
    """``inner_frame`` encapsulated in VXLAN over UDP between two underlay addresses."""
    vx = struct.pack("!II", 0x08000000, vni << 8)
    return udp_frame(outer_src, outer_dst, 40000 + vni % 1000, port, vx + inner_frame)
