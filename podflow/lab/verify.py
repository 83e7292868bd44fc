"""``podflow lab verify``: compare what the store holds with the lab's ground truth.

:func:`evaluate` is pure: it matches every successful ``connect`` record of the window to at
most one stored :class:`~podflow.model.flow.Flow`, strictly (client identity at the time,
service, backend selected by the service, NAT tuples, and the server's own ``accept``
record), and scores recall and precision of connections and of workload edges per category.
:func:`run_verify` loads a lab, evaluates and prints the report.

Example::

    report = evaluate(read_truth(lab_dir("shop")), LabState.load("shop"), flows,
                      Window(start, time.time() - 15))
    report.ok  # True only when every score is 100%
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from podflow.lab.datapath import datapath_for
from podflow.lab.state import LabState, lab_dir, lab_store_path
from podflow.lab.traffic import nodeport_service, parse_target
from podflow.lab.truth import AcceptRecord, ConnectRecord, Truth, read_truth
from podflow.model.flow import Address, Endpoint, EndpointKind, Flow

CATEGORIES = ("clusterip", "nodeport", "podip", "same-node", "cross-node", "egress",
              "restarted-pods", "overall")
"""Report rows, in print order."""
MAX_MISMATCHES = 10
"""Mismatches kept per category and kind."""


@dataclass(frozen=True, slots=True)
class Window:
    """The time range that is judged: truth records and flows starting in [start, end]."""

    start: float
    """First truth record's time."""
    end: float
    """Now minus the settle time."""


@dataclass
class Ratio:
    """``hit`` out of ``total``; 0/0 counts as perfect."""

    hit: int = 0
    """Numerator."""
    total: int = 0
    """Denominator."""

    @property
    def value(self) -> float:
        """The ratio, 1.0 when there is nothing to count."""
        return 1.0 if self.total == 0 else self.hit / self.total

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"hit": self.hit, "total": self.total, "value": round(self.value, 4)}


@dataclass
class Score:
    """The four numbers of one category."""

    conn_recall: Ratio = field(default_factory=Ratio)
    """Truth connections matched by a flow / truth connections."""
    conn_precision: Ratio = field(default_factory=Ratio)
    """Flows matching a truth connection / flows judged."""
    edge_recall: Ratio = field(default_factory=Ratio)
    """Truth edges with a matched connection / truth edges."""
    edge_precision: Ratio = field(default_factory=Ratio)
    """Stored edges that exist in the truth / stored edges."""

    def ratios(self) -> dict[str, Ratio]:
        """Name -> ratio."""
        return {"connections_recall": self.conn_recall,
                "connections_precision": self.conn_precision,
                "edges_recall": self.edge_recall, "edges_precision": self.edge_precision}


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A truth connection without its flow (missed) or a flow without truth (unexpected)."""

    kind: str
    """``missed`` or ``unexpected``."""
    categories: tuple[str, ...]
    """Categories it counts against."""
    what: str
    """The record or flow, as text."""
    nearest: str | None
    """The nearest flow (for missed) or truth record (for unexpected)."""
    reason: str
    """Why they did not match."""


@dataclass
class Report:
    """Scores per category plus the mismatches that explain them."""

    window: Window
    """What was judged."""
    scores: dict[str, Score]
    """Category -> score (every name of :data:`CATEGORIES`)."""
    mismatches: list[Mismatch] = field(default_factory=list)
    """At most :data:`MAX_MISMATCHES` per category and kind."""

    @property
    def ok(self) -> bool:
        """True when every ratio of every category is 100%."""
        return all(r.hit == r.total for s in self.scores.values() for r in s.ratios().values())

    def to_dict(self) -> dict[str, Any]:
        """What ``lab verify -o json`` prints."""
        return {"ok": self.ok, "window": {"start": self.window.start, "end": self.window.end},
                "categories": {c: {k: r.to_dict() for k, r in s.ratios().items()}
                               for c, s in self.scores.items()},
                "mismatches": [{"kind": m.kind, "categories": list(m.categories),
                                "what": m.what, "nearest": m.nearest, "reason": m.reason}
                               for m in self.mismatches]}


TOLERANCE = 5.0
"""Seconds a flow's start (or an accept) may differ from the truth record's time."""
_SVC_CATS = ("clusterip", "nodeport", "podip", "egress")
_NODEISH = (EndpointKind.NODE, EndpointKind.UNKNOWN, EndpointKind.HOST_NETWORK_POD)
Edge = tuple[str, str, str]
"""(client ``NS/WORKLOAD`` or ``external/NAME``, target, category)."""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A pod that existed at some point (from ``start`` truth records or the state)."""

    key: str
    """``NS/POD``."""
    workload: str
    """``NS/WORKLOAD``."""
    node: str | None
    """Node it ran on."""
    ip: str
    """Its IP."""
    labels: tuple[tuple[str, str], ...]
    """Its labels."""


