"""Readers first: a writer waits while a reader waits for the store file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from podflow.store import readers
from podflow.store.duckdb import DuckDBStore
from tests.unit.store.test_duckdb import _flows


def test_a_writer_waits_for_a_waiting_reader_and_ignores_a_dead_ones(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    assert not readers.readers_waiting(path)
    assert readers.yield_to_readers(path, time.monotonic() + 5) < 0.5
    release = threading.Event()

    def reader() -> None:
        with readers.waiting(path):
            release.wait(5)

    t = threading.Thread(target=reader)
    t.start()
    while not readers.readers_waiting(path):
        time.sleep(0.01)
    threading.Timer(0.3, release.set).start()
    waited = readers.yield_to_readers(path, time.monotonic() + 5)
    t.join(5)
    assert 0.2 < waited < readers.MAX_YIELD and not readers.readers_waiting(path)
    dead = readers.markers_dir(path) / "1-1"   # a reader killed while it waited
    dead.touch()
    os.utime(dead, (time.time() - readers.STALE - 1,) * 2)
    assert not readers.readers_waiting(path) and not dead.exists()


def test_the_store_leaves_no_marker_behind(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    with DuckDBStore(path) as st:
        st.write(_flows("n1", 3))
    with DuckDBStore(path, read_only=True) as st:
        assert len(list(st.flows())) == 3
    assert list(readers.markers_dir(path).iterdir()) == []
