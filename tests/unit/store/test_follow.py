"""The one store follower (:mod:`podflow.store.follow`) against a temporary store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest

from podflow.model.flow import L7, Flow, HttpInfo, ObservationPoint, Verdict
from podflow.query.filter import FilterSpec
from podflow.store import open_store
from podflow.store.base import FlowStore, StoreBusy, StoreCorrupt
from podflow.store.follow import StoreFollower, signature
from tests.unit.query.test_filter import corpus


def write(path: Path, flows: list[Flow]) -> None:
    with open_store(path) as store:
        store.write(flows)


def ids(flows: list[Flow]) -> list[str]:
    return [f.flow_id for f in flows]


def test_waits_for_a_missing_store_then_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "later.duckdb"
    fol = StoreFollower(path)
    assert fol.start(last=5) == [] and fol.status == "missing" and fol.started
    assert fol.error is not None and fol.error.retryable
    assert fol.poll() == [] and fol.status == "missing"
    write(path, corpus()[:2])
    assert ids(fol.poll()) == ["f1", "f2"]   # all of it is new since the follower started
    assert fol.status == "ok" and fol.error is None and fol.after == open_store(
        path).last_rowid()


def test_backlog_then_only_new_and_changed(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    flows = corpus()
    write(path, flows)
    fol = StoreFollower(path, FilterSpec(to_namespace=("data",)))
    backlog = fol.start(last=2)
    assert len(backlog) == 2 and {f.destination.namespace for f in backlog} == {"data"}
    assert fol.poll() == []
    f2 = next(f for f in flows if f.flow_id == "f2")
    write(path, [f2])                          # the same view again: nothing changed
    assert fol.poll() == []
    write(path, [replace(f2, observations=(ObservationPoint("node9", "sockets"),))])
    got = fol.poll()
    assert ids(got) == ["f2"] and len(got[0].observations) == 3
    write(path, [flows[0]])                    # not matching the filter
    assert fol.poll() == []


@pytest.mark.parametrize("update", [
    {"l7": L7(http=HttpInfo("GET", "/x", None, 200))},
    {"verdict": Verdict.DROPPED},
], ids=["l7", "verdict"])
def test_an_update_of_only_l7_or_verdict_is_a_change(tmp_path: Path,
                                                     update: dict[str, Any]) -> None:
    path = tmp_path / "flows.duckdb"
    first = corpus()[0]
    write(path, [first])
    fol = StoreFollower(path)
    assert ids(fol.start(last=1)) == ["f1"]
    later = replace(first, **update)
    assert signature(later) != signature(first)
    write(path, [later])
    assert ids(fol.poll()) == ["f1"]


def test_every_row_when_not_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    write(path, corpus()[:1])
    fol = StoreFollower(path, changes_only=False)
    assert ids(fol.start(last=None)) == ["f1"]
    write(path, corpus()[:1])
    assert ids(fol.poll()) == ["f1"]           # re-reported unchanged: still returned


def test_backlog_since_and_all(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    write(path, corpus())
    everything = open_store(path).flows()
    assert StoreFollower(path).start(last=None) == everything
    cut = everything[-1].time
    assert StoreFollower(path).start(None, since=cut) == open_store(path).flows(
        FilterSpec(since=cut))
    assert StoreFollower(path).start(0) == []


def test_busy_start_is_retried_with_its_backlog(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    write(path, corpus())
    fol = StoreFollower(path, lock_timeout=0.2)
    holder = duckdb.connect(str(path))  # a writer holding the file (same process: refused)
    try:
        assert fol.start(last=3) == []
        assert fol.status == "busy" and not fol.started
        assert isinstance(fol.error, StoreBusy)
    finally:
        holder.close()
    assert len(fol.poll()) == 3 and fol.status == "ok" and fol.started


def test_a_damaged_store_is_reported_and_followed_again_once_restored(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    path.write_text("flow_id,time\nf1,1000\n")
    fol = StoreFollower(path)
    assert fol.start() == [] and fol.status == "not_duckdb"
    assert isinstance(fol.error, StoreCorrupt) and not fol.error.retryable
    path.unlink()
    write(path, corpus()[:1])
    assert fol.poll() == [] and fol.status == "ok"   # the start: at the end, last=0
    write(path, corpus()[1:2])
    assert ids(fol.poll()) == ["f2"]


def test_batch_and_memory_bounds(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    fol = StoreFollower(path, max_batch=2, max_seen=4)
    fol.start()
    flows = corpus()
    write(path, flows[:5])
    got = fol.poll()
    assert ids(got) == ids(open_store(path).flows())[-2:]   # the newest two
    assert len(fol._seen) <= 4


def test_also_reads_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    write(path, corpus()[:1])
    with open_store(path) as store:
        store.write_status("node1", {"ok": True}, at=1.0)
    seen: list[list[dict[str, Any]]] = []
    fol = StoreFollower(path)
    fol.start(also=lambda s: seen.append(s.statuses()))
    fol.poll(also=lambda s: seen.append(s.statuses()))
    assert [[st["node"] for st in x] for x in seen] == [["node1"], ["node1"]]


class _Busy:
    """A store double that is always locked."""

    def last_rowid(self) -> int:
        raise StoreBusy("locked")


def test_opener_replaces_the_backend(tmp_path: Path) -> None:
    def opener() -> FlowStore:
        return _Busy()  # type: ignore[return-value]

    fol = StoreFollower(tmp_path / "x", opener=opener)
    assert fol.start(last=1) == [] and fol.status == "busy"
    assert fol.poll() == [] and not fol.started
