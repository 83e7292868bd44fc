"""podflow's connection records as Hubble ``flow.Flow`` events, and back.

A podflow record is one connection, oriented client to server, NAT undone; a Hubble flow
is one event seen at one node. The agent serves each change of a connection as it saw it
(its own vantage points merged) as one Hubble event of that node:

- ``time`` is the connection's start (podflow's ``time``), ``node_name`` the serving node;
  ``source``/``destination`` are the client and the server after NAT was undone, with
  Cilium's label form (``k8s:app=web``, ``k8s:io.kubernetes.pod.namespace=shop``; an end that
  is no pod carries its reserved identity: ``reserved:host``, ``reserved:world``), the
  workload, and ``source_names``/``destination_names`` for named externals;
- ``IP.source_xlated`` is the address the client was masqueraded to; ``destination_service``
  the Service the connection went through; ``is_reply`` is always false (a connection record
  is the client's direction), so compact output prints ``->``;
- ``traffic_direction`` and ``trace_observation_point`` say where this node saw it
  (:func:`~podflow.metrics.context.directions`: ``EGRESS``/``FROM_ENDPOINT`` on the
  client's node, ``INGRESS``/``TO_ENDPOINT`` on the server's, ``TO_NETWORK`` in between),
  as podflow's ``hubble_flows_processed_total`` counts them;
- ``Type`` is ``L7`` with ``l7.dns``/``l7.http`` when the packets vantage decoded the
  exchange (``RESPONSE`` once an answer was seen, else ``REQUEST``), else ``L3_L4``;
  ``event_type`` is Cilium's trace (4) or, for a dropped connection, drop (1) message type,
  so Hubble's printers name it;
- what Hubble has no field for (both tuples, counters both ways, the end, the vantage
  points, podflow's connection id) is in ``podflow_record``: the connection in podflow's
  JSON form, which :func:`from_hubble` reads back exactly.

Example::

    >>> from podflow.model.flow import Endpoint, EndpointKind, Flow, Protocol
    >>> f = Flow(10.0, Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "web-1"),
    ...          Endpoint("10.244.1.7", 80, EndpointKind.POD, "shop", "api-1"), Protocol.TCP,
    ...          flow_id="c1")
    >>> m = to_hubble(f, "node1", 7)
    >>> (m.source.pod_name, m.l4.TCP.destination_port, m.node_name, m.is_reply.value)
    ('web-1', 80, 'node1', False)
    >>> from_hubble(m) == f
    True
"""

from __future__ import annotations

import json
import math
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from podflow import __version__
from podflow.metrics.context import directions
from podflow.metrics.flow import trace_point
from podflow.model.flow import Endpoint, EndpointKind, Flow, Protocol, Verdict
from podflow.model.serialize import SchemaError, flow_from_dict, flow_to_dict
from podflow.observer.proto.hubble import flow_pb2 as pb

EMITTER = "Podflow"
"""``Flow.emitter.name`` (Hubble asks for a capitalised name)."""

TRACE, DROP = 4, 1
"""Cilium's monitor message types (``event_type.type``) that Hubble's printers name; a
trace's ``sub_type`` is its observation point, numbered as ``TraceObservationPoint`` except
``TO_ENDPOINT``, which is 0 there."""

_VERDICT = {Verdict.FORWARDED: pb.FORWARDED, Verdict.DROPPED: pb.DROPPED,
            Verdict.ERROR: pb.ERROR, Verdict.UNKNOWN: pb.VERDICT_UNKNOWN}
_POINT = {"from-endpoint": pb.FROM_ENDPOINT, "to-endpoint": pb.TO_ENDPOINT,
          "from-host": pb.FROM_HOST, "to-stack": pb.TO_STACK, "to-network": pb.TO_NETWORK}
_DIRECTION = {"egress": pb.EGRESS, "ingress": pb.INGRESS}
_RESERVED_IDS = {"unknown": 0, "host": 1, "world": 2}
"""Cilium's numeric reserved identities of the ends podflow can tell."""
_RESERVED = {EndpointKind.NODE: "host", EndpointKind.HOST_NETWORK_POD: "host",
             EndpointKind.EXTERNAL: "world", EndpointKind.UNKNOWN: "unknown"}
_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
"""The label Cilium adds to every pod's identity with its namespace."""


def timestamp(t: float) -> Timestamp:
    """A protobuf Timestamp of Unix seconds (the fraction converted on its own: at today's
    times a double counts nanoseconds in steps of 256)."""
    seconds = math.floor(t)
    nanos = min(round((t - seconds) * 1e9), 999_999_999)
    return Timestamp(seconds=seconds, nanos=nanos)


def _endpoint(e: Endpoint, out: pb.Endpoint) -> None:
    if e.namespace:
        out.namespace = e.namespace
    if e.pod_name:
        out.pod_name = e.pod_name
    labels = [f"k8s:{k}={v}" for k, v in e.labels]
    if e.kind in (EndpointKind.POD, EndpointKind.HOST_NETWORK_POD) and e.namespace:
        labels.append(f"k8s:{NAMESPACE_LABEL}={e.namespace}")
    reserved = _RESERVED.get(e.kind)
    if reserved is not None:
        labels.append(f"reserved:{reserved}")
        out.identity = _RESERVED_IDS[reserved]
    out.labels.extend(sorted(labels))
    if e.workload is not None:
        out.workloads.add(name=e.workload.name, kind=e.workload.kind)


def tcp_flags(f: Flow) -> list[str]:
    """The TCP flags seen, as Hubble names them, in its order (``SYN-ACK``: both)."""
    seen = set(f.tcp.flags) if f.tcp is not None else set()
    if "SYN-ACK" in seen:
        seen |= {"SYN", "ACK"}
    return [flag for flag in _FLAGS if flag in seen]


