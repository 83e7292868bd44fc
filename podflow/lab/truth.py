"""Ground truth written by the lab's workload processes, and its reader.

Every workload process (one per pod, one per external host) appends JSON lines to its own
file under ``<lab dir>/truth/``, flushed after each record, so a crash loses at most one line.
Three record types:

- ``start``: the process started; says which pod/external it serves, with its IP, node and
  labels (a history of pods that survives restarts, which ``state.json`` does not keep);
- ``connect``: one client connection attempt, with the local address it used and its outcome;
- ``accept``: one accepted TCP connection or received UDP datagram, with the peer as the
  server saw it (after any NAT).

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

CATEGORIES_BY_TARGET = {"service": "clusterip", "nodeport": "nodeport", "pod": "podip",
                        "external": "egress"}
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
    """``clusterip``, ``nodeport``, ``podip`` or ``egress``."""
    proto: str
    """``tcp`` or ``udp``."""
    remote_ip: str
    """Address connected to (ClusterIP, node IP, pod IP, external IP)."""
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


def parse_record(d: dict[str, Any]) -> StartRecord | ConnectRecord | AcceptRecord | None:
    """Turn one decoded JSON line into a typed record (None for unknown types)."""
    kind = d.get("type")
    if kind == "connect":
        return ConnectRecord(**_fields(ConnectRecord, d))
    if kind == "accept":
        return AcceptRecord(**_fields(AcceptRecord, d))
    if kind == "start":
        return StartRecord(**_fields(StartRecord, d))
    return None


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
            if isinstance(rec, ConnectRecord):
                truth.connects.append(rec)
            elif isinstance(rec, AcceptRecord):
                truth.accepts.append(rec)
            elif isinstance(rec, StartRecord):
                truth.starts.append(rec)
    truth.starts.sort(key=lambda r: r.time)
    truth.connects.sort(key=lambda r: r.time)
    truth.accepts.sort(key=lambda r: r.time)
    return truth
