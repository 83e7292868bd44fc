"""BufferedWriter: busy stores keep flows for retry, rejected flows leave, bounds count loss."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podflow.agent.writer import BufferedWriter
from podflow.store.base import FlowRejected, StoreBusy
from tests.unit.store.test_duckdb import _flows


@dataclass(frozen=True)
class Item:
    """Stands in for a Flow: the writer never looks inside, FlowRejected reads flow_id."""

    name: str
    flow_id: str = "id"


class FlakyStore:
    """Busy for the first ``busy`` writes, then stores everything except items named 'bad'."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.rows: list[str] = []

    def write(self, flows: Sequence[Any]) -> int:
        if self.busy > 0:
            self.busy -= 1
            raise StoreBusy("locked")
        good = [f.name for f in flows if f.name != "bad"]
        self.rows.extend(good)
        errors = [(i, f, "malformed") for i, f in enumerate(flows) if f.name == "bad"]
        if errors:
            raise FlowRejected(len(good), errors)
        return len(good)


def items(*names: str) -> list[Item]:
    return [Item(n) for n in names]


def test_busy_store_keeps_flows_until_it_is_free() -> None:
    st = FlakyStore(busy=2)
    w = BufferedWriter(lambda: st)
    w.add(items("a", "b"))
    assert w.flush() == 0 and w.pending == 2 and w.failures == 1
    assert w.flush() == 0 and w.failures == 2
    assert w.flush() == 2 and w.pending == 0 and st.rows == ["a", "b"] and w.lost == 0


def test_rejected_flows_are_counted_and_not_retried_forever() -> None:
    st = FlakyStore(busy=0)
    w = BufferedWriter(lambda: st)
    w.add(items("a", "bad", "c"))
    assert w.flush() == 2
    assert w.pending == 0 and w.rejected == 1 and st.rows == ["a", "c"]
    w.add(items("d"))
    assert w.flush() == 1 and st.rows == ["a", "c", "d"]


def test_full_buffer_drops_oldest_and_counts_them() -> None:
    st = FlakyStore(busy=10)
    w = BufferedWriter(lambda: st, max_buffer=3)
    w.add(items("1", "2", "3", "4", "5"))
    assert w.pending == 3 and w.lost == 2
    st.busy = 0
    assert w.flush() == 3 and st.rows == ["3", "4", "5"]


def test_a_damaged_store_is_said_once_backed_off_and_recovered(tmp_path: Path) -> None:
    """Not a DuckDB file: no busy-retry every flush; flows stay buffered; once the file is
    moved aside they go into a fresh store."""
    from podflow.store.duckdb import DuckDBStore

    path = tmp_path / "flows.duckdb"
    path.write_bytes(b"this is not a database" * 1000)
    w = BufferedWriter(lambda: DuckDBStore(path, lock_timeout=30))
    w.add(_flows("node1", 2))
    started = time.monotonic()
    assert w.flush() == 0
    assert time.monotonic() - started < 10, "a damaged store was waited on as a locked one"
    assert (w.state, w.failures, w.pending) == ("not_duckdb", 1, 2)
    assert w.flush() == 0 and w.failures == 1, "retried before its backoff"
    path.rename(tmp_path / "flows.duckdb.damaged")
    w._retry_at = 0.0  # the backoff is over
    assert w.flush() == 2 and w.state == "ok" and w.pending == 0
    with DuckDBStore(path, read_only=True) as st:
        assert len(st.flows()) == 2


class SlowStore:
    """Each write blocks until the test lets it go: a store locked by another agent."""

    def __init__(self) -> None:
        import threading
        self.go = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def write(self, flows: Sequence[Any]) -> int:
        self.entered.set()
        assert self.go.wait(5)
        self.batches.append([f.name for f in flows])
        return len(flows)


def test_the_store_thread_writes_while_the_loop_keeps_adding() -> None:
    """Flows added during a slow write wait for the next batch, in order; the chore runs
    after each flush; stopping the thread leaves the rest to the owner's final flush."""
    import threading
    store = SlowStore()
    w = BufferedWriter(lambda: store)
    chores: list[int] = []
    stop = threading.Event()
    w.add([Item("a"), Item("b")])
    t = threading.Thread(target=w.run, args=(stop, 0.01, lambda: chores.append(w.pending)))
    t.start()
    assert store.entered.wait(5)
    w.add([Item("c")])            # the loop goes on while the store is locked
    assert w.pending == 3         # two in flight, one buffered
    store.go.set()
    deadline = time.monotonic() + 5
    while w.written < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    assert store.batches == [["a", "b"], ["c"]] and w.pending == 0 and chores
    w.add([Item("d")])
    assert w.flush() == 1 and store.batches[-1] == ["d"]


def test_a_batch_that_fails_in_flight_goes_back_in_front_within_the_bound() -> None:
    store = FlakyStore(busy=1)
    w = BufferedWriter(lambda: store, max_buffer=3, max_batch=2)
    w.add([Item("a"), Item("b"), Item("c")])
    assert w.flush() == 0 and w.pending == 3 and w.lost == 0
    w.add([Item("d")])            # over the bound: the oldest goes
    assert w.flush() == 3 and store.rows == ["b", "c", "d"] and w.lost == 1


def test_stored_through_moves_only_when_everything_marked_is_stored() -> None:
    """A mark says every flow added before it is in; it counts once a flush stored them
    all (a busy store keeps the old one: readers wait for this agent)."""
    store = FlakyStore(busy=1)
    w = BufferedWriter(lambda: store)
    w.add([Item("a")])
    w.mark(10.0)
    w.flush()                                   # busy: nothing stored
    assert not w.drained and w.stored_through == 0.0
    w.add([Item("b")])
    w.mark(20.0)
    w.flush()
    assert w.drained and w.stored_through == 20.0 and store.rows == ["a", "b"]
    w.mark(15.0)                                # marks never go back
    w.flush()
    assert w.stored_through == 20.0


def test_a_flush_writes_what_was_buffered_when_it_began() -> None:
    """Under load every batch takes long enough for more flows (and marks) to arrive: a
    flush ends once what was buffered before it is stored, and its mark holds; the rest is
    the next flush's."""
    w: BufferedWriter

    class Busy(FlakyStore):
        def write(self, flows: Sequence[Any]) -> int:
            w.add([Item(f"more{len(self.rows)}")])
            w.mark(100.0 + len(self.rows))
            return super().write(flows)

    store = Busy(busy=0)
    w = BufferedWriter(lambda: store, max_batch=1)
    w.add(items("a", "b"))
    w.mark(10.0)
    assert w.flush() == 2 and w.drained
    assert store.rows == ["a", "b"] and w.stored_through == 10.0 and w.pending == 2
    assert w.flush() == 2 and w.stored_through == 101.0
    assert store.rows == ["a", "b", "more0", "more1"]
