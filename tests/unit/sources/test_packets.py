"""Hostile packets through the packet source's processing path: never an exception, always
a counted loss (issue 8: one datagram from any pod stopped every agent that saw it)."""

from __future__ import annotations

import struct

import pytest

from podflow.model.losses import Losses
from podflow.pcap import icmp_error_frame, ip_frame, tcp_frame, udp_frame, vxlan_frame
from podflow.pipeline.pktparse import ip_bytes, parse, parse_ip
from podflow.sources.packets import PacketsPlugin, flag
from podflow.sources.registry import SourceOptions

INNER_IHL0 = bytes(12) + b"\x08\x00" + bytes([0x40, 0, 0, 14, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0])
"""An inner Ethernet frame whose IPv4 header says IHL 0 and is cut after 14 bytes."""


def plugin(**extra: object) -> PacketsPlugin:
    return PacketsPlugin(SourceOptions("node1", extra=dict(extra)))


def process(p: PacketsPlugin, *frames: bytes) -> None:
    """What the agent does: process the frames, report what is open 10 s later (active
    reports), flush at stop; every report is made into a record."""
    p.process([(1.0 + k / 10, "-/eth0", f) for k, f in enumerate(frames)], "pkt", 2.0)
    p.process([], "pkt", 20.0)
    p.flush(30.0)


@pytest.mark.parametrize("port", [8472, 4789])
def test_vxlan_inner_ipv4_with_ihl_0(port: int) -> None:
    frame = vxlan_frame("10.0.0.1", "10.0.0.2", INNER_IHL0, port=port)
    assert len(frame) == 78
    p = plugin()
    process(p, frame)
    assert p.stats()["lost_bad_ihl_inner_ipv4"] == 1


def test_icmp_port_unreachable_quoting_ihl_0() -> None:
    quoted = bytes([0x40, 0, 0, 28, 0, 0, 0, 0, 64, 17])
    frame = ip_frame("10.0.0.9", "10.0.0.2", 1, struct.pack("!BBHI", 3, 3, 0, 0) + quoted)
    assert len(frame) == 52
    p = plugin()
    process(p, frame)
    assert p.stats()["lost_bad_ihl_icmp_quoted_ipv4"] == 1


def test_icmp_quoting_a_cut_header_and_the_agent_goes_on() -> None:
    good = tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 0x02)
    cut = icmp_error_frame("10.0.0.9", "10.0.0.1", good, 3, 3)[:42 + 16]
    p = plugin()
    process(p, cut, good)
    st = p.stats()
    assert st["lost_short_icmp_quoted_ipv4"] == 1
    assert st["tracker_connections"] == 1  # the good packet after it was tracked


def _frame6(proto: int, l4: bytes, plen: int | None = None) -> bytes:
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4) if plen is None else plen, proto, 64,
                      ip_bytes("fd00::1"), ip_bytes("fd00::2"))
    return bytes(12) + b"\x86\xdd" + ip6 + l4


SYN = tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 0x02)
DNSQ = udp_frame("10.0.0.1", "10.0.0.53", 5353, 53, bytes(12))


def _set(frame: bytes, at: int, raw: bytes) -> bytes:
    return frame[:at] + raw + frame[at + len(raw):]


@pytest.mark.parametrize(("frame", "reason"), [
    (SYN[:12], "short_frame"),
    (SYN[:20], "short_ipv4"),
    (SYN[:12] + b"\x81\x00" + bytes(20), "not_ip"),
    (SYN[:12] + b"\x81\x00\x00\x05\x81\x00\x00\x00", "short_vlan"),
    (b"\x00" * 12 + b"\x08\x06" + bytes(28), "not_ip"),  # ARP
    (_set(SYN, 14, b"\x65"), "bad_version_ip"),
    (_set(SYN, 14, b"\x44"), "bad_ihl_ipv4"),
    (_set(SYN, 14, b"\x4f"), "short_ipv4"),
    (_set(SYN, 16, b"\x00\x10"), "bad_length_ip"),
    (_set(SYN, 16, b"\x00\x20"), "short_tcp"),
    (_set(SYN, 46, b"\x40"), "bad_data_offset_tcp"),
    (_set(SYN, 46, b"\xf0"), "bad_data_offset_tcp"),
    (DNSQ[:14 + 20 + 6], "short_udp"),
    (_set(DNSQ, 38, b"\x00\x04"), "bad_length_udp"),
    (_frame6(6, bytes(30))[:50], "short_ipv6"),
    (_frame6(6, bytes(10)), "short_tcp"),
    (ip_frame("10.0.0.9", "10.0.0.2", 1, b"\x03\x03\x00\x00"), "short_icmp"),
    (icmp_error_frame("10.0.0.9", "10.0.0.1", SYN)[:62 + 2], "short_icmp_quoted_ports"),
    (ip_frame("10.0.0.9", "10.0.0.2", 1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + _frame6(
        6, bytes(20))[14:]), "bad_version_icmp_quoted_ip"),
    (vxlan_frame("10.0.0.1", "10.0.0.2", SYN[:30]), "short_inner_ipv4"),
    (vxlan_frame("10.0.0.1", "10.0.0.2", _set(SYN, 46, b"\x10")), "bad_data_offset_inner_tcp"),
    (vxlan_frame("10.0.0.1", "10.0.0.2", b"\x00" * 12 + b"\x08\x06" + bytes(28)),
     "not_inner_ip"),
])
def test_each_bound_is_checked_and_counted(frame: bytes, reason: str) -> None:
    losses = Losses()
    assert parse(frame, 1.0, losses) is None
    assert losses.by_reason() == {reason: 1}
    p = plugin()
    process(p, frame)
    assert p.stats()[f"lost_{reason}"] == 1


