"""Join the observations of one connection made at several vantage points into one Flow.

Every agent records what each of its sources saw. A record carries up to two keys of the
connection, both :func:`~podflow.pipeline.keys.flow_id_for` values in one namespace:
``flow_id`` (the connection as the server sees it) and ``client_key`` (as the client sent it).
A server socket knows only ``flow_id``, a client socket only ``client_key``, a packet both
(the key of the tuple it saw), conntrack both (reply and original tuple): with NAT its two
keys differ and it is the *bridge* between the client's view and the server's.

NAT can be chained across nodes: a pod dialling another node's NodePort is masqueraded on
its own node (bridge 1: the pod's tuple -> the node's tuple) and DNATed + SNATed on the
NodePort's node (bridge 2: the node's tuple -> the backend's), so bridge 1's ``flow_id`` is
bridge 2's ``client_key``. Bridges linked that way within :data:`SPLIT_GAP` form a *chain*
(:func:`chain_labels`); a chain's *label* is the smallest key of its bridges (for a lone
bridge, the smaller of its two keys).

Grouping: records are one connection when they share a key value and start within
:data:`SPLIT_GAP` seconds. Concretely each record gets a group key: the label of the chain
of the nearest bridge within ``SPLIT_GAP`` that shares a key with it, else its own
``flow_id``, else its ``client_key``; records with neither stay alone.
Records of one group key are sorted by start (then input order) and split where consecutive
starts drift apart by more than ``SPLIT_GAP``, and where a record is a second *instance* of a
vantage already in the connection being built: same node and source, the same ``flow_id`` or
the same ``client_key``, a different :attr:`~podflow.model.flow.ObservationPoint.instance`
(a conntrack entry id, a socket cookie).
That second rule is what tells a reused port apart when the reuse comes within
``SPLIT_GAP``; records without an instance (older stores) only split on time.

Merging a group takes:

- destination, service, NAT, CNI profile, ``flow_id`` from the *primary* record: one at the
  server's end of the chain (its ``flow_id`` is no bridge's ``client_key``: not a view of an
  earlier hop), then one that undid NAT (``destination_service`` or a non-empty ``nat``),
  else one that knows the server side (a ``flow_id``), else one whose source is real, then
  the earliest (node, input order);
- the source from the best source view: one at the client's end of the chain (its
  ``client_key`` is no bridge's ``flow_id``), then one that undid NAT, else a real source
  (not a node or unknown address: the server's socket sees the SNAT address), else one that
  knows the client side (``client_key``), then as above; a socket-only connection (macvlan)
  thus gets its source from the client socket and its destination from the server socket;
- the translated source (what the server saw as its client) from the primary record, else
  the first SNAT any record undid, at the server's end of the chain first (a chain whose
  last hop did no SNAT: the server sees the first hop's masquerade);
- observations: the union ordered by node; counters: the maximum per direction; ``time`` the
  earliest start, ``end_time`` the latest; ENDED if any record ended; the worst verdict
  (DROPPED > ERROR > FORWARDED > UNKNOWN); ``rtt_us`` the first measured one, client-side
  views first, then by start; ``l7`` the first record's that has one, by start.

The store applies the same rules in SQL, so filters see the same merged flow either way.

Example (a NodePort connection seen on the ingress node and on the backend's node)::

    >>> from podflow.model.flow import (Address, Endpoint, EndpointKind, Nat,
    ...     ObservationPoint, Protocol, Service)
    >>> visitor = Endpoint("192.168.100.20", 50000, EndpointKind.EXTERNAL, name="visitor")
    >>> pod = Endpoint("10.244.1.5", 8080, EndpointKind.POD, "shop", "frontend-1")
    >>> a = Flow(10.0, visitor, pod, Protocol.TCP, flow_id="x",
    ...          destination_service=Service("shop", "frontend", type="NodePort"),
    ...          nat=Nat(Address("172.18.0.1", 30080), Address("10.244.0.0", 61000)),
    ...          observations=(ObservationPoint("node1", "conntrack"),))
    >>> b = Flow(10.1, Endpoint("10.244.0.0", 61000, EndpointKind.NODE, name="node1"), pod,
    ...          Protocol.TCP, flow_id="x", observations=(ObservationPoint("node2", "conntrack"),))
    >>> [m] = [merge(g) for g in group([b, a])]
    >>> m.source.name, [o.node_name for o in m.observations]
    ('visitor', ['node1', 'node2'])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from podflow.model.flow import (
    Counters,
    EndpointKind,
    Flow,
    FlowState,
    ObservationPoint,
    TcpInfo,
    Traffic,
    Verdict,
)

T = TypeVar("T")

SPLIT_GAP = 5.0
"""Seconds between consecutive start times (sorted) that split one flow_id into two flows."""

VERDICT_RANK = {Verdict.DROPPED: 3, Verdict.ERROR: 2, Verdict.FORWARDED: 1, Verdict.UNKNOWN: 0}
"""Worst-wins order used to merge verdicts."""


def undid_nat(f: Flow) -> bool:
    """True when this record resolved a service or a translation."""
    return f.destination_service is not None or not f.nat.is_empty


def source_known(f: Flow) -> bool:
    """True when the source is a real endpoint, not a node or an unknown address."""
    return f.source.kind not in (EndpointKind.NODE, EndpointKind.UNKNOWN)


def chain_ends(observations: Sequence[Flow]) -> tuple[list[bool], list[bool]]:
    """Per record: (at the server's end of the chain, at the client's end) (module doc).

    A record whose ``flow_id`` is some bridge's ``client_key`` saw an earlier hop of a chained
    NAT (its destination is the next node's address, not the server); one whose
    ``client_key`` is some bridge's ``flow_id`` saw a later hop (its source is a node).
    """
    cks = {f.client_key for f in observations if is_bridge(f)}
    fks = {f.flow_id for f in observations if is_bridge(f)}
    return ([not (f.flow_id and f.flow_id in cks) for f in observations],
            [not (f.client_key and f.client_key in fks) for f in observations])


def primary_index(observations: Sequence[Flow]) -> int:
    """Index of the record the merged flow takes destination, service, NAT from."""
    server_end = chain_ends(observations)[0]

    def key(i: int) -> tuple[int, int, int, int, float, str, int]:
        f = observations[i]
        return (0 if server_end[i] else 1, 0 if undid_nat(f) else 1, 0 if f.flow_id else 1,
                0 if source_known(f) else 1, f.time, f.node_name or "", i)

    return min(range(len(observations)), key=key)


def source_index(observations: Sequence[Flow]) -> int:
    """Index of the record the merged flow takes its source from."""
    client_end = chain_ends(observations)[1]

    def key(i: int) -> tuple[int, int, int, int, float, str, int]:
        f = observations[i]
        return (0 if client_end[i] else 1, 0 if undid_nat(f) else 1,
                0 if source_known(f) else 1, 0 if f.client_key else 1, f.time,
                f.node_name or "", i)

    return min(range(len(observations)), key=key)


def is_bridge(f: Flow) -> bool:
    """A record that knows both keys and they differ (conntrack of a NATed connection)."""
    return bool(f.flow_id and f.client_key and f.flow_id != f.client_key)


def chain_labels(bridges: Sequence[tuple[float, str, str]]) -> list[str]:
    """The chain label of each bridge ``(time, flow_id, client_key)`` (see the module doc).

    Bridge *a* links to bridge *b* when ``a.flow_id == b.client_key`` and they start at
    most :data:`SPLIT_GAP` apart; a chain is a connected set of links, its label the
    smallest key of its bridges.

    >>> chain_labels([(0.0, "m", "c"), (0.2, "s", "m"), (0.1, "x", "y"), (9.0, "t", "m")])
    ['c', 'c', 'x', 'm']
    """
    parent = list(range(len(bridges)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_ck: dict[str, list[int]] = defaultdict(list)
    for i, (_, _, ck) in enumerate(bridges):
        by_ck[ck].append(i)
    for i, (t, fid, _) in enumerate(bridges):
        for j in by_ck.get(fid, ()):
            if abs(bridges[j][0] - t) <= SPLIT_GAP:
                parent[find(i)] = find(j)
    label: dict[int, str] = {}
    for i, (_, fid, ck) in enumerate(bridges):
        root = find(i)
        label[root] = min(label.get(root, fid), fid, ck)
    return [label[find(i)] for i in range(len(bridges))]


def group_keys(observations: Sequence[Flow]) -> list[str | None]:
    """The group key of each record (see the module doc); None: a record of its own."""
    index = [i for i, f in enumerate(observations) if is_bridge(f)]
    labels = chain_labels([(observations[i].time, observations[i].flow_id,
                            observations[i].client_key) for i in index])
    bridges: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for i, canon in zip(index, labels, strict=True):
        f = observations[i]
        bridges[f.flow_id].append((f.time, i, canon))
        bridges[f.client_key].append((f.time, i, canon))
    out: list[str | None] = []
    for f in observations:
        best: tuple[float, float, int, str] | None = None
        for k in dict.fromkeys(x for x in (f.flow_id, f.client_key) if x):
            for t, i, canon in bridges.get(k, ()):
                dt = abs(t - f.time)
                if dt <= SPLIT_GAP and (best is None or (dt, t, i) < best[:3]):
                    best = (dt, t, i, canon)
        out.append(best[3] if best else (f.flow_id or f.client_key or None))
    return out


def group(observations: Sequence[Flow]) -> list[list[Flow]]:
    """Observations of the same connection together, in order of their first start time.

    Records with neither a ``flow_id`` nor a ``client_key`` are never joined with anything.

    >>> from podflow.model.flow import Endpoint, Protocol
    >>> e = Endpoint("10.0.0.1", 1)
    >>> [len(g) for g in group([Flow(0, e, e, Protocol.TCP, flow_id="a"),
    ...                         Flow(30, e, e, Protocol.TCP, flow_id="a"),
    ...                         Flow(1, e, e, Protocol.TCP, client_key="a")])]
    [2, 1]
    """
    by_key: dict[str, list[Flow]] = defaultdict(list)
    groups: list[list[Flow]] = []
    for f, key in zip(observations, group_keys(observations), strict=True):
        if key is None:
            groups.append([f])
        else:
            by_key[key].append(f)
    for members in by_key.values():
        members = sorted(members, key=lambda f: f.time)  # stable: keeps input order on ties
        groups += split(members, lambda f: f.time, tracked)
    groups.sort(key=lambda g: (min(f.time for f in g), g[0].flow_id or g[0].client_key))
    return groups


Vantage = tuple[str, str, str, str]
"""(node, source, ``"f"`` or ``"c"``, key): one tracker's view of one tuple, a ``flow_id`` or a
``client_key`` (a kernel tracker holds one object per tuple at a time), see :func:`split`."""

Tracked = tuple[tuple[Vantage, ...], str]
"""A record's vantages and its instance."""


def split(members: Sequence[T], time: Callable[[T], float],
          tracked: Callable[[T], Tracked | None]) -> list[list[T]]:
    """Cut ``members`` (one group key, sorted by start) into connections (the module doc).

    ``tracked`` gives a member's vantages and instance, or None when it names no instance.
    A cut falls before a member that starts more than ``SPLIT_GAP`` after the previous one,
    or one of whose vantages the connection being built holds under another instance.

    >>> rows = [(0.0, "conntrack", "1"), (0.5, "sockets", "7"), (2.8, "conntrack", "2"),
    ...         (3.0, "sockets", "8"), (9.0, "conntrack", "2")]
    >>> [[r[0] for r in g] for g in split(
    ...     rows, lambda r: r[0], lambda r: ((("n", r[1], "f", "k"),), r[2]))]
    [[0.0, 0.5], [2.8, 3.0], [9.0]]
    """
    groups: list[list[T]] = []
    current: list[T] = []
    seen: dict[Vantage, str] = {}
    last = 0.0
    for m in members:
        t, got = time(m), tracked(m)
        if current and (t - last > SPLIT_GAP or (got is not None and any(
                seen.get(v, got[1]) != got[1] for v in got[0]))):
            groups.append(current)
            current, seen = [], {}
        current.append(m)
        last = t
        if got is not None:
            for v in got[0]:
                seen.setdefault(v, got[1])
    if current:
        groups.append(current)
    return groups


def vantages(node: str, source: str, flow_id: str, client_key: str) -> tuple[Vantage, ...]:
    """The vantages of a record seen by ``source`` on ``node`` with these keys."""
    out: tuple[Vantage, ...] = ()
    if flow_id:
        out += ((node, source, "f", flow_id),)
    if client_key:
        out += ((node, source, "c", client_key),)
    return out


def tracked(f: Flow) -> Tracked | None:
    """A record's vantages and instance for :func:`split` (None: it names no instance).

    Two conntrack entries of one client tuple (a reused port, the DNAT picking another
    backend) share the ``client_key`` vantage; a client and a server socket never share one.
    """
    if len(f.observations) != 1 or not f.observations[0].instance:
        return None
    o = f.observations[0]
    return vantages(o.node_name, o.source, f.flow_id, f.client_key), o.instance


def _max_counters(cs: Sequence[Counters]) -> Counters:
    return Counters(max(c.packets for c in cs), max(c.bytes for c in cs))


def merge(observations: Sequence[Flow]) -> Flow:
    """One Flow from the observations of one connection (see the module doc for the rules).

    Raises ValueError on an empty sequence; a single observation is returned unchanged.
    """
    if not observations:
        raise ValueError("merge() needs at least one observation")
    if len(observations) == 1:
        return observations[0]
    primary = observations[primary_index(observations)]
    points: dict[ObservationPoint, None] = {}
    for f in observations:
        for o in f.observations:
            points.setdefault(o, None)
    ordered = tuple(sorted(points, key=lambda o: (o.node_name, o.source, o.instance)))
    ends = [f.end_time for f in observations if f.end_time is not None]
    worst = max(observations, key=lambda f: VERDICT_RANK[f.verdict])
    tcp_records = [f for f in observations if f.tcp is not None]
    tcp = None
    if tcp_records:
        latest = max(tcp_records, key=lambda f: f.end_time if f.end_time is not None else f.time)
        flags: dict[str, None] = {}
        for f in tcp_records:
            assert f.tcp is not None
            flags.update(dict.fromkeys(f.tcp.flags))
        assert latest.tcp is not None
        tcp = TcpInfo(latest.tcp.state, tuple(flags))
    by_start = sorted(range(len(observations)), key=lambda i: observations[i].time)
    rtt = next((observations[i].rtt_us for i in sorted(
        by_start, key=lambda i: 0 if not observations[i].flow_id else 1)
        if observations[i].rtt_us is not None), None)
    l7 = next((observations[i].l7 for i in by_start if observations[i].l7 is not None), None)
    source = observations[source_index(observations)]
    nat = primary.nat
    if nat.translated_source is None:
        server_end = chain_ends(observations)[0]
        snat = [i for i, f in enumerate(observations) if f.nat.translated_source is not None]
        if snat:
            first = min(snat, key=lambda i: (0 if server_end[i] else 1, observations[i].time,
                                             observations[i].node_name or "", i))
            nat = replace(nat, translated_source=observations[first].nat.translated_source)
    return replace(
        primary,
        source=source.source,
        nat=nat,
        flow_id=primary.flow_id or next((f.flow_id for f in observations if f.flow_id), ""),
        client_key=primary.client_key or source.client_key or next(
            (f.client_key for f in observations if f.client_key), ""),
        l7=l7,
        time=min(f.time for f in observations),
        end_time=max(ends) if ends else None,
        state=FlowState.ENDED if any(f.state is FlowState.ENDED for f in observations)
        else FlowState.ACTIVE,
        traffic=Traffic(_max_counters([f.traffic.to_destination for f in observations]),
                        _max_counters([f.traffic.to_source for f in observations])),
        tcp=tcp,
        rtt_us=rtt,
        verdict=worst.verdict,
        drop_reason_desc=worst.drop_reason_desc if worst.verdict is not primary.verdict
        else primary.drop_reason_desc,
        observations=ordered,
    )


def merge_all(observations: Sequence[Flow]) -> list[Flow]:
    """``[merge(g) for g in group(observations)]``: every connection once, by start time."""
    return [merge(g) for g in group(observations)]
