"""Fuzz target ``packets``: one captured frame through the packet source's processing.

What the agent does with a frame the kernel filter passed: :meth:`PacketsPlugin.process`
(``parse`` with VXLAN inner frames and the headers ICMP errors quote, then the tracker with
its DNS and HTTP decoders), the time-outs, the final flush, and :meth:`PacketsPlugin.decode`
of every report into a Flow, serialized as the store and API would. The frame is fed twice
(as a retransmission a second later) so a payload reaches the tracker with a connection
already open, and its IP packet once more as an NFLOG drop. Anything raised is a crash;
skipped packets are only counted.

Seeds: every frame of the golden recordings (``tests/data/pcap``), plus a few built with
the project's frame builders for what they lack (IPv6, VLAN, ICMPv6 errors, DNS over TCP, a
DNS answer with compressed CNAME and AAAA, VXLAN on port 4789).
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.serialize import flow_to_dict
from podflow.pcap import icmp_error_frame, read_pcap_file, tcp_frame, udp_frame, vxlan_frame
from podflow.pipeline.context import DecodeContext
from podflow.pipeline.pktparse import ip_bytes
from podflow.sources.packets import PacketsPlugin
from podflow.sources.registry import SourceOptions
from tests.fuzz.targets import Target

PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcap"
_CTX = DecodeContext("fuzz", Inventory(), CniProfile("generic", "fuzz"))


def _dns_answer() -> bytes:
    m = dpkt.dns.DNS(id=5, qd=[dpkt.dns.DNS.Q(name="www.example.com", type=dpkt.dns.DNS_A)])
    m.qr = 1
    m.an = [dpkt.dns.DNS.RR(name="www.example.com", type=dpkt.dns.DNS_CNAME, ttl=60,
                            cname="edge.example.com"),
            dpkt.dns.DNS.RR(name="edge.example.com", type=dpkt.dns.DNS_AAAA, ttl=30,
                            rdata=ip_bytes("2001:db8::1"))]
    return bytes(m)


def _ipv6(proto: int, l4: bytes) -> bytes:
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, ip_bytes("fd00::1"),
                      ip_bytes("fd00::2"))
    return bytes(12) + b"\x86\xdd" + ip6 + l4


def synthetic() -> list[bytes]:
    """Frames the golden recordings lack (see the module docstring)."""
    syn6 = _ipv6(6, struct.pack("!HHIIHHHH", 40000, 443, 7, 0, (5 << 12) | 0x02, 100, 0, 0))
    unreach6 = _ipv6(58, struct.pack("!BBHI", 1, 4, 0, 0) + syn6[14:14 + 48])
    answer = _dns_answer()
    get = tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, 0x18,
                    payload=b"GET /a?token=x HTTP/1.1\r\nHost: web\r\n\r\n")
    return [syn6, unreach6,
            get[:12] + b"\x81\x00\x00\x05" + get[12:],
            udp_frame("10.0.0.53", "10.0.0.1", 53, 5353, answer),
            tcp_frame("10.0.0.53", "10.0.0.1", 53, 40001, 0x18,
                      payload=len(answer).to_bytes(2, "big") + answer),
            vxlan_frame("192.168.0.1", "192.168.0.2",
                        udp_frame("10.244.0.5", "10.96.0.10", 41000, 53, answer), port=4789),
            icmp_error_frame("10.0.0.254", "10.0.0.1",
                             udp_frame("10.0.0.1", "10.9.9.9", 40000, 53, b"q"), 3, 3)]


def seeds() -> list[bytes]:
    """Every golden frame, one per seed, and the synthetic ones."""
    frames = [data for p in sorted(PCAPS.glob("*.pcap")) for _, data in read_pcap_file(p)]
    return frames + synthetic()


def run(data: bytes) -> None:
    """Process ``data`` as a captured frame (twice), expire, flush, decode every report."""
    plugin = PacketsPlugin(SourceOptions("fuzz"))
    reports = plugin.process([(1.0, "fuzz/eth0", data), (2.0, "fuzz/eth0", data)], "pkt", 2.0)
    reports += plugin.process([(3.0, "drop", data[14:])], "nflog", 20.0)  # active reports
    reports += plugin.flush(1000.0)
    for r in reports:
        flow = plugin.decode(r.record, _CTX, r.final)
        if flow is not None:
            flow_to_dict(flow)
    plugin.stats()


TARGET = Target(name="packets", seeds=seeds, run=run, examples=1500)