def record_text(r: ConnectRecord) -> str:
    """One line describing a truth record."""
    return (f"{r.time:.3f} {r.proto} {r.client} {r.local_ip}:{r.local_port} -> {r.target} "
            f"({r.remote_ip}:{r.remote_port}) {r.outcome}")


def flow_text(f: Flow) -> str:
    """One line describing a flow: ends, service, NAT."""
    s, d = f.source, f.destination
    ds = f.destination_service
    svc = f" svc={ds.namespace}/{ds.name}" if ds else ""
    nat = f" orig_dst={f.nat.original_destination}" if f.nat.original_destination else ""
    nat += f" snat={f.nat.translated_source}" if f.nat.translated_source else ""
    return (f"{f.time:.3f} {f.protocol} {s.kind}:{s.display()} {Address(s.ip, s.port)} -> "
            f"{d.kind}:{d.display()} {Address(d.ip, d.port)}{svc}{nat}")


class Matcher:
    """Indexes truth, state and flows once; answers the per-record questions of evaluate."""

    def __init__(self, truth: Truth, state: LabState, flows: Sequence[Flow]) -> None:
        self.state, self.flows = state, flows
        self.pods: dict[str, PodInfo] = {}
        for st in truth.starts:
            if not st.who.startswith("external/") and st.workload:
                self.pods[st.who] = PodInfo(st.who, st.workload, st.node, st.ip,
                                            tuple(sorted(st.labels.items())))
        for p in state.pods:
            key = f"{p.namespace}/{p.name}"
            self.pods[key] = PodInfo(key, f"{p.namespace}/{p.workload}", p.node, p.ip,
                                     tuple(sorted(p.labels.items())))
        self.current = {f"{p.namespace}/{p.name}" for p in state.pods}
        self.ext_by_ip = {e.ip: e.name for e in state.externals}
        self.node_ips = {n.name: n.ip for n in state.nodes}
        self.node_by_ip = {n.ip: n.name for n in state.nodes}
        self.infra_ips = set(self.node_by_ip)
        for n in state.nodes:
            self.infra_ips |= {n.vtep_ip or "", str(ipaddress.ip_network(n.podCIDR)[1])}
        self.accepts: dict[str, list[AcceptRecord]] = {}
        for a in truth.accepts:
            self.accepts.setdefault(a.server, []).append(a)
        self.truth_by_key: dict[tuple[str, str, int | None], list[ConnectRecord]] = {}
        for r in truth.connects:
            # the socket's own address (a host-network client's route may pick cni0's)
            self.truth_by_key.setdefault((r.proto.upper(), r.local_ip or r.client_ip,
                                          r.local_port),
                                         []).append(r)
        self.by_key: dict[tuple[str, str, int | None], list[int]] = {}
        for i, f in enumerate(flows):
            self.by_key.setdefault((str(f.protocol), f.source.ip, f.source.port), []).append(i)

    # -- truth side ----------------------------------------------------------------------
    def _candidates(self, r: ConnectRecord) -> list[int]:
        idx = self.by_key.get((r.proto.upper(), r.local_ip or r.client_ip, r.local_port), [])
        near = [i for i in idx if abs(self.flows[i].time - r.time) < TOLERANCE]
        return sorted(near, key=lambda i: abs(self.flows[i].time - r.time))

    def _selected(self, r: ConnectRecord) -> tuple[list[PodInfo], str | None, int]:
        """Eligible backends, the service ``NS/NAME`` (if any) and the backend port."""
        t = parse_target(r.target)
        if t.kind == "pod":
            wl = f"{t.namespace}/{t.name}"
            return [p for p in self.pods.values() if p.workload == wl], None, t.port
        if t.kind == "service":
            svc = self.state.service(t.namespace or "", t.name or "")
            sp = next(p for p in svc.ports if p.port == t.port)
        else:
            svc, sp = nodeport_service(self.state, t.port)
        pods = [p for p in self.pods.values() if p.key.split("/")[0] == svc.namespace
                and svc.selector and all(dict(p.labels).get(k) == v
                                         for k, v in svc.selector.items())]
        return pods, f"{svc.namespace}/{svc.name}", sp.targetPort

    def check(self, r: ConnectRecord, f: Flow, need_accept: bool = True
              ) -> tuple[str | None, str | None]:
        """(why ``f`` is not ``r``'s flow or None, the server ``NS/POD``/``external/NAME``).

        ``need_accept`` also requires the server's accept record (when it wrote any).
        """
        src = f.source
        if r.client.startswith("external/"):
            if src.kind is not EndpointKind.EXTERNAL or src.ip != r.client_ip:
                return f"source is {src.kind}:{src.display()}, want {r.client}", None
        elif (host := self.host_network_node(r.client)) is not None:
            # a host-network pod has its node's address: the flow can only name the node
            if not ((src.kind is EndpointKind.NODE and (src.name or src.node_name) == host)
                    or (src.kind is EndpointKind.HOST_NETWORK_POD
                        and f"{src.namespace}/{src.pod_name}" == r.client)):
                return (f"source identity is {src.kind}:{src.display()}, want node {host} "
                        f"(host-network pod {r.client})"), None
        elif src.kind is not EndpointKind.POD or f"{src.namespace}/{src.pod_name}" != r.client:
            return f"source identity is {src.kind}:{src.display()}, want pod {r.client}", None
        dst, svc = f.destination, f.destination_service
        if r.category == "egress":
            ext = self.state.external(parse_target(r.target).name or "")
            if (dst.ip, dst.port) != (ext.ip, r.remote_port) or svc is not None:
                return f"destination {Address(dst.ip, dst.port)} is not {r.target}", None
            ts = f.nat.translated_source
            if not datapath_for(self.state.cni).masquerade:
                if ts is not None:  # pods reach the outside directly: nothing to undo
                    return f"masquerade source is {ts}, want none on {self.state.cni}", None
            elif self.host_network_node(r.client) is None:
                want = self.node_ips.get(r.node or self.pods.get(r.client, _NOPOD).node or "")
                if ts is None or ts.ip != want:
                    return f"masquerade source is {ts}, want node IP {want}", None
            server = f"external/{ext.name}"
        else:
            pods, service, port = self._selected(r)
            got = f"{svc.namespace}/{svc.name} ({svc.type})" if svc else None
            want_type = "NodePort" if r.category == "nodeport" else "ClusterIP"
            if got != (f"{service} ({want_type})" if service else None):
                return f"service is {got}, want {service} ({want_type})", None
            info = self.pods.get(f"{dst.namespace}/{dst.pod_name}")
            if dst.kind is not EndpointKind.POD or info not in pods or info is None:
                return f"backend {dst.kind}:{dst.display()} is not one of {r.target}", None
            if dst.ip != info.ip or dst.port != port:
                return f"backend address {Address(dst.ip, dst.port)}, want {info.ip}:{port}", None
            if r.category == "podip" and dst.ip != r.remote_ip:
                return f"backend {dst.ip} is not the pod IP targeted ({r.remote_ip})", None
            od = f.nat.original_destination
            if r.category == "nodeport" and od != Address(r.remote_ip, r.remote_port):
                return f"original destination {od}, want {r.remote_ip}:{r.remote_port}", None
            server = info.key
        accepts = self.accepts.get(server) if need_accept else None
        if accepts:
            seen = f.nat.translated_source or Address(src.ip, src.port)
            if not any(a.proto == r.proto and a.local_port == dst.port
                       and Address(a.peer_ip, a.peer_port) == seen
                       and abs(a.time - r.time) < TOLERANCE for a in accepts):
                return f"{server} accepted nothing from {seen} (wrong backend or NAT)", None
        return None, server

    def _guess_server(self, r: ConnectRecord) -> str | None:
        """Which server accepted ``r`` according to the accept records (for unmatched ones)."""
        if r.category == "egress":
            return None
        best: tuple[float, float, str] | None = None
        for p in self._selected(r)[0]:
            for a in self.accepts.get(p.key, []):
                dt = abs(a.time - r.time)
                if a.proto != r.proto or dt >= TOLERANCE:
                    continue
                if a.peer_ip == (r.local_ip or r.client_ip) and a.peer_port == r.local_port:
                    rank = 0.0  # no SNAT: the peer is the client itself
                elif a.peer_ip in self.infra_ips and dt < 1.0:
                    rank = 1.0 if a.peer_port == r.local_port else 2.0  # SNAT, maybe new port
                else:
                    continue
                if best is None or (rank, dt) < best[:2]:
                    best = (rank, dt, p.key)
        return best[2] if best else None

    def _tags(self, client_pod: str | None, client_node: str | None, server: str | None,
              category: str) -> set[str]:
        tags = {category, "overall"}
        info = self.pods.get(server or "")
        if info is not None and client_node is not None and info.node is not None:
            tags.add("same-node" if client_node == info.node else "cross-node")
        if (client_pod and client_pod not in self.current) or (
                info is not None and info.key not in self.current):
            tags.add("restarted-pods")
        return tags

    def record_tags(self, r: ConnectRecord, server: str | None = None) -> set[str]:
        """Categories of a truth record (``server`` if known, else guessed from accepts)."""
        ext = r.client.startswith("external/")
        client_node = self.node_by_ip.get(r.remote_ip) if ext else (
            r.node or self.pods.get(r.client, _NOPOD).node)
        return self._tags(None if ext else r.client, client_node,
                          server or self._guess_server(r), r.category)

    def match(self, r: ConnectRecord, used: dict[int, ConnectRecord]
              ) -> tuple[int | None, str, set[str]]:
        """Pick ``r``'s flow (its index) among unused ones, record it in ``used``.

        Returns (index or None, why not, the record's categories).
        """
        reason = "no flow from this client address and port"
        for i in self._candidates(r):
            why, server = self.check(r, self.flows[i])
            if why is None and i not in used:
                used[i] = r
                return i, "", self.record_tags(r, server)
            if why is None:
                why = "its flow was already matched to another truth record"
            reason = reason if reason != "no flow from this client address and port" else why
        return None, reason, self.record_tags(r)

    def nearest_flow(self, r: ConnectRecord) -> Flow | None:
        """The flow from the same client address and port closest in time, if any."""
        idx = self.by_key.get((r.proto.upper(), r.local_ip or r.client_ip, r.local_port), [])
        return min((self.flows[i] for i in idx), key=lambda f: abs(f.time - r.time),
                   default=None)

    def record_edge(self, r: ConnectRecord) -> Edge:
        """The truth edge of a record."""
        t = parse_target(r.target)
        if t.kind == "nodeport":
            svc = nodeport_service(self.state, t.port)[0]
            target = f"service/{svc.namespace}/{svc.name}"
        elif t.kind == "external":
            target = f"external/{t.name}"
        else:
            target = f"{t.kind}/{t.namespace}/{t.name}"
        host = self.host_network_node(r.client)
        client = f"node/{host}" if host is not None else (
            r.workload or self.pods.get(r.client, _NOPOD).workload or r.client)
        return client, target, r.category

    def host_network_node(self, client: str) -> str | None:
        """The node of a host-network client pod (its IP is the node's), else None."""
        info = self.pods.get(client)
        if info is None or info.node is None or self.node_ips.get(info.node) != info.ip:
            return None
        return info.node

    # -- flow side -----------------------------------------------------------------------
    def is_infrastructure(self, f: Flow) -> bool:
        """Both ends are nodes or unknown addresses (node-to-node, VXLAN ...): not judged."""
        return f.source.kind in _NODEISH and f.destination.kind in _NODEISH

    def _end_name(self, e: Endpoint, pod_prefix: str) -> str:
        if e.kind is EndpointKind.POD:
            info = self.pods.get(f"{e.namespace}/{e.pod_name}")
            wl = e.workload.name if e.workload else (info.workload.split("/")[1] if info
                                                     else e.pod_name)
            return f"{pod_prefix}{e.namespace}/{wl}"
        if e.ip in self.ext_by_ip and e.kind is EndpointKind.EXTERNAL:
            return f"external/{self.ext_by_ip[e.ip]}"
        if e.kind is EndpointKind.NODE and (e.name or e.node_name):
            return f"node/{e.name or e.node_name}"
        return f"{e.kind}/{e.ip}"

    def flow_category(self, f: Flow) -> str:
        """The category a flow claims: its service type, egress, pod IP or unknown."""
        if f.destination_service is not None:
            return "nodeport" if f.destination_service.type == "NodePort" else "clusterip"
        if f.destination.kind is EndpointKind.EXTERNAL:
            return "egress"
        return "podip" if f.destination.kind is EndpointKind.POD else "unknown"

    def flow_edge(self, f: Flow) -> Edge:
        """The edge a flow claims."""
        svc = f.destination_service
        target = f"service/{svc.namespace}/{svc.name}" if svc else self._end_name(
            f.destination, "pod/")
        return self._end_name(f.source, ""), target, self.flow_category(f)

    def flow_tags(self, f: Flow) -> set[str]:
        """Categories of an unmatched flow, from what it claims."""
        s, d, od = f.source, f.destination, f.nat.original_destination
        client_pod = f"{s.namespace}/{s.pod_name}" if s.kind is EndpointKind.POD else None
        client_node = s.node_name if client_pod else (
            self.node_by_ip.get(od.ip) if od is not None else None)
        server = f"{d.namespace}/{d.pod_name}" if d.kind is EndpointKind.POD else None
        tags = self._tags(client_pod, client_node, server, self.flow_category(f))
        return tags - {"unknown"}

    def _truth_near(self, f: Flow) -> list[ConnectRecord]:
        recs = self.truth_by_key.get((str(f.protocol), f.source.ip, f.source.port), [])
        return sorted((r for r in recs if abs(f.time - r.time) < TOLERANCE),
                      key=lambda r: abs(r.time - f.time))

    def excused(self, f: Flow, judged: Callable[[ConnectRecord], bool]) -> bool:
        """True if ``f`` is the flow of an attempt that is not judged (failed, too recent).

        A failed attempt (refused, timed out) may never have reached a backend, so any flow
        from its client socket is its flow; a too-recent successful one must match fully.
        """
        return any(not judged(r) and (r.outcome != "ok" or
                                      self.check(r, f, need_accept=True)[0] is None)
                   for r in self._truth_near(f))

    def explain_flow(self, f: Flow) -> tuple[ConnectRecord | None, str]:
        """The nearest truth record of an unmatched flow and why it is not that one's."""
        recs = self._truth_near(f)
        if not recs:
            return None, "no truth record from this source address and port within 5s"
        why = self.check(recs[0], f)[0] or "duplicate: another flow already matched this record"
        return recs[0], why


