"""Ground truth written by the lab's workload processes, and its reader.

Every workload process (one per pod, one per external host) appends JSON lines to its own
file under ``<lab dir>/truth/``, flushed after each record, so a crash loses at most one line.
Record types:

- ``start``: the process started; says which pod/external it serves, with its IP, node and
  labels (a history of pods that survives restarts, which ``state.json`` does not keep);
- ``connect``: one client connection attempt, with the local address it used and its outcome.
  ``target`` is always in one of the canonical forms (``service/NS/NAME:PORT`` ...): for a
  target written by name (``dns/NAME:PORT``) it is what the name resolved to, and
  ``spec_target`` keeps the name form. Resolving a name is itself a ``connect`` record with
  ``purpose`` ``dns`` (a UDP exchange with the cluster DNS, e.g. target
  ``service/kube-system/kube-dns:53``). TCP attempts carry their HTTP exchange;
- ``accept``: one accepted TCP connection or received UDP datagram, with the peer as the
  server saw it (after any NAT);
- ``dns``: one query the cluster DNS server answered;
- ``unresolved``: an attempt at a name target that did not resolve to a lab address (no
  connection was made).

Example::

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> w = TruthWriter(d / "truth" / "x.jsonl")
    >>> w.write({"type": "accept", "time": 1.0, "server": "external/db",
    ...          "server_ip": "192.168.100.10", "local_port": 5432, "peer_ip": "172.18.0.2",
    ...          "peer_port": 40000, "proto": "tcp"})
    >>> w.close()
    >>> read_truth(d).accepts[0].peer_port
    40000
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

CATEGORIES_BY_TARGET = {"service": "clusterip", "loadbalancer": "loadbalancer",
                        "nodeport": "nodeport", "pod": "podip", "external": "egress"}
"""Traffic target kind (the part before the first ``/``) -> connection category."""


@dataclass(frozen=True, slots=True)
class StartRecord:
    """A workload process started for a pod (``who`` = ``NS/POD``) or ``external/NAME``."""

    time: float
    """Unix seconds."""
    who: str
    """``NS/POD`` or ``external/NAME``."""
    ip: str
    """The pod's or external's IP."""
    workload: str | None = None
    """``NS/WORKLOAD`` for pods."""
    node: str | None = None
    """Node name for pods."""
    labels: dict[str, str] = field(default_factory=dict)
    """Pod labels."""


@dataclass(frozen=True, slots=True)
class ConnectRecord:
    """One client connection attempt."""

    time: float
    """Unix seconds at connect start."""
    client: str
    """``NS/POD`` or ``external/NAME``."""
    client_ip: str
    """The client's own IP."""
    target: str
    """The target as written in the spec, e.g. ``service/shop/backend:9000``."""
    category: str
    """``clusterip``, ``loadbalancer``, ``nodeport``, ``podip`` or ``egress``."""
    proto: str
    """``tcp`` or ``udp``."""
    remote_ip: str
    """Address connected to (ClusterIP, load-balancer VIP, node IP, pod IP, external IP)."""
    remote_port: int
    """Port connected to."""
    local_ip: str | None
    """Local address after connect (None if never bound)."""
    local_port: int | None
    """Local port after connect/bind (None if never bound)."""
    outcome: str
    """``ok``, ``refused``, ``timeout`` or ``error``."""
    error: str | None = None
    """Error text for outcomes other than ok."""
    duration: float = 0.0
    """Seconds from connect start to close."""
    workload: str | None = None
    """``NS/WORKLOAD`` of the client pod (``external/NAME`` for externals)."""
    node: str | None = None
    """Node of the client pod (None for externals)."""
    purpose: str = "traffic"
    """``traffic`` (a spec entry's connection) or ``dns`` (the resolution of a name target)."""
    spec_target: str | None = None
    """The target as written when it was a name (``dns/backend:9000``), else None."""
    dns_query: str | None = None
    """The name that answered (``backend.shop.svc.cluster.local``), else the last one asked."""
    dns_queries: list[str] = field(default_factory=list)
    """Every name asked, in order (search-domain expansion)."""
    dns_answers: list[str] = field(default_factory=list)
    """Addresses in the answer."""
    dns_rcode: int | None = None
    """Response code of the answer (of the last question without one)."""
    resolved_ip: str | None = None
    """For a name target: the address it resolved to (= ``remote_ip``)."""
    http_method: str | None = None
    """HTTP method sent (TCP attempts)."""
    http_path: str | None = None
    """HTTP request target sent."""
    http_status: int | None = None
    """Status code received, None if no response."""
    http_expect: int | None = None
    """Status the traffic entry expected, if it said."""
    http_latency: float | None = None
    """Seconds from the request's last byte sent to the response's first byte received."""


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One query the cluster DNS server answered."""

    time: float
    """Unix seconds when the query arrived."""
    server: str
    """``NS/POD`` of the DNS server."""
    server_ip: str
    """The server's own IP."""
    local_port: int
    """The port it arrived on (53)."""
    peer_ip: str
    """Client address as the server saw it."""
    peer_port: int
    """Client port as the server saw it."""
    proto: str
    """``udp`` or ``tcp``."""
    query: str
    """The name asked."""
    qtype: str
    """``A``, ``AAAA`` ..."""
    rcode: int
    """Response code sent."""
    answers: list[str] = field(default_factory=list)
    """Addresses answered."""
    ttl: int | None = None
    """TTL of the answers."""
    id: int = 0
    """Message id."""


