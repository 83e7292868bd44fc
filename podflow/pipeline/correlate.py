"""Join the observations of one connection made at several vantage points into one Flow.

Every agent records what its node saw. Observations of one connection share ``flow_id``
(derived from the connection as the server sees it), so they are grouped by it; a group whose
start times drift apart by more than :data:`SPLIT_GAP` seconds is split (a reused port is a
new connection). Within a group the *primary* record is the one that knows the most:

1. one that undid NAT (it has ``destination_service`` or a non-empty ``nat``), else
2. one whose source is a real endpoint (not kind node or unknown), else
3. the earliest (then by observing node, then input order).

The merged flow takes source, destination, service, NAT, CNI profile and RTT from the
primary; observations are the union ordered by node; counters are the maximum per
direction (a later record of an active connection supersedes an earlier one); ``time`` is
the earliest start, ``end_time`` the latest; the state is ENDED if any record ended; the
verdict is the worst seen (DROPPED > ERROR > FORWARDED > UNKNOWN). The store applies the
same rules in SQL, so filters see the same merged flow either way.

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
from collections.abc import Sequence
from dataclasses import replace

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

SPLIT_GAP = 10.0
"""Seconds between consecutive start times (sorted) that split one flow_id into two flows."""

VERDICT_RANK = {Verdict.DROPPED: 3, Verdict.ERROR: 2, Verdict.FORWARDED: 1, Verdict.UNKNOWN: 0}
"""Worst-wins order used to merge verdicts."""


def undid_nat(f: Flow) -> bool:
    """True when this record resolved a service or a translation."""
    return f.destination_service is not None or not f.nat.is_empty


def source_known(f: Flow) -> bool:
    """True when the source is a real endpoint, not a node or an unknown address."""
    return f.source.kind not in (EndpointKind.NODE, EndpointKind.UNKNOWN)


def primary_index(observations: Sequence[Flow]) -> int:
    """Index of the record the merged flow takes its identity from (see module doc)."""

    def key(i: int) -> tuple[int, int, float, str, int]:
        f = observations[i]
        return (0 if undid_nat(f) else 1, 0 if source_known(f) else 1, f.time,
                f.node_name or "", i)

    return min(range(len(observations)), key=key)


def group(observations: Sequence[Flow]) -> list[list[Flow]]:
    """Observations of the same connection together, in order of their first start time.

    Records with an empty ``flow_id`` are never joined with anything.

    >>> from podflow.model.flow import Endpoint, Protocol
    >>> e = Endpoint("10.0.0.1", 1)
    >>> [len(g) for g in group([Flow(0, e, e, Protocol.TCP, flow_id="a"),
    ...                         Flow(30, e, e, Protocol.TCP, flow_id="a"),
    ...                         Flow(1, e, e, Protocol.TCP, flow_id="a")])]
    [2, 1]
    """
    by_id: dict[str, list[Flow]] = defaultdict(list)
    groups: list[list[Flow]] = []
    for f in observations:
        if f.flow_id:
            by_id[f.flow_id].append(f)
        else:
            groups.append([f])
    for members in by_id.values():
        members = sorted(members, key=lambda f: f.time)  # stable: keeps input order on ties
        current = [members[0]]
        for f in members[1:]:
            if f.time - current[-1].time > SPLIT_GAP:
                groups.append(current)
                current = []
            current.append(f)
        groups.append(current)
    groups.sort(key=lambda g: (min(f.time for f in g), g[0].flow_id))
    return groups


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
    ordered = tuple(sorted(points, key=lambda o: (o.node_name, o.source)))
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
    rtt = primary.rtt_us
    if rtt is None:
        rtt = next((f.rtt_us for f in observations if f.rtt_us is not None), None)
    return replace(
        primary,
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
