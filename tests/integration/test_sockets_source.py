"""The sockets source on real namespaces (root): both ends of one connection, RTT, owner.

Builds ``pf-sit-node`` (the node), ``pf-sit-pod`` (a pod: veth to the node) and
``pf-sit-other`` (a veth pair of its own: nothing leads to the node), runs a server in the
pod and a host-network client in the node, and polls with the real plugin.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.pipeline.context import DecodeContext
from podflow.pipeline.socktrack import SockConn
from podflow.sources.registry import SourceOptions
from podflow.sources.sockets import create
from podflow.store.correlate import merge_all

NODE, POD, OTHER = "pf-sit-node", "pf-sit-pod", "pf-sit-other"
SERVER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen()
c, _ = s.accept(); c.recv(100); c.sendall(b"s" * 3000)
c.recv(100); c.close(); time.sleep(30)
"""
CLIENT = """
import socket, time
c = socket.create_connection(("10.79.0.2", 9000)); c.sendall(b"c" * 100); c.recv(5000)
print("ok", flush=True); time.sleep(2.0); c.close(); time.sleep(30)
"""


def sh(*a: str) -> None:
    subprocess.run(a, check=True)


def teardown() -> None:
    for ns in (NODE, POD, OTHER):
        subprocess.run(["ip", "netns", "del", ns], check=False, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def lab() -> Iterator[None]:
    teardown()
    try:
        for ns in (NODE, POD, OTHER):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "pfsit0", "netns", NODE, "type", "veth", "peer", "name", "eth0",
           "netns", POD)
        sh("ip", "-n", OTHER, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        sh("ip", "-n", NODE, "addr", "add", "10.79.0.1/24", "dev", "pfsit0")
        sh("ip", "-n", POD, "addr", "add", "10.79.0.2/24", "dev", "eth0")
        for ns, dev in ((NODE, "pfsit0"), (POD, "eth0"), (OTHER, "eth0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield
    finally:
        teardown()


def test_both_sides_with_rtt_and_owner(lab: None) -> None:
    server = subprocess.Popen(["ip", "netns", "exec", POD, sys.executable, "-c", SERVER])
    plugin = create(SourceOptions(node_name="n1", netns=NODE, poll_interval=0.2))
    batches: list[tuple[list[Any], str]] = []
    stop = threading.Event()

    def sink(records: list[Any], kind: str) -> bool:
        batches.append((records, kind))
        return True

    t = threading.Thread(target=plugin.run, args=(sink, stop), daemon=True)
    client = None
    try:
        time.sleep(0.5)
        t.start()
        client = subprocess.Popen(["ip", "netns", "exec", NODE, sys.executable, "-c", CLIENT],
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdout.readline().strip() == "ok"
        time.sleep(3.5)   # the client closes after 2 s: the next polls see it end
    finally:
        stop.set()
        t.join(5)
        for p in (server, client):
            if p is not None:
                p.kill()
                p.wait()
    assert plugin.ready and all(k == "poll" for _, k in batches)
    reports = [r for recs, k in batches for r in plugin.process(recs, k, time.time())]
    reports += plugin.flush(time.time())
    conns: list[SockConn] = [r.record for r in reports]
    by_side = {c.side: c for c in conns if c.remote_port == 9000 or c.local_port == 9000}
    assert set(by_side) == {"client", "server"}
    cli, srv = by_side["client"], by_side["server"]
    assert (cli.netns, cli.host_network, cli.remote_ip) == (NODE, True, "10.79.0.2")
    assert (srv.netns, srv.host_network, srv.remote_port) == (POD, False, cli.local_port)
    assert srv.pid == server.pid and srv.comm is not None and srv.comm.startswith("python")
    assert client is not None and cli.pid == client.pid
    for c in (cli, srv):
        assert c.tcp is not None and c.tcp.rtt_us > 0
    assert cli.tcp is not None and cli.tcp.bytes_received == 3000
    assert all(r.final for r in reports if r.record in (cli, srv))   # closed: final reports
    stats = plugin.stats()
    assert OTHER not in stats["evidence"] and POD in stats["evidence"]
    ctx = DecodeContext("n1", Inventory(), CniProfile("generic", "n1"))
    flows = [plugin.decode(r.record, ctx, r.final) for r in reports if r.record in (cli, srv)]
    [m] = merge_all([f for f in flows if f is not None])
    assert (m.source.ip, m.destination.ip, m.destination.port) == ("10.79.0.1", "10.79.0.2",
                                                                   9000)
    assert len(m.observations) == 2 and m.rtt_us == float(cli.tcp.rtt_us)
