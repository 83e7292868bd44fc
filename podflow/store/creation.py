"""Creating a store file safely when several processes start at once.

DuckDB does not serialise two processes creating the same file: one creates it, another
opens the still empty file first and fails with "not a valid DuckDB database file", and
when the creator then fails to take the file's lock it gives up too, leaving an empty file
that every later open refuses (measured with DuckDB 2.0: four processes connecting to a new
path at once end like this a few times in a hundred). podflow therefore opens a store that
does not exist yet, or is no bigger than DuckDB's three header blocks, while holding an
exclusive ``flock`` on the store's directory (:func:`creation_lock`): a creator finishes
before anyone else looks, and an empty file found under the lock is a failed creation,
which a writer removes and creates again and a reader takes as "no store yet".

Example::

    with creation_lock(Path("/data/flows.duckdb"), deadline=time.monotonic() + 10):
        ...   # look at the file, create it
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HEADER_BYTES = 3 * 4096
"""Size of DuckDB's file headers: a file no bigger than this holds no data yet."""


def unborn(path: Path) -> bool:
    """Whether ``path`` does not exist or holds no more than DuckDB's headers."""
    try:
        return path.stat().st_size <= HEADER_BYTES
    except FileNotFoundError:
        return True


def empty(path: Path) -> bool:
    """Whether ``path`` exists and has no byte at all (a creation that failed)."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return False


@contextmanager
def creation_lock(path: Path, deadline: float) -> Iterator[None]:
    """Hold the creation lock of the store at ``path`` (a ``flock`` on its directory).

    Raises TimeoutError when another process holds it past ``deadline`` (``time.monotonic``).
    """
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:   # a directory we may not read: go without (DuckDB still locks the file)
        yield
        return
    try:
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is being created by another process") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)   # releases the lock
