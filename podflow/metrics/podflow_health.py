"""``podflow``: the agents' own health, from their reports in the store.

Every agent writes a health report to the store every few seconds (``AgentStats``: sources,
lost events per cause, per-source counters). This handler exposes the latest report of each
agent, as the agent counted it (so an agent restart is a counter reset):

- ``podflow_lost_events_total{node, source, reason}``: events or flows lost, by cause:

  ========================  ==================  ==========================================
  where in the report       ``source``          ``reason``
  ========================  ==================  ==========================================
  ``queue_lost[s]``         ``s``               ``queue_full`` (agent queue overflowed)
  ``store_lost``            ``store``           ``store_buffer_full`` (store stayed busy)
  ``store_rejected``        ``store``           ``store_rejected`` (unstorable flows)
  ``source_stats[s]``:
  ``overruns``              ``s``               ``netlink_overrun`` (kernel dropped events;
                                                counts overruns, each losing >= 1 event)
  ``kernel_drops``,         ``s``               ``packet_drop`` (capture buffer drops)
  ``packet_drops``, ``drops``
  ``lost_<why>``            ``s``               ``<why>`` (any other cause a source counts)
  ``lost[s][why]``          ``s``               ``<why>`` (records the agent loop could not
                                                handle and skipped; ``s`` may be
                                                ``inventory`` for Kubernetes objects)
  ========================  ==================  ==========================================

  Every running source gets a ``queue_full`` series (0 until something is lost), so
  ``rate()`` alerts work from the start.
- ``podflow_source_up{node, source}``: 1 when the agent's report is fresh (younger than
  ``staleAfter`` seconds, default 60) and the source reported no error, else 0;
- ``podflow_agent_last_report_timestamp_seconds{node}``: when the agent last reported;
- the Kubernetes API watches of each agent (its report's ``inventory``), per ``resource``
  (Pod, Service, EndpointSlice, ...): ``podflow_inventory_synced{node, resource}`` (1 once
  listed), ``podflow_inventory_resource_version_age_seconds{node, resource}`` (how old the
  newest version seen was when the agent reported; bookmarks keep it low on a quiet
  cluster), ``podflow_inventory_relists_total`` and ``podflow_inventory_errors_total``.

The series of an agent that stopped reporting disappear once its last report is older than
the TTL (like the flow series of deleted pods).

Example::

    >>> lost_events({"sources": ["conntrack"], "queue_lost": {"conntrack": 3},
    ...              "source_stats": {"conntrack": {"overruns": 2}}})
    [('conntrack', 'netlink_overrun', 2.0), ('conntrack', 'queue_full', 3.0)]
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from podflow.metrics.base import Handler

_STAT_REASONS = {"overruns": "netlink_overrun", "kernel_drops": "packet_drop",
                 "packet_drops": "packet_drop", "drops": "packet_drop"}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def lost_events(status: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(source, reason, count)`` of one agent report, sorted (see the module doc)."""
    acc: dict[tuple[str, str], float] = {}

    def add(source: str, reason: str, v: Any) -> None:
        n = _num(v)
        if n is not None:
            acc[(source, reason)] = acc.get((source, reason), 0.0) + n

    for src in status.get("sources") or ():
        add(str(src), "queue_full", 0)
    for src, n in (status.get("queue_lost") or {}).items():
        add(str(src), "queue_full", n)
    add("store", "store_buffer_full", status.get("store_lost"))
    add("store", "store_rejected", status.get("store_rejected"))
    for src, reasons in (status.get("lost") or {}).items():
        for reason, v in (reasons.items() if isinstance(reasons, Mapping) else ()):
            add(str(src), str(reason), v)
    for src, stats in (status.get("source_stats") or {}).items():
        for key, v in (stats.items() if isinstance(stats, Mapping) else ()):
            if key in _STAT_REASONS:
                add(str(src), _STAT_REASONS[key], v)
            elif key.startswith("lost_") and len(key) > 5:
                add(str(src), key[5:], v)
    return sorted((s, r, n) for (s, r), n in acc.items())