def _l4(f: Flow, out: pb.Layer4) -> None:
    sport, dport = f.source.port or 0, f.destination.port or 0
    if f.protocol is Protocol.TCP:
        out.TCP.source_port, out.TCP.destination_port = sport, dport
        for flag in tcp_flags(f):
            setattr(out.TCP.flags, flag, True)
    elif f.protocol is Protocol.UDP:
        out.UDP.source_port, out.UDP.destination_port = sport, dport
    elif f.protocol is Protocol.SCTP:
        out.SCTP.source_port, out.SCTP.destination_port = sport, dport
    elif f.protocol is Protocol.ICMP:
        out.ICMPv4.SetInParent()
    elif f.protocol is Protocol.ICMPV6:
        out.ICMPv6.SetInParent()


def _l7(f: Flow, out: pb.Flow) -> bool:
    l7 = f.l7
    if l7 is None or (l7.dns is None and l7.http is None):
        return False
    if l7.latency_ns:
        out.l7.latency_ns = l7.latency_ns
    if l7.dns is not None:
        d, dns = l7.dns, out.l7.dns
        dns.query = d.query if d.query.endswith(".") else f"{d.query}."
        dns.ips.extend(d.ips)
        dns.cnames.extend(d.cnames)
        dns.qtypes.extend(d.qtypes)
        dns.observation_source = "podflow"
        if d.ttl is not None:
            dns.ttl = d.ttl
        if d.rcode is not None:
            dns.rcode = d.rcode
        out.l7.type = pb.RESPONSE if d.rcode is not None else pb.REQUEST
    elif l7.http is not None:
        h, http = l7.http, out.l7.http
        http.method = h.method or ""
        http.protocol = h.protocol
        host = h.host or (f"[{f.destination.ip}]" if ":" in f.destination.ip
                          else f.destination.ip)
        http.url = f"http://{host}{h.url or ''}"
        if h.code is not None:
            http.code = h.code
        out.l7.type = pb.RESPONSE if h.code is not None else pb.REQUEST
    return True


def summary(f: Flow) -> str:
    """The one-line description compact output prints (Hubble's ``Summary``)."""
    if f.l7 is not None and f.l7.dns is not None:
        d = f.l7.dns
        kind = "Answer" if d.rcode is not None else "Query"
        return f"DNS {kind} {d.query}. {','.join(d.qtypes)}".rstrip()
    if f.l7 is not None and f.l7.http is not None:
        h = f.l7.http
        code = f" {h.code}" if h.code is not None else ""
        return f"{h.protocol}{code} {h.method or ''} {h.url or ''}".rstrip()
    if f.verdict is not Verdict.FORWARDED and f.drop_reason_desc:
        return f.drop_reason_desc
    if flags := tcp_flags(f):
        return "TCP Flags: " + ", ".join(flags)
    if f.tcp is not None and f.tcp.state:
        return f"TCP {f.tcp.state}"
    return f.protocol.value


def to_hubble(f: Flow, node: str, seq: int = 0, origin: uuid.UUID | None = None) -> pb.Flow:
    """The Hubble event of one connection record as ``node`` saw it (see the module doc).

    Its ``uuid`` is derived from ``origin`` (the serving buffer's own id) and ``seq``, so
    the same event always has the same one; without ``origin`` it is random."""
    event = uuid.uuid5(origin, str(seq)) if origin is not None else uuid.uuid4()
    out = pb.Flow(uuid=str(event), node_name=node, verdict=_VERDICT[f.verdict],
                  podflow_seq=seq, Summary=summary(f))
    out.time.CopyFrom(timestamp(f.time))
    out.emitter.name, out.emitter.version = EMITTER, __version__
    if f.verdict is Verdict.DROPPED and f.drop_reason_desc and "(ICMP 11/" in f.drop_reason_desc:
        out.drop_reason_desc = pb.TTL_EXCEEDED
    out.IP.source, out.IP.destination = f.source.ip, f.destination.ip
    out.IP.ipVersion = pb.IPv6 if ":" in f.source.ip else pb.IPv4
    if f.nat.translated_source is not None:
        out.IP.source_xlated = f.nat.translated_source.ip
    _l4(f, out.l4)
    _endpoint(f.source, out.source)
    _endpoint(f.destination, out.destination)
    for e, names in ((f.source, out.source_names), (f.destination, out.destination_names)):
        if e.kind is EndpointKind.EXTERNAL and e.name:
            names.append(e.name)
    out.Type = pb.L7 if _l7(f, out) else pb.L3_L4
    out.event_type.type = DROP if f.verdict is Verdict.DROPPED else TRACE
    if f.destination_service is not None:
        out.destination_service.name = f.destination_service.name
        out.destination_service.namespace = f.destination_service.namespace
    direction = directions(f)[0]
    out.traffic_direction = _DIRECTION.get(direction, pb.TRAFFIC_DIRECTION_UNKNOWN)
    if f.verdict is not Verdict.DROPPED:
        point = _POINT[trace_point(f, direction)]
        out.trace_observation_point = point
        out.event_type.sub_type = 0 if point == pb.TO_ENDPOINT else point
    out.is_reply.value = False
    out.podflow_record = json.dumps(flow_to_dict(f), separators=(",", ":"))
    return out


def from_hubble(msg: pb.Flow) -> Flow | None:
    """The podflow record an event carries (None for an event of another Hubble server);
    :class:`~podflow.model.serialize.SchemaError` if it is malformed or newer."""
    if not msg.podflow_record:
        return None
    record = json.loads(msg.podflow_record)
    if not isinstance(record, dict):
        raise SchemaError(f"podflow_record is not an object: {msg.podflow_record[:40]!r}")
    return flow_from_dict(record)
