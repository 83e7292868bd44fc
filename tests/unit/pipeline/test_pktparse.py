"""Packet parsing: the struct fast path agrees with dpkt; VXLAN, ICMP, IPv6, VLAN, NFLOG."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from podflow.pcap import (
    MAX_CAPLEN,
    PcapError,
    PcapWriter,
    icmp_error_frame,
    read_pcap,
    read_pcap_file,
    tcp_frame,
    udp_frame,
    vxlan_frame,
)
from podflow.pipeline.pktparse import ip_bytes, ip_str, parse, parse_dpkt, parse_ip
from podflow.sources.nflog import build_packet, parse_messages

PCAPS = Path(__file__).parents[2] / "data" / "pcap"


def _ipv6_tcp() -> bytes:
    tcp = struct.pack("!HHIIHHHH", 40000, 443, 7, 0, (5 << 12) | 0x02, 100, 0, 0)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, ip_bytes("fd00::1"),
                      ip_bytes("fd00::2"))
    return bytes(12) + b"\x86\xdd" + ip6 + tcp


FRAMES = [
    tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 0x18, payload=b"GET / HTTP/1.1\r\n\r\n"),
    udp_frame("10.0.0.1", "10.0.0.53", 5353, 53, b"\x00\x01payload"),
    vxlan_frame("192.168.0.1", "192.168.0.2",
                tcp_frame("10.244.0.5", "10.244.1.7", 41000, 9000, 0x02), vni=7),
    vxlan_frame("192.168.0.1", "192.168.0.2",
                udp_frame("10.244.0.5", "10.96.0.10", 41000, 53, b"q"), port=4789),
    icmp_error_frame("10.0.0.254", "10.0.0.1", tcp_frame("10.0.0.1", "10.9.9.9", 40000, 80, 2)),
    _ipv6_tcp(),
]


@pytest.mark.parametrize("frame", FRAMES)
def test_fast_path_equals_dpkt(frame: bytes) -> None:
    assert parse(frame, 1.5) == parse_dpkt(frame, 1.5)
    assert parse(frame, 1.5) is not None


def test_fields() -> None:
    p = parse(FRAMES[0], 2.0)
    assert p is not None
    assert (ip_str(p.src), p.sport, ip_str(p.dst), p.dport, p.flags) == (
        "10.0.0.1", 40000, "10.0.0.2", 80, 0x18)
    assert p.payload == b"GET / HTTP/1.1\r\n\r\n" and p.vni == -1
    v = parse(FRAMES[2], 2.0)
    assert v is not None and v.vni == 7 and ip_str(v.src) == "10.244.0.5" and v.flags == 2
    i = parse(FRAMES[4], 2.0)
    assert i is not None and (i.sport, i.dport) == (3, 1)
    assert i.quoted == (6, ip_bytes("10.0.0.1"), ip_bytes("10.9.9.9"), 40000, 80)
    six = parse(FRAMES[5], 2.0)
    assert six is not None and ip_str(six.dst) == "fd00::2" and six.dport == 443


def test_vlan_padding_truncation_and_non_ip() -> None:
    f = FRAMES[0]
    tagged = f[:12] + b"\x81\x00\x00\x05" + f[12:]
    plain = parse(f, 0.0)
    assert plain is not None
    assert parse(tagged, 0.0) == plain._replace(data=tagged, off=plain.off + 4,
                                                end=plain.end + 4)
    syn = tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 0x02)
    padded = parse(syn + bytes(6), 0.0)
    assert padded is not None and padded.payload == b""
    assert parse(f[:30], 0.0) is None
    assert parse(bytes(12) + b"\x08\x06" + bytes(28), 0.0) is None  # ARP


def test_fragment_has_no_ports() -> None:
    f = bytearray(FRAMES[0])
    f[20:22] = b"\x00\x10"  # fragment offset 16
    p = parse(bytes(f), 0.0)
    assert p is not None and (p.sport, p.dport) == (0, 0) and p.payload == b""


def test_parse_ip_and_nflog_messages() -> None:
    ip = FRAMES[0][14:]
    raw = build_packet(7, ip, prefix="deny", ts=3.25) + build_packet(7, ip, prefix="x")
    msgs = parse_messages(raw, now=9.0)
    assert [(m.group, m.prefix, m.ts) for m in msgs] == [(7, "deny", 3.25), (7, "x", 9.0)]
    p = parse_ip(msgs[0].payload, msgs[0].ts)
    assert p is not None and p.dport == 80 and p.ts == 3.25


def test_pcap_roundtrip_and_errors() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf)
    for k, f in enumerate(FRAMES):
        w.write(10.0 + k / 8, f)
    got = list(read_pcap(io.BytesIO(buf.getvalue())))
    assert [d for _, d in got] == FRAMES and got[1][0] == 10.125
    with pytest.raises(PcapError):
        list(read_pcap(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(20))))


class _Reads(io.BytesIO):
    """A file that remembers the largest read asked of it."""

    largest = 0

    def read(self, n: int | None = -1) -> bytes:
        self.largest = max(self.largest, n or 0)
        return super().read(n)


def _pcap(*frames: bytes) -> bytes:
    buf = io.BytesIO()
    w = PcapWriter(buf)
    for k, f in enumerate(frames):
        w.write(1.0 + k, f)
    return buf.getvalue()


def test_pcap_huge_caplen_is_refused_without_allocating() -> None:
    good = _pcap(FRAMES[0])
    huge = good + struct.pack("=IIII", 2, 0, 0xFFFFFFF0, 60) + bytes(60)
    inp = _Reads(huge)
    got = []
    with pytest.raises(PcapError, match=r"record 2 at byte \d+ claims 4294967280 bytes"):
        for rec in read_pcap(inp):
            got.append(rec)
    assert [d for _, d in got] == [FRAMES[0]] and inp.largest <= MAX_CAPLEN
    assert len(list(read_pcap(io.BytesIO(_pcap(bytes(MAX_CAPLEN)))))) == 1


@pytest.mark.parametrize("cut", [1, 10, 15, 16, 17, 30])
def test_pcap_truncated_record_is_reported(cut: int) -> None:
    """A file cut inside a record (its header or its bytes) is an error after the whole
    records before it, never a silent end."""
    whole = _pcap(FRAMES[0], FRAMES[1])
    second = 24 + 16 + len(FRAMES[0])
    got = []
    with pytest.raises(PcapError, match=f"truncated pcap: record 2 at byte {second}"):
        for rec in read_pcap(io.BytesIO(whole[:second + cut])):
            got.append(rec)
    assert [d for _, d in got] == [FRAMES[0]]
    assert len(list(read_pcap(io.BytesIO(whole[:second])))) == 1  # ends between records
    with pytest.raises(PcapError, match="truncated pcap header"):
        list(read_pcap(io.BytesIO(whole[:23])))


def test_golden_pcaps_parse_alike() -> None:
    n = 0
    for path in sorted(PCAPS.glob("*.pcap")):
        for ts, data in read_pcap_file(path):
            assert parse(data, ts) == parse_dpkt(data, ts), path
            n += 1
    assert n >= 15
