"""Kernel filters: the agent's program passes exactly what the tracker needs.

The programs are run by libpcap over a synthetic pcap (``tcpdump -r IN -w OUT EXPR``: the
same classic BPF the kernel runs), so no root is needed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from podflow.pcap import (
    PcapWriter,
    icmp_error_frame,
    read_pcap_file,
    tcp_frame,
    udp_frame,
    vxlan_frame,
)
from podflow.sources import bpf

needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
C, S = "10.244.0.5", "10.244.1.7"
GET = b"GET / HTTP/1.1\r\n\r\n"

CASES = {  # name: (frame, passes the agent filter)
    "syn": (tcp_frame(C, S, 41000, 80, 0x02), True),
    "synack": (tcp_frame(S, C, 80, 41000, 0x12), True),
    "fin": (tcp_frame(C, S, 41000, 80, 0x11), True),
    "rst": (tcp_frame(S, C, 80, 41000, 0x14), True),
    "ack": (tcp_frame(C, S, 41000, 80, 0x10), False),
    "data": (tcp_frame(C, S, 41000, 80, 0x18, payload=b"x" * 100), False),
    "get": (tcp_frame(C, S, 41000, 80, 0x18, payload=GET), True),
    "delete": (tcp_frame(C, S, 41000, 80, 0x18, payload=b"DELETE /a HTTP/1.1\r\n"), True),
    "status": (tcp_frame(S, C, 80, 41000, 0x18, payload=b"HTTP/1.1 200 OK\r\n"), True),
    "dns": (udp_frame(C, "10.96.0.10", 5000, 53, b"q" * 20), True),
    "dns-tcp-data": (tcp_frame(C, "10.96.0.10", 5000, 53, 0x18, payload=b"q" * 20), True),
    "udp": (udp_frame(C, S, 5000, 6000, b"x"), False),
    "icmp-unreach": (icmp_error_frame(S, C, tcp_frame(C, S, 1, 2, 2)), True),
    "vx-syn": (vxlan_frame("172.18.0.1", "172.18.0.2", tcp_frame(C, S, 1, 80, 0x02)), True),
    "vx-get": (vxlan_frame("172.18.0.1", "172.18.0.2",
                           tcp_frame(C, S, 1, 80, 0x18, payload=GET)), True),
    "vx-dns": (vxlan_frame("172.18.0.1", "172.18.0.2", udp_frame(C, S, 1, 53, b"q")), True),
    "vx-4789": (vxlan_frame("172.18.0.1", "172.18.0.2", tcp_frame(C, S, 1, 80, 0x04),
                            port=4789), True),
    "vx-data": (vxlan_frame("172.18.0.1", "172.18.0.2",
                            tcp_frame(C, S, 1, 80, 0x18, payload=b"x" * 100)), False),
    "vx-ack": (vxlan_frame("172.18.0.1", "172.18.0.2", tcp_frame(C, S, 1, 80, 0x10)), False),
}


def run_filter(tmp: Path, expr: str, frames: list[bytes]) -> list[bytes]:
    src, out = tmp / "in.pcap", tmp / "out.pcap"
    with open(src, "wb") as f:
        w = PcapWriter(f)
        for k, fr in enumerate(frames):
            w.write(1.0 + k, fr)
    subprocess.run(["tcpdump", "-r", str(src), "-w", str(out), expr], check=True,
                   capture_output=True)
    return [d for _, d in read_pcap_file(out)]


@needs_tcpdump
def test_agent_filter_semantics(tmp_path: Path) -> None:
    frames = [f for f, _ in CASES.values()]
    passed = run_filter(tmp_path, bpf.agent_expression(), frames)
    got = {name for name, (f, _) in CASES.items() if f in passed}
    assert got == {name for name, (_, want) in CASES.items() if want}


@needs_tcpdump
def test_compile_and_errors() -> None:
    prog = bpf.compile_filter(bpf.agent_expression())
    assert 10 < len(prog) < 4096 and prog[-1][0] == 0x06
    assert bpf.compile_filter("") == bpf.ACCEPT_ALL
    with pytest.raises(ValueError, match="bad capture filter"):
        bpf.compile_filter("port nonsense-here")


@needs_tcpdump
def test_capture_expression_runs(tmp_path: Path) -> None:
    expr = bpf.capture_expression(hosts=[C], ports=[80], protocols=["TCP"])
    assert expr == f"(host {C}) and (port 80) and (tcp)"
    frames = [CASES["syn"][0], CASES["dns"][0], tcp_frame("10.0.0.1", S, 1, 80, 2)]
    assert run_filter(tmp_path, expr, frames) == [CASES["syn"][0]]
    assert bpf.capture_expression() == ""