_NOPOD = PodInfo("", "", None, "", ())


def evaluate(truth: Truth, state_snapshot: LabState, flows: Sequence[Flow],
             window: Window) -> Report:
    """Match truth against flows and score them (pure; see the module docstring)."""
    m = Matcher(truth, state_snapshot, flows)
    scores = {c: Score() for c in CATEGORIES}
    mism: list[Mismatch] = []
    shown: dict[tuple[str, str], int] = {}

    def note(kind: str, tags: set[str], what: str, nearest: str | None, reason: str) -> None:
        cats = tuple(c for c in CATEGORIES if c in tags)
        if any(shown.get((kind, c), 0) < MAX_MISMATCHES for c in cats):
            for c in cats:
                shown[(kind, c)] = shown.get((kind, c), 0) + 1
            mism.append(Mismatch(kind, cats, what, nearest, reason))

    judged = [r for r in truth.connects if window.start <= r.time <= window.end]
    good = [r for r in judged if r.outcome == "ok"]
    truth_edges: dict[str, set[Edge]] = {c: set() for c in CATEGORIES}
    hit_edges: dict[str, set[Edge]] = {c: set() for c in CATEGORIES}
    all_edges = {m.record_edge(r) for r in judged}
    used: dict[int, ConnectRecord] = {}
    matched_tags: dict[int, set[str]] = {}
    for r in good:
        idx, reason, tags = m.match(r, used)
        edge = m.record_edge(r)
        for c in tags:
            scores[c].conn_recall.total += 1
            truth_edges[c].add(edge)
            if idx is not None:
                scores[c].conn_recall.hit += 1
                hit_edges[c].add(edge)
        if idx is not None:
            matched_tags[idx] = tags
        else:
            near = m.nearest_flow(r)
            note("missed", tags, record_text(r), flow_text(near) if near else None, reason)

    stored: dict[str, set[Edge]] = {c: set() for c in CATEGORIES}
    judged_ids = {id(r) for r in good}
    for i, f in enumerate(flows):
        if not window.start - 1.0 <= f.time <= window.end or m.is_infrastructure(f):
            continue
        rec = used.get(i)
        if rec is None and m.excused(f, lambda r: id(r) in judged_ids):
            continue
        tags = matched_tags[i] if rec is not None else m.flow_tags(f)
        for c in tags:
            scores[c].conn_precision.total += 1
            scores[c].conn_precision.hit += rec is not None
            stored[c].add(m.flow_edge(f))
        if rec is None:
            why, reason = m.explain_flow(f)
            note("unexpected", tags, flow_text(f), record_text(why) if why else None, reason)

    for c in CATEGORIES:
        scores[c].edge_recall = Ratio(len(hit_edges[c]), len(truth_edges[c]))
        scores[c].edge_precision = Ratio(len(stored[c] & all_edges), len(stored[c]))
        for e in sorted(truth_edges[c] - hit_edges[c]):
            note("missed", {c}, f"edge {e[0]} -> {e[1]} ({e[2]})", None, "no matched connection")
        for e in sorted(stored[c] - all_edges):
            note("unexpected", {c}, f"edge {e[0]} -> {e[1]} ({e[2]})", None, "not in truth")
    return Report(window, scores, mism)