@dataclass(frozen=True, slots=True)
class UnresolvedRecord:
    """An attempt at a name target whose name gave no lab address (nothing connected)."""

    time: float
    """Unix seconds."""
    client: str
    """``NS/POD`` or ``external/NAME``."""
    client_ip: str
    """The client's own IP."""
    spec_target: str
    """The target as written, e.g. ``dns/nothing.shop.svc.cluster.local:80``."""
    error: str
    """Why: ``NXDOMAIN``, ``timeout``, ``no lab address for ...``."""
    dns_queries: list[str] = field(default_factory=list)
    """Every name asked."""
    dns_rcode: int | None = None
    """Last response code."""
    workload: str | None = None
    """``NS/WORKLOAD`` of the client."""
    node: str | None = None
    """Node of the client pod."""


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    """One accepted TCP connection or UDP datagram, seen by a server."""

    time: float
    """Unix seconds at accept."""
    server: str
    """``NS/POD`` or ``external/NAME``."""
    server_ip: str
    """The server's own IP."""
    local_port: int
    """The port it listened on."""
    peer_ip: str
    """Peer address as the server saw it (after SNAT, if any)."""
    peer_port: int
    """Peer port as the server saw it."""
    proto: str
    """``tcp`` or ``udp``."""
    workload: str | None = None
    """``NS/WORKLOAD`` of the server pod."""
    node: str | None = None
    """Node of the server pod."""


@dataclass
class Truth:
    """Every record of a lab, each list sorted by time."""

    starts: list[StartRecord] = field(default_factory=list)
    """Process starts (pod history)."""
    connects: list[ConnectRecord] = field(default_factory=list)
    """Client attempts."""
    accepts: list[AcceptRecord] = field(default_factory=list)
    """Server accepts."""
    dns: list[DnsRecord] = field(default_factory=list)
    """Queries answered by the cluster DNS."""
    unresolved: list[UnresolvedRecord] = field(default_factory=list)
    """Name targets that did not resolve."""
    bad_lines: int = 0
    """Lines that could not be parsed (a torn last line after a kill, for instance)."""

    @property
    def first_time(self) -> float | None:
        """Time of the earliest connect or accept record."""
        times = [r.time for r in self.connects[:1]] + [r.time for r in self.accepts[:1]]
        return min(times) if times else None


class TruthWriter:
    """Appends JSON records to one file, flushing after each."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and flush it to the OS."""
        if self._fh is None:
            return
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the file (later writes are dropped)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fields(cls: type[Any], d: dict[str, Any]) -> dict[str, Any]:
    names = set(cls.__dataclass_fields__)
    return {k: v for k, v in d.items() if k in names}


Record = StartRecord | ConnectRecord | AcceptRecord | DnsRecord | UnresolvedRecord
_TYPES: dict[str, type[Any]] = {"connect": ConnectRecord, "accept": AcceptRecord,
                                "start": StartRecord, "dns": DnsRecord,
                                "unresolved": UnresolvedRecord}
_LISTS = {ConnectRecord: "connects", AcceptRecord: "accepts", StartRecord: "starts",
          DnsRecord: "dns", UnresolvedRecord: "unresolved"}


def parse_record(d: dict[str, Any]) -> Record | None:
    """Turn one decoded JSON line into a typed record (None for unknown types)."""
    cls = _TYPES.get(str(d.get("type")))
    if cls is None:
        return None
    rec: Record = cls(**_fields(cls, d))
    return rec


def read_truth(lab_path: Path) -> Truth:
    """Read every ``<lab_path>/truth/*.jsonl`` file into a :class:`Truth`."""
    truth = Truth()
    tdir = lab_path / "truth"
    if not tdir.is_dir():
        return truth
    for path in sorted(tdir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                rec = parse_record(json.loads(line))
            except (ValueError, TypeError) as exc:
                log.debug("%s: bad truth line: %s", path, exc)
                truth.bad_lines += 1
                continue
            if rec is not None:
                getattr(truth, _LISTS[type(rec)]).append(rec)
    for name in _LISTS.values():
        getattr(truth, name).sort(key=lambda r: r.time)
    return truth
