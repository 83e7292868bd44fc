"""Conntrack event ingest: podflow's ConntrackSource vs ``conntrack -E``, side by side (root).

    .venv/bin/python bench/conntrack_ingest.py [--connections N] [--seconds S] [--clients K]

Builds its own namespaces ``pf-bench-{cli,node,srv}`` (removed in ``finally``, also on
Ctrl-C): client -> node (DNAT 10.96.77.10:80 -> server, ``nf_conntrack_tcp_timeout_time_wait``
1 s so DESTROYs come within the run) -> server. In the node netns it starts podflow's
ConntrackSource (decoder + ConnectionTracker, 32 MiB socket buffer, resync every 5 s) and
``conntrack -E -o timestamp`` (same 32 MiB via ``-b``) at once, then K client processes make N
short TCP connections through the DNAT rule and the bench waits until every DESTROY arrived
(or S seconds passed).

What the numbers mean: each tool's events/s is events received divided by the wall time from
its first to its last event processed. When both keep up, both are bounded by the generator
(and by the 1 s TIME_WAIT reaping), so ``ratio`` ~ 1 says "podflow keeps up as well as the C
tool", not that it is as cheap. That is why the CPU seconds of each are printed too (podflow:
``time.thread_time`` of its source thread, which also decodes and tracks; conntrack: utime +
stime from /proc) with events per CPU second: that is the cost comparison. Lost events are
shortfalls of NEW and DESTROY against N (plus, for podflow, overruns and what its tracker had
to recover from dumps; for conntrack, ENOBUFS messages on its stderr).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podflow.model.conntrack import CtEntry, CtEventType  # noqa: E402
from podflow.pipeline.cttrack import ConnectionTracker  # noqa: E402
from podflow.sources.conntrack import ConntrackSource  # noqa: E402
from podflow.sources.netns import write_sysctl_in_netns  # noqa: E402
from tests.data.conntrack.record import VIP, build, nsx, teardown  # noqa: E402

PREFIX = "pf-bench-"
SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(1024)
while True:
    c, _ = s.accept(); c.close()
"""
CLIENT = r"""
import socket, sys
for _ in range(int(sys.argv[1])):
    s = socket.create_connection((sys.argv[2], 80), timeout=5)
    s.recv(10); s.close()
"""


class PodflowSide:
    """ConntrackSource + tracker in a thread, counting what it processes."""

    def __init__(self, node: str) -> None:
        self.src = ConntrackSource(node, resync_interval=5.0)
        self.tracker = ConnectionTracker()
        self.counts = {t: 0 for t in CtEventType}
        self.first = self.last = 0.0
        self.cpu = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.src.run(self.sink, self.stop)
        self.cpu = time.thread_time()

    def sink(self, entries: list[CtEntry], kind: str) -> None:
        self.tracker.handle(entries, kind, time.time())
        if kind != "event" or not entries:
            return
        for e in entries:
            self.counts[e.event] += 1
        self.last = time.time()
        self.first = self.first or self.last


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, events: int, new: int, destroy: int, n: int, lost: str,
           first: float, last: float, cpu: float) -> float:
    """Print one tool's line and return its events/s."""
    wall = max(last - first, 1e-9)
    rate = events / wall
    print(f"{name:9s} events={events} NEW={new} DESTROY={destroy} "
          f"lost(NEW/DESTROY shortfall)={max(0, n - new)}/{max(0, n - destroy)} {lost} "
          f"wall={wall:.2f}s events/s={rate:,.0f} cpu={cpu:.2f}s "
          f"events/cpu-s={events / max(cpu, 1e-9):,.0f}")
    return rate


def main() -> None:
    """Build the namespaces, run both listeners and the burst, print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    teardown(PREFIX)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp:
        try:
            run(args, Path(tmp), procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            teardown(PREFIX)


def run(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """The measurement proper; ``procs`` collects what ``main`` must kill afterwards."""
    n, deadline = args.connections, time.time() + args.seconds
    cli, node, srv = build(PREFIX)
    write_sysctl_in_netns(node, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")
    with (tmp / "ct.txt").open("wb") as out, (tmp / "ct.err").open("wb") as err:
        pf = PodflowSide(node)
        pf.thread.start()
        time.sleep(1.0)  # sysctls set (acct/timestamp/events=1) before any connection
        cte = subprocess.Popen(nsx(node, "conntrack", "-E", "-o", "timestamp",
                                   "-b", str(32 << 20)), stdout=out, stderr=err)
        procs += [cte, subprocess.Popen(nsx(srv, sys.executable, "-c", SERVER))]
        time.sleep(1.0)
        clients = [subprocess.Popen(nsx(cli, sys.executable, "-c", CLIENT,
                                        str(n // args.clients + (i < n % args.clients)), VIP))
                   for i in range(args.clients)]
        procs += clients
        for c in clients:
            c.wait(timeout=max(1.0, deadline - time.time()))
        while pf.counts[CtEventType.DESTROY] < n and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)  # let conntrack -E catch up too
        ct_cpu = proc_cpu(cte.pid)
        cte.terminate()
        cte.wait(timeout=5)
        pf.stop.set()
        pf.thread.join(timeout=5)
        lines = Path(out.name).read_text().splitlines()
        stamps = [float(m.group(1)) for x in lines if (m := re.match(r"\[(\d+\.\d+)\]", x))]
        kinds = {k: sum(f"[{k}]" in x for x in lines) for k in ("NEW", "UPDATE", "DESTROY")}
        enobufs = sum("No buffer space" in x or "ENOBUFS" in x
                      for x in Path(err.name).read_text().splitlines())
        s, t = pf.src.stats, pf.tracker
        cnt = pf.counts
        print(f"connections={n} clients={args.clients}")
        pf_rate = report("podflow", s.events, cnt[CtEventType.NEW], cnt[CtEventType.DESTROY], n,
                         f"overruns={s.overruns} missed_new={t.missed_new} "
                         f"missed_destroy={t.missed_destroy} parse_errors={s.parse_errors}",
                         pf.first, pf.last, pf.cpu)
        ct_rate = report("conntrack", sum(kinds.values()), kinds["NEW"], kinds["DESTROY"], n,
                         f"enobufs={enobufs}", min(stamps, default=0.0),
                         max(stamps, default=0.0), ct_cpu)
    print(f"ratio: {pf_rate / max(ct_rate, 1e-9):.2f}")


if __name__ == "__main__":
    main()
