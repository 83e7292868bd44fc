"""The agent's on-disk queue: sequence, acknowledgement, crash recovery, bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from podflow.cluster import spool as spool_mod
from podflow.cluster.spool import Spool, SpoolError


def test_records_come_back_in_order_after_any_cursor(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    seqs = [sp.append("flows", f'[{i}]') for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5] and sp.pending == 5
    assert [r.data for r in sp.read(after=2)] == ["[2]", "[3]", "[4]"]
    assert [r.seq for r in sp.read(after=0, limit=2)] == [1, 2]
    assert sp.read(after=5) == []


def test_acknowledged_segments_are_deleted_and_the_rest_survive_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 40)   # a few records per segment
    sp = Spool(tmp_path)
    for i in range(20):
        sp.append("flows", f'["record {i:02d}"]')
    segments = sorted(tmp_path.glob("*.spool"))
    assert len(segments) > 4
    sp.ack(12)
    left = sorted(tmp_path.glob("*.spool"))
    assert len(left) < len(segments)
    assert [r.seq for r in sp.read(after=12)] == list(range(13, 21))
    epoch = sp.epoch
    sp.close()
    again = Spool(tmp_path)   # the next agent on the node
    assert (again.epoch, again.acked, again.last) == (epoch, 12, 20)
    assert [r.seq for r in again.read(after=12)] == list(range(13, 21))
    assert again.append("status", "{}") == 21


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append("flows", "[1]")
    sp.append("flows", "[2]")
    sp.close()
    seg = next(tmp_path.glob("*.spool"))
    with open(seg, "ab") as f:
        f.write(b"3\tflows\t[3")   # SIGKILL in the middle of a write
    again = Spool(tmp_path)
    assert [r.data for r in again.read(0)] == ["[1]", "[2]"]
    assert again.append("flows", "[3]") == 3
    assert [r.data for r in again.read(0)] == ["[1]", "[2]", "[3]"]


def test_a_full_spool_refuses_and_counts_keeping_what_it_has(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=100)
    got = [sp.append("flows", '["0123456789"]') for _ in range(6)]
    assert got[:3] == [1, 2, 3] and got[-1] is None
    assert sp.refused == got.count(None) and sp.refused >= 2
    last = sp.last
    sp.ack(last)   # the hub caught up: room again
    assert sp.disk_bytes == 0
    assert sp.append("flows", "[]") == last + 1


def test_wait_wakes_on_a_new_record(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    assert sp.wait(0, 0.05) is False
    sp.append("progress", "{}")
    assert sp.wait(0, 0.05) is True


def test_bad_records_and_directories_are_refused(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s")
    with pytest.raises(ValueError):
        sp.append("flows", "[1,\n2]")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="cannot use spool"):
        Spool(tmp_path / "file")


def test_append_all_is_all_or_nothing_and_reads_stop_at_a_size(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=200)
    assert sp.append_all("flows", ["[1]", "[2]", "[3]"]) == [1, 2, 3]
    assert sp.append_all("flows", ["[" + "9" * 60 + "]"] * 3) is None   # no room for all
    assert (sp.last, sp.refused) == (3, 3)   # none of them went in
    assert [r.seq for r in sp.read(0, max_bytes=6)] == [1, 2]   # 3 bytes each
    assert [r.seq for r in sp.read(0, max_bytes=1)] == [1]   # the first always comes


def test_a_line_damaged_on_disk_is_skipped_and_counted(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append("flows", "[1]")
    sp.close()
    seg = next(tmp_path.glob("*.spool"))
    with open(seg, "ab") as f:
        f.write(b"garbage without tabs\n\xff\xfe\t\tx\n")
    again = Spool(tmp_path)   # opens, not refused
    assert again.append("flows", "[2]") == 2
    assert [r.data for r in again.read(0)] == ["[1]", "[2]"]
    assert again.bad_lines == 2
