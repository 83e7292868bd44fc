"""Packet bytes -> :class:`Pkt` (pure): Ethernet/VLAN, IPv4/IPv6, TCP/UDP/ICMP, VXLAN.

Two parsers give the same result: :func:`parse` (hand-written with ``struct`` and indexing)
and :func:`parse_dpkt` (dpkt 1.9.8's full decode, the library made for it). Measured over
the first 200k packets of ``bench/pcap_flows.py``'s pcap (TCP connections with data and
FINs, DNS, 5% VXLAN-encapsulated) on a 2-core machine shared with other jobs (load ~8, so
absolute numbers are low; the ratio held across three runs):

============  ====================
parser        packets/s
============  ====================
``parse``     0.39-0.72 M/s
dpkt          43-82 k/s
============  ====================

dpkt is 5-9x slower, and in the agent every packet that passes the kernel filter is parsed
(in ``bench/pcap_flows.py`` every packet of the file is), so the L2-L4 headers take the
struct fast path; dpkt stays the reference the tests check the fast path against. dpkt
has no VXLAN class: the 8-byte header (flags ``0x08``, 24-bit VNI) is read by hand in both
parsers, for UDP destination ports 8472 (Linux/flannel) and 4789 (IANA).

Any bytes are safe to parse (any pod can send the node a packet that passes the kernel
filter): :func:`parse` checks every length before it uses it (the Ethernet and VLAN
headers, IPv4 IHL >= 5 and the header within the captured bytes, the total length, the
IPv6 header, the TCP data offset, the UDP length, the VXLAN inner frame within its
datagram, the header an ICMP error quotes and its ports). A packet that fails a check is
counted in the :class:`~podflow.model.losses.Losses` given, by reason (``bad_ihl_ipv4``,
``short_inner_ipv4``, ``bad_data_offset_tcp``, ``short_icmp_quoted_ipv4``, ...: ``inner_``
inside VXLAN, ``icmp_quoted_`` in an ICMP error's quote), and None is returned. A total
length of 0 (IPv4) or payload length of 0 (IPv6) is a GSO packet over 64 KiB ("BIG TCP")
and means "as captured".

Addresses stay raw bytes (4 or 16) for speed: :func:`ip_str` names them when a flow is made.
An ICMP error (destination unreachable, time exceeded) carries the tuple of the packet it
answers in ``quoted``: ``(proto, src, dst, sport, dport)`` of that packet.

Example::

    >>> from podflow.pcap import tcp_frame
    >>> p = parse(tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, flags=0x02), 1.0)
    >>> ip_str(p.src), p.sport, ip_str(p.dst), p.dport, p.flags
    ('10.0.0.1', 40000, '10.0.0.2', 80, 2)
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

import dpkt

from podflow.model.losses import Losses

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
VXLAN_PORTS = frozenset((8472, 4789))
"""UDP destination ports decoded as VXLAN."""
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ICMP_ERRORS = frozenset((3, 11))
"""ICMPv4 types whose payload quotes the packet they answer (unreachable, time exceeded)."""
ICMP6_ERRORS = frozenset((1, 3))
"""ICMPv6 types that do the same (destination unreachable, time exceeded)."""

Quoted = tuple[int, bytes, bytes, int, int]
"""(proto, src, dst, sport, dport) of the packet an ICMP error answers."""
L3 = tuple[int, bytes, bytes, int, int, bool]
"""An IP header read: (proto, src, dst, L4 offset, declared IP length, has an L4 header)."""

_HHH = struct.Struct("!HHH")
_TCP = struct.Struct("!HHIIH")


class Pkt(NamedTuple):
    """One parsed packet (the innermost IP packet when encapsulated)."""

    ts: float
    """Capture time, Unix seconds."""
    src: bytes
    """Source address, 4 or 16 bytes."""
    dst: bytes
    """Destination address."""
    proto: int
    """IP protocol number."""
    sport: int
    """Source port (0 for ICMP); for ICMP the type."""
    dport: int
    """Destination port (0 for ICMP); for ICMP the code."""
    flags: int
    """TCP flags (0 otherwise)."""
    seq: int
    """TCP sequence number (UDP: 0)."""
    ack: int
    """TCP acknowledgement number."""
    length: int
    """IP length (header + payload) as on the wire."""
    data: bytes
    """The whole frame."""
    off: int
    """Offset of the L4 payload in ``data``."""
    end: int
    """End of the IP packet in ``data`` (link-layer padding excluded)."""
    vni: int = -1
    """VXLAN network identifier when the packet came encapsulated, else -1."""
    quoted: Quoted | None = None
    """For ICMP errors: the tuple of the packet it answers."""

    @property
    def payload(self) -> bytes:
        """The L4 payload (TCP/UDP data)."""
        return self.data[self.off:self.end]


def ip_str(addr: bytes) -> str:
    """Raw address -> text (``10.0.0.1``, ``fd00::1``)."""
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def ip_bytes(text: str) -> bytes:
    """Text -> raw address."""
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _lost(losses: Losses | None, reason: str, vni: int) -> None:
    """Count a skipped packet: ``reason`` with ``{in}`` naming the layer as inner or not."""
    if losses is not None:
        losses.count(reason.format(**{"in": "inner_" if vni >= 0 else ""}))


def _l3(data: bytes, o: int, limit: int, etype: int) -> L3 | str:
    """The IP header at ``o`` (bytes up to ``limit`` available): (proto, src, dst, l4
    offset, IP length as declared, has L4 header), or why it cannot be read (a reason
    template, see :func:`_lost`). The declared length is not checked here: an ICMP error
    quotes only the start of a packet."""
    if o >= limit:
        return "short_{in}ip"
    v = data[o] >> 4
    if etype == 0x0800 and v == 4:
        ihl = (data[o] & 15) * 4
        if ihl < 20:
            return "bad_ihl_{in}ipv4"
        if limit - o < ihl:
            return "short_{in}ipv4"
        return (data[o + 9], data[o + 12:o + 16], data[o + 16:o + 20], o + ihl,
                data[o + 2] << 8 | data[o + 3], not (data[o + 6] & 0x1F or data[o + 7]))
    if etype == 0x86DD and v == 6:
        if limit - o < 40:
            return "short_{in}ipv6"
        plen = data[o + 4] << 8 | data[o + 5]
        return (data[o + 6], data[o + 8:o + 24], data[o + 24:o + 40], o + 40,
                plen + 40 if plen else 0, True)
    return "bad_version_{in}ip"


def _quoted(data: bytes, at: int, end: int, outer: int) -> Quoted | str:
    """The tuple of the packet an ICMP error quotes at ``at`` (up to ``end``), or why not.

    ``outer`` is the ICMP's own protocol: ICMPv4 quotes IPv4, ICMPv6 quotes IPv6.
    """
    ip = _l3(data, at, end, 0x0800 if outer == ICMP else 0x86DD)
    if isinstance(ip, str):
        return ip.replace("{in}", "{in}icmp_quoted_")
    proto, src, dst, l4, _n, first = ip
    if not first or proto not in (TCP, UDP):
        return proto, src, dst, 0, 0
    if end - l4 < 4:
        return "short_{in}icmp_quoted_ports"
    return proto, src, dst, data[l4] << 8 | data[l4 + 1], data[l4 + 2] << 8 | data[l4 + 3]


def parse(data: bytes, ts: float, losses: Losses | None = None, *, off: int = 0,
          limit: int = -1, vni: int = -1) -> Pkt | None:
    """Parse an Ethernet frame; None for a packet that is not IP or cannot be read.

    Never raises: every length is checked before it is used, and a packet that fails a
    check is counted in ``losses`` by reason (``short_ipv4``, ``bad_ihl_inner_ipv4``,
    ``bad_data_offset_tcp``, ...; ``inner_`` when inside VXLAN) and skipped. ``off``,
    ``limit`` and ``vni`` are for the frame inside a VXLAN datagram: it starts at ``off``,
    its bytes end at ``limit`` (-1 or past the end: the end of ``data``), and it came with
    ``vni``.
    """
    if limit < 0 or limit > len(data):
        limit = len(data)
    o = off + 14
    if limit - o >= 20 and data[off + 12] == 8 and data[off + 13] == 0 \
            and 0x45 <= (h := data[o]) <= 0x4F and limit - o >= (h & 15) * 4:
        # the common case inline: untagged IPv4, a whole header (IHL >= 5) captured
        proto, src, dst = data[o + 9], data[o + 12:o + 16], data[o + 16:o + 20]
        l4, length = o + (h & 15) * 4, data[o + 2] << 8 | data[o + 3]
        first = not (data[o + 6] & 0x1F or data[o + 7])
    else:
        if limit < o:
            _lost(losses, "short_{in}frame", vni)
            return None
        etype = data[off + 12] << 8 | data[off + 13]
        while etype == 0x8100 or etype == 0x88A8:
            if limit - o < 4:
                _lost(losses, "short_{in}vlan", vni)
                return None
            etype = data[o + 2] << 8 | data[o + 3]
            o += 4
        if etype != 0x0800 and etype != 0x86DD:
            _lost(losses, "not_{in}ip", vni)
            return None
        ip = _l3(data, o, limit, etype)
        if isinstance(ip, str):
            _lost(losses, ip, vni)
            return None
        proto, src, dst, l4, length, first = ip
    if length < l4 - o:
        if length:
            _lost(losses, "bad_length_{in}ip", vni)
            return None
        length = limit - o  # 0: a GSO packet over 64 KiB (BIG TCP), as captured
    end = o + length
    if end > limit:
        end = limit  # cut by the snap length
    if not first:
        return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
    if proto == TCP:
        if end - l4 < 20:
            _lost(losses, "short_{in}tcp", vni)
            return None
        sport, dport, seq, ack, hf = _TCP.unpack_from(data, l4)
        if l4 + 20 <= (pay := l4 + (hf >> 12) * 4) <= end:
            return Pkt(ts, src, dst, proto, sport, dport, hf & 0x1FF, seq, ack, length, data,
                       pay, end, vni)
        _lost(losses, "bad_data_offset_{in}tcp", vni)
        return None
    if proto == UDP:
        return _udp(data, ts, src, dst, l4, length, end, vni, losses)
    if proto in (ICMP, ICMP6):
        if end - l4 < 8:
            _lost(losses, "short_{in}icmp", vni)
            return None
        t, c = data[l4], data[l4 + 1]
        q: Quoted | None = None
        if t in (ICMP_ERRORS if proto == ICMP else ICMP6_ERRORS):
            got = _quoted(data, l4 + 8, end, proto)
            if isinstance(got, str):
                _lost(losses, got, vni)
                return None
            q = got
        return Pkt(ts, src, dst, proto, t, c, 0, 0, 0, length, data, l4 + 8, end, vni, q)
    return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)


def _udp(data: bytes, ts: float, src: bytes, dst: bytes, l4: int, length: int, end: int,
         vni: int, losses: Losses | None) -> Pkt | None:
    """The UDP datagram at ``l4`` (IP packet ending at ``end``), VXLAN decoded."""
    if end - l4 < 8:
        _lost(losses, "short_{in}udp", vni)
        return None
    sport, dport, ulen = _HHH.unpack_from(data, l4)
    if ulen < 8:
        _lost(losses, "bad_length_{in}udp", vni)
        return None
    if ulen < end - l4:
        end = l4 + ulen  # bytes after the datagram are not its payload
    if dport in VXLAN_PORTS and vni < 0 and end - l4 >= 16 and data[l4 + 8] & 0x08:
        return parse(data, ts, losses, off=l4 + 16, limit=end,
                     vni=data[l4 + 12] << 16 | data[l4 + 13] << 8 | data[l4 + 14])
    return Pkt(ts, src, dst, UDP, sport, dport, 0, 0, 0, length, data, l4 + 8, end, vni)


def parse_ip(data: bytes, ts: float, losses: Losses | None = None) -> Pkt | None:
    """Parse a packet that starts at the IP header (NFLOG payloads, raw-IP pcaps)."""
    if not data:
        _lost(losses, "short_{in}ip", -1)
        return None
    etype = b"\x08\x00" if data[0] >> 4 == 4 else b"\x86\xdd"
    return parse(bytes(12) + etype + data, ts, losses)


def parse_dpkt(data: bytes, ts: float) -> Pkt | None:
    """The same as :func:`parse`, with dpkt's full decode (the reference; ~7x slower)."""
    try:
        eth = dpkt.ethernet.Ethernet(data)
    except (dpkt.UnpackError, IndexError):
        return None
    return _from_dpkt(eth.data, data, ts, 14 + 4 * len(getattr(eth, "vlan_tags", ())), -1)


