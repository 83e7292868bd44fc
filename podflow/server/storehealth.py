"""The store's part of ``GET /api/health``: can the store be read now, and if not, why.

The server never keeps the store open, so a damaged file does not stop it from starting:
every request opens the store, and a damaged one answers 503 with the error's ``kind``.
:class:`StoreHealth` answers the health endpoint from a cheap probe
(:meth:`~podflow.store.base.FlowStore.check`) and from the last damage a request met
(the probe reads only part of the file), which it keeps only while the file is the same
file, unchanged: once it is restored, moved aside or rewritten, health is probed afresh, so
the server recovers by itself.

Example::

    health = StoreHealth(Path("flows.duckdb"))
    body, ok = health.report(lock_timeout=1.0)
    # {"path": ..., "exists": True, "ok": False, "state": "corrupt", "kind": "corrupt",
    #  "error": "flow store ... is corrupt ...: restore it from a backup, or move it aside
    #  (podflow then starts a new store at that path)", "last_rowid": None}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podflow.store import open_store
from podflow.store.base import StoreError

Stamp = tuple[tuple[int, int, int], ...]


def stamp(path: Path) -> Stamp:
    """Identity and version of a store file and its WAL (inode, size, mtime), () if absent."""
    out = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass(frozen=True)
class Fault:
    """A damaged-store error a request met, and the file it was met on."""

    kind: str
    error: str
    stamp: Stamp


class StoreHealth:
    """What the health endpoint says about one store (see the module doc); thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fault: Fault | None = None
        self._lock = threading.Lock()

    def record(self, exc: StoreError) -> None:
        """Remember a non-retryable store error a request met (others pass by themselves)."""
        if exc.retryable:
            return
        with self._lock:
            self._fault = Fault(exc.kind, str(exc), stamp(self.path))

    def report(self, lock_timeout: float = 1.0) -> tuple[dict[str, Any], bool]:
        """The health body's ``store`` object and whether the store is usable."""
        body: dict[str, Any] = {"path": str(self.path), "exists": self.path.exists()}
        body.update(open_store(self.path, read_only=True, lock_timeout=lock_timeout).check())
        with self._lock:
            fault = self._fault
            if fault is not None and fault.stamp != stamp(self.path):
                fault = self._fault = None
        if body["ok"] and fault is not None:
            body.update(ok=False, state=fault.kind, kind=fault.kind, error=fault.error)
        return body, bool(body["ok"])
