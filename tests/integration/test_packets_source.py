"""The packet source on a real kernel: L7, verdicts, VXLAN inner decode, NFLOG drops.

Builds its own namespaces (``pf-pkt-*``, deleted afterwards): a client ``pf-pkt-c``
(10.99.0.1) and a "node" ``pf-pkt-s`` (10.99.0.2, forwarding, with a DNS and an HTTP server)
joined by a veth pair; the plugin captures in the node namespace. For VXLAN, two more
namespaces ``pf-pkt-v1``/``pf-pkt-v2`` joined by an underlay veth (192.168.77.0/24) carry a
VXLAN device (VNI 42, UDP 8472) with an overlay 10.77.0.0/24; the plugin captures on the
underlay device only, so everything it sees is encapsulated. Needs root.

``PODFLOW_SAVE_PCAP=DIR`` also writes what each scenario captured to ``DIR/<name>.pcap``
(that is how tests/data/pcap was made).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.flow import Flow, Verdict
from podflow.pipeline.context import DecodeContext
from podflow.sources.packets import PacketsPlugin
from podflow.sources.registry import SourceOptions

PREFIX = "pf-pkt-"
CLI, NODE, V1, V2 = "pf-pkt-c", "pf-pkt-s", "pf-pkt-v1", "pf-pkt-v2"
SRV = "10.99.0.2"

DNS_SERVER = r"""
import socket, dpkt
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(4096)
    q = dpkt.dns.DNS(data); r = dpkt.dns.DNS(data); r.qr = 1
    name = q.qd[0].name
    if name == "db.example.com" and q.qd[0].type == dpkt.dns.DNS_A:
        r.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=30,
                                rdata=socket.inet_aton("192.0.2.10"))]
    elif name != "db.example.com":
        r.rcode = dpkt.dns.DNS_RCODE_NXDOMAIN
    s.sendto(bytes(r), peer)
"""
CLIENT = r"""
import socket, sys, dpkt, time
what, host = sys.argv[1], sys.argv[2]
if what == "dns":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    for i, t in enumerate((dpkt.dns.DNS_A, dpkt.dns.DNS_AAAA)):
        s.sendto(bytes(dpkt.dns.DNS(id=100 + i, qd=[dpkt.dns.DNS.Q(name=sys.argv[3], type=t)])),
                 (host, 53))
    s.recv(4096); s.recv(4096)
