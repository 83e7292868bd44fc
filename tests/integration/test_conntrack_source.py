"""ConntrackSource + ConnectionTracker on a real kernel: DNAT connections, overruns, resync.

Builds its own namespaces (``pf-ctit-{cli,node,srv}``, deleted afterwards) with the topology
of tests/data/conntrack/record.py: client -> node (DNAT 10.96.77.10:80 -> 10.77.2.2:8080) ->
server. Needs root.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from podflow.model.conntrack import CtEntry
from podflow.pipeline.cttrack import Completed, ConnectionTracker
from podflow.sources.conntrack import ConntrackSource
from tests.data.conntrack.record import SERVER, SRV4, VIP, build, nsx, teardown

PREFIX = "pf-ctit-"
BURST = r"""
import socket, sys
for i in range(int(sys.argv[1])):
    s = socket.create_connection((sys.argv[2], 80), timeout=5,
                                 source_address=("", int(sys.argv[3]) + i))
    print(s.getsockname()[1]); s.sendall(b"hi"); s.recv(2000); s.close()
"""
"""Sequential connections, each from its own local port: the kernel never hands a port out
again while the server keeps its TIME_WAIT, which would make conntrack destroy the earlier
entry at once and could reopen the tuple with stray packets (nothing podflow could know)."""


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[str, str]]:
    """(client netns, node netns) with a server running; torn down afterwards."""
    teardown(PREFIX)
    try:
        cli, node, srv = build(PREFIX)
        server = subprocess.Popen(nsx(srv, sys.executable, "-c", SERVER))
        time.sleep(0.5)
        yield cli, node
        server.terminate()
    finally:
        teardown(PREFIX)


class Harness:
    """A source and a tracker running in a thread, collecting what the tracker emits."""

    def __init__(self, node: str, **kw: float) -> None:
        self.src = ConntrackSource(node, resync_interval=1.0, **kw)  # type: ignore[arg-type]
        self.tracker = ConnectionTracker()
        self.out: list[Completed] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.src.run, args=(self.sink, self.stop))

    def sink(self, entries: list[CtEntry], kind: str) -> None:
        self.out += self.tracker.handle(entries, kind, time.time())

    def __enter__(self) -> Harness:
        self.thread.start()
        time.sleep(1.5)  # sysctls set, first dump done
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "stop not honoured"

    def finals_to_vip(self) -> dict[tuple[int, int | None], CtEntry]:
        """Final reports of connections to the VIP by (client port, conntrack id)."""
        return {(c.entry.orig.sport or 0, c.entry.id): c.entry for c in self.out
                if c.final and c.entry.orig.dst == VIP}

    def wait_for(self, ports: Counter[int], timeout: float
                 ) -> dict[tuple[int, int | None], CtEntry]:
        """Wait until every connection of ``ports`` (a port reused n times counts n) has its
        final report, or ``timeout``."""
        deadline = time.time() + timeout
        while time.time() < deadline and ports - Counter(p for p, _ in self.finals_to_vip()):
            time.sleep(0.2)
        return self.finals_to_vip()


def burst(cli: str, n: int, first_port: int) -> Counter[int]:
    """Make ``n`` sequential connections client -> VIP:80 from local ports ``first_port`` on;
    how often each local port served (once each)."""
    out = subprocess.run(nsx(cli, sys.executable, "-c", BURST, str(n), VIP, str(first_port)),
                         check=True, capture_output=True, text=True).stdout
    return Counter(int(x) for x in out.split())


def test_dnat_connections_are_final_with_counters(lab: tuple[str, str]) -> None:
    cli, node = lab
    with Harness(node) as h:
        ports = burst(cli, 5, 20000)
        got = h.wait_for(ports, timeout=6.0)
    assert sum(ports.values()) == 5 and not ports - Counter(p for p, _ in got)
    assert h.src.stats.sysctl_warnings == []
    assert h.src.stats.events >= 5 * 3 and h.src.stats.dumps >= 2
    for e in got.values():
        assert e.is_dnat and not e.is_snat
        assert (e.orig.dport, e.reply.src, e.reply.sport) == (80, SRV4, 8080)
        assert e.tcp_state in ("TIME_WAIT", "CLOSE")
        assert e.orig_packets and e.orig_bytes and e.reply_packets and e.reply_bytes
        assert e.start_ns is not None and e.start_ns / 1e9 <= time.time()


def test_overrun_is_counted_and_resync_recovers_everything(lab: tuple[str, str]) -> None:
    cli, node = lab
    with Harness(node, rcvbuf=4096) as h:
        ports = burst(cli, 2000, 21000)
        got = h.wait_for(ports, timeout=10.0)
    assert sum(ports.values()) == 2000
    assert h.src.stats.overruns > 0
    seen = Counter(p for p, _ in got)
    lost = sorted(p for p in ports if not seen[p])
    assert not lost, f"{len(lost)} ports without any reported connection: {lost[:20]}"
    assert set(ports.values()) == {1} and all(seen[p] == 1 for p in ports), "each once"
    assert h.tracker.missed_new > 0  # NEW events lost, the dump found them
    assert all(e.orig_packets for e in got.values())
