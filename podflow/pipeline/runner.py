"""The agent loop: one node's sources -> decode -> NAT -> enrich -> store.

Sources run in their own threads and hand batches to a :class:`LossyQueue`; this loop is the
only consumer. It feeds the connection tracker, turns finished connections into Flows with
the inventory as it was at each connection's start, and hands them to a bounded, retrying
store writer. Loss anywhere (queue full, store buffer full, netlink overrun) is counted and
reported, never a crash or a hang.

Example (what ``podflow agent`` does)::

    cfg = AgentConfig(node_name="node1", netns="pf-shop-node1",
                      cluster_state=Path("/var/lib/podflow/labs/shop/cluster-state"),
                      store=Path("/tmp/flows.duckdb"), duration=30)
    stats = Agent(cfg).run()
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from podflow.cni.detect import Detection, detect
from podflow.cni.snapshot import read_node_snapshot
from podflow.inventory.snapshot_dir import ClusterStateDir
from podflow.model.conntrack import CtEntry
from podflow.model.flow import EndpointKind, Flow
from podflow.pipeline.cttrack import Completed, ConnectionTracker
from podflow.pipeline.decode import DecodeContext, conntrack_to_flow
from podflow.pipeline.queue import LossyQueue
from podflow.pipeline.writer import BufferedWriter
from podflow.sources.conntrack import ConntrackSource
from podflow.store.duckdb import DuckDBStore

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    """What one agent collects and where it writes."""

    node_name: str
    """Kubernetes node name this agent speaks for."""
    cluster_state: Path
    """Directory of Kubernetes JSON (``kubectl get ... -o json``) kept current."""
    store: Path
    """DuckDB store file (shared by several agents)."""
    netns: str | None = None
    """Named network namespace of the node (None: the agent's own)."""
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    """The node's CNI configuration directory (for profile detection)."""
    subnet_env: Path | None = Path("/run/flannel/subnet.env")
    """flanneld's subnet.env, when the node runs Flannel."""
    duration: float | None = None
    """Stop by itself after this many seconds (None: until SIGTERM/SIGINT)."""
    resync_interval: float = 2.0
    """Seconds between conntrack table dumps (resync; final counters of closed TCP)."""
    flush_interval: float = 1.0
    """Seconds between store writes."""
    inventory_poll: float = 1.0
    """Seconds between cluster-state directory polls."""
    queue_batches: int = 4096
    """Bound of the source -> loop queue, in netlink reads."""
    ready_file: Path | None = None
    """Touched once the sources are subscribed (lets a launcher wait for readiness)."""
    identity_grace: float = 5.0
    """Seconds a flow with an unknown in-cluster end waits for the inventory to catch up
    (a new pod's first connections can finish before its object reaches the agent)."""
    max_deferred: int = 100_000
    """Bound on flows waiting for identity; beyond it they are stored as they are."""


@dataclass
class AgentStats:
    """What the agent did; printed on exit and reported as health."""

    node: str
    profile: str = "unknown"
    evidence: list[str] = field(default_factory=list)
    entries: int = 0
    flows: int = 0
    skipped: int = 0
    decode_errors: int = 0
    deferred: int = 0
    deferred_resolved: int = 0
    queue_lost: int = 0
    store_written: int = 0
    store_lost: int = 0
    store_failures: int = 0
    store_rejected: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    tracker: dict[str, Any] = field(default_factory=dict)


class Agent:
    """One node's collector; :meth:`run` blocks until the duration ends or a signal."""

    def __init__(self, cfg: AgentConfig) -> None:
        """Prepare (nothing is opened until :meth:`run`)."""
        self.cfg = cfg
        self.stop = threading.Event()
        self.stats = AgentStats(node=cfg.node_name)
        self.queue: LossyQueue[CtEntry] = LossyQueue(cfg.queue_batches)
        self.tracker = ConnectionTracker()
        self.cluster = ClusterStateDir(cfg.cluster_state)
        self.writer = BufferedWriter(lambda: DuckDBStore(cfg.store))
        self._deferred: list[tuple[float, Completed]] = []

    # -- set-up ------------------------------------------------------------------------
    def _detect(self) -> Detection:
        snap = read_node_snapshot(self.cfg.netns, self.cfg.cni_conf_dir, self.cfg.subnet_env)
        det = detect(snap, self.cluster.inventory, node_name=self.cfg.node_name)
        self.stats.profile = det.profile.name
        self.stats.evidence = list(det.evidence)
        return det

    def _install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("signal %d: stopping", signum)
            self.stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> AgentStats:
        """Collect until stopped; flush everything; return the stats."""
        self._install_signals()
        self.cluster.poll(time.time())
        det = self._detect()
        ctx = DecodeContext(node_name=self.cfg.node_name, inventory=self.cluster.inventory,
                            profile=det.profile)
        log.info("node %s: CNI profile %s (%s)", self.cfg.node_name, det.profile.name,
                 "; ".join(det.evidence))
        source = ConntrackSource(self.cfg.netns, resync_interval=self.cfg.resync_interval)
        thread = threading.Thread(target=source.run, args=(self.queue.put, self.stop),
                                  name="conntrack", daemon=True)
        thread.start()
        if self.cfg.ready_file is not None:
            self._wait_source_ready(source)
            self.cfg.ready_file.write_text(json.dumps({"profile": det.profile.name}))
        deadline = None if self.cfg.duration is None else time.time() + self.cfg.duration
        next_flush = next_poll = time.time()
        try:
            while not self.stop.is_set():
                now = time.time()
                if deadline is not None and now >= deadline:
                    break
                item = self.queue.get(timeout=0.2)
                if item is not None:
                    self._consume(item[0], item[1], ctx)
                now = time.time()
                if now >= next_poll:
                    changed = self.cluster.poll(now)
                    self._retry_deferred(ctx, changed=changed)
                    next_poll = now + self.cfg.inventory_poll
                if now >= next_flush:
                    self.writer.flush()
                    next_flush = now + self.cfg.flush_interval
        finally:
            self.stop.set()
            thread.join(timeout=5)
            while (item := self.queue.get(timeout=0)) is not None:
                self._consume(item[0], item[1], ctx)
            self._emit(self.tracker.flush(time.time()), ctx)
            self.cluster.poll(time.time())
            self._retry_deferred(ctx, changed=True, final=True)
            self.writer.flush()
            self._finish_stats(source)
        return self.stats

    def _wait_source_ready(self, source: ConntrackSource, timeout: float = 10.0) -> None:
        end = time.time() + timeout
        while time.time() < end and not getattr(source, "ready", True):
            time.sleep(0.05)

    def _consume(self, entries: list[CtEntry], kind: str, ctx: DecodeContext) -> None:
        self.stats.entries += len(entries)
        done = self.tracker.feed(entries, kind)
        if kind == "dump":
            done += self.tracker.end_of_dump(time.time())
        self._emit(done, ctx)

    def _emit(self, completed: list[Completed], ctx: DecodeContext, *,
              retrying: bool = False) -> None:
        flows: list[Flow] = []
        for c in completed:
            try:
                f = conntrack_to_flow(c.entry, ctx, final=c.final)
            except Exception as exc:  # one bad entry must not stop the node's collection
                self.stats.decode_errors += 1
                log.warning("could not decode %s: %s", c.entry, exc)
                continue
            if f is None:
                self.stats.skipped += 1
            elif (not retrying and _unresolved(f)
                  and len(self._deferred) < self.cfg.max_deferred):
                self._deferred.append((time.time() + self.cfg.identity_grace, c))
                self.stats.deferred += 1
            else:
                flows.append(f)
        self.stats.flows += len(flows)
        if flows:
            self.writer.add(flows)

    def _retry_deferred(self, ctx: DecodeContext, *, changed: bool, final: bool = False) -> None:
        """Re-decode flows that waited for identity: now resolved, or out of time."""
        if not self._deferred:
            return
        now = time.time()
        keep: list[tuple[float, Completed]] = []
        ready: list[Completed] = []
        for deadline, c in self._deferred:
            if final or now >= deadline:
                ready.append(c)
                continue
            if changed:
                f = conntrack_to_flow(c.entry, ctx, final=c.final)
                if f is None or not _unresolved(f):
                    self.stats.deferred_resolved += 1
                    ready.append(c)
                    continue
            keep.append((deadline, c))
        self._deferred = keep
        if ready:
            self._emit(ready, ctx, retrying=True)

    def _finish_stats(self, source: ConntrackSource) -> None:
        s = self.stats
        s.queue_lost = self.queue.lost
        s.store_written = self.writer.written
        s.store_lost = self.writer.lost
        s.store_failures = self.writer.failures
        s.store_rejected = self.writer.rejected
        src = getattr(source, "stats", None)
        s.source = asdict(src) if src is not None and hasattr(src, "__dataclass_fields__") \
            else dict(vars(src)) if src is not None else {}
        tr = getattr(self.tracker, "stats", None)
        s.tracker = asdict(tr) if tr is not None and hasattr(tr, "__dataclass_fields__") \
            else {}


def _unresolved(f: Flow) -> bool:
    """An end inside the cluster's ranges that no object claimed (yet)."""
    return EndpointKind.UNKNOWN in (f.source.kind, f.destination.kind)