def test_gso_lengths_of_0_mean_as_captured() -> None:
    big = _set(tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 0x18, payload=b"x" * 100), 16, b"\0\0")
    p = parse(big, 1.0)
    assert p is not None and p.payload == b"x" * 100
    six = parse(_frame6(6, struct.pack("!HHIIHHHH", 1, 2, 0, 0, 0x5018, 0, 0, 0) + b"yy", 0),
                1.0)
    assert six is not None and six.payload == b"yy"


def test_vxlan_inner_frame_ends_with_its_datagram() -> None:
    """Bytes after the UDP datagram (link padding) are not the inner frame's."""
    inner = udp_frame("10.244.0.5", "10.96.0.10", 41000, 53, b"q" * 4)
    frame = vxlan_frame("10.0.0.1", "10.0.0.2", inner)
    p = parse(frame + b"PAD", 1.0)
    assert p is not None and p.payload == b"q" * 4 and p.vni == 1
    losses = Losses()
    cut = _set(frame, 38, (8 + 8 + 30).to_bytes(2, "big"))  # UDP length ends inside it
    assert parse(cut, 1.0, losses) is None and losses.by_reason() == {"short_inner_ipv4": 1}


def test_nflog_payloads_are_checked_too() -> None:
    losses = Losses()
    assert parse_ip(b"", 1.0, losses) is None
    assert parse_ip(b"\x45" + bytes(10), 1.0, losses) is None
    assert losses.by_reason() == {"short_ip": 1, "short_ipv4": 1}
    p = plugin()
    p.process([(1.0, "deny", b"\x40" + bytes(30))], "nflog", 2.0)
    assert p.stats()["lost_bad_ihl_ipv4"] == 1


def test_undecodable_payloads_are_counted_in_the_source_stats() -> None:
    p = plugin()
    req = tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 0x18, payload=b"GET \x00\xff HTTP/9\r\n")
    bad_dns = udp_frame("10.0.0.1", "10.0.0.53", 5353, 53, bytes(12) + b"\xc0\x0c")
    bad_dns = _set(bad_dns, 14 + 20 + 8 + 4, b"\x00\x01")  # one question, a looping name
    process(p, req, bad_dns)
    st = p.stats()
    assert st["lost_bad_http_request_line"] == 1 and st["lost_bad_dns_pointer"] == 1


HTTP_GET = tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 0x18,
                     payload=b"GET /login?user=a&token=s3cret HTTP/1.1\r\nHost: web\r\n\r\n")


def _url(p: PacketsPlugin) -> str | None:
    reports = p.process([(1.0, "-/eth0", HTTP_GET)], "pkt", 2.0) + p.flush(3.0)
    [r] = reports
    assert r.record.l7 is not None and r.record.l7.http is not None
    url: str | None = r.record.l7.http.url
    return url


def test_http_query_strings_are_dropped_unless_asked() -> None:
    assert _url(plugin()) == "/login"
    assert _url(plugin(http_query=True)) == "/login?user=a&token=s3cret"
    assert _url(plugin(http_query="true")) == "/login?user=a&token=s3cret"
    assert _url(plugin(http_query=False)) == "/login"


def test_http_query_option_values() -> None:
    assert flag(True, "x") and flag("on", "x") and not flag("false", "x") and not flag(0, "x")
    with pytest.raises(ValueError, match="http_query: expected true or false"):
        plugin(http_query="maybe")
