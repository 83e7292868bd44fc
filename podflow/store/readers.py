"""Readers first: writers sharing one store file let a waiting reader in.

Several agents write one DuckDB file in turns (one process at a time holds it), each as
soon as the last one closed it; under load they keep it locked almost all the time, and a
reader (the web UI, ``observe``, ``lab verify``) that polls for the lock with a backoff
rarely finds it free: it starved (measured on the 6-node load lab: ``lab verify`` gave up
after its 10 s lock timeout). DuckDB's lock has no queue, so the store adds a cooperative
one: a reader leaves a marker in ``.<name>.readers/`` next to the file while it opens it
(and retries), and a writer about to open the file first waits (up to
:data:`MAX_YIELD` seconds) until no fresh marker is left. Readers are short and a person
is waiting for them; writers only buffer a little longer. A marker older than
:data:`STALE` seconds (a reader killed while waiting) is ignored and removed.

Writers take turns in arrival order too. Each one polls the lock with a backoff, so a
writer that has waited longest polls least often and loses the race to every newcomer:
on the 6-node load lab one agent waited over 100 s while five others wrote. A writer
therefore takes a ticket in ``.<name>.writers/`` (named by its arrival time on the
system-wide monotonic clock) and opens the
file only once its ticket is the oldest live one (:func:`writer_turn`), again bounded: at
its deadline it tries anyway. A ticket whose process is gone, or not touched for
:data:`TICKET_STALE` seconds, does not count.

Example::

    >>> with waiting(path):          # doctest: +SKIP
    ...     con = connect_retrying()  # the reader's own retry loop
    >>> yield_to_readers(path, time.monotonic() + 10)  # doctest: +SKIP
    >>> with writer_turn(path, time.monotonic() + 10):  # doctest: +SKIP
    ...     con = connect_retrying()
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

MAX_YIELD = 5.0
"""Seconds at most a writer waits for readers before it opens anyway."""
STALE = 30.0
"""Seconds after which a reader's marker no longer counts (its reader died)."""
TICKET_STALE = 5.0
"""Seconds after which a writer's ticket no longer counts (a waiting writer touches its own
every second)."""
_POLL = 0.02


def markers_dir(path: Path) -> Path:
    """Where readers waiting for ``path`` leave their markers."""
    return path.parent / f".{path.name}.readers"


@contextmanager
def waiting(path: Path) -> Iterator[None]:
    """Mark a reader as waiting for ``path`` while the block runs (best effort: a marker
    that cannot be written only loses the priority)."""
    marker: Path | None = markers_dir(path) / f"{os.getpid()}-{threading.get_ident()}"
    try:
        assert marker is not None
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
    except OSError:
        marker = None
    try:
        yield
    finally:
        if marker is not None:
            with suppress(OSError):
                marker.unlink()


def readers_waiting(path: Path, now: float | None = None) -> bool:
    """Whether a reader is waiting for ``path`` (stale markers are removed)."""
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(markers_dir(path)))
    except OSError:
        return False
    fresh = False
    for e in entries:
        try:
            if now - e.stat().st_mtime < STALE:
                fresh = True
            else:
                os.unlink(e.path)
        except OSError:
            continue
    return fresh


def yield_to_readers(path: Path, deadline: float) -> float:
    """Wait while readers wait for ``path``, up to :data:`MAX_YIELD` s and ``deadline``
    (``time.monotonic()``); return the seconds waited."""
    start = time.monotonic()
    end = min(deadline, start + MAX_YIELD)
    while time.monotonic() < end and readers_waiting(path):
        time.sleep(_POLL)
    return time.monotonic() - start


def tickets_dir(path: Path) -> Path:
    """Where writers waiting for ``path`` queue their tickets."""
    return path.parent / f".{path.name}.writers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # another user's process: it exists
        return True
    return True


def _first(path: Path, now: float) -> str | None:
    """The oldest live ticket's name (dead and stale ones are removed)."""
    try:
        entries = list(os.scandir(tickets_dir(path)))
    except OSError:
        return None
    live = []
    for e in entries:
        try:
            pid = int(e.name.split("-")[1])
            if abs(now - e.stat().st_mtime) < TICKET_STALE and _alive(pid):
                live.append(e.name)
                continue
            os.unlink(e.path)
        except (OSError, ValueError, IndexError):
            continue
    return min(live, default=None)


@contextmanager
def writer_turn(path: Path, deadline: float) -> Iterator[float]:
    """Wait (up to ``deadline``, ``time.monotonic()``) until every writer that came
    earlier has had its turn at ``path``; the block opens the file. Yields the seconds
    waited. Best effort: a ticket that cannot be written only loses the order."""
    # the system-wide monotonic clock orders arrivals of every process on the host, and a
    # wall-clock step cannot reorder them
    ticket: Path | None = tickets_dir(path) / (
        f"{time.monotonic_ns():020d}-{os.getpid()}-{threading.get_ident()}")
    start = time.monotonic()
    try:
        assert ticket is not None
        ticket.parent.mkdir(exist_ok=True)
        ticket.touch()
    except OSError:
        ticket = None
    try:
        touched = start
        while ticket is not None and time.monotonic() < deadline:
            now = time.monotonic()
            if now - touched >= 1.0:
                with suppress(OSError):
                    ticket.touch()
                touched = now
            first = _first(path, time.time())
            if first is None or first >= ticket.name:
                break
            time.sleep(_POLL)
        yield time.monotonic() - start
    finally:
        if ticket is not None:
            with suppress(OSError):
                ticket.unlink()
