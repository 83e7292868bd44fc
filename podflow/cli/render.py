"""How ``podflow observe`` and ``podflow map`` print flows and edges.

Formats: ``table`` (rich), ``compact`` (one line per flow, like ``hubble observe``),
``json`` (one array of :func:`~podflow.model.serialize.flow_to_dict`) and ``jsonl`` (one
object per line). Every function writes to the ``file``/console it is given, so callers
(and tests) choose where output goes. Table and compact show the L7 record in one phrase
(``DNS A db.example.com -> 192.168.100.10 NOERROR``, ``HTTP GET /api 200 3.1ms``) and colour
the verdict (green FORWARDED, red DROPPED, yellow ERROR) when the output is a terminal
(compact honours ``NO_COLOR``); the drop reason follows the verdict in parentheses.

Example::

    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> f = Flow(time=0.0, source=Endpoint("10.0.0.1", 1), destination=Endpoint("10.0.0.2", 2),
    ...          protocol=Protocol.TCP)
    >>> compact_line(f, utc=True)
    'Jan 01 00:00:00.000  10.0.0.1:1 -> 10.0.0.2:2  TCP 0 B  FORWARDED ended'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from podflow.model.flow import Address, Endpoint, Flow, Verdict
from podflow.model.serialize import flow_to_dict
from podflow.query.servicemap import Edge

FLOW_FORMATS = ("table", "json", "jsonl", "compact")
"""Accepted ``-o`` values of ``podflow observe``."""
MAP_FORMATS = ("table", "json")
"""Accepted ``-o`` values of ``podflow map``."""


def fmt_time(t: float, *, utc: bool = False) -> str:
    """``Nov 21 06:09:02.123`` in local time (or UTC)."""
    dt = datetime.fromtimestamp(t, UTC) if utc else datetime.fromtimestamp(t)
    return dt.strftime("%b %d %H:%M:%S.%f")[:-3]


def fmt_bytes(n: int) -> str:
    """Human-readable byte count: ``512 B``, ``1.5 kB``, ``3.2 MB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover - loop always returns


def fmt_endpoint(e: Endpoint) -> str:
    """``ns/pod 10.244.0.5:41000`` or just ``10.0.0.1:80`` when the name is the IP."""
    addr = str(Address(e.ip, e.port))
    name = e.display()
    return addr if name == e.ip else f"{name} {addr}"


def fmt_nat(f: Flow) -> str:
    """``via 10.96.0.20:9000``, ``snat 172.18.0.1:61234``, both, or empty."""
    parts = []
    if f.nat.original_destination:
        parts.append(f"via {f.nat.original_destination}")
    if f.nat.translated_source:
        parts.append(f"snat {f.nat.translated_source}")
    return " ".join(parts)


def fmt_service(f: Flow) -> str:
    """``namespace/name[:port_name]`` of the service, or empty."""
    s = f.destination_service
    if s is None:
        return ""
    return f"{s.namespace}/{s.name}" + (f":{s.port_name}" if s.port_name else "")


RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED"}
"""DNS response codes as printed."""
VERDICT_STYLES = {Verdict.FORWARDED: "green", Verdict.DROPPED: "bold red",
                  Verdict.ERROR: "yellow", Verdict.UNKNOWN: "dim"}
"""Rich style of each verdict."""
_ANSI = {Verdict.FORWARDED: "32", Verdict.DROPPED: "1;31", Verdict.ERROR: "33",
         Verdict.UNKNOWN: "2"}


def fmt_latency(ns: int) -> str:
    """``120ns``, ``850µs``, ``3.1ms``, ``1.20s``."""
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.2f}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e3:.0f}µs" if ns >= 1000 else f"{ns}ns"


def fmt_l7(f: Flow) -> str:
    """The L7 record in one phrase, or empty: ``DNS A db.example.com -> 192.168.100.10
    NOERROR``, ``HTTP GET /api 200 3.1ms``."""
    l7 = f.l7
    if l7 is None:
        return ""
    parts = []
    if l7.dns is not None:
        d = l7.dns
        text = f"DNS {','.join(d.qtypes) or '?'} {d.query}"
        if d.ips or d.cnames:
            text += " -> " + ",".join((*d.cnames, *d.ips))
        if d.rcode is None:
            text += " (no response)"
        else:
            text += " " + RCODE_NAMES.get(d.rcode, f"RCODE{d.rcode}")
        parts.append(text)
    if l7.http is not None:
        h = l7.http
        text = f"HTTP {h.method or '?'} {h.url or '/'}"
        text += f" {h.code}" if h.code is not None else " (no response)"
        parts.append(text)
    if l7.latency_ns is not None:
        parts.append(fmt_latency(l7.latency_ns))
    return " ".join(parts)