def _from_dpkt(ip: object, data: bytes, ts: float, at: int, vni: int) -> Pkt | None:
    """``ip`` decoded by dpkt, whose header starts at offset ``at`` of ``data``."""
    if isinstance(ip, dpkt.ip.IP):
        src, dst, proto, length, hl = ip.src, ip.dst, ip.p, ip.len, ip.hl * 4
        first = ip.offset == 0
    elif isinstance(ip, dpkt.ip6.IP6):
        src, dst, proto, length, hl, first = ip.src, ip.dst, ip.nxt, ip.plen + 40, 40, True
    else:
        return None
    end = min(at + length, len(data))
    l4, l4at = ip.data, at + hl
    if not first:
        return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
    if isinstance(l4, dpkt.tcp.TCP):
        return Pkt(ts, src, dst, proto, l4.sport, l4.dport, l4.flags, l4.seq, l4.ack, length,
                   data, l4at + l4.off * 4, end, vni)
    if isinstance(l4, dpkt.udp.UDP):
        body = bytes(l4.data)
        if l4.dport in VXLAN_PORTS and vni < 0 and len(body) >= 8 and body[0] & 0x08:
            try:
                inner = dpkt.ethernet.Ethernet(body[8:])
                made = _from_dpkt(inner.data, data, ts, l4at + 16 + 14,
                                  int.from_bytes(body[4:7], "big"))
                if made is not None:
                    return made
            except (dpkt.UnpackError, IndexError):
                pass
        return Pkt(ts, src, dst, proto, l4.sport, l4.dport, 0, 0, 0, length, data, l4at + 8,
                   end, vni)
    if isinstance(l4, dpkt.icmp.ICMP | dpkt.icmp6.ICMP6):
        errs = ICMP_ERRORS if proto == ICMP else ICMP6_ERRORS
        q = _quoted(data, l4at + 8, end, proto) if l4.type in errs else None
        if isinstance(q, str):
            return None
        return Pkt(ts, src, dst, proto, l4.type, l4.code, 0, 0, 0, length, data, l4at + 8,
                   end, vni, q)
    return Pkt(ts, src, dst, proto, 0, 0, 0, 0, 0, length, data, end, end, vni)