def sources_up(status: Mapping[str, Any], fresh: bool) -> list[tuple[str, float]]:
    """``(source, 1.0 or 0.0)`` for every source of one agent report."""
    stats = status.get("source_stats") or {}
    names = list(dict.fromkeys([*(status.get("sources") or ()), *stats]))
    out = []
    for name in names:
        st = stats.get(name)
        ok = fresh and not (isinstance(st, Mapping) and st.get("error"))
        out.append((str(name), 1.0 if ok else 0.0))
    return out


def watches(status: Mapping[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """``(resource, {synced, age, relists, errors})`` of one agent report's API watches
    (numbers only; a missing age is left out)."""
    out = []
    inv = status.get("inventory")
    for kind, h in sorted(inv.items() if isinstance(inv, Mapping) else ()):
        if not isinstance(h, Mapping):
            continue
        vals = {"synced": 1.0 if h.get("synced") is True else 0.0}
        for key, name in (("resource_version_age", "age"), ("relists", "relists"),
                          ("errors", "errors")):
            n = _num(h.get(key))
            if n is not None:
                vals[name] = n
        out.append((str(kind), vals))
    return out


class PodflowHealthHandler(Handler):
    """Exposes the agents' latest health reports (see the module doc)."""

    name = "podflow"
    help = ("podflow_lost_events_total{node,source,reason}, podflow_source_up{node,source}, "
            "podflow_agent_last_report_timestamp_seconds{node}, podflow_inventory_*"
            "{node,resource}: agents' health reports.")
    options_help = {"staleafter": "seconds after which an agent's sources count as down "
                                  "(default 60)"}
    uses_context = False

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the collector; nothing is exposed until reports arrive."""
        super().__init__(registry, options, ttl)
        try:
            self.stale_after = float(options.get("staleafter", "60"))
        except ValueError:
            raise ValueError(f"podflow:staleAfter must be a number of seconds, got "
                             f"{options['staleafter']!r}") from None
        self._lock = threading.Lock()
        self._reports: list[Mapping[str, Any]] = []
        self._now = 0.0
        registry.register(self)

    def update_statuses(self, statuses: Sequence[Mapping[str, Any]], now: float) -> None:
        """Keep the latest report of every agent."""
        with self._lock:
            self._reports, self._now = list(statuses), now

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Metric families built from the latest reports (prometheus_client Collector)."""
        lost, up, last, synced, age, relists, errors = self.describe()
        with self._lock:
            reports, now = self._reports, self._now
        for r in reports:
            node, at = str(r.get("node", "")), float(r.get("time") or 0.0)
            if self.ttl > 0 and now - at > self.ttl:
                continue
            status = r.get("status") or {}
            last.add_metric([node], at)
            for src, value in sources_up(status, now - at <= self.stale_after):
                up.add_metric([node, src], value)
            for src, reason, n in lost_events(status):
                lost.add_metric([node, src, reason], n)
            for kind, vals in watches(status):
                synced.add_metric([node, kind], vals["synced"])
                for family, key in ((age, "age"), (relists, "relists"), (errors, "errors")):
                    if key in vals:
                        family.add_metric([node, kind], vals[key])
        yield from (lost, up, last, synced, age, relists, errors)

    def describe(self) -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
                                GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily,
                                CounterMetricFamily]:
        """The (empty) metric families, for the registry's duplicate check."""
        res = ["node", "resource"]
        return (CounterMetricFamily("podflow_lost_events", "Events or flows lost, by cause",
                                    labels=["node", "source", "reason"]),
                GaugeMetricFamily("podflow_source_up", "1 when the source runs and reports",
                                  labels=["node", "source"]),
                GaugeMetricFamily("podflow_agent_last_report_timestamp_seconds",
                                  "Unix time of the agent's last health report",
                                  labels=["node"]),
                GaugeMetricFamily("podflow_inventory_synced",
                                  "1 once the agent has listed the resource", labels=res),
                GaugeMetricFamily("podflow_inventory_resource_version_age_seconds",
                                  "Age of the newest resourceVersion the agent's watch saw",
                                  labels=res),
                CounterMetricFamily("podflow_inventory_relists",
                                    "Lists after a 410 Gone (compacted watch history)",
                                    labels=res),
                CounterMetricFamily("podflow_inventory_errors",
                                    "Failed list/watch requests (each retried)", labels=res))
