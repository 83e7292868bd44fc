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

Example::

    >>> with waiting(path):          # doctest: +SKIP
    ...     con = connect_retrying()  # the reader's own retry loop
    >>> yield_to_readers(path, time.monotonic() + 10)  # doctest: +SKIP
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