def _cell(r: Ratio) -> str:
    if r.total == 0:
        return "[dim]-[/dim]"
    color = "green" if r.hit == r.total else "red"
    return f"[{color}]{100 * r.value:5.1f}%[/{color}] ({r.hit}/{r.total})"


def print_report(report: Report, name: str) -> None:
    """Print the report as rich tables (scores, then mismatches per category)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"lab {name}: store vs ground truth "
                        f"({time.strftime('%H:%M:%S', time.localtime(report.window.start))}"
                        f" - {time.strftime('%H:%M:%S', time.localtime(report.window.end))})")
    for col in ("category", "conn recall", "conn precision", "edge recall", "edge precision"):
        table.add_column(col)
    for c, s in report.scores.items():
        table.add_row(c, *(_cell(r) for r in s.ratios().values()))
    console.print(table)
    for mm in report.mismatches:
        console.print(f"[red]{mm.kind}[/red] [{', '.join(mm.categories)}] {mm.what}\n"
                      f"    reason: {mm.reason}" + (f"\n    nearest: {mm.nearest}"
                                                     if mm.nearest else ""), highlight=False)
    verdict = "[green]PASS[/green]" if report.ok else "[red]FAIL[/red]"
    console.print(f"{verdict}: every category at 100%" if report.ok else f"{verdict}")


def run_verify(name: str, output: str = "table", settle: float = 15.0) -> int:
    """``podflow lab verify NAME``: 0 if everything is 100%, 1 if not, 2 on usage errors."""
    import sys

    def fail(msg: str) -> int:
        print(f"lab verify: {msg}", file=sys.stderr)
        return 2

    if output not in ("table", "json"):
        return fail(f"unknown output {output!r} (table or json)")
    try:
        state = LabState.load(name)
    except FileNotFoundError as exc:
        return fail(str(exc))
    truth = read_truth(lab_dir(name))
    first = truth.first_time
    if first is None:
        return fail(f"no ground truth in {lab_dir(name) / 'truth'} (is traffic running?)")
    window = Window(first, time.time() - settle)
    if not any(window.start <= r.time <= window.end and r.outcome == "ok"
               for r in truth.connects):
        return fail(f"no successful connection older than {settle:g}s in the ground truth yet")
    store = lab_store_path(name)
    if not store.exists():
        return fail(f"no store at {store} (were agents started?)")
    from podflow.store.duckdb import DuckDBStore

    with DuckDBStore(store, read_only=True) as st:
        flows = list(st.flows())
    report = evaluate(truth, state, flows, window)
    if output == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, name)
    return 0 if report.ok else 1
