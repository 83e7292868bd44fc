"""The agent's ring of recent flow events, read by the Observer API.

Every view the agent emits (a conntrack report, a packets or sockets view of a connection)
is merged with the connection's other views of this node by the store's rules
(:meth:`~podflow.metrics.follower.Ledger.offer_view`) and appended as one event of the connection
as it now stands (in Hubble's form, :func:`~podflow.observer.convert.to_hubble`, once a
reader asks): a connection
appears once when it is first reported and again each time it changes (its end, its L7
record), as a Hubble agent shows a connection's packets. The ring keeps the newest
``capacity`` events (Hubble's ``--hubble-event-buffer-capacity``, 4095 by default); each has
a sequence number, so a reader that fell behind knows how many it missed
(:meth:`FlowBuffer.since` returns the gap, served as a ``LostEvent``).

Thread-safe: the agent's loop appends, gRPC threads read and wait.

Example::

    >>> from podflow.model.flow import Endpoint, Flow, ObservationPoint, Protocol
    >>> buf = FlowBuffer("node1", capacity=2)
    >>> v = Flow(1.0, Endpoint("10.0.0.1", 5), Endpoint("10.0.0.2", 80), Protocol.TCP,
    ...          flow_id="a", observations=(ObservationPoint("node1", "conntrack"),))
    >>> buf.add([v, v, v], now=2.0)
    >>> len(buf), buf.seen, [e.seq for e in buf.since(0)[0]], buf.since(0)[1]
    (2, 3, [2, 3], 1)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from itertools import islice

from podflow.metrics.base import Account
from podflow.metrics.follower import Ledger
from podflow.model.flow import Flow
from podflow.observer.convert import to_hubble
from podflow.observer.proto.hubble import flow_pb2 as pb

DEFAULT_CAPACITY = 4095
"""Events kept (Hubble's default ring size)."""

REMEMBER = 180.0
"""Seconds a connection's views are kept for merging after its last one (as
:data:`podflow.metrics.node.REMEMBER`)."""


class Event:
    """One buffered event: a connection as it stood after one of its views arrived.

    Its Hubble form is made when a reader first asks for it (:meth:`message`), so an agent
    nobody reads from pays nothing for the Observer API but the merge."""

    __slots__ = ("_message", "buffer", "connection", "flow", "seq")

    def __init__(self, seq: int, flow: Flow, connection: Account, buffer: FlowBuffer) -> None:
        self.seq = seq
        """Position in the ring's history (1, 2, ...)."""
        self.flow = flow
        """The connection, this node's views merged (podflow's form)."""
        self.connection = connection
        """The connection's identity in the merging ledger: events of one connection share
        it (compare with ``is``)."""
        self.buffer = buffer
        """The ring it is in (its node name and id)."""
        self._message: pb.Flow | None = None

    def message(self) -> pb.Flow:
        """The same as a Hubble flow (made once; two readers racing make equal ones)."""
        if self._message is None:
            node = self.buffer.node or self.flow.node_name or ""
            self._message = to_hubble(self.flow, node, self.seq, self.buffer.origin)
        return self._message


class FlowBuffer:
    """The ring (see the module doc)."""

    def __init__(self, node: str, capacity: int = DEFAULT_CAPACITY) -> None:
        """``node``: the name events carry (empty: each event its connection's first
        observing node, as a hub serves them); ``capacity``: events kept (>= 1)."""
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, got {capacity}")
        self.node = node
        self.capacity = capacity
        self.started = time.time()
        self.origin = uuid.uuid4()
        """This ring's id: its events' uuids derive from it and their sequence numbers."""
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._ledger = Ledger(count_active_after=0.0, remember=REMEMBER)
        self._changed = threading.Condition()
        self._next_prune = 0.0
        self.seen = 0
        """Events appended since start (Hubble's ``seen_flows``)."""
        self.closed = False
        """Set by :meth:`close`: waiting readers return."""

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, views: Iterable[Flow], now: float | None = None) -> None:
        """Merge the agent's new views and append one event each; wake the readers."""
        now = time.time() if now is None else now
        merged = [got for view in views if (got := self._ledger.offer_view(view, now))]
        with self._changed:
            for flow, account in merged:
                self.seen += 1
                self._ring.append(Event(self.seen, flow, account, self))
            if now >= self._next_prune:
                self._ledger.prune(now)
                self._next_prune = now + REMEMBER / 6
            self._changed.notify_all()

    def since(self, after: int) -> tuple[list[Event], int]:
        """The buffered events after sequence number ``after``, and how many of those
        are no longer buffered (overwritten before this read)."""
        with self._changed:
            if not self._ring or self._ring[-1].seq <= after:
                return [], 0
            first = self._ring[0].seq
            events = list(islice(self._ring, max(0, after - first + 1), None))
        return events, max(0, events[0].seq - after - 1)

    def wait(self, after: int, timeout: float) -> bool:
        """Wait until an event after ``after`` exists (True) or ``timeout`` passed."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.closed or self.seen > after, timeout) and not self.closed

    def close(self) -> None:
        """Wake every waiting reader for good (the server is stopping)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()
