"""``lab verify`` scoring: recall and precision of connections and of workload edges.

:func:`evaluate` is pure: it matches every successful ``connect`` record of the window to at
most one stored flow (:class:`~podflow.lab.verify.match.Matcher`) and counts, per category,
connection recall and precision and edge recall and precision, keeping at most
:data:`~podflow.lab.verify.report.MAX_MISMATCHES` mismatches per category and kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from podflow.lab.state import LabState
from podflow.lab.truth import ConnectRecord, Truth
from podflow.lab.verify.match import Edge, Matcher
from podflow.lab.verify.render import flow_text, record_text
from podflow.lab.verify.report import (
    CATEGORIES,
    MAX_MISMATCHES,
    Mismatch,
    Ratio,
    Score,
    VerifyReport,
    Window,
)
from podflow.model.flow import Flow


def evaluate(truth: Truth, state_snapshot: LabState, flows: Sequence[Flow],
             window: Window) -> VerifyReport:
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
    return VerifyReport(window, scores, mism)
