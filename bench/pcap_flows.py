"""Flow records from a pcap: podflow's parser + tracker vs Debian's softflowd, side by side.

    .venv/bin/python bench/pcap_flows.py [--connections 10000] [--packets-per-conn 100]
                                         [--dns 2000] [--keep FILE] [--parse-only]

Generates a pcap (default 10,000 TCP connections of 100 packets each: handshake, 64-byte
data segments both ways, FIN/ACK close, interleaved 200 at a time; plus DNS exchanges and
5% of the connections VXLAN-encapsulated: > 1M packets) with podflow's own frame builders,
then, on the same file:

* podflow (full): reads every packet, parses it (:func:`podflow.pipeline.pktparse.parse`),
  and tracks it (:class:`~podflow.pipeline.pkttrack.PacketTracker` with packet/byte counting
  on and the agent's de-duplication), then flushes every connection to a flow record. This
  is the same job softflowd does (every packet, counters per flow) and gives the ratio.
* softflowd: ``softflowd -r FILE -n 127.0.0.1:PORT -v 5 -c none -d`` (``-c none`` or it
  waits for a control socket), timed as a process; a UDP receiver counts the NetFlow v5
  records it exports.
* for information, the agent's path: the kernel filter (:func:`bpf.agent_expression`) run
  over the file by tcpdump's libpcap (the same program the kernel would run), then podflow
  on what passes; and parse speed of the struct fast path vs dpkt on the first 200k packets.

Packets/s are file packets divided by wall time. Last line: ``ratio: X`` = podflow (full)
packets/s / softflowd packets/s.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dpkt  # noqa: E402

from podflow.pcap import (  # noqa: E402
    PcapWriter,
    read_pcap_file,
    tcp_frame,
    udp_frame,
    vxlan_frame,
)
from podflow.pipeline.pktparse import parse, parse_dpkt  # noqa: E402
from podflow.pipeline.pkttrack import PacketTracker, TrackerConfig  # noqa: E402
from podflow.sources.bpf import agent_expression  # noqa: E402

T0 = 1_700_000_000.0


def _conn_frames(i: int, n: int) -> list[bytes]:
    c, s = f"10.244.{i % 200}.{2 + i // 200 % 250}", f"10.244.{200 + i % 50}.{10 + i % 7}"
    cp, sp = 30000 + i % 30000, 8080
    out = [tcp_frame(c, s, cp, sp, 0x02, 1000), tcp_frame(s, c, sp, cp, 0x12, 5000, 1001),
           tcp_frame(c, s, cp, sp, 0x10, 1001, 5001)]
    body = bytes(64)
    for k in range(max(0, n - 6) // 2):
        out.append(tcp_frame(c, s, cp, sp, 0x18, 1001 + 64 * k, 5001 + 64 * k, body))
        out.append(tcp_frame(s, c, sp, cp, 0x18, 5001 + 64 * k, 1065 + 64 * k, body))
    seq = 1001 + 64 * ((n - 6) // 2)
    out += [tcp_frame(c, s, cp, sp, 0x11, seq, seq), tcp_frame(s, c, sp, cp, 0x11, seq, seq + 1),
            tcp_frame(c, s, cp, sp, 0x10, seq + 1, seq + 1), tcp_frame(c, s, cp, sp, 0x10, seq + 1,
                                                                       seq + 1)]
    if i % 20 == 0:
        out = [vxlan_frame("172.18.0.1", "172.18.0.2", f) for f in out]
    return out


def _dns_frames(i: int) -> list[bytes]:
    c, name = f"10.244.{i % 200}.{2 + i // 200 % 250}", f"svc{i % 97}.example.com"
    q = dpkt.dns.DNS(id=i & 0xFFFF, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    r = dpkt.dns.DNS(bytes(q))
    r.qr = 1
    r.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=60,
                            rdata=bytes([192, 0, 2, i % 250]))]
    return [udp_frame(c, "10.96.0.10", 40000 + i % 20000, 53, bytes(q)),
            udp_frame("10.96.0.10", c, 53, 40000 + i % 20000, bytes(r))]


def generate(path: Path, conns: int, per: int, dns: int) -> int:
    """Write the test pcap; returns its packet count."""
    rng = random.Random(7)
    with open(path, "wb") as f:
        w = PcapWriter(f)
        ts, nxt, d = T0, 0, 0
        active: list[Iterator[bytes]] = []
        while nxt < conns or active:
            while len(active) < 200 and nxt < conns:
                active.append(iter(_conn_frames(nxt, per)))
                nxt += 1
            k = rng.randrange(len(active))
            frame = next(active[k], None)
            if frame is None:
                active.pop(k)
                continue
            ts += 2e-6
            w.write(ts, frame)
            if d < dns and rng.random() < dns / (conns * per):
                for fr in _dns_frames(d):
                    ts += 2e-6
                    w.write(ts, fr)
                d += 1
    return w.count


def run_podflow(path: Path) -> tuple[float, int, int]:
    """(seconds, packets, flows) for the full podflow path over ``path``.

    Counting on; de-duplication off, as for any single-interface file (it exists for the
    same packet captured on several devices of a node, which one file never holds).
    """
    t = PacketTracker(TrackerConfig(counters=True, dedup=False))
    n = 0
    start = time.perf_counter()
    feed, expire = t.feed, t.expire
    for ts, data in read_pcap_file(path):
        feed(parse(data, ts))
        n += 1
        if not n & 0x3FFF:
            expire(ts)
    flows = len(t.flush())
    return time.perf_counter() - start, n, flows


def run_softflowd(path: Path) -> tuple[float, int]:
    """(seconds, flows exported) for softflowd reading ``path``."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    rx.settimeout(0.5)
    port = rx.getsockname()[1]
    flows = [0]
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                data = rx.recv(65536)
            except TimeoutError:
                continue
            if len(data) >= 4 and data[:2] == b"\x00\x05":
                flows[0] += int.from_bytes(data[2:4], "big")

    th = threading.Thread(target=receive)
    th.start()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(["softflowd", "-r", str(path), "-n", f"127.0.0.1:{port}", "-v", "5",
                        "-c", "none", "-d", "-m", "65536", "-p", f"{tmp}/pid"],
                       check=True, capture_output=True, timeout=600)
        took = time.perf_counter() - start
    time.sleep(1.0)
    done.set()
    th.join()
    rx.close()
    return took, flows[0]


