"""The agent -> hub feed: the agent's side (what it spools, what it serves) and the hub's.

In hub mode the agent's writer (:class:`~podflow.agent.writer.BufferedWriter`) and its
health and progress reports go to a :class:`SpoolSink` instead of a store: one spool record
per batch, in podflow's JSON form (:mod:`podflow.cluster.spool`). The agent serves its spool
with the ``podflow.feed.v1.Feed`` service (:class:`FeedService`, on the same gRPC server as
its Observer API); a hub pulls each agent (:class:`FeedClient`) from the cursor it committed
with the flows, and acknowledges after each commit, so that each record is stored once:
a hub that restarts resumes after its own committed cursor, whatever it had acknowledged.

Example (one process plays both ends)::

    spool = Spool("/var/lib/podflow/spool")
    sink = SpoolSink(spool, "node1")          # the agent writes here
    server.add(FeedService(spool, "node1"))   # and serves it
    client = FeedClient("127.0.0.1:4244")     # the hub
    hello = client.hello()
    for batch in client.pull(hello.epoch, after=0): ...
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc

from podflow.cluster.proto import feed_pb2 as fpb
from podflow.cluster.proto import feed_pb2_grpc as fgrpc
from podflow.cluster.spool import Spool
from podflow.model.flow import Flow
from podflow.model.serialize import flow_from_dict, flow_to_dict
from podflow.store.base import StoreError

HEARTBEAT = 2.0
"""Seconds between empty batches when the spool has nothing new (the hub sees the agent is
there; a dead hub's stream is noticed and ended)."""

MAX_RECORDS = 256
"""Records per batch at most."""

MAX_BATCH_BYTES = 1 << 20
"""A batch stops growing past this many bytes of records (gRPC refuses messages above
4 MiB by default; one record is sent alone whatever its size)."""

FLOWS_PER_RECORD = 1000
"""A writer's batch is spooled as records of this many flows at most (~0.7 MB of JSON)."""

MAX_MESSAGE = 64 << 20
"""The largest message the hub accepts (a single record larger than a batch)."""


class SpoolFull(StoreError):
    """The spool refused a record: the hub has not acknowledged enough yet (retry later)."""

    kind = "spool_full"
    retryable = True


class SpoolSink:
    """What an agent in hub mode writes to instead of a store (the writer's, health report
    and progress calls of :class:`~podflow.store.base.FlowStore`)."""

    def __init__(self, spool: Spool, node: str) -> None:
        self.spool = spool
        self.node = node

    def _append(self, kind: str, *items: Any) -> None:
        """Spool one record per item, all or none."""
        texts = [json.dumps(d, separators=(",", ":"), default=str) for d in items]
        if self.spool.append_all(kind, texts) is None:
            raise SpoolFull(f"spool {self.spool.dir} is full ({self.spool.disk_bytes} bytes not "
                            "acknowledged by the hub)")

    def write(self, flows: Sequence[Flow]) -> int:
        """Spool one batch of flows, as records of :data:`FLOWS_PER_RECORD` at most, all or
        none (:class:`SpoolFull` when there is no room: the writer keeps the batch and
        retries)."""
        if flows:
            self._append("flows", *([flow_to_dict(f) for f in flows[k:k + FLOWS_PER_RECORD]]
                                    for k in range(0, len(flows), FLOWS_PER_RECORD)))
        return len(flows)

    def write_status(self, node: str, status: Mapping[str, Any],
                     at: float | None = None) -> None:
        """Spool the agent's health report."""
        self._append("status", {"node": node, "status": status,
                                "at": time.time() if at is None else at})

    def mark_progress(self, node: str, through: float, at: float | None = None) -> None:
        """Spool the agent's progress (every connection before ``through`` is spooled)."""
        self._append("progress", {"node": node, "through": through,
                                  "at": time.time() if at is None else at})

    def prune(self, max_age: float | None, max_bytes: int | None,
              now: float | None = None) -> Any:
        """Retention is the hub's: nothing to do here."""
        return None

    def __enter__(self) -> SpoolSink:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to close: the spool stays open for the agent's life."""


class FeedService(fgrpc.FeedServicer):
    """The agent's spool, served to the hub."""

    def __init__(self, spool: Spool, node: str) -> None:
        self.spool = spool
        self.node = node

    def _hello(self) -> fpb.HelloResponse:
        s = self.spool
        return fpb.HelloResponse(node=self.node, epoch=s.epoch, last=s.last, acked=s.acked,
                                 refused=s.refused)

    def Hello(self, request: fpb.HelloRequest,
              context: grpc.ServicerContext) -> fpb.HelloResponse:
        """Who and where."""
        return self._hello()

    def Pull(self, request: fpb.PullRequest,
             context: grpc.ServicerContext) -> Iterator[fpb.Batch]:
        """Records after the cursor, then new ones (a heartbeat batch when idle)."""
        after = request.after if request.epoch == self.spool.epoch else 0
        limit = min(request.max_records or MAX_RECORDS, MAX_RECORDS)
        while context.is_active():
            records = self.spool.read(after, limit, max_bytes=MAX_BATCH_BYTES)
            if records:
                after = records[-1].seq
            elif self.spool.wait(after, HEARTBEAT):
                continue   # something new: read it
            # (nothing new for a while: the empty batch is the heartbeat)
            yield fpb.Batch(node=self.node, epoch=self.spool.epoch,
                            records=[fpb.Record(seq=r.seq, kind=r.kind, data=r.data)
                                     for r in records],
                            last=self.spool.last, refused=self.spool.refused)

    def Ack(self, request: fpb.AckRequest,
            context: grpc.ServicerContext) -> fpb.AckResponse:
        """Delete what the hub committed (an ack of another epoch is ignored)."""
        if request.epoch == self.spool.epoch:
            self.spool.ack(request.seq)
        return fpb.AckResponse(acked=self.spool.acked)


def add_feed(server: grpc.Server, service: FeedService) -> None:
    """Serve ``service`` on ``server`` (next to the Observer API)."""
    fgrpc.add_FeedServicer_to_server(service, server)   # type: ignore[no-untyped-call]


class FeedClient:
    """The hub's side of one agent's feed."""

    def __init__(self, address: str, *, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
        self.stub = fgrpc.FeedStub(self.channel)   # type: ignore[no-untyped-call]

    def hello(self) -> fpb.HelloResponse:
        """The agent's node and spool (grpc.RpcError when unreachable)."""
        got: fpb.HelloResponse = self.stub.Hello(fpb.HelloRequest(), timeout=self.timeout)
        return got

    def pull(self, epoch: str, after: int) -> Any:
        """The stream of batches after ``after`` (cancel it to stop)."""
        return self.stub.Pull(fpb.PullRequest(epoch=epoch, after=after,
                                              max_records=MAX_RECORDS))

    def ack(self, epoch: str, seq: int) -> int:
        """Acknowledge; return what the agent now holds as acknowledged."""
        got: fpb.AckResponse = self.stub.Ack(fpb.AckRequest(epoch=epoch, seq=seq),
                                             timeout=self.timeout)
        return got.acked

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def decode_flows(data: str) -> list[Flow]:
    """The flows of a ``flows`` record (SchemaError/ValueError when malformed)."""
    items = json.loads(data)
    if not isinstance(items, list):
        raise ValueError("a flows record is a JSON list")
    return [flow_from_dict(d) for d in items]