elif what == "http":
    s = socket.create_connection((host, int(sys.argv[3])), timeout=3)
    s.sendall(b"GET /missing?x=1 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
    while s.recv(4096): pass
    s.close()
else:
    try:
        socket.create_connection((host, int(sys.argv[3])), timeout=float(sys.argv[4]))
    except OSError as e:
        print(e)
"""


def sh(*cmds: str) -> None:
    for c in cmds:
        subprocess.run(c, shell=True, check=True, capture_output=True)


def nsx(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def teardown() -> None:
    for ns in (CLI, NODE, V1, V2):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def net() -> Iterator[None]:
    teardown()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh(*(f"ip netns add {n}" for n in (CLI, NODE, V1, V2)),
           f"ip -n {NODE} link add e0 type veth peer name eth0 netns {CLI}",
           f"ip -n {CLI} addr add 10.99.0.1/24 dev eth0", f"ip -n {CLI} link set eth0 up",
           f"ip -n {CLI} link set lo up", f"ip -n {CLI} route add 10.98.0.0/24 via {SRV}",
           f"ip -n {NODE} addr add {SRV}/24 dev e0", f"ip -n {NODE} link set e0 up",
           f"ip -n {NODE} link set lo up", f"ip -n {NODE} route add unreachable 10.98.0.0/24",
           f"ip netns exec {NODE} sysctl -qw net.ipv4.ip_forward=1",
           f"ip netns exec {NODE} iptables -A INPUT -p tcp --dport 81 -j NFLOG "
           "--nflog-group 7 --nflog-prefix 'pf-test deny 81'",
           f"ip netns exec {NODE} iptables -A INPUT -p tcp --dport 81 -j DROP",
           f"ip netns exec {NODE} iptables -A INPUT -p tcp --dport 82 -j DROP",
           f"ip -n {V1} link add u0 type veth peer name u0 netns {V2}")
        for i, ns in ((1, V1), (2, V2)):
            sh(f"ip -n {ns} addr add 192.168.77.{i}/24 dev u0", f"ip -n {ns} link set u0 up",
               f"ip -n {ns} link set lo up",
               f"ip -n {ns} link add vx0 type vxlan id 42 dstport 8472 dev u0 "
               f"remote 192.168.77.{3 - i} local 192.168.77.{i}",
               f"ip -n {ns} addr add 10.77.0.{i}/24 dev vx0", f"ip -n {ns} link set vx0 up")
        procs.append(subprocess.Popen(nsx(NODE, sys.executable, "-c", DNS_SERVER)))
        for ns, ip in ((NODE, SRV), (V2, "10.77.0.2")):
            procs.append(subprocess.Popen(
                nsx(ns, sys.executable, "-m", "http.server", "8080", "--bind", ip),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        teardown()


def client(ns: str, *args: str) -> None:
    subprocess.run(nsx(ns, sys.executable, "-c", CLIENT, *args), check=True, timeout=20,
                   capture_output=True)


def capture(name: str, netns: str, work: Any, settle: float = 0.5,
            **extra: Any) -> list[Flow]:
    """Run the plugin in ``netns`` around ``work()``; every flow it reports, decoded."""
    save = os.environ.get("PODFLOW_SAVE_PCAP")
    if save:
        extra["pcap"] = str(Path(save) / f"{name}.pcap")
    plugin = PacketsPlugin(SourceOptions("n1", netns=netns, extra=extra))
    batches: list[tuple[list[Any], str]] = []
    stop = threading.Event()
    def sink(records: list[Any], kind: str) -> bool:
        batches.append((records, kind))
        return True

    t = threading.Thread(target=plugin.run, args=(sink, stop))
    t.start()
    for _ in range(100):
        if plugin.ready:
            break
        time.sleep(0.05)
    work()
    time.sleep(settle)
    stop.set()
    t.join(5)
    ctx = DecodeContext("n1", Inventory(), CniProfile("generic", "n1"))
    reports = []
    for records, kind in batches:
        reports += plugin.process(records, kind, time.time())
    reports += plugin.flush(time.time() + 3600)
    assert plugin.stats()["kernel_drops"] == 0
    return [f for r in reports if (f := plugin.decode(r.record, ctx, r.final)) is not None]


def one(flows: list[Flow], port: int) -> Flow:
    got = [f for f in flows if f.destination.port == port]
    assert len(got) == 1, got
    return got[0]


def test_dns_query_and_answer(net: None) -> None:
    flows = capture("dns", NODE, lambda: client(CLI, "dns", SRV, "db.example.com"))
    f = one(flows, 53)
    assert f.l7 is not None and f.l7.dns is not None
    assert (f.l7.dns.query, f.l7.dns.qtypes, f.l7.dns.rcode) == ("db.example.com",
                                                                ("A", "AAAA"), 0)
    assert f.l7.dns.ips == ("192.0.2.10",) and f.l7.dns.ttl == 30
    assert f.source.ip == "10.99.0.1" and f.flow_id == f.client_key
    assert f.l7.latency_ns is not None and f.l7.latency_ns > 0


def test_http_request_and_response(net: None) -> None:
    flows = capture("http", NODE, lambda: client(CLI, "http", SRV, "8080"))
    f = one(flows, 8080)
    assert f.l7 is not None and f.l7.http is not None
    h = f.l7.http
    # the query string (x=1) is dropped: it often holds tokens (http_query=true keeps it)
    assert (h.method, h.url, h.host, h.code) == ("GET", "/missing", "web.test", 404)
    assert f.tcp is not None and {"SYN", "FIN"} <= set(f.tcp.flags)
    assert f.verdict is Verdict.FORWARDED and f.state.value == "ended"


def test_refused_timed_out_unreachable(net: None) -> None:
    def work() -> None:
        client(CLI, "connect", SRV, "9", "2")
        client(CLI, "connect", SRV, "82", "1")
        client(CLI, "connect", "10.98.0.5", "80", "2")

    flows = capture("failures", NODE, work, settle=1.0, syn_timeout=1.5)
    refused, blackholed, unreach = one(flows, 9), one(flows, 82), one(flows, 80)
    assert refused.verdict is Verdict.ERROR
    assert refused.drop_reason_desc == "refused: RST answering SYN"
    assert blackholed.verdict is Verdict.DROPPED
    assert (blackholed.drop_reason_desc or "").startswith("timed out")
    assert unreach.verdict is Verdict.DROPPED
    assert (unreach.drop_reason_desc or "").startswith("unreachable")
    assert unreach.destination.ip == "10.98.0.5"


def test_nflog_drop(net: None) -> None:
    flows = capture("nflog", NODE, lambda: client(CLI, "connect", SRV, "81", "1"),
                    nflog_group=7, syn_timeout=30)
    f = one(flows, 81)
    assert f.verdict is Verdict.DROPPED and f.drop_reason_desc == "pf-test deny 81"


def test_vxlan_inner_decode(net: None) -> None:
    flows = capture("vxlan", V1, lambda: client(V1, "http", "10.77.0.2", "8080"),
                    interfaces=["u0"])
    f = one(flows, 8080)
    assert (f.source.ip, f.destination.ip) == ("10.77.0.1", "10.77.0.2")
    assert f.l7 is not None and f.l7.http is not None and f.l7.http.code == 404


def test_capture_command_writes_a_pcap_tcpdump_reads(net: None, tmp_path: Path) -> None:
    from podflow.cli.capture import capture_to

    out = tmp_path / "cap.pcap"
    def later() -> None:
        time.sleep(0.5)
        client(CLI, "http", SRV, "8080")

    t = threading.Thread(target=later)
    t.start()
    n = capture_to(out, NODE, ["e0"], "tcp port 8080", count=6, duration=10)
    t.join()
    assert n == 6
    text = subprocess.run(["tcpdump", "-nr", str(out)], capture_output=True, text=True,
                          check=True).stdout
    assert "10.99.0.1" in text and "Flags [S]" in text and len(text.splitlines()) == 6
