"""``podflow hub``: pull every agent's spool, write the store, serve the cluster.

One thread per agent (:class:`Peer`) asks the agent who it is (``Hello``), then pulls its
spool (:mod:`podflow.cluster.feed`) after the newest record this hub has taken from it,
and queues what arrives; the hub's loop (:meth:`Hub.run`) writes, every
``flush_interval``, every queued record of every agent in one store transaction together
with each agent's cursor (:meth:`~podflow.store.duckdb.DuckDBStore.write_feed`), then
acknowledges to each agent, which deletes what is acknowledged. A hub killed at any point
restarts from the cursors its store holds: a record is stored once, never twice, never
lost (the agent keeps it until acknowledged). The store merges the views of all nodes as it
does when agents write it themselves (the two ends of a cross-node connection join there).

While the store is busy or failing, records stay queued (bounded: past ``max_pending``
records the peers stop pulling and the agents' spools hold the rest). An agent that cannot
be reached is retried with a backoff; its state is in :meth:`Hub.peers_status` (logged
every ``status_interval``).

Example::

    hub = Hub(HubConfig(store=Path("/var/lib/podflow/flows.duckdb"),
                        peers=["10.0.0.1:4244", "10.0.0.2:4244"]))
    hub.run()   # until SIGTERM
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from podflow.cluster.feed import FeedClient, decode_flows
from podflow.cluster.proto import feed_pb2 as fpb
from podflow.model.flow import Flow
from podflow.model.serialize import SchemaError
from podflow.observer.buffer import FlowBuffer
from podflow.observer.proto.hubble import observer_pb2 as obs
from podflow.observer.server import ObserverServer
from podflow.stopsignals import stop_on_signals
from podflow.store import open_store
from podflow.store.base import FlowRejected, StoreError

if TYPE_CHECKING:
    from podflow.server.runner import ServerThread

log = logging.getLogger(__name__)

DISCOVER_EVERY = 2.0
"""Seconds between two looks at where the agents are (``HubConfig.discover``)."""

@dataclass
class HubConfig:
    """What a hub pulls and where it writes."""

    store: Path
    """The flow store it writes (and alone writes)."""
    peers: list[str]
    """The agents' feed addresses (``HOST:PORT`` or ``unix:PATH``)."""
    discover: Callable[[], list[str]] | None = None
    """Where the agents are now (:class:`~podflow.cluster.discover.AgentDiscovery`), asked
    every :data:`DISCOVER_EVERY` seconds: new ones are pulled, gone ones dropped."""
    flush_interval: float = 1.0
    """Seconds between store writes."""
    max_pending: int = 200_000
    """Records queued at most before the peers stop pulling (the spools hold the rest)."""
    duration: float | None = None
    """Stop by itself after this many seconds (None: until SIGTERM/SIGINT)."""
    status_interval: float = 10.0
    """Seconds between the hub's log lines of its state."""
    ready_file: Path | None = None
    """Written (JSON) once the hub runs."""
    observer_listen: str | None = None
    """Serve Hubble's Observer API over every agent's flows here (the Hubble Relay role)."""
    observer_buffer: int = 16383
    """Events the hub's Observer API keeps."""
    api_listen: str | None = None
    """Serve the web UI, the JSON API and /metrics over the store here (``HOST:PORT``; port
    0: a free one), as ``podflow serve`` does."""
    kubeconfig: Path | None = None
    """The API server the UI's inventory comes from (None: the store alone)."""
    retention: float | None = None
    """Delete stored connections that ended longer ago than this (seconds; None: keep)."""
    max_store_bytes: int | None = None
    """Delete the oldest connections while the store is larger than this (None: no limit)."""
    prune_interval: float = 60.0
    """Seconds between retention passes."""


