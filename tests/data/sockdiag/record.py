"""Record the golden inet_diag / rtnetlink replies under tests/data/sockdiag (root).

Builds two namespaces of its own (``pf-sdrec-node``, ``pf-sdrec-pod``, a veth between
them), runs in the pod a TCP server on 0.0.0.0:9000 and on [::]:9001 (dual stack) and a UDP
server on 5353, and in the node a client of each (IPv4, IPv6 and a connected UDP socket).
Then, from inside the pod namespace (a socket opened by podflow's fork helper), it saves:

- ``pod_tcp4.bin``, ``pod_tcp6.bin``, ``pod_udp4.bin``, ``pod_udp6.bin``: the raw datagrams
  of one SOCK_DIAG_BY_FAMILY dump each, concatenated, with ``*.json`` the parsed sockets
  (checked by hand against ``ss -tinu`` output saved in ``pod_ss.txt``);
- ``pod_links.bin`` and ``pod_nsid.bin``: an RTM_GETLINK dump and the RTM_GETNSID answer for
  the node namespace, with ``pod_links.json``.

Usage: ``.venv/bin/python tests/data/sockdiag/record.py`` (everything is removed at exit).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from podflow.sources import nsdiscovery, sockdiag
from podflow.sources.netns import open_socket

OUT = Path(__file__).parent
NODE, POD = "pf-sdrec-node", "pf-sdrec-pod"
SERVER = """
import socket, threading, time
def tcp(fam, addr, port):
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen()
    c, _ = s.accept(); c.recv(4000); c.sendall(b"s" * 7000); time.sleep(60)
threading.Thread(target=tcp, args=(socket.AF_INET, "0.0.0.0", 9000), daemon=True).start()
threading.Thread(target=tcp, args=(socket.AF_INET6, "::", 9001), daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
u.recvfrom(100); time.sleep(60)
"""
CLIENT = """
import socket, time
a = socket.create_connection(("10.78.0.2", 9000)); a.sendall(b"c" * 1234)
b = socket.create_connection(("fd78::2", 9001)); b.sendall(b"c" * 2345)
m = socket.create_connection(("10.78.0.2", 9001))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("10.78.0.2", 5353)); u.send(b"q")
time.sleep(60)
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


def main() -> None:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "netns", "add", NODE)
        sh("ip", "netns", "add", POD)
        sh("ip", "link", "add", "pfrec0", "netns", NODE, "type", "veth", "peer", "name", "eth0",
           "netns", POD)
        for ns, dev, v4, v6 in ((NODE, "pfrec0", "10.78.0.1/24", "fd78::1/64"),
                                (POD, "eth0", "10.78.0.2/24", "fd78::2/64")):
            sh("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            sh("ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        procs.append(subprocess.Popen(["ip", "netns", "exec", POD, "python3", "-c", SERVER]))
        time.sleep(0.5)
        procs.append(subprocess.Popen(["ip", "netns", "exec", NODE, "python3", "-c", CLIENT]))
        time.sleep(1.5)
        diag = open_socket(POD, socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG)
        for name, fam, proto in (("tcp4", socket.AF_INET, 6), ("tcp6", socket.AF_INET6, 6),
                                 ("udp4", socket.AF_INET, 17), ("udp6", socket.AF_INET6, 17)):
            raw: list[bytes] = []
            socks = sockdiag.dump(diag, fam, proto, states=sockdiag.ALL_STATES, raw=raw)
            (OUT / f"pod_{name}.bin").write_bytes(b"".join(raw))
            (OUT / f"pod_{name}.json").write_text(json.dumps(
                [asdict(s) for s in socks], indent=1, sort_keys=True) + "\n")
        route = open_socket(POD, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        route.send(nsdiscovery.build_getlink())
        raw_links, links = b"", []
        while True:
            data = route.recv(1 << 16)
            raw_links += data
            got, done = nsdiscovery.parse_links(data)
            links += got
            if done:
                break
        fd = os.open(f"/run/netns/{NODE}", os.O_RDONLY)
        route.send(nsdiscovery.build_getnsid(fd, seq=2))
        (OUT / "pod_nsid.bin").write_bytes(route.recv(1 << 16))
        os.close(fd)
        (OUT / "pod_links.bin").write_bytes(raw_links)
        (OUT / "pod_links.json").write_text(json.dumps([asdict(x) for x in links], indent=1)
                                            + "\n")
        ss = subprocess.run(["ip", "netns", "exec", POD, "ss", "-tuinaO"], capture_output=True,
                            text=True, check=True).stdout
        (OUT / "pod_ss.txt").write_text(ss)
        print(f"recorded into {OUT}")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for ns in (POD, NODE):
            subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
