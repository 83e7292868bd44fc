"""A bounded hand-off between a source thread and the runner loop that never blocks.

A source must never wait on a slow consumer (the kernel would drop netlink messages while it
waits) and the runner must never grow without bound. :class:`LossyQueue` does both: ``put``
returns at once, and when the queue is full the batch is dropped and its size added to
``lost``, which the runner surfaces as a first-class number.

Example::

    >>> q: LossyQueue[int] = LossyQueue(maxsize=1)
    >>> q.put([1, 2], "event"), q.put([3], "event")
    (True, False)
    >>> q.lost
    1
"""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LossyQueue(Generic[T]):
    """Bounded queue of ``(items, kind)`` batches; a full queue counts items as lost."""

    def __init__(self, maxsize: int = 1024) -> None:
        """``maxsize`` is in batches (a netlink read is one batch)."""
        self._q: queue.Queue[tuple[list[T], str]] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self.lost = 0
        """Items dropped because the queue was full."""
        self.dropped_batches = 0
        """Batches dropped because the queue was full."""
        self.lost_by: dict[str, int] = {}
        """Items lost per producer (the part of ``kind`` before the first ``/``)."""

    def put(self, items: list[T], kind: str) -> bool:
        """Enqueue without blocking; False (and ``lost`` grows) when full."""
        try:
            self._q.put_nowait((items, kind))
            return True
        except queue.Full:
            with self._lock:
                self.lost += len(items)
                self.dropped_batches += 1
                who = kind.split("/", 1)[0]
                self.lost_by[who] = self.lost_by.get(who, 0) + len(items)
            return False

    def get(self, timeout: float) -> tuple[list[T], str] | None:
        """Next batch, or None after ``timeout`` seconds with nothing queued."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        """Approximate number of queued batches."""
        return self._q.qsize()
