"""Record real ctnetlink messages into golden files (run as root: python record.py).

Builds three throwaway namespaces (client, "node" router with DNAT + MASQUERADE, server), all
named ``pf-ctrec-*`` and deleted afterwards, makes real TCP (DNAT and SNAT), UDP, ICMP and
IPv6 TCP (DNAT) connections through the node, and writes next to this script:

- ``events.bin``: every buffer the node's conntrack event socket received (NEW/UPDATE/DESTROY);
- ``dump.bin``: the buffers of one table dump, taken while an IPv6 connection is open;
- ``dump.txt`` / ``events.txt``: ``conntrack -L -f ipv4|ipv6 -o extended,id`` right after
  that dump and ``conntrack -E -o extended,id,timestamp`` for the whole run: the reference
  the values in ``expected.json`` (decoded by podflow) were checked against.

Framing of a ``.bin`` file: repeated ``<d`` receive time (Unix seconds) + ``<I`` length +
that many bytes, exactly as one ``recv`` returned them. Only loopback and addresses inside the
namespaces created here carry traffic.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from podflow.model.conntrack import CtEntry  # noqa: E402
from podflow.sources import ctnetlink  # noqa: E402
from podflow.sources.netns import open_socket, write_sysctl_in_netns  # noqa: E402

CLI, NODE, SRV = "pf-ctrec-cli", "pf-ctrec-node", "pf-ctrec-srv"
VIP, VIP6, SRV4, SRV6 = "10.96.77.10", "fd96::10", "10.77.2.2", "fd77:2::2"
FRAME = struct.Struct("<dI")

SERVER = r"""
import socket, threading
def tcp(port):
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.recv(1000); c.sendall(b"x" * 1000); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353))
    while True:
        d, a = s.recvfrom(2000); s.sendto(d * 2, a)
