"""Hubble's Observer API over gRPC, served from a :class:`~podflow.observer.buffer.FlowBuffer`.

What the stock ``hubble`` CLI needs (docs/design/hubble-observer-api.md):

- ``grpc.health.v1.Health/Check`` says ``SERVING`` for ``hubble.server.Observer`` (what
  ``hubble status`` asks first) and for the whole server (``""``);
- ``ServerStatus``: events buffered, the ring's size, events seen, uptime, version;
- ``GetFlows``: the buffered events that pass the whitelist and blacklist
  (:mod:`podflow.observer.filters`) and ``since``/``until`` as podflow reads them (a
  connection still open or ended at ``since``, started by ``until``: a connection is one
  event, not a packet at one instant), the newest ``number`` of them (the oldest with
  ``first``; every one with ``number`` 0), oldest first; with ``follow``, then every new
  one as it comes until the client cancels. A reader that the ring overtook gets a
  ``LostEvent`` (``HUBBLE_RING_BUFFER``) with the count before the next event. ``first``
  with ``follow``, a malformed filter or one podflow cannot evaluate is
  ``INVALID_ARGUMENT`` with the reason;
- ``GetNodes``: this node (a hub: each agent, connected or not, which ``ServerStatus``
  counts too, as Hubble Relay does); ``GetNamespaces``: the namespaces of the buffered
  events.

podflow's own clients (``podflow observe --server``) add a podflow filter in its query
form (``podflow_filter``, the HTTP API's parameters, so every podflow filter works) and may
ask for one event per connection, its newest (``podflow_per_connection``), so that
``number`` counts connections as ``podflow observe --store`` does.

Example::

    srv = ObserverServer(buffer, "127.0.0.1:4244")
    srv.start()          # srv.address is "127.0.0.1:4244"
    ...
    srv.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from urllib.parse import parse_qsl

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from podflow import __version__
from podflow.observer.buffer import Event, FlowBuffer
from podflow.observer.convert import timestamp
from podflow.observer.filters import compile_request
from podflow.observer.proto.hubble import flow_pb2 as pb
from podflow.observer.proto.hubble import observer_pb2 as obs
from podflow.observer.proto.hubble import observer_pb2_grpc as obs_grpc
from podflow.query.filter import FilterSpec
from podflow.query.params import spec_from_multi

log = logging.getLogger(__name__)

HEALTH_SERVICE = "hubble.server.Observer"
"""The name ``hubble status`` checks (Hubble's ``ObserverServiceName``), not the gRPC
service name."""

MAX_STREAMS = 32
"""Concurrent RPCs served (each following client holds one thread); beyond it a call is
refused with ``RESOURCE_EXHAUSTED``, never queued forever."""

WAKE_EVERY = 0.5
"""Seconds a following stream waits for new events before it checks that its client is
still there."""


def podflow_spec(query: str) -> FilterSpec | None:
    """The podflow filter of a request (its HTTP API query form); None when empty;
    ValueError when malformed."""
    if not query:
        return None
    multi: dict[str, list[str]] = {}
    for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        multi.setdefault(k, []).append(v)
    return spec_from_multi(multi, strict=True)


class _Selection:
    """What one GetFlows request asks for, compiled (see the module doc)."""

    def __init__(self, req: obs.GetFlowsRequest) -> None:
        if req.first and req.follow:
            raise ValueError("first cannot be combined with follow")
        self.hubble = compile_request(req.whitelist, req.blacklist)
        self.spec = podflow_spec(req.podflow_filter)
        self.since = req.since.ToNanoseconds() / 1e9 if req.HasField("since") else None
        self.until = req.until.ToNanoseconds() / 1e9 if req.HasField("until") else None
        self.per_connection = req.podflow_per_connection

    def __call__(self, ev: Event) -> bool:
        f = ev.flow
        if (self.since is not None and (f.end_time or f.time) < self.since) or \
                (self.until is not None and f.time > self.until):
            return False
        return self.hubble(ev.message()) and (self.spec is None or self.spec.matches(ev.flow))


def _newest_per_connection(events: list[Event]) -> list[Event]:
    seen: set[int] = set()
    out = []
    for ev in reversed(events):
        if id(ev.connection) not in seen:
            seen.add(id(ev.connection))
            out.append(ev)
    return out[::-1]


def _response(ev: Event) -> obs.GetFlowsResponse:
    msg = ev.message()
    return obs.GetFlowsResponse(flow=msg, node_name=msg.node_name, time=msg.time)


def _lost(n: int, node: str) -> obs.GetFlowsResponse:
    return obs.GetFlowsResponse(
        lost_events=pb.LostEvent(source=pb.HUBBLE_RING_BUFFER, num_events_lost=n),
        node_name=node, time=timestamp(time.time()))


NodesFn = Callable[[], list[obs.Node]]
"""The nodes behind a server that relays others (a hub): each agent with its state."""


class ObserverService(obs_grpc.ObserverServicer):
    """The Observer servicer over one buffer."""

    def __init__(self, buffer: FlowBuffer, address: Callable[[], str | None],
                 nodes: NodesFn | None = None) -> None:
        self.buffer = buffer
        self._address = address
        self._nodes = nodes
        self.stopping = threading.Event()

    def GetFlows(self, request: obs.GetFlowsRequest,
                 context: grpc.ServicerContext) -> Iterator[obs.GetFlowsResponse]:
        """The buffered events asked for, then (follow) the new ones."""
        try:
            select = _Selection(request)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        events, lost = self.buffer.since(0)
        cursor = events[-1].seq if events else self.buffer.seen
        backlog = [] if (request.follow and not request.number and select.since is None) \
            else [e for e in events if select(e)]
        if select.per_connection:
            backlog = _newest_per_connection(backlog)
        n = request.number
        if n:
            backlog = backlog[:n] if request.first else backlog[-n:]
        for ev in backlog:
            yield _response(ev)
        if not request.follow:
            return
        while context.is_active() and not self.stopping.is_set():
            if not self.buffer.wait(cursor, WAKE_EVERY):
                if self.buffer.closed:
                    return
                continue
            events, lost = self.buffer.since(cursor)
            if lost:
                yield _lost(lost, self.buffer.node)
            if events:
                cursor = events[-1].seq
            for ev in events:
                if select(ev):
                    yield _response(ev)

    def ServerStatus(self, request: obs.ServerStatusRequest,
                     context: grpc.ServicerContext) -> obs.ServerStatusResponse:
        """Buffer fill, events seen, uptime."""
        b = self.buffer
        out = obs.ServerStatusResponse(
            num_flows=len(b), max_flows=b.capacity, seen_flows=b.seen,
            uptime_ns=int((time.time() - b.started) * 1e9), version=f"podflow {__version__}")
        if self._nodes is not None:   # a hub: the agents it follows, as Hubble Relay says
            nodes = self._nodes()
            down = [n.name or n.address for n in nodes if n.state != obs.NODE_CONNECTED]
            out.num_connected_nodes.value = len(nodes) - len(down)
            out.num_unavailable_nodes.value = len(down)
            out.unavailable_nodes.extend(down)
        return out

    def GetNodes(self, request: obs.GetNodesRequest,
                 context: grpc.ServicerContext) -> obs.GetNodesResponse:
        """This node (a hub: the agents it follows)."""
        if self._nodes is not None:
            return obs.GetNodesResponse(nodes=self._nodes())
        b = self.buffer
        node = obs.Node(name=b.node, version=f"podflow {__version__}",
                        address=self._address() or "", state=obs.NODE_CONNECTED,
                        uptime_ns=int((time.time() - b.started) * 1e9), num_flows=len(b),
                        max_flows=b.capacity, seen_flows=b.seen)
        return obs.GetNodesResponse(nodes=[node])

    def GetNamespaces(self, request: obs.GetNamespacesRequest,
                      context: grpc.ServicerContext) -> obs.GetNamespacesResponse:
        """The namespaces of the buffered events, sorted."""
        events, _ = self.buffer.since(0)
        names = sorted({ns for e in events for ns in (e.flow.source.namespace,
                                                      e.flow.destination.namespace) if ns})
        return obs.GetNamespacesResponse(namespaces=[obs.Namespace(namespace=n)
                                                     for n in names])


class ObserverServer:
    """A gRPC server with the Observer and Health services (see the module doc)."""

    def __init__(self, buffer: FlowBuffer, listen: str,
                 services: Sequence[Callable[[grpc.Server], None]] = (),
                 nodes: NodesFn | None = None) -> None:
        """``listen``: ``HOST:PORT`` (port 0: a free one) or ``unix:PATH``; ``services``
        add more services to the same server (an agent's spool feed for the hub);
        ``nodes``: the agents behind a hub."""
        self.buffer = buffer
        self.listen = listen
        self.services = list(services)
        self.address: str | None = None
        """What clients dial, once :meth:`start` bound it: ``HOST:PORT`` or ``unix:PATH``."""
        self.service = ObserverService(buffer, lambda: self.address, nodes)
        self._server: grpc.Server | None = None

    def start(self) -> str:
        """Bind and serve in gRPC's threads; return the address; OSError if it cannot bind."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_STREAMS,
                                                        thread_name_prefix="observer"),
                             maximum_concurrent_rpcs=MAX_STREAMS)
        obs_grpc.add_ObserverServicer_to_server(   # type: ignore[no-untyped-call]
            self.service, server)
        checker = health.HealthServicer()
        for name in ("", HEALTH_SERVICE):
            checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        for add in self.services:
            add(server)
        try:
            port = server.add_insecure_port(self.listen)
        except RuntimeError as exc:   # grpcio's way of saying it could not bind
            raise OSError(f"cannot listen on {self.listen}: {exc}") from None
        if self.listen.startswith("unix:"):
            self.address = self.listen
        else:
            host = self.listen.rsplit(":", 1)[0]
            self.address = f"{host}:{port}"
        server.start()
        self._server = server
        log.info("observer: serving Hubble's Observer API on %s", self.address)
        return self.address

    def stop(self, grace: float = 1.0) -> None:
        """End every stream and stop serving (waits at most ``grace`` seconds)."""
        self.service.stopping.set()
        self.buffer.close()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1.0)
            self._server = None
