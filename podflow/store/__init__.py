"""Flow stores: the :class:`~podflow.store.base.FlowStore` protocol, its backends, and the
one follower (:mod:`podflow.store.follow`).

:func:`open_store` is the only place callers get a backend from; everything else uses the
protocol, so a second backend (ClickHouse) is an edit here, not in every caller.

Example::

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "flows.duckdb")
    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> f = Flow(1.0, Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 2), Protocol.TCP)
    >>> with open_store(path) as store:
    ...     store.write([f]), isinstance(store, FlowStore)
    (1, True)
    >>> open_store(path, read_only=True).flows() == [f]
    True
"""

from __future__ import annotations

from pathlib import Path

from podflow.store.base import FlowStore

DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds an operation waits for a store other processes hold, unless told otherwise."""


def open_store(path: str | Path, *, read_only: bool = False,
               lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> FlowStore:
    """The flow store at ``path`` (today always the embedded DuckDB file).

    ``read_only`` stores refuse to write and raise
    :class:`~podflow.store.base.StoreMissing` when there is no store yet; ``lock_timeout``
    bounds how long one operation waits for other processes (then
    :class:`~podflow.store.base.StoreBusy`). Nothing is held open between operations.
    """
    # imported here, so that importing the protocol does not load the backend
    from podflow.store.duckdb import DuckDBStore

    return DuckDBStore(path, read_only=read_only, lock_timeout=lock_timeout)


__all__ = ["DEFAULT_LOCK_TIMEOUT", "FlowStore", "open_store"]
