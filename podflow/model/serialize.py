"""Flow <-> plain dict (JSON) with a schema version.

The dict form is what ``observe -o json`` prints and what stores may keep verbatim. It is
versioned: readers refuse a newer major version with a clear error instead of guessing.

Example::

    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> f = Flow(time=1.5, source=Endpoint("10.0.0.1", 1), destination=Endpoint("10.0.0.2", 2),
    ...          protocol=Protocol.TCP)
    >>> flow_from_dict(flow_to_dict(f)) == f
    True
"""

from __future__ import annotations

from typing import Any

from podflow.model.flow import (
    L7,
    Address,
    Counters,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    HttpInfo,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    TcpInfo,
    Traffic,
    Verdict,
    Workload,
)

SCHEMA_VERSION = 1
"""Version of the serialised Flow; bump on incompatible change."""


class SchemaError(ValueError):
    """A serialised flow could not be read (wrong version or malformed)."""


def _addr(a: Address | None) -> dict[str, Any] | None:
    return None if a is None else {"ip": a.ip, "port": a.port}


def _addr_from(d: dict[str, Any] | None) -> Address | None:
    return None if d is None else Address(d["ip"], d.get("port"))


def endpoint_to_dict(e: Endpoint) -> dict[str, Any]:
    """Serialise an Endpoint."""
    return {
        "ip": e.ip,
        "port": e.port,
        "kind": e.kind.value,
        "namespace": e.namespace,
        "pod_name": e.pod_name,
        "workload": None if e.workload is None else {"kind": e.workload.kind,
                                                      "name": e.workload.name},
        "labels": dict(e.labels),
        "node_name": e.node_name,
        "name": e.name,
    }


def endpoint_from_dict(d: dict[str, Any]) -> Endpoint:
    """Read an Endpoint back."""
    w = d.get("workload")
    return Endpoint(
        ip=d["ip"],
        port=d.get("port"),
        kind=EndpointKind(d.get("kind", "unknown")),
        namespace=d.get("namespace"),
        pod_name=d.get("pod_name"),
        workload=None if not w else Workload(w["kind"], w["name"]),
        labels=tuple(sorted((d.get("labels") or {}).items())),
        node_name=d.get("node_name"),
        name=d.get("name"),
    )


def flow_to_dict(f: Flow) -> dict[str, Any]:
    """Serialise a Flow to JSON-ready dict (with ``schema_version``)."""
    svc = f.destination_service
    return {
        "schema_version": SCHEMA_VERSION,
        "flow_id": f.flow_id,
        "time": f.time,
        "end_time": f.end_time,
        "state": f.state.value,
        "source": endpoint_to_dict(f.source),
        "destination": endpoint_to_dict(f.destination),
        "protocol": f.protocol.value,
        "destination_service": None if svc is None else {
            "namespace": svc.namespace, "name": svc.name, "port_name": svc.port_name,
            "type": svc.type, "frontend_ip": svc.frontend_ip,
            "frontend_port": svc.frontend_port,
        },
        "nat": {
            "original_destination": _addr(f.nat.original_destination),
            "translated_source": _addr(f.nat.translated_source),
        },
        "traffic": {
            "to_destination": {"packets": f.traffic.to_destination.packets,
                               "bytes": f.traffic.to_destination.bytes},
            "to_source": {"packets": f.traffic.to_source.packets,
                          "bytes": f.traffic.to_source.bytes},
        },
        "tcp": None if f.tcp is None else {"state": f.tcp.state, "flags": list(f.tcp.flags)},
        "rtt_us": f.rtt_us,
        "verdict": f.verdict.value,
        "drop_reason_desc": f.drop_reason_desc,
        "is_reply": f.is_reply,
        "observations": [
            {"node_name": o.node_name, "source": o.source, "original": o.original,
             "reply": o.reply, "instance": o.instance}
            for o in f.observations
        ],
        "cni_profile": f.cni_profile,
        "client_key": f.client_key,
        "l7": None if f.l7 is None else l7_to_dict(f.l7),
    }


def l7_to_dict(l7: L7) -> dict[str, Any]:
    """Serialise an L7 record (Hubble-like field names)."""
    d: dict[str, Any] = {"latency_ns": l7.latency_ns, "dns": None, "http": None}
    if l7.dns is not None:
        d["dns"] = {"query": l7.dns.query, "qtypes": list(l7.dns.qtypes), "rcode": l7.dns.rcode,
                    "ips": list(l7.dns.ips), "ttl": l7.dns.ttl, "cnames": list(l7.dns.cnames)}
    if l7.http is not None:
        d["http"] = {"method": l7.http.method, "url": l7.http.url, "host": l7.http.host,
                     "code": l7.http.code, "protocol": l7.http.protocol}
    return d


def l7_from_dict(d: dict[str, Any]) -> L7:
    """Read an L7 record back."""
    dns, http = d.get("dns"), d.get("http")
    return L7(
        dns=None if not dns else DnsInfo(
            query=dns["query"], qtypes=tuple(dns.get("qtypes") or ()), rcode=dns.get("rcode"),
            ips=tuple(dns.get("ips") or ()), ttl=dns.get("ttl"),
            cnames=tuple(dns.get("cnames") or ())),
        http=None if not http else HttpInfo(
            method=http.get("method"), url=http.get("url"), host=http.get("host"),
            code=http.get("code"), protocol=http.get("protocol") or "HTTP/1.1"),
        latency_ns=d.get("latency_ns"),
    )


def flow_from_dict(d: dict[str, Any]) -> Flow:
    """Read a Flow back; raises :class:`SchemaError` on a newer or malformed record."""
    version = d.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaError(
            f"flow schema version {version!r} is newer than this podflow understands "
            f"({SCHEMA_VERSION}); upgrade podflow"
        )
    try:
        svc = d.get("destination_service")
        nat = d.get("nat") or {}
        tr = d.get("traffic") or {}
        tcp = d.get("tcp")
        return Flow(
            time=float(d["time"]),
            end_time=d.get("end_time"),
            state=FlowState(d.get("state", "ended")),
            source=endpoint_from_dict(d["source"]),
            destination=endpoint_from_dict(d["destination"]),
            protocol=Protocol(d["protocol"]),
            destination_service=None if not svc else Service(
                namespace=svc["namespace"], name=svc["name"], port_name=svc.get("port_name"),
                type=svc.get("type", "ClusterIP"), frontend_ip=svc.get("frontend_ip"),
                frontend_port=svc.get("frontend_port"),
            ),
            nat=Nat(_addr_from(nat.get("original_destination")),
                    _addr_from(nat.get("translated_source"))),
            traffic=Traffic(
                Counters(**(tr.get("to_destination") or {})),
                Counters(**(tr.get("to_source") or {})),
            ),
            tcp=None if tcp is None else TcpInfo(tcp.get("state"), tuple(tcp.get("flags", ()))),
            rtt_us=d.get("rtt_us"),
            verdict=Verdict(d.get("verdict", "FORWARDED")),
            drop_reason_desc=d.get("drop_reason_desc"),
            is_reply=bool(d.get("is_reply", False)),
            observations=tuple(
                ObservationPoint(o["node_name"], o["source"], o.get("original"), o.get("reply"),
                                 o.get("instance") or "")
                for o in d.get("observations", ())
            ),
            cni_profile=d.get("cni_profile"),
            flow_id=d.get("flow_id", ""),
            client_key=d.get("client_key", ""),
            l7=None if not d.get("l7") else l7_from_dict(d["l7"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed flow record: {exc}") from exc
