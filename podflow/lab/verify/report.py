"""``lab verify`` results: the scores per category and the mismatches that explain them.

Plain data with their JSON form (:meth:`VerifyReport.to_dict`, what ``lab verify -o json``
prints); :func:`~podflow.lab.verify.score.evaluate` fills them in,
:mod:`podflow.lab.verify.render` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("clusterip", "nodeport", "loadbalancer", "podip", "host-network", "same-node",
              "cross-node", "egress", "restarted-pods", "overall")
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
class VerifyReport:
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
