"""Hub ingest: agents' spools pulled over gRPC into the store, against a straight write.

    .venv/bin/python bench/hub_ingest.py [--agents 8] [--flows 200000] [--rate 1000]
                                         [--seconds 20]

1. **Ingest.** ``--agents`` agent processes (each the real spool and feed service of an
   agent, on loopback) hold ``--flows`` flows between them, spooled in batches of 200 (what
   a busy agent spools per second). The hub (in this process) pulls them all into a fresh
   store; flows/s is measured from its start to the commit of the last one. The reference
   writes the same flows straight into another fresh store as one Arrow batch stream
   (``write_feed`` of 20,000 flows at a time, no network, no spool). ``ratio`` is hub / straight
   (the goal is >= 0.5).
2. **Latency.** The agents then spool ``--rate`` connections/s between them for
   ``--seconds``; each flow ends when it is spooled, and a reader polls the store every
   100 ms: the time from a connection's end to being queryable in the hub's store, p50 and
   p95 (the goal: p95 < 2 s at 1k connections/s).
3. **Agent buffer.** The memory an agent's Observer ring holds when full (4,095 events of
   these flows, each read once by a client: Python allocations, tracemalloc), and the
   agent-side CPU per 1,000 connections of spooling them and adding them to the ring.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podflow.cluster.feed import FeedService, SpoolSink, add_feed  # noqa: E402
from podflow.cluster.hub import Hub, HubConfig  # noqa: E402
from podflow.cluster.spool import Spool  # noqa: E402
from podflow.model.flow import (  # noqa: E402
    Counters,
    Endpoint,
    EndpointKind,
    Flow,
    ObservationPoint,
    Protocol,
    Service,
    Traffic,
    Workload,
)
from podflow.observer.buffer import FlowBuffer  # noqa: E402
from podflow.observer.server import ObserverServer  # noqa: E402
from podflow.store import open_store  # noqa: E402

BATCH = 200


def make_flow(node: int, i: int, at: float) -> Flow:
    """A realistic connection record: pod -> Service -> pod, counters, one observation."""
    src = Endpoint(f"10.244.{node}.{2 + i % 200}", 20000 + i % 40000, EndpointKind.POD, "shop",
                   f"web-{node}-{i % 7}", Workload("Deployment", "web"),
                   (("app", "web"), ("tier", "front")), f"node{node}")
    dst = Endpoint(f"10.244.{100 + i % 50}.7", 8080, EndpointKind.POD, "shop", "api-1",
                   Workload("Deployment", "api"), (("app", "api"),), f"node{100 + i % 50}")
    return Flow(at - 0.05, src, dst, Protocol.TCP, end_time=at,
                destination_service=Service("shop", "api", "http", "ClusterIP", "10.96.0.9", 80),
                traffic=Traffic(Counters(6, 620), Counters(5, 1400)),
                flow_id=f"n{node}-{i}", client_key=f"n{node}-{i}",
                observations=(ObservationPoint(f"node{node}", "conntrack",
                                               instance=f"0/{i}"),))


def agent_process(node: int, base: str, flows: int, ready: Any, go: Any, rate: float,
                  seconds: float) -> None:
    """One agent: pre-spooled flows, then (after ``go``) ``rate`` connections/s."""
    spool = Spool(Path(base) / f"node{node}")
    sink = SpoolSink(spool, f"node{node}")
    now = time.time()
    for start in range(0, flows, BATCH):
        sink.write([make_flow(node, i, now) for i in range(start, min(flows, start + BATCH))])
    server = ObserverServer(FlowBuffer(f"node{node}"), "127.0.0.1:0",
                            [lambda s: add_feed(s, FeedService(spool, f"node{node}"))])
    ready.put(server.start())
    go.wait()
    i, end = flows, time.time() + seconds
    while time.time() < end:   # 10 batches a second
        n = max(1, round(rate / 10))
        t = time.time()
        sink.write([make_flow(node, i + k, t) for k in range(n)])
        i += n
        time.sleep(max(0.0, 0.1 - (time.time() - t)))
    time.sleep(seconds + 30)   # stay up while the hub drains; the parent ends us


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ring_memory() -> None:
    """Print what a full Observer ring adds to a fresh process's RSS (protobuf messages
    live in C memory, which tracemalloc does not see)."""
    now = time.time()
    views = [make_flow(1, i, now) for i in range(4095)]   # the agent has its views anyway
    before = rss_mb()
    ring = FlowBuffer("node1")
    ring.add(views)
    for ev in ring.since(0)[0]:
        ev.message()   # read once: the Hubble form is kept too
    print(f"agent Observer ring full (4,095 events, read once): +{rss_mb() - before:.1f} MB "
          "RSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--flows", type=int, default=200_000, help="flows pre-spooled, in all")
    ap.add_argument("--rate", type=float, default=1000.0, help="connections/s, in all")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    per = args.flows // args.agents
    tmp = Path(tempfile.mkdtemp(prefix="podflow-hub-bench-"))
    ready: Any = mp.Queue()
    go = mp.Event()
    procs = [mp.Process(target=agent_process, args=(n + 1, str(tmp / "spools"), per, ready, go,
                                                     args.rate / args.agents, args.seconds),
                        daemon=True) for n in range(args.agents)]
    for p in procs:
        p.start()
    try:
        peers = [ready.get(timeout=600) for _ in procs]
        total = per * args.agents
        print(f"{args.agents} agents hold {total:,} flows in their spools")

        # 1. the hub pulls everything
        store = tmp / "hub.duckdb"
        hub = Hub(HubConfig(store=store, peers=peers, flush_interval=0.5))
        t0 = time.perf_counter()
        th = threading.Thread(target=hub.run, daemon=True)
        th.start()
        while hub.stats["flows"] < total:
            time.sleep(0.05)
        hub_s = time.perf_counter() - t0
        hub_rate = total / hub_s
        print(f"hub: {total:,} flows in {hub_s:.1f} s: {hub_rate:,.0f} flows/s")

        # the reference: the same flows straight into a store, 20k at a time
        ref = open_store(tmp / "straight.duckdb")
        now = time.time()
        flows = [make_flow(n + 1, i, now) for n in range(args.agents) for i in range(per)]
        t0 = time.perf_counter()
        for k in range(0, len(flows), 20_000):
            ref.write_feed(flows[k:k + 20_000])
        ref_s = time.perf_counter() - t0
        ref_rate = total / ref_s
        print(f"straight write_feed: {total:,} flows in {ref_s:.1f} s: {ref_rate:,.0f} flows/s")

        # 2. latency at --rate connections/s
        seen_rowid = open_store(store, read_only=True).last_rowid()
        latencies: list[float] = []
        go.set()
        sending_until = time.time() + args.seconds
        last_new = time.time()
        reader = open_store(store, read_only=True, lock_timeout=0.5)
        # read until the agents stopped and nothing new came for 3 s (the tail counts)
        while time.time() < sending_until + 60 and (
                time.time() < sending_until or time.time() - last_new < 3.0):
            time.sleep(0.1)
            try:
                new = reader.flows(after_rowid=seen_rowid, merged=False)
                seen_rowid = reader.last_rowid()
            except Exception:
                continue
            at = time.time()
            if new:
                last_new = at
            latencies += [at - f.end_time for f in new if f.end_time is not None]
        hub.stop.set()
        th.join(30)
        q = statistics.quantiles(latencies, n=20) if len(latencies) > 20 else [float("nan")] * 19
        print(f"latency end -> queryable at {len(latencies) / args.seconds:,.0f} conn/s "
              f"(asked {args.rate:g}; the agents' processes share the cores): "
              f"{len(latencies):,} connections, p50 {statistics.median(latencies):.2f} s, "
              f"p95 {q[18]:.2f} s")

        # 3. an agent's Observer ring, full; the agent's spooling cost
        del flows
        probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, "
                                f"{str(ROOT)!r}); from bench.hub_ingest import ring_memory; "
                                "ring_memory()"], capture_output=True, text=True, check=True)
        print(probe.stdout.strip())
        ring = FlowBuffer("node1")
        sink = SpoolSink(Spool(tmp / "cost"), "node1")
        batch = [make_flow(1, i, now) for i in range(1000)]
        c0 = time.process_time()
        for _ in range(10):
            sink.write(batch)
            ring.add(batch)
        cpu = (time.process_time() - c0) / 10
        print(f"agent CPU per 1,000 connections (spool + Observer ring): {cpu * 1000:.0f} ms")
        print(f"ratio: {hub_rate / ref_rate:.3f}")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
