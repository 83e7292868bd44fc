"""``lab verify --live``: the live map, sampled every second, never shows an edge the traffic
did not make.

``lab verify`` judges the store once the agents have settled; a user watching the map (the
UI's live view, ``observe --follow``) sees it while connections are still being merged, when
a view from one vantage point may already be stored and its partner not yet. :func:`watch`
reads the store's merged flows of the last :data:`RECENT` seconds once per ``interval``
(leaving out, as the map does, those not yet reported from both ends before
:func:`~podflow.query.servicemap.settled_time`),
reads the ground truth *afterwards* (so that a connection the store already holds has its
truth record), and reports every edge (:meth:`~podflow.lab.verify.match.Matcher.flow_edge`:
client workload, target, category) that no truth record has, with the flow that drew it.
Infrastructure flows (node to node) and attempts still in flight (an open connection whose
client has not written its record yet) are not judged, as in ``lab verify``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from podflow.lab.state import LabState, lab_dir, lab_store_path
from podflow.lab.truth import read_truth
from podflow.lab.verify.match import Edge, Matcher
from podflow.lab.verify.render import flow_text
from podflow.model.flow import Flow
from podflow.query.filter import FilterSpec
from podflow.query.servicemap import AGENT_STALE, settled_time

RECENT = 30.0
"""Seconds of flows each snapshot reads (what a live map shows)."""


@dataclass
class Snapshot:
    """One reading of the live map."""

    at: float
    """Unix seconds of the reading."""
    flows: int
    """Merged flows judged."""
    wrong: dict[Edge, str] = field(default_factory=dict)
    """Edges the truth does not have -> one flow that drew it."""


@dataclass
class LiveReport:
    """Every snapshot of a :func:`watch`."""

    snapshots: list[Snapshot] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No snapshot showed a wrong edge (and at least one flow was judged)."""
        return any(s.flows for s in self.snapshots) and not any(s.wrong for s in self.snapshots)

    def lines(self) -> list[str]:
        """A summary line, then one line per wrong edge (first time seen, how often)."""
        seen: dict[Edge, tuple[float, int, str]] = {}
        for s in self.snapshots:
            for e, text in s.wrong.items():
                first, n, t = seen.get(e, (s.at, 0, text))
                seen[e] = (first, n + 1, t)
        out = [f"live map: {len(self.snapshots)} snapshots, "
               f"{sum(s.flows for s in self.snapshots)} flows judged, "
               f"{len(seen)} wrong edges"]
        for e, (first, n, text) in sorted(seen.items(), key=lambda x: x[1][0]):
            out.append(f"  wrong edge {e[0]} -> {e[1]} ({e[2]}) in {n} snapshots from "
                       f"{time.strftime('%H:%M:%S', time.localtime(first))}: {text}")
        return out


def judge(name: str, flows: Sequence[Flow], at: float) -> Snapshot:
    """One snapshot: the edges of ``flows`` that lab ``name``'s truth does not have."""
    truth = read_truth(lab_dir(name))
    m = Matcher(truth, LabState.load(name), flows)
    known = {m.record_edge(r) for r in truth.connects}
    snap = Snapshot(at, 0)
    for f in flows:
        if m.is_infrastructure(f) or m.in_flight(f):
            continue
        snap.flows += 1
        e = m.flow_edge(f)
        if e not in known:
            seen = ", ".join(f"{o.node_name}/{o.source}" for o in f.observations)
            snap.wrong.setdefault(e, f"{flow_text(f)} [seen by {seen}]")
    return snap


def watch(name: str, seconds: float, interval: float = 1.0) -> LiveReport:
    """Sample lab ``name``'s live map every ``interval`` seconds for ``seconds``."""
    from podflow.store import open_store
    from podflow.store.base import StoreError

    report = LiveReport()
    stop = time.monotonic() + seconds
    path = lab_store_path(name)
    while time.monotonic() < stop:
        tick = time.monotonic()
        now = time.time()
        try:
            with open_store(path, read_only=True) as st:
                settled = settled_time(now, st.progress(now - AGENT_STALE))
                flows = list(st.flows(FilterSpec(since=now - RECENT, settled=settled)))
        except StoreError:   # not written yet, or busy longer than the lock timeout
            flows = []
        report.snapshots.append(judge(name, flows, now))
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    return report
