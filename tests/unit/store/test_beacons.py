"""Progress beacons: written atomically beside the store, read back merged with the reports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from podflow.query.servicemap import AGENT_MAX_LAG
from podflow.store.beacons import MAX_BYTES, beacons_dir, read_beacons, write_beacon
from podflow.store.duckdb import DuckDBStore


def test_beacons_round_trip_with_any_node_name(tmp_path: Path) -> None:
    store = tmp_path / "flows.duckdb"
    for node in ("node1", "a/b", "..", "ünï"):
        write_beacon(store, node, through=5.0, at=10.0)
    write_beacon(store, "node1", through=8.0, at=12.0)     # replaced, not appended
    assert read_beacons(store, since=0.0) == {
        "node1": (12.0, 8.0), "a/b": (10.0, 5.0), "..": (10.0, 5.0), "ünï": (10.0, 5.0)}
    assert len([p for p in beacons_dir(store).iterdir() if p.is_file()]) == 4
    assert read_beacons(store, since=11.0) == {"node1": (12.0, 8.0)}
    with pytest.raises(ValueError):
        write_beacon(store, "", through=1.0, at=1.0)


def test_what_is_not_a_beacon_is_skipped(tmp_path: Path) -> None:
    store = tmp_path / "flows.duckdb"
    assert read_beacons(store, since=0.0) == {}             # no directory yet
    write_beacon(store, "good", through=1.0, at=2.0)
    d = beacons_dir(store)
    (d / "junk.json").write_text("{not json")
    (d / "list.json").write_text("[1, 2]")
    (d / "bool.json").write_text(json.dumps({"at": True, "through": 1.0}))
    (d / "text.json").write_text(json.dumps({"at": "now", "through": 1.0}))
    (d / "big.json").write_text(json.dumps({"at": 2.0, "through": 1.0, "x": "y" * MAX_BYTES}))
    (d / ".half.123.tmp").write_text("{")
    (d / "sub.json").mkdir()
    assert read_beacons(store, since=0.0) == {"good": (2.0, 1.0)}


def test_progress_waits_for_an_agent_that_is_alive_but_cannot_write(tmp_path: Path) -> None:
    """node1's last health report in the store is older than the window (its writes wait
    for a busy file), but its beacon is fresh: it is waited for, at most AGENT_MAX_LAG."""
    now = time.time()
    path = tmp_path / "flows.duckdb"
    with DuckDBStore(path) as st:
        st.write_status("node1", {"reported_through": now - 95}, at=now - 90)
        st.write_status("node2", {"reported_through": now - 2}, at=now - 1)
        assert st.progress(now - 60) == {"node2": now - 2}    # node1 taken for stopped
        st.mark_progress("node1", now - 40, at=now)
        assert st.progress(now - 60) == {"node1": now - 40, "node2": now - 2}
        st.mark_progress("node2", now - 30, at=now - 5)       # older than its report
        assert st.progress(now - 60)["node2"] == now - 2
        st.mark_progress("node1", 0.0, at=now)                 # a beacon cannot take back
        assert st.progress(now - 60)["node1"] == now - 95      # what its report said
        st.mark_progress("node3", 0.0, at=now)
        assert st.progress(now - 60)["node3"] == now - AGENT_MAX_LAG
