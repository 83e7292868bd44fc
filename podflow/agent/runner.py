"""The agent loop: one node's sources -> decode -> NAT -> enrich -> store.

Each source (see :mod:`podflow.sources.registry`) runs its I/O in its own thread and hands
batches to a :class:`LossyQueue`; this loop is the only consumer. It lets the source's
processor decide what is ready to report, turns reports into Flows with the inventory as it
was at each connection's start, and hands them to a bounded, retrying store writer whose own
thread does every store write (flows, health reports, retention), so a slow or locked store
never stalls decoding. Loss
anywhere (queue full, store buffer full, netlink overrun) is counted, written to the store as
the agent's health report at start and every ``status_interval`` seconds, and printed at exit
(also on SIGTERM, after a last flush): never a crash or a hang.

No input stops the loop: every step that handles outside input (a source's ``process`` and
``decode``, the retries, the inventory poll, the final flush) runs through :meth:`Agent._guard`,
the one place where an exception is caught, counted in the health report's ``lost`` (by source
and reason, served as ``podflow_lost_events_total``) and skipped. Decoders also check their
bounds and count what they skip themselves, so the counts name the real cause.

Example (what ``podflow agent`` does)::

    cfg = AgentConfig(node_name="node1", netns="pf-shop-node1",
                      cluster_state=Path("/var/lib/podflow/labs/shop/cluster-state"),
                      store=Path("/tmp/flows.duckdb"), duration=30)
    stats = Agent(cfg).run()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from podflow.agent.queue import LossyQueue
from podflow.agent.writer import BufferedWriter
from podflow.cni.detect import Detection, detect
from podflow.cni.snapshot import read_node_snapshot
from podflow.inventory.source import ClusterSource, open_cluster
from podflow.model.flow import EndpointKind, Flow
from podflow.model.losses import DecodeError, reason_label
from podflow.pipeline.context import DecodeContext, Report
from podflow.pipeline.dnsnames import DnsNameCache
from podflow.sources.registry import SOURCES, Sink, SourceOptions, SourcePlugin
from podflow.stopsignals import stop_on_signals
from podflow.store import open_store
from podflow.store.base import FlowStore

if TYPE_CHECKING:
    from podflow.cluster.feed import SpoolSink
    from podflow.metrics.node import NodeMetrics
    from podflow.observer.server import ObserverServer

log = logging.getLogger(__name__)

T = TypeVar("T")


class Failed:
    """What :meth:`Agent._guard` returns when the step raised (already counted)."""


FAILED = Failed()


@dataclass
class AgentConfig:
    """What one agent collects and where it writes."""

    node_name: str
    """Kubernetes node name this agent speaks for."""
    cluster_state: Path | None
    """Directory of Kubernetes JSON (``kubectl get ... -o json``) kept current: the offline
    mode. None: the Kubernetes API (``kubeconfig``, else the in-cluster service account)."""
    store: Path | None
    """DuckDB store file (shared by several agents); None in hub mode (``spool``)."""
    kubeconfig: Path | None = None
    """Kubeconfig of the API server (when ``cluster_state`` is None)."""
    api_sync_wait: float = 10.0
    """Seconds the agent waits at start for the first list of every watched resource
    before it detects the CNI and collects (it goes on without them after that)."""
    netns: str | None = None
    """Named network namespace of the node (None: the agent's own)."""
    sources: list[str] | None = None
    """Sources to run by name (None: the detected CNI profile's defaults)."""
    source_options: dict[str, Any] = field(default_factory=dict)
    """Source-specific options (``SourceOptions.extra``)."""
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    """The node's CNI configuration directory (for profile detection)."""
    subnet_env: Path | None = Path("/run/flannel/subnet.env")
    """flanneld's subnet.env, when the node runs Flannel."""
    duration: float | None = None
    """Stop by itself after this many seconds (None: until SIGTERM/SIGINT)."""
    resync_interval: float = 2.0
    """Seconds between conntrack table dumps (resync; final counters of closed TCP)."""
    poll_interval: float = 1.0
    """Seconds between polls of polling sources (sockets)."""
    flush_interval: float = 1.0
    """Seconds between store writes."""
    inventory_poll: float = 1.0
    """Seconds between cluster-state directory polls."""
    status_interval: float = 10.0
    """Seconds between health reports written to the store."""
    queue_batches: int = 4096
    """Bound of the sources -> loop queue, in batches."""
    ready_file: Path | None = None
    """Touched once the sources are subscribed (lets a launcher wait for readiness)."""
    identity_grace: float = 5.0
    """Seconds a flow with an unknown in-cluster end waits for the inventory to catch up
    (a new pod's first connections can finish before its object reaches the agent)."""
    max_deferred: int = 100_000
    """Bound on flows waiting for identity; beyond it they are stored as they are."""
    view_delay: float | None = None
    """Seconds at most the other sources' flows wait when a NAT-aware source (conntrack) runs
    too (None: 30 s, or 4 x resync + flush if longer), so its record is stored first and they
    merge into it. A flow is released as soon as the NAT-aware source has reported every
    connection it saw begin up to :data:`SYNC_MARGIN` after the flow was held (its
    ``reported_through``: a complete pass, a table dump, that began by then, and no
    connection it tracks unreported from before): its record, if it has one, is out by
    then, however far behind the source is (its keys are no sign:
    a client port used again brings them back for another connection); the delay only
    bounds a source that stopped."""
    retention: float | None = None
    """Delete stored flows older than this many seconds (None: keep everything)."""
    max_store_bytes: int | None = None
    """Delete the oldest flows while the store file is larger than this (None: no limit)."""
    spool: Path | None = None
    """Hub mode: spool everything to this directory for a hub to pull
    (:mod:`podflow.cluster.spool`) instead of writing a store; served on the Observer API's
    gRPC server (the agent's ``observer``)."""
    spool_bytes: int | None = None
    """Bound of the spool (None: :data:`podflow.cluster.spool.DEFAULT_MAX_BYTES`)."""
    prune_interval: float = 60.0
    """Seconds between retention passes (when ``retention`` or ``max_store_bytes`` is set)."""


@dataclass
class AgentStats:
    """What the agent did; written to the store as health and printed on exit."""

    node: str
    profile: str = "unknown"
    reported_through: float = 0.0
    """Every connection seen before this time (Unix s) has been reported: the request time
    of the newest table dump the NAT-aware source processed, never past a connection it
    tracks and has not reported yet (``reported_through`` of the source), else the report's
    time. Once the report is stored, so are those flows (the store thread flushes first, and
    claims only what is stored if that failed): a live map waits for the slowest agent
    (:meth:`~podflow.store.base.FlowStore.progress`)."""
    evidence: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    records: int = 0
    flows: int = 0
    skipped: int = 0
    lost: dict[str, dict[str, int]] = field(default_factory=dict)
    """Records skipped because handling them raised: source -> reason -> count."""
    deferred: int = 0
    deferred_resolved: int = 0
    queue_lost: dict[str, int] = field(default_factory=dict)
    source_failures: dict[str, int] = field(default_factory=dict)
    store_written: int = 0
    store_pending: int = 0
    store_lost: int = 0
    store_failures: int = 0
    store_rejected: int = 0
    store_state: str = "ok"
    """``ok`` or the kind of store problem stopping writes (``busy``, ``corrupt``, ...)."""
    store_error: str | None = None
    """The last store failure."""
    source_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    spool: dict[str, Any] = field(default_factory=dict)
    """Hub mode: the spool's records not yet acknowledged by the hub (``pending``), its
    bytes, the newest acknowledged record, records refused while it was full and lines
    read back damaged (skipped)."""
    inventory: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per watched resource (API mode): synced, resource_version and its age, lists,
    relists, watches, errors, last_error, objects."""


SYNC_MARGIN = 1.0
"""Seconds a NAT-aware pass must begin after a view was held to release it: a connection's
last packets (the ACK after the FINs, moving conntrack to TIME_WAIT) follow its end."""

STALE_GRACE = 30.0
"""Seconds more a flow waits for identity while the inventory is not current (the API
server unreachable): a pod created meanwhile is named when the watches resume."""

BEACON_INTERVAL = 1.0
"""Seconds between the agent's progress beacons (:mod:`podflow.store.beacons`)."""


class Held(NamedTuple):
    """A view waiting for the NAT-aware record of its connection (see ``view_delay``)."""

    deadline: float
    held_at: float
    plugin: SourcePlugin
    report: Report


class Agent:
    """One node's collector; :meth:`run` blocks until the duration ends or a signal."""

    def __init__(self, cfg: AgentConfig) -> None:
        """Prepare (nothing is opened until :meth:`run`)."""
        self.cfg = cfg
        self.stop = threading.Event()
        self.stats = AgentStats(node=cfg.node_name)
        self.queue: LossyQueue[Any] = LossyQueue(cfg.queue_batches)
        self.cluster: ClusterSource = open_cluster(
            cluster_state=cfg.cluster_state, kubeconfig=cfg.kubeconfig, node=cfg.node_name)
        self.spool: SpoolSink | None = None
        """Hub mode: where everything goes instead of a store."""
        if cfg.spool is not None:
            from podflow.cluster.feed import SpoolSink
            from podflow.cluster.spool import DEFAULT_MAX_BYTES, Spool

            self.spool = SpoolSink(Spool(cfg.spool, max_bytes=cfg.spool_bytes
                                         or DEFAULT_MAX_BYTES), cfg.node_name)
        elif cfg.store is None:
            raise ValueError("an agent needs a store or a spool")
        self.writer = BufferedWriter(self._target)
        self.plugins: dict[str, SourcePlugin] = {}
        self.dnsnames = DnsNameCache()
        self._deferred: list[tuple[float, SourcePlugin, Report]] = []
        self._held: list[Held] = []
        self._logged: set[tuple[str, str]] = set()
        self._said_no_pods = False
        self._store_stop = threading.Event()
        """Stops the store thread (flushes, health reports, retention: ``_store_chores``)."""
        self._status: dict[str, Any] | None = None
        self._next_prune = 0.0
        self.node_metrics: NodeMetrics | None = None
        """This agent's own /metrics (``--metrics-listen``), fed the flows it emits."""
        self.observer: ObserverServer | None = None
        """This agent's Observer API (``--observer-listen``): its buffer is fed the flows it
        emits."""

    # -- the one guarded place -------------------------------------------------------------
    def _guard(self, source: str, stage: str, n: int, fn: Callable[[], T]) -> T | Failed:
        """Run one step on outside input; if it raises, count ``n`` lost records and go on.

        The reason is the decoder's own (:class:`DecodeError`) or ``<stage>_<exception>``.
        The first failure of each (source, reason) is logged with its traceback, later ones
        only at debug level: a hostile peer repeating one bad packet must not flood the log.
        """
        try:
            return fn()
        except Exception as exc:
            reason = (exc.reason if isinstance(exc, DecodeError)
                      else reason_label(f"{stage}_{type(exc).__name__}"))
            per = self.stats.lost.setdefault(source, {})
            per[reason] = per.get(reason, 0) + n
            first = (source, reason) not in self._logged
            self._logged.add((source, reason))
            log.log(logging.WARNING if first else logging.DEBUG,
                    "%s: %d record(s) skipped at %s (%s): %s", source, n, stage, reason, exc,
                    exc_info=first)
            return FAILED

    # -- set-up ------------------------------------------------------------------------
    def detect(self) -> Detection:
        """Detect the node's CNI profile from its kernel state and CNI files."""
        snap = read_node_snapshot(self.cfg.netns, self.cfg.cni_conf_dir, self.cfg.subnet_env)
        det = detect(snap, self.cluster.inventory, node_name=self.cfg.node_name)
        self.stats.profile = det.profile.name
        self.stats.evidence = list(det.evidence)
        return det

    def choose_sources(self, det: Detection) -> list[str]:
        """The configured sources, else the profile's defaults."""
        if self.cfg.sources:
            return list(self.cfg.sources)
        defaults = det.profile.default_sources or ("conntrack",)
        return [s for s in defaults if s in SOURCES]


    def _start_sources(self, names: list[str], det: Detection) -> list[threading.Thread]:
        extra = {**dict(det.profile.source_options), **self.cfg.source_options}
        opts = SourceOptions(node_name=self.cfg.node_name, netns=self.cfg.netns,
                             resync_interval=self.cfg.resync_interval,
                             poll_interval=self.cfg.poll_interval, extra=extra)
        threads = []
        for name in names:
            plugin = SOURCES[name].create(opts)
            self.plugins[name] = plugin

            def sink(records: list[Any], kind: str, _n: str = name) -> bool:
                return self.queue.put(records, f"{_n}/{kind}")

            t = threading.Thread(target=self._supervise, args=(plugin, sink), name=name,
                                 daemon=True)
            t.start()
            threads.append(t)
        self.stats.sources = names
        return threads

    def _supervise(self, plugin: SourcePlugin, sink: Sink) -> None:
        """Run a source's I/O loop; if it dies, record it and restart it with backoff.

        A source that raises must not silently stop a node's collection: the failure is
        logged, counted in the health report (``source_failures``), and the source runs again
        after 1, 2, 4 ... 30 s until the agent stops.
        """
        delay = 1.0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                plugin.run(sink, self.stop)
                return
            except Exception as exc:
                n = self.stats.source_failures.get(plugin.name, 0) + 1
                self.stats.source_failures[plugin.name] = n
                log.error("source %s failed (%d so far), restarting in %.0fs: %s",
                          plugin.name, n, delay, exc, exc_info=True)
            if time.monotonic() - started > 60:
                delay = 1.0  # it ran for a while: start the backoff again
            self.stop.wait(delay)
            delay = min(delay * 2, 30.0)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> AgentStats:
        """Collect until stopped; flush everything; return the stats."""
        stop_on_signals(self.stop, "agent")
        self.start_inventory()
        det = self.detect()
        ctx = DecodeContext(node_name=self.cfg.node_name, inventory=self.cluster.inventory,
                            profile=det.profile)
        names = self.choose_sources(det)
        log.info("node %s: CNI profile %s (%s); sources %s", self.cfg.node_name,
                 det.profile.name, "; ".join(det.evidence), ",".join(names))
        threads = self._start_sources(names, det)
        # the agent is visible (and its profile known) from the start
        self._write_status(wait=10.0)
        if self.cfg.ready_file is not None:
            self._wait_ready()
            served = self.node_metrics.address if self.node_metrics is not None else None
            observer = self.observer.address if self.observer is not None else None
            self.cfg.ready_file.write_text(json.dumps({"profile": det.profile.name,
                                                       "sources": names, "metrics": served,
                                                       "observer": observer}))
        deadline = None if self.cfg.duration is None else time.time() + self.cfg.duration
        next_poll = time.time()
        next_status = time.time() + self.cfg.status_interval
        next_beacon = time.time()
        self._next_prune = time.monotonic() + min(self.cfg.prune_interval, 5.0)
        store_thread = threading.Thread(
            target=self.writer.run, args=(self._store_stop, self.cfg.flush_interval,
                                          self._store_chores), name="store", daemon=True)
        store_thread.start()
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
                    changed = self._poll_inventory(now)
                    self._retry_deferred(ctx, changed=changed)
                    self._release_held(ctx)
                    next_poll = now + self.cfg.inventory_poll
                self.writer.mark(self._through(now))   # what was emitted so far
                if now >= next_beacon:   # from this loop: a store thread waiting for a
                    self._mark_progress()   # busy file does not make the agent look dead
                    next_beacon = now + BEACON_INTERVAL
                if now >= next_status:
                    self._status = self.health()  # the store thread writes it
                    next_status = now + self.cfg.status_interval
                    if self.node_metrics is not None:   # its health; what became due
                        self._guard("metrics", "report", 0,
                                    partial(self.node_metrics.report, self._status, now))
                        self._guard("metrics", "count", 0,
                                    partial(self.node_metrics.observe, [], now))
        finally:
            self._store_stop.set()
            store_thread.join()
            self._finish(threads, ctx)
            self.cluster.stop()
        return self.stats

    def start_inventory(self) -> None:
        """Start the cluster state's feed and wait (``api_sync_wait`` at most) for its first
        complete state: detection and the first flows need the node's and pods' objects."""
        self.cluster.start()
        if not self.cluster.wait_synced(self.cfg.api_sync_wait):
            log.warning("%s: not every resource listed after %.0fs; collecting meanwhile "
                        "(flows wait %.0fs for identity): %s", self.cluster.description,
                        self.cfg.api_sync_wait, self.cfg.identity_grace,
                        ", ".join(f"{k}: {v.get('last_error') or 'not listed yet'}"
                                  for k, v in self.cluster.health().items()
                                  if not v.get("synced")))
        self._poll_inventory(time.time())

    def _store_chores(self) -> None:
        """On the store thread, after each flush: the pending health report, retention."""
        status, self._status = self._status, None
        if status is not None:
            self.writer.flush()   # the flows it says were reported go in before it
            if not self.writer.drained:   # they did not: claim only what is stored
                status["reported_through"] = self.writer.stored_through
            self._write_status(status, wait=10.0)   # on this thread: the loop goes on
        if time.monotonic() >= self._next_prune:
            self._prune()
            self._next_prune = time.monotonic() + self.cfg.prune_interval

    def _finish(self, threads: list[threading.Thread], ctx: DecodeContext) -> None:
        """Stop the sources, report what is still open, flush, write the last report."""
        self.stop.set()
        end = time.monotonic() + 5.0
        for t in threads:  # 5 s for all of them, not each: a SIGTERM grace period is short
            t.join(timeout=max(0.0, end - time.monotonic()))
        while (item := self.queue.get(timeout=0)) is not None:
            self._consume(item[0], item[1], ctx)
        now = time.time()
        for plugin in self.plugins.values():
            reports = self._guard(plugin.name, "flush", 1, partial(plugin.flush, now))
            self._emit(plugin, [] if isinstance(reports, Failed) else reports, ctx)
        self._poll_inventory(time.time())
        self._release_held(ctx, final=True)
        self._retry_deferred(ctx, changed=True, final=True)
        self.writer.mark(time.time())   # every connection has been reported now
        self.writer.flush()
        self._mark_progress()
        self.health()  # the stats returned (and printed) say how the store ended up
        self._write_status(wait=10.0)

    def _through(self, now: float) -> float:
        """Up to when every connection has been emitted: the newest dump of every
        NAT-aware source (a view held for its NAT is released by then), and not past a
        connection it tracks but has not reported yet."""
        return min([now, *(p.reported_through for p in self.plugins.values()
                           if p.nat_aware)])

    def _mark_progress(self) -> None:
        """Tell readers how far this agent has stored, without the store's lock (an agent
        waiting for a busy store is alive and behind, not stopped). Called from the agent
        loop only (one writer of the beacon)."""
        if self._store_damaged():
            return
        try:
            self._target().mark_progress(self.cfg.node_name, self.writer.stored_through)
        except (OSError, ValueError) as exc:   # best effort: the health report says it too
            log.debug("progress not marked: %s", exc)

    def _poll_inventory(self, now: float) -> bool:
        """Re-read the cluster state; a failure keeps the last good inventory."""
        return self._guard("inventory", "poll", 1, lambda: self.cluster.poll(now)) is True

    def _prune(self) -> None:
        """Apply the retention limits, if any (a failure is logged; the next pass retries)."""
        if (self.cfg.retention is None and self.cfg.max_store_bytes is None) or \
                self.cfg.store is None:   # hub mode: the hub's store has the limits
            return
        if self._store_damaged():
            return
        try:
            open_store(self.cfg.store, lock_timeout=1.0).prune(self.cfg.retention,
                                                                self.cfg.max_store_bytes)
        except Exception as exc:
            log.warning("retention pass on %s failed (next in %.0fs): %s", self.cfg.store,
                        self.cfg.prune_interval, exc)

    def _wait_ready(self, timeout: float = 10.0) -> None:
        end = time.time() + timeout
        while time.time() < end and not all(p.ready for p in self.plugins.values()):
            time.sleep(0.05)

    def _consume(self, records: list[Any], kind: str, ctx: DecodeContext) -> None:
        name, _, sub = kind.partition("/")
        plugin = self.plugins[name]
        self.stats.records += len(records)
        reports = self._guard(name, "process", len(records),
                              lambda: plugin.process(records, sub, time.time()))
        self._emit(plugin, [] if isinstance(reports, Failed) else reports, ctx)
        if plugin.nat_aware and sub == "dump" and self._held:
            self._release_held(ctx)   # the pass may have gone past held views

    def _emit(self, plugin: SourcePlugin, reports: list[Report], ctx: DecodeContext, *,
              retrying: bool = False, released: bool = False) -> None:
        flows: list[Flow] = []
        for r in reports:
            f = self._guard(plugin.name, "decode", 1,
                            partial(plugin.decode, r.record, ctx, r.final))
            if isinstance(f, Failed):
                continue
            if f is None:
                self.stats.skipped += 1
            elif not retrying and not released and self._hold(plugin):
                now = time.time()
                self._held.append(Held(now + self._view_delay(), now, plugin, r))
            elif (not retrying and _unresolved(f)
                  and len(self._deferred) < self.cfg.max_deferred):
                self._deferred.append((time.time() + self.cfg.identity_grace, plugin, r))
                self.stats.deferred += 1
            else:
                flows.append(f)
        for f in flows:  # learn what pods resolved before naming external ends with it
            if f.l7 is not None and f.l7.dns is not None:
                self._guard(plugin.name, "dns_names", 0, partial(self.dnsnames.observe, f))
        named = [self._guard(plugin.name, "enrich", 1, partial(self.dnsnames.apply, f))
                 for f in flows]
        flows = [f for f in named if not isinstance(f, Failed)]
        self.stats.flows += len(flows)
        if flows:
            self._check_inventory(len(flows))
            self.writer.add(flows)
            if self.node_metrics is not None:
                self._guard("metrics", "count", 0,
                            partial(self.node_metrics.observe, flows, time.time()))
            if self.observer is not None:
                self._guard("observer", "buffer", 0,
                            partial(self.observer.buffer.add, flows, time.time()))

    def _check_inventory(self, n: int) -> None:
        """Flows arrive but no pod is known: no endpoint can be named. Say so once (the
        usual cause is a cluster-state directory in the wrong shape or place) and count the
        flows stored that way as ``no_pods`` of the inventory."""
        if self.cluster.pod_count:
            self._said_no_pods = False
            return
        per = self.stats.lost.setdefault("inventory", {})
        per["no_pods"] = per.get("no_pods", 0) + n
        if not self._said_no_pods:
            log.warning("flows arrive but the inventory holds no pods: endpoints stay unnamed; "
                        "check %s", self.cluster.description)
            self._said_no_pods = True

    def _hold(self, plugin: SourcePlugin) -> bool:
        """Delay this source's flows? Only behind a NAT-aware source, up to the bound."""
        return (not plugin.nat_aware and any(p.nat_aware for p in self.plugins.values())
                and len(self._held) < self.cfg.max_deferred)

    def _view_delay(self) -> float:
        if self.cfg.view_delay is not None:
            return self.cfg.view_delay
        return max(30.0, 4 * self.cfg.resync_interval + self.cfg.flush_interval)

    def _release_held(self, ctx: DecodeContext, *, final: bool = False) -> None:
        """Emit the other sources' flows whose connection a NAT-aware pass has gone past, or
        whose delay is over (all of them at the end)."""
        if not self._held:
            return
        now = time.time()
        # reported_through, not the newest dump: a long-lived connection's own record comes
        # first_report_after its start, and its views must not go out before it (seen in the
        # matrix: both nodes' packets views of a NodePort connection drawn without its NAT)
        synced = max((p.reported_through for p in self.plugins.values() if p.nat_aware),
                     default=0.0) - SYNC_MARGIN

        def due(h: Held) -> bool:
            return final or h.deadline <= now or h.held_at <= synced

        ready = [h for h in self._held if due(h)]
        if not ready:
            return
        self._held = [h for h in self._held if not due(h)]
        for h in ready:
            self._emit(h.plugin, [h.report], ctx, released=True)

    def _retry_deferred(self, ctx: DecodeContext, *, changed: bool, final: bool = False) -> None:
        """Re-decode flows that waited for identity: now resolved, or out of time."""
        if not self._deferred:
            return
        now = time.time()
        keep: list[tuple[float, SourcePlugin, Report]] = []
        # while the inventory cannot hear of new pods (the API unreachable), the grace
        # stretches: a pod created meanwhile is named once the watches are back
        stretch = 0.0 if self.cluster.current else STALE_GRACE
        for deadline, plugin, r in self._deferred:
            ready = final or now >= deadline + stretch
            if not ready and changed:
                f = self._guard(plugin.name, "decode", 0,
                                partial(plugin.decode, r.record, ctx, r.final))
                ready = f is None or (not isinstance(f, Failed) and not _unresolved(f))
                self.stats.deferred_resolved += int(ready)
            if ready:
                self._emit(plugin, [r], ctx, retrying=True)
            else:
                keep.append((deadline, plugin, r))
        self._deferred = keep

    def health(self) -> dict[str, Any]:
        """The current stats as a JSON-ready dict (what the store's agent_status keeps)."""
        s = self.stats
        now = time.time()
        s.reported_through = max(self._through(now), self.writer.stored_through)
        s.queue_lost = dict(self.queue.lost_by)
        s.store_written, s.store_pending = self.writer.written, self.writer.pending
        s.store_lost, s.store_failures = self.writer.lost, self.writer.failures
        s.store_rejected = self.writer.rejected
        s.store_state, s.store_error = self.writer.state, self.writer.last_error
        if self.spool is not None:
            sp = self.spool.spool
            s.spool = {"pending": sp.pending, "bytes": sp.disk_bytes, "acked": sp.acked,
                       "refused": sp.refused, "bad_lines": sp.bad_lines}
        s.inventory = self.cluster.health(now)
        for name, plugin in self.plugins.items():
            try:
                s.source_stats[name] = plugin.stats()
            except Exception as exc:  # health must never take the agent down
                s.source_stats[name] = {"error": str(exc)}
        report = asdict(s)
        skipped = self.cluster.losses.by_reason()  # objects the inventory could not read
        if skipped:
            inv = report["lost"].setdefault("inventory", {})
            for reason, n in skipped.items():
                inv[reason] = inv.get(reason, 0) + n
        return report

    def _target(self, lock_timeout: float | None = None) -> FlowStore | SpoolSink:
        """Where flows, health reports and progress go: the spool, else the store."""
        if self.spool is not None:
            return self.spool
        assert self.cfg.store is not None
        if lock_timeout is None:
            return open_store(self.cfg.store)
        return open_store(self.cfg.store, lock_timeout=lock_timeout)

    def _store_damaged(self) -> bool:
        """The writer found the store damaged (it retries on its own backoff meanwhile)."""
        return self.writer.state not in ("ok", "busy", "missing", "error", "spool_full")

    def _write_status(self, status: dict[str, Any] | None = None, *, wait: float = 1.0
                      ) -> None:
        """Write the health report (``status``, else the current one); a periodic one waits
        at most ``wait`` s for the lock (the next report will do)."""
        if self._store_damaged():  # a damaged store cannot hold the report; the log has it
            return
        try:
            self._target(wait).write_status(
                self.cfg.node_name, self.health() if status is None else status)
        except Exception as exc:  # a busy store: the next report will do
            log.debug("status not written: %s", exc)


def _unresolved(f: Flow) -> bool:
    """An end inside the cluster's ranges that no object claimed (yet), or a client-side
    view still aimed at a service VIP: the NAT-aware record of the same connection (the
    node's conntrack) usually lands within the grace, and the store then merges this one
    into it on write instead of showing a VIP-only flow for a moment."""
    return (EndpointKind.UNKNOWN in (f.source.kind, f.destination.kind)
            or (f.destination.kind is EndpointKind.SERVICE and f.destination_service is None))
