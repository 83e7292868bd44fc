"""Time podflow's sockets poll of N namespaces x M connections against ``ss -tinp`` (root).

Builds N namespaces ``pf-sbench-<i>`` (loopback only), each with one process holding M
established TCP connections to itself on 127.0.0.1 (so 2M+1 TCP sockets per namespace:
M client sockets, M accepted ones, one listener). Then, for several rounds:

- podflow: one :meth:`podflow.sources.sockets.NamespacePoller.poll` of every namespace
  (inet_diag TCP+UDP, IPv4+IPv6, with tcp_info, parsed into Python objects, owners from the
  inode cache). One-time setup is excluded: opening the per-namespace netlink socket (a
  forked helper per namespace) and the first poll, which fills the owner cache by scanning
  /proc/PID/fd (its time is printed separately as ``cold``);
- reference: ``ip netns exec NS ss -tinp`` run in each namespace, one after the other (TCP
  only, with tcp_info and owning processes), output read and discarded.

Prints both per round, the medians, and last ``ratio: X`` = reference time / podflow time
(above 1: podflow is faster). Everything it creates is removed in ``finally`` (also on
Ctrl-C). Bounded: N <= 100, M <= 500, rounds <= 20.

Usage: ``.venv/bin/python bench/sockets_poll.py --namespaces 20 --connections 50``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

from podflow.sources import nsdiscovery, sockdiag
from podflow.sources.netns import open_socket
from podflow.sources.sockets import NamespacePoller, _Space

PREFIX = "pf-sbench-"
HOLDER = """
import socket, sys, time
m = int(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9000)); srv.listen(m + 16)
keep = []
for _ in range(m):
    c = socket.create_connection(("127.0.0.1", 9000)); c.sendall(b"x" * 100)
    a, _ = srv.accept(); a.recv(100); a.sendall(b"y" * 200)
    keep += [c, a]
print("ready", flush=True)
time.sleep(600)
"""


def build(n: int, m: int) -> tuple[list[str], list[subprocess.Popen[str]]]:
    """Create the namespaces and start one connection holder in each."""
    names, procs = [], []
    for i in range(n):
        name = f"{PREFIX}{i}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        names.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        procs.append(subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c",
                                       HOLDER, str(m)], stdout=subprocess.PIPE, text=True))
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a connection holder failed to start")
    return names, procs


def poller_for(names: list[str], procs: list[subprocess.Popen[str]]) -> NamespacePoller:
    """A poller whose namespaces are exactly ours (sockets opened once: setup)."""
    poller = NamespacePoller(None)
    for name, proc in zip(names, procs, strict=True):
        path = f"/run/netns/{name}"
        inode = nsdiscovery.ns_inode(path) or 0
        diag = open_socket(name, socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG)
        poller.spaces[inode] = _Space(nsdiscovery.Candidate(inode, path, name, [proc.pid]),
                                      diag, None, True)
    return poller


def time_ss(names: list[str]) -> float:
    """Seconds to run ``ss -tinp`` in every namespace."""
    t0 = time.perf_counter()
    for name in names:
        subprocess.run(["ip", "netns", "exec", name, "ss", "-tinp"], check=True,
                       stdout=subprocess.PIPE)
    return time.perf_counter() - t0


def main() -> int:
    """Run the benchmark (see the module doc)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    n, m, rounds = min(a.namespaces, 100), min(a.connections, 500), min(a.rounds, 20)
    if os.geteuid() != 0:
        print("bench/sockets_poll.py needs root (network namespaces)", file=sys.stderr)
        return 2
    names: list[str] = []
    procs: list[subprocess.Popen[str]] = []
    poller: NamespacePoller | None = None
    try:
        names, procs = build(n, m)
        poller = poller_for(names, procs)
        t0 = time.perf_counter()
        cycle = poller.poll()
        cold = time.perf_counter() - t0
        socks = sum(len(ns.sockets) for ns in cycle.namespaces)
        owned = sum(len(ns.owners) for ns in cycle.namespaces)
        print(f"{n} namespaces x {m} connections: podflow sees {socks} sockets "
              f"({owned} connections with their owner); cold first poll {cold * 1000:.1f} ms")
        ours, ref = [], []
        print(f"{'round':>5} {'podflow ms':>11} {'ss -tinp ms':>12}")
        for r in range(rounds):
            t0 = time.perf_counter()
            got = poller.poll()
            ours.append(time.perf_counter() - t0)
            assert sum(len(ns.sockets) for ns in got.namespaces) == socks
            ref.append(time_ss(names))
            print(f"{r + 1:>5} {ours[-1] * 1000:>11.2f} {ref[-1] * 1000:>12.1f}")
        po, pr = statistics.median(ours), statistics.median(ref)
        print(f"median: podflow {po * 1000:.2f} ms ({po / n * 1e6:.0f} us/namespace), "
              f"ss -tinp {pr * 1000:.1f} ms ({pr / n * 1e3:.2f} ms/namespace)")
        print(f"ratio: {pr / po:.1f}")
        return 0
    finally:
        if poller is not None:
            poller.close()
        for p in procs:
            p.kill()
            p.wait()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    sys.exit(main())
