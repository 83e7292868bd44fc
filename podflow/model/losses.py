"""Counting what could not be handled, by reason: the one shape every loss takes.

podflow's rule for hostile or broken input (``docs``: "no input stops a loop"): a record that
cannot be decoded, resolved or enriched is counted with a short reason and skipped. Decoders
check their bounds and count what they skip in a :class:`Losses`; whatever still raises is
caught at the agent loop's one guarded place and counted there. Reasons are snake_case labels:
they become ``podflow_lost_events_total{reason=...}`` (a source's stats key ``lost_<reason>``).

Example::

    >>> losses = Losses()
    >>> losses.count("short_ipv4_header")
    >>> losses.count("short_ipv4_header", 2)
    >>> losses.as_stats()
    {'lost_short_ipv4_header': 3}
"""

from __future__ import annotations

import re
import threading

_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")


def reason_label(text: str) -> str:
    """``text`` as a metric-safe reason: lower snake_case, at most 64 characters.

    >>> reason_label("process: ValueError")
    'process_valueerror'
    """
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:64].rstrip("_")
    if not out or not out[0].isalpha():
        out = ("r_" + out)[:64]
    return out


class DecodeError(ValueError):
    """Raised by a decoder for input it refuses; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        """``reason``: snake_case label; ``detail``: what was wrong, for the log."""
        self.reason = reason_label(reason)
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class Losses:
    """Counts by reason. Increments from one thread at a time per key are enough here (the
    GIL makes ``dict`` updates atomic); readers get a copy."""

    def __init__(self) -> None:
        """Empty."""
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, reason: str, n: int = 1) -> None:
        """Add ``n`` losses of ``reason`` (a snake_case label, see :func:`reason_label`)."""
        key = reason if _REASON.fullmatch(reason) else reason_label(reason)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def total(self) -> int:
        """All losses counted."""
        with self._lock:
            return sum(self._counts.values())

    def by_reason(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self._counts)

    def as_stats(self) -> dict[str, int]:
        """The counts as a source's stats keys (``lost_<reason>``), as the health report and
        ``podflow_lost_events_total`` read them."""
        return {f"lost_{k}": v for k, v in sorted(self.by_reason().items())}