@dataclass
class Peer:
    """One agent, as the hub sees it."""

    address: str
    node: str | None = None
    epoch: str | None = None
    state: str = "connecting"
    """``connecting``, ``connected`` or ``unavailable``."""
    last_error: str | None = None
    records: int = 0
    """Records taken from it."""
    acked: int = 0
    """The newest record it confirmed deleting."""
    refused: int = 0
    """Records its spool refused (full), as it last said."""
    removed: bool = False
    """No longer among the agents discovered: its puller ends."""
    client: FeedClient | None = field(default=None, repr=False)
    stream: Any = field(default=None, repr=False)


@dataclass
class _Queued:
    node: str
    epoch: str
    record: fpb.Record


class Hub:
    """The hub (see the module doc)."""

    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.peers = [Peer(a) for a in cfg.peers]
        self._lock = threading.Condition()
        self._queue: list[_Queued] = []
        self._taken: dict[str, tuple[str, int]] = {}
        """Per node: the newest (epoch, seq) taken into the queue or committed."""
        self.committed: dict[str, tuple[str, int]] = {}
        """Per node: the cursor the store holds."""
        self.stats: dict[str, Any] = {"records": 0, "flows": 0, "bad_records": 0,
                                      "rejected_flows": 0, "peer_errors": 0,
                                      "store_failures": 0,
                                      "store_error": None}
        self.observer: ObserverServer | None = None
        """The Observer API over every agent's flows (``observer_listen``)."""
        self.api: ServerThread | None = None
        """The web UI, JSON API and /metrics over the store (``api_listen``)."""
        self._threads: list[threading.Thread] = []

    # -- the peers ------------------------------------------------------------------------
    def _pull(self, peer: Peer) -> None:
        delay = 0.5
        while not self.stop.is_set() and not peer.removed:
            peer.client = peer.client or FeedClient(peer.address)
            stream = None
            try:
                hello = peer.client.hello()
                peer.node, peer.epoch, peer.refused = hello.node, hello.epoch, hello.refused
                with self._lock:
                    epoch, seq = self._taken.get(hello.node, ("", 0))
                    after = seq if epoch == hello.epoch else 0
                    self._taken[hello.node] = (hello.epoch, after)
                stream = peer.stream = peer.client.pull(hello.epoch, after)
                peer.state, peer.last_error, delay = "connected", None, 0.5
                log.info("hub: pulling %s (%s) after %d", hello.node, peer.address, after)
                for batch in stream:
                    if self.stop.is_set():
                        break
                    peer.refused = batch.refused
                    if batch.records:
                        self._take(hello.node, batch.epoch, list(batch.records))
                        peer.records += len(batch.records)
            except Exception as exc:   # unreachable, or anything it sent that we choke on
                if self.stop.is_set() or peer.removed:
                    break
                if not isinstance(exc, grpc.RpcError):
                    self.stats["peer_errors"] += 1
                    log.exception("hub: pulling %s failed; retrying", peer.address)
                detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                if peer.state != "unavailable" or peer.last_error != detail:
                    log.warning("hub: agent %s unavailable: %s", peer.address, detail)
                peer.state, peer.last_error = "unavailable", detail
            finally:
                if stream is not None:
                    stream.cancel()
            self.stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def _take(self, node: str, epoch: str, records: list[fpb.Record]) -> None:
        """Queue what is new (a record taken before, resent after a reconnect, is not),
        waiting while the queue is full."""
        with self._lock:
            self._lock.wait_for(lambda: len(self._queue) < self.cfg.max_pending
                                or self.stop.is_set())
            e, seq = self._taken.get(node, (epoch, 0))
            if e != epoch:
                seq = 0
            new = [r for r in records if r.seq > seq]
            self._queue.extend(_Queued(node, epoch, r) for r in new)
            if new:
                self._taken[node] = (epoch, new[-1].seq)

    # -- the store ------------------------------------------------------------------------
    def flush(self) -> int:
        """Write every queued record and the cursors in one transaction, then acknowledge;
        return the records written (0 and kept queued when the store failed)."""
        with self._lock:
            batch = list(self._queue)
        if not batch:
            return 0
        flows: list[Flow] = []
        statuses: list[tuple[str, float, dict[str, Any]]] = []
        progress: dict[str, tuple[float, float]] = {}
        cursors: dict[str, tuple[str, int]] = {}
        for q in batch:
            cursors[q.node] = (q.epoch, q.record.seq)
            try:
                self._decode(q, flows, statuses, progress)
            except (SchemaError, ValueError, TypeError, KeyError) as exc:
                self.stats["bad_records"] += 1
                log.warning("hub: bad %s record %d from %s: %s", q.record.kind, q.record.seq,
                            q.node, exc)
        store = open_store(self.cfg.store)
        try:
            store.write_feed(flows, statuses=statuses, cursors=cursors)
        except FlowRejected as exc:   # committed, but for flows no store could hold
            self.stats["rejected_flows"] += len(exc.errors)
            log.warning("hub: %s", exc)
        except Exception as exc:   # busy, damaged, or unforeseen: keep the records, retry
            self.stats["store_failures"] += 1
            self.stats["store_error"] = str(exc)
            log.warning("hub: store write failed (%d records kept): %s", len(batch), exc)
            return 0
        for node, (through, at) in progress.items():
            try:
                store.mark_progress(node, through, at)
            except OSError as exc:   # the next progress record will do
                log.debug("hub: progress of %s not marked: %s", node, exc)
        with self._lock:
            del self._queue[:len(batch)]
            self.committed.update(cursors)
            self._lock.notify_all()
        self.stats["records"] += len(batch)
        self.stats["flows"] += len(flows)
        self.stats["store_error"] = None
        self._ack(cursors)
        if self.observer is not None and flows:
            self.observer.buffer.add(flows)
        return len(batch)

    @staticmethod
    def _decode(q: _Queued, flows: list[Flow], statuses: list[tuple[str, float, dict[str, Any]]],
                progress: dict[str, tuple[float, float]]) -> None:
        kind, data = q.record.kind, q.record.data
        if kind == "flows":
            flows.extend(decode_flows(data))
        elif kind == "status":
            d = json.loads(data)
            statuses.append((str(d["node"]), float(d["at"]), dict(d["status"])))
        elif kind == "progress":
            d = json.loads(data)
            old = progress.get(str(d["node"]), (0.0, 0.0))
            progress[str(d["node"])] = (max(old[0], float(d["through"])),
                                        max(old[1], float(d["at"])))
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def _ack(self, cursors: dict[str, tuple[str, int]]) -> None:
        for peer in self.peers:
            if peer.node in cursors and peer.client is not None and peer.state == "connected":
                epoch, seq = cursors[peer.node]
                try:
                    peer.acked = peer.client.ack(epoch, seq)
                except grpc.RpcError as exc:   # the next commit acknowledges again
                    log.debug("hub: ack to %s failed: %s", peer.address, exc)

    # -- the loop -------------------------------------------------------------------------
    def _serve_api(self, listen: str) -> ServerThread:
        """``podflow serve``'s app over the hub's store, on a thread (OSError/ValueError if
        it cannot listen there)."""
        from podflow.server.app import create_app
        from podflow.server.hostcheck import policy_for_bind
        from podflow.server.listen import parse_listen
        from podflow.server.runner import ServerThread

        host, port = parse_listen(listen)
        app = create_app(self.cfg.store, kubeconfig=self.cfg.kubeconfig,
                         hosts=policy_for_bind(host, ()))
        server = ServerThread(app, host, port)
        try:
            server.start()
        except RuntimeError as exc:
            raise OSError(f"cannot serve the API on {listen}: {exc}") from None
        log.info("hub: web UI, API and /metrics on %s", server.url)
        return server

    def _prune(self) -> None:
        """Apply the retention limits, if any (a failure is logged; the next pass retries)."""
        if self.cfg.retention is None and self.cfg.max_store_bytes is None:
            return
        try:
            open_store(self.cfg.store, lock_timeout=1.0).prune(self.cfg.retention,
                                                               self.cfg.max_store_bytes)
        except StoreError as exc:
            log.warning("hub: retention pass failed (next in %.0fs): %s",
                        self.cfg.prune_interval, exc)

    def nodes(self) -> list[obs.Node]:
        """The agents as Observer ``Node`` messages (``GetNodes``, ``ServerStatus``)."""
        state = {"connected": obs.NODE_CONNECTED, "unavailable": obs.NODE_UNAVAILABLE}
        return [obs.Node(name=p.node or "", address=p.address,
                         state=state.get(p.state, obs.UNKNOWN_NODE_STATE))
                for p in self.peers]

    def sync_peers(self, addresses: list[str]) -> None:
        """Pull the agents at ``addresses``: start a puller for each new one, end those of
        the agents no longer there (what they sent is committed as usual)."""
        wanted = set(addresses)
        for peer in self.peers:
            if peer.address not in wanted:
                log.info("hub: agent %s (%s) is gone", peer.address, peer.node)
                peer.removed = True
                if peer.stream is not None:
                    peer.stream.cancel()
        self.peers = [p for p in self.peers if not p.removed]
        known = {p.address for p in self.peers}
        for address in sorted(wanted - known):
            log.info("hub: agent %s found", address)
            self._start_peer(Peer(address))

    def _start_peer(self, peer: Peer) -> None:
        self.peers.append(peer)
        thread = threading.Thread(target=self._pull, args=(peer,),
                                  name=f"peer-{peer.address}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def peers_status(self) -> list[dict[str, Any]]:
        """Each agent: address, node, state, records taken, acknowledged, refused."""
        return [{"address": p.address, "node": p.node, "state": p.state,
                 "records": p.records, "acked": p.acked, "refused": p.refused,
                 "error": p.last_error} for p in self.peers]

    def run(self) -> dict[str, Any]:
        """Pull and write until stopped; write what is queued; return the stats."""
        stop_on_signals(self.stop, "hub")
        try:
            self.committed = dict(open_store(self.cfg.store).feed_cursors())
        except StoreError as exc:
            log.warning("hub: cannot read the cursors of %s yet: %s", self.cfg.store, exc)
        self._taken = dict(self.committed)
        initial, self.peers = self.peers, []
        for peer in initial:
            self._start_peer(peer)
        served = None
        if self.cfg.observer_listen is not None:
            self.observer = ObserverServer(FlowBuffer("", self.cfg.observer_buffer),
                                           self.cfg.observer_listen, nodes=self.nodes)
            served = self.observer.start()
        if self.cfg.api_listen is not None:
            self.api = self._serve_api(self.cfg.api_listen)
        if self.cfg.ready_file is not None:
            self.cfg.ready_file.write_text(json.dumps({
                "peers": self.cfg.peers, "observer": served,
                "api": None if self.api is None else self.api.url.rstrip("/")}))
        deadline = None if self.cfg.duration is None else time.time() + self.cfg.duration
        next_status = time.time() + self.cfg.status_interval
        next_prune = time.time() + min(self.cfg.prune_interval, 5.0)
        next_look = time.time()
        while not self.stop.is_set():
            if deadline is not None and time.time() >= deadline:
                break
            self.stop.wait(self.cfg.flush_interval)
            if self.cfg.discover is not None and time.time() >= next_look:
                try:
                    self.sync_peers(self.cfg.discover())
                except Exception as exc:   # the API unreachable: keep the agents known
                    log.warning("hub: cannot look for agents: %s", exc)
                next_look = time.time() + DISCOVER_EVERY
            self.flush()
            if time.time() >= next_prune:
                self._prune()
                next_prune = time.time() + self.cfg.prune_interval
            if time.time() >= next_status:
                log.info("hub: %s", json.dumps({**self.stats, "peers": self.peers_status()}))
                next_status = time.time() + self.cfg.status_interval
        self.stop.set()
        with self._lock:
            self._lock.notify_all()
        for p in self.peers:
            if p.client is not None:
                p.client.close()
        for t in self._threads:
            t.join(timeout=5)
        self.flush()
        if self.observer is not None:
            self.observer.stop()
        if self.api is not None:
            self.api.stop()
        return {**self.stats, "peers": self.peers_status()}