for p in (8080, 9090):
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
udp()
"""
CLIENT = r"""
import socket, struct, sys, time
fam, host, port, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if fam == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(b"q" * 100, (host, port)); s.recvfrom(2000); sys.exit(0)
if fam == "icmp":  # two echo requests over a raw socket (no ping binary needed)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(3)
    for seq in (1, 2):
        m = bytearray(struct.pack("!BBHHH", 8, 0, 0, port, seq) + b"p" * 56)
        c = sum(struct.unpack("!%dH" % (len(m) // 2), m)); c = (c >> 16) + (c & 0xFFFF)
        m[2:4] = struct.pack("!H", ~(c + (c >> 16)) & 0xFFFF); s.sendto(bytes(m), (host, 0))
        s.recv(2000); time.sleep(0.2)
    sys.exit(0)
s = socket.create_connection((host, port), timeout=3); s.sendall(b"GET / HTTP/1.0\r\n\r\n")
time.sleep(hold); s.recv(2000); s.close()
"""


def sh(*args: str, check: bool = True) -> str:
    """Run a command, return stdout."""
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def nsx(ns: str, *args: str) -> list[str]:
    """Prefix for running ``args`` inside ``ns``."""
    return ["ip", "netns", "exec", ns, *args]


def build(prefix: str = "pf-ctrec-") -> tuple[str, str, str]:
    """Client -- node (forwarding, DNAT VIP:80 -> server:8080, MASQUERADE to :9090) -- server.

    Returns the (client, node, server) namespace names, ``PREFIX{cli,node,srv}``; the
    integration test and the bench reuse this with their own prefixes.
    """
    CLI, NODE, SRV = (f"{prefix}{x}" for x in ("cli", "node", "srv"))
    for ns in (CLI, NODE, SRV):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    write_sysctl_in_netns(NODE, "net.ipv4.ip_forward", "1")
    write_sysctl_in_netns(NODE, "net.ipv6.conf.all.forwarding", "1")
    for peer, side, n in ((CLI, "to-cli", 1), (SRV, "to-srv", 2)):
        sh("ip", "-n", NODE, "link", "add", side, "type", "veth", "peer", "name", "eth0",
           "netns", peer)
        sh("ip", "-n", NODE, "addr", "add", f"10.77.{n}.1/24", "dev", side)
        sh("ip", "-n", NODE, "addr", "add", f"fd77:{n}::1/64", "dev", side, "nodad")
        sh("ip", "-n", peer, "addr", "add", f"10.77.{n}.2/24", "dev", "eth0")
        sh("ip", "-n", peer, "addr", "add", f"fd77:{n}::2/64", "dev", "eth0", "nodad")
        for ns, dev in ((NODE, side), (peer, "eth0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", peer, "route", "add", "default", "via", f"10.77.{n}.1")
        sh("ip", "-n", peer, "-6", "route", "add", "default", "via", f"fd77:{n}::1")
    ipt = nsx(NODE, "iptables", "-t", "nat", "-A")
    sh(*ipt, "PREROUTING", "-d", VIP, "-p", "tcp", "--dport", "80", "-j", "DNAT",
       "--to-destination", f"{SRV4}:8080")
    sh(*ipt, "POSTROUTING", "-s", "10.77.1.0/24", "-d", SRV4, "-p", "tcp", "--dport", "9090",
       "-j", "MASQUERADE")
    # an ip6tables nat rule also makes the kernel track IPv6 in this netns at all
    sh(*nsx(NODE, "ip6tables", "-t", "nat", "-A", "PREROUTING", "-d", VIP6, "-p", "tcp",
            "--dport", "80", "-j", "DNAT", "--to-destination", f"[{SRV6}]:8080"))
    return CLI, NODE, SRV


def teardown(prefix: str = "pf-ctrec-") -> None:
    """Delete every namespace named with ``prefix`` (only ones this script creates)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            sh("ip", "netns", "pids", name, check=False)
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                subprocess.run(["kill", pid], check=False)
            sh("ip", "netns", "del", name, check=False)


def write_frames(path: Path, frames: list[tuple[float, bytes]]) -> None:
    """Write ``frames`` in the ``.bin`` framing."""
    with path.open("wb") as f:
        for t, buf in frames:
            f.write(FRAME.pack(t, len(buf)) + buf)


def read_frames(path: Path) -> list[tuple[float, bytes]]:
    """Read a ``.bin`` file back."""
    data, off, out = path.read_bytes(), 0, []
    while off < len(data):
        t, n = FRAME.unpack_from(data, off)
        out.append((t, data[off + 12 : off + 12 + n]))
        off += 12 + n
    return out


def summary(e: CtEntry) -> dict[str, object]:
    """The fields of one decoded entry that expected.json pins down."""
    return {"event": e.event.name, "id": e.id, "orig": str(e.orig), "reply": str(e.reply),
            "status": int(e.status), "dnat": e.is_dnat, "snat": e.is_snat,
            "tcp_state": e.tcp_state, "timeout": e.timeout,
            "counters": [e.orig_packets, e.orig_bytes, e.reply_packets, e.reply_bytes],
            "start_ns": e.start_ns, "stop_ns": e.stop_ns}


def write_expected() -> None:
    """Decode the .bin files into expected.json (then check it against the .txt files)."""
    out: dict[str, list[dict[str, object]]] = {}
    for name, dump in (("dump", True), ("events", False)):
        out[name] = [summary(e) for t, buf in read_frames(HERE / f"{name}.bin")
                     for e in ctnetlink.parse(buf, t, dump=dump).entries]
    (HERE / "expected.json").write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    """Build, record, write the files, tear down."""
    if sys.argv[1:] == ["--expected-only"]:
        write_expected()
        return
    teardown()
    try:
        build()
        for key in ("acct", "timestamp", "events"):
            write_sysctl_in_netns(NODE, f"net.netfilter.nf_conntrack_{key}", "1")
        write_sysctl_in_netns(NODE, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", "8")
        write_sysctl_in_netns(NODE, "net.netfilter.nf_conntrack_udp_timeout", "8")
        write_sysctl_in_netns(NODE, "net.netfilter.nf_conntrack_icmp_timeout", "8")
        ev = open_socket(NODE, socket.AF_NETLINK, socket.SOCK_RAW, ctnetlink.NETLINK_NETFILTER)
        ev.bind((0, ctnetlink.event_groups_mask()))
        ev.settimeout(0.2)
        events: list[tuple[float, bytes]] = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                try:
                    buf = ev.recv(1 << 20)
                    events.append((time.time(), buf))
                except TimeoutError:
                    continue

        threading.Thread(target=reader, daemon=True).start()
        cte = subprocess.Popen(nsx(NODE, "conntrack", "-E", "-o", "extended,id,timestamp"),
                               stdout=(HERE / "events.txt").open("w"),
                               stderr=subprocess.DEVNULL)
        srv = subprocess.Popen(nsx(SRV, sys.executable, "-c", SERVER))
        time.sleep(1.0)
        run = [*nsx(CLI, sys.executable, "-c", CLIENT)]
        subprocess.run([*run, "tcp", VIP, "80", "0"], check=True)  # DNAT
        subprocess.run([*run, "tcp", SRV4, "9090", "0"], check=True)  # SNAT (masquerade)
        subprocess.run([*run, "udp", SRV4, "5353", "0"], check=True)
        subprocess.run([*run, "icmp", SRV4, "4242", "0"], check=True)  # echo id 4242
        held = subprocess.Popen([*run, "tcp", VIP6, "80", "4"])  # IPv6 DNAT, open in dump
        time.sleep(2.5)  # neighbour discovery can delay the SYN by a second
        dump = open_socket(NODE, socket.AF_NETLINK, socket.SOCK_RAW,
                           ctnetlink.NETLINK_NETFILTER)
        dump.bind((0, 0))
        dump.send(ctnetlink.dump_request(1))
        frames: list[tuple[float, bytes]] = []
        while True:
            buf = dump.recv(1 << 20)
            frames.append((time.time(), buf))
            if ctnetlink.parse(buf, 0.0, dump=True).done:
                break
        (HERE / "dump.txt").write_text("".join(
            sh(*nsx(NODE, "conntrack", "-L", "-f", f, "-o", "extended,id"))
            for f in ("ipv4", "ipv6")))
        held.wait()
        time.sleep(9.0)  # timeouts shortened above: expire everything
        sh(*nsx(NODE, "conntrack", "-L"), check=False)  # a dump reaps expired entries
        time.sleep(1.0)
        done.set()
        time.sleep(0.3)
        cte.terminate()
        srv.terminate()
        write_frames(HERE / "events.bin", events)
        write_frames(HERE / "dump.bin", frames)
        write_expected()
        print(f"recorded {len(events)} event buffers, {len(frames)} dump buffers")
    finally:
        teardown()


if __name__ == "__main__":
    main()
