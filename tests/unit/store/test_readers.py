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


def test_writers_take_turns_in_arrival_order(tmp_path: Path) -> None:
    """A writer that came later waits for the earlier one's turn; a ticket left by a dead
    process or not touched for TICKET_STALE does not hold anyone up; a deadline bounds it."""
    path = tmp_path / "flows.duckdb"
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def writer(name: str, hold: threading.Event | None) -> None:
        with readers.writer_turn(path, time.monotonic() + 5):
            order.append(name)
            if hold is not None:
                first_in.set()
                hold.wait(5)

    early = threading.Thread(target=writer, args=("early", release))
    early.start()
    assert first_in.wait(5)
    late = threading.Thread(target=writer, args=("late", None))
    late.start()
    time.sleep(0.3)
    assert order == ["early"]                    # the later one waits its turn
    release.set()
    early.join(5)
    late.join(5)
    assert order == ["early", "late"]
    assert list(readers.tickets_dir(path).iterdir()) == []

    d = readers.tickets_dir(path)
    (d / f"{0:020d}-{2**22 + 12345}-1").touch()   # no such process
    stale = d / f"{1:020d}-{os.getpid()}-1"
    stale.touch()
    os.utime(stale, (time.time() - readers.TICKET_STALE - 1,) * 2)
    with readers.writer_turn(path, time.monotonic() + 5) as waited:
        assert waited < 1.0
    assert list(d.iterdir()) == []
    live = d / f"{2:020d}-{os.getpid()}-1"        # alive and fresh: waited for until the
    live.touch()                                    # deadline, then the writer goes ahead
    with readers.writer_turn(path, time.monotonic() + 0.3) as waited:
        assert 0.25 < waited < 2.0
    assert list(d.iterdir()) == [live]