def parse_speeds(path: Path, n: int = 200_000) -> tuple[float, float]:
    """Packets/s of the struct fast path and of dpkt over the first ``n`` packets."""
    frames = []
    for ts, data in read_pcap_file(path):
        frames.append((ts, data))
        if len(frames) >= n:
            break
    out = []
    for fn in (parse, parse_dpkt):
        start = time.perf_counter()
        for ts, data in frames:
            fn(data, ts)
        out.append(len(frames) / (time.perf_counter() - start))
    return out[0], out[1]


def filtered(path: Path, total: int) -> None:
    """The agent's path: kernel filter (run by libpcap over the file), then podflow."""
    out = path.with_suffix(".filtered.pcap")
    start = time.perf_counter()
    subprocess.run(["tcpdump", "-r", str(path), "-w", str(out), agent_expression()],
                   check=True, capture_output=True)
    t_filter = time.perf_counter() - start
    took, n, flows = run_podflow(out)
    out.unlink()
    print(f"agent path: filter passed {n}/{total} packets ({100 * n / total:.1f}%); "
          f"filter {t_filter:.2f}s + podflow {took:.2f}s = "
          f"{total / (t_filter + took):,.0f} file packets/s; {flows} flows (no byte counters)")


def main() -> None:
    """Generate, run both, print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--packets-per-conn", type=int, default=100)
    ap.add_argument("--dns", type=int, default=2000)
    ap.add_argument("--keep", type=Path, help="write the pcap here and keep it")
    ap.add_argument("--parse-only", action="store_true", help="only the parser comparison")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pf-bench-pcap-") as tmp:
        path = a.keep or Path(tmp) / "bench.pcap"
        t = time.perf_counter()
        total = generate(path, a.connections, a.packets_per_conn, a.dns)
        print(f"pcap: {total:,} packets, {os.path.getsize(path) / 1e6:.0f} MB "
              f"(generated in {time.perf_counter() - t:.1f}s)")
        fast, ref = parse_speeds(path)
        print(f"parse (200k packets): struct fast path {fast:,.0f}/s, dpkt {ref:,.0f}/s "
              f"({fast / ref:.1f}x)")
        if a.parse_only:
            return
        p_s, p_n, p_flows = run_podflow(path)
        s_s, s_flows = run_softflowd(path)
        p_rate, s_rate = p_n / p_s, total / s_s
        print(f"podflow:   {p_rate:>12,.0f} packets/s  ({p_s:.2f}s, {p_flows} flows)")
        print(f"softflowd: {s_rate:>12,.0f} packets/s  ({s_s:.2f}s, {s_flows} flows exported)")
        filtered(path, total)
        print(f"ratio: {p_rate / s_rate:.3f}")


if __name__ == "__main__":
    main()
