"""Parse the ``--since`` / ``--until`` values of the reading commands into Unix seconds.

Accepted forms:

- RFC 3339 / ISO 8601: ``2026-11-21T10:00:00Z``, ``2026-11-21T10:00:00+01:00``
  (a time without a zone is taken as UTC);
- Unix seconds: ``1795000000`` or ``1795000000.25``;
- a duration before now: ``30s``, ``5m``, ``2h``, ``1d``, ``1w``, or combinations like
  ``1h30m`` (``ago`` may follow: ``5m ago``).

Every result is a finite number: ``nan``, ``inf`` and durations too long to count
(``9999...9w``) are refused with ValueError rather than read as "no bound".

Example::

    >>> parse_time("5m", now=1000.0)
    700.0
    >>> parse_time("1970-01-01T00:01:00Z")
    60.0
    >>> parse_time("1h30m", now=10000.0)
    4600.0
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90s``, ``5m`` or ``1h30m``; ValueError if malformed.

    >>> parse_duration("2h")
    7200.0
    """
    t = text.strip().lower()
    if not _DURATION.match(t):
        raise ValueError(f"bad duration {text!r}: expected e.g. 30s, 5m, 2h, 1d or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(t))
    if not math.isfinite(seconds):
        raise ValueError(f"bad duration {text!r}: too long")
    return seconds


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds for an RFC 3339 time, a Unix timestamp or a duration before ``now``.

    Raises ValueError with the accepted forms when ``text`` is none of them.
    """
    t = text.strip()
    if t.endswith(" ago"):
        t = t[:-4].strip()
    if not t:
        raise ValueError("empty time: expected RFC 3339, Unix seconds, or a duration like 5m")
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"bad time {text!r}: not a finite number")
        return value
    if _DURATION.match(t.lower()):
        value = (time.time() if now is None else now) - parse_duration(t)
        if not math.isfinite(value):
            raise ValueError(f"bad time {text!r}: too far in the past")
        return value
    try:
        dt = datetime.fromisoformat(t.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: expected RFC 3339 (2026-11-21T10:00:00Z), Unix seconds, "
            "or a duration before now (30s, 5m, 2h, 1d)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