def _color(out: TextIO) -> bool:
    return out.isatty() and "NO_COLOR" not in os.environ


def _nodes(f: Flow) -> str:
    return ",".join(dict.fromkeys(o.node_name for o in f.observations))


def _status(f: Flow, color: bool = False) -> str:
    extra = f" ({f.drop_reason_desc})" if f.drop_reason_desc else ""
    verdict = f.verdict.value
    if color:
        verdict = f"\x1b[{_ANSI[f.verdict]}m{verdict}\x1b[0m"
    return f"{verdict} {f.state.value}{extra}"


def _status_cell(f: Flow) -> Text:
    text = Text(f.verdict.value, style=VERDICT_STYLES[f.verdict])
    text.append(f" {f.state.value}")
    if f.drop_reason_desc:
        text.append(f" ({f.drop_reason_desc})", style=VERDICT_STYLES[f.verdict])
    return text


def compact_line(f: Flow, *, utc: bool = False, color: bool = False) -> str:
    """One line per flow, in the spirit of ``hubble observe -o compact``.

    ``color`` wraps the verdict in ANSI colours.
    """
    parts = [fmt_time(f.time, utc=utc), f"{fmt_endpoint(f.source)} -> "
             f"{fmt_endpoint(f.destination)}"]
    for extra in (fmt_service(f), fmt_nat(f)):
        if extra:
            parts.append(extra)
    parts.append(f"{f.protocol.value} {fmt_bytes(f.traffic.bytes)}")
    if l7 := fmt_l7(f):
        parts.append(l7)
    parts.append(_status(f, color))
    if f.observations:
        parts.append(f"[{_nodes(f)}]")
    return "  ".join(parts)


def flows_table(flows: Sequence[Flow], *, header: bool = True) -> Table:
    """A rich table of flows: time, source, destination, service, NAT, proto, bytes ..."""
    t = Table(show_header=header, header_style="bold", box=None, pad_edge=False)
    for col in ("TIME", "SOURCE", "DESTINATION", "SERVICE", "NAT", "PROTO", "BYTES", "L7",
                "VERDICT", "NODES"):
        t.add_column(col, overflow="fold")
    for f in flows:
        t.add_row(fmt_time(f.time), fmt_endpoint(f.source), fmt_endpoint(f.destination),
                  fmt_service(f), fmt_nat(f), f.protocol.value, fmt_bytes(f.traffic.bytes),
                  fmt_l7(f), _status_cell(f), _nodes(f))
    return t


def print_flows(flows: Sequence[Flow], fmt: str, out: TextIO, *, header: bool = True,
                stream: bool = False) -> None:
    """Print ``flows`` in ``fmt``; ``stream`` prints json as jsonl (for ``--follow``)."""
    if fmt == "json" and not stream:
        out.write(json.dumps([flow_to_dict(f) for f in flows], indent=2) + "\n")
    elif fmt in ("json", "jsonl"):
        for f in flows:
            out.write(json.dumps(flow_to_dict(f)) + "\n")
    elif fmt == "compact":
        color = _color(out)
        for f in flows:
            out.write(compact_line(f, color=color) + "\n")
    elif flows or header:
        Console(file=out, width=200 if not out.isatty() else None).print(
            flows_table(flows, header=header))
    out.flush()


def edges_table(edges: Sequence[Edge]) -> Table:
    """Service-map edges as a rich table (used by ``podflow map`` and the demo)."""
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col in ("SOURCE", "DESTINATION", "SERVICE", "PORT", "CONNECTIONS", "BYTES", "SNAT",
                "VERDICTS", "LAST SEEN"):
        t.add_column(col, overflow="fold")
    for e in edges:
        t.add_row(e.source.display(), e.destination.display(), e.service or "",
                  f"{e.port}/{e.protocol}" if e.port is not None else e.protocol,
                  str(e.connections), fmt_bytes(e.bytes), ",".join(e.snat),
                  " ".join(f"{v}:{n}" for v, n in e.verdicts), fmt_time(e.last_seen))
    return t


def print_edges(edges: Sequence[Edge], fmt: str, out: TextIO) -> None:
    """Print service-map edges as a rich table or a JSON array."""
    if fmt == "json":
        out.write(json.dumps([e.to_dict() for e in edges], indent=2) + "\n")
        return
    Console(file=out, width=200 if not out.isatty() else None).print(edges_table(edges))
