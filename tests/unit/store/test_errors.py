"""A damaged store is told apart from a busy one, everywhere it is read.

Each case is produced for real on a DuckDB file: a write connection held by another
process (contention), bytes flipped in a block (checksum), the file cut to half its size
(truncation), a file that is not a database, a write-ahead log that cannot be replayed.
The store raises a distinct error for each, at once (a damaged file is not retried as if
locked), naming the file and what to do; ``observe``/``map`` print that one line and exit 2;
``serve`` starts anyway, answers 503 with the kind, reports it on ``/api/health`` and
recovers when the file is readable again.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from podflow.cli import observe
from podflow.metrics.follower import Follower
from podflow.metrics.registry import MetricSet
from podflow.model.flow import Endpoint, Flow, ObservationPoint, Protocol
from podflow.server.app import create_app
from podflow.store import open_store
from podflow.store.base import (
    FlowStore,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreMissing,
    StoreNotDuckDB,
    StoreTruncated,
    StoreWalCorrupt,
)
from podflow.store.duckdb import DuckDBStore
from podflow.store.errors import classify, is_lock

BLOCK = 262_144
HEADERS = 12_288
LOCAL = "http://127.0.0.1:8080"


def _flows(n: int) -> list[Flow]:
    return [Flow(1000.0 + i, Endpoint("10.0.0.1", 1 + i % 60000), Endpoint("10.0.0.2", 80),
                 Protocol.TCP, flow_id=f"f{i}", observations=(ObservationPoint("n1", "ct"),))
            for i in range(n)]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of a few blocks (2000 flows and a health report)."""
    path = tmp_path_factory.mktemp("good") / "flows.duckdb"
    DuckDBStore(path).write(_flows(2000))
    DuckDBStore(path).write_status("n1", {"ok": True})
    return path


def _copy(good: Path, tmp_path: Path, name: str = "flows.duckdb") -> Path:
    path = tmp_path / name
    shutil.copy(good, path)
    return path


def flip(path: Path, offset: int, n: int = 64) -> None:
    """Invert ``n`` bytes at ``offset``."""
    with path.open("r+b") as fh:
        fh.seek(offset)
        data = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def truncate_half(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


READS: dict[str, Callable[[DuckDBStore], Any]] = {
    "last_rowid": lambda s: s.last_rowid(), "flows": lambda s: s.flows(),
    "raw": lambda s: s.flows(merged=False), "map": lambda s: s.map_edges(),
    "stats": lambda s: s.stats(), "statuses": lambda s: s.statuses(),
    "write": lambda s: s.write(_flows(3)),
}


def outcomes(path: Path) -> dict[str, str]:
    """What each operation does on ``path``: ``ok`` or the store error's kind. Anything
    else (a raw DuckDB error) fails the test, and so does waiting as if it were locked."""
    out = {}
    for name, op in READS.items():
        start = time.monotonic()
        try:
            op(DuckDBStore(path, read_only=name != "write", lock_timeout=30))
            out[name] = "ok"
        except StoreError as exc:
            assert time.monotonic() - start < 5, f"{name}: retried as if locked"
            assert str(path) in str(exc) and "\n" not in str(exc)
            out[name] = exc.kind
    return out


def corrupt_block(good: Path, tmp_path: Path, op: Callable[[DuckDBStore], Any]) -> Path:
    """A copy of ``good`` with bytes flipped in a data block that ``op`` reads."""
    for k in range(1, good.stat().st_size // BLOCK):
        path = _copy(good, tmp_path, f"c{k}.duckdb")
        flip(path, HEADERS + k * BLOCK + 1000)
        try:
            op(DuckDBStore(path, read_only=True))
        except StoreCorrupt:
            return path
    pytest.fail("no data block of the test store is read by that operation")


@pytest.fixture
def corrupt(good: Path, tmp_path: Path) -> Path:
    """A copy with bytes flipped in a data block that reading the flows reaches."""
    return corrupt_block(good, tmp_path, lambda s: s.flows(merged=False))


@pytest.fixture
def truncated(good: Path, tmp_path: Path) -> Path:
    path = _copy(good, tmp_path)
    truncate_half(path)
    return path


@pytest.fixture
def not_duckdb(tmp_path: Path) -> Path:
    path = tmp_path / "flows.duckdb"
    path.write_text("flow_id,time\nf1,1000\n")
    return path


class Holder:
    """Another process holding a write connection (DuckDB's exclusive file lock)."""

    def __init__(self, path: Path) -> None:
        code = ("import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', "
                "flush=True); sys.stdin.read(); con.close()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture
def locked(good: Path, tmp_path: Path) -> Iterator[Path]:
    path = _copy(good, tmp_path)
    holder = Holder(path)
    yield path
    holder.release()


# -- the store --------------------------------------------------------------------------
def test_lock_held_by_another_process_is_busy(locked: Path) -> None:
    store = DuckDBStore(locked, read_only=True, lock_timeout=0.3)
    with pytest.raises(StoreBusy, match=r"stayed locked by process \d+ \(python") as err:
        store.flows()
    assert err.value.retryable and err.value.kind == "busy" and store.lock_waits > 1
    assert str(locked) in str(err.value)
    with pytest.raises(StoreBusy):
        DuckDBStore(locked, lock_timeout=0.3).write(_flows(1))
    assert DuckDBStore(locked, read_only=True, lock_timeout=0.3).check()["state"] == "busy"


def test_lock_released_then_readable(good: Path, tmp_path: Path) -> None:
    path = _copy(good, tmp_path)
    holder = Holder(path)
    with pytest.raises(StoreBusy):
        DuckDBStore(path, read_only=True, lock_timeout=0.2).last_rowid()
    holder.release()
    assert DuckDBStore(path, read_only=True, lock_timeout=0.2).last_rowid() == 2000


def test_flipped_bytes_are_corrupt_not_busy(corrupt: Path) -> None:
    got = outcomes(corrupt)
    assert set(got.values()) <= {"ok", "corrupt"} and got["raw"] == "corrupt", got
    with pytest.raises(StoreCorrupt, match="fails its checksum") as err:
        DuckDBStore(corrupt, read_only=True).flows(merged=False)
    assert not err.value.retryable
    assert "restore it from a backup, or move it aside" in str(err.value)


def test_flipped_header_is_corrupt_on_open(good: Path, tmp_path: Path) -> None:
    path = _copy(good, tmp_path)
    flip(path, 100)
    assert set(outcomes(path).values()) == {"corrupt"}
    assert DuckDBStore(path, read_only=True).check()["kind"] == "corrupt"


def test_truncated_store(truncated: Path) -> None:
    got = outcomes(truncated)
    assert set(got.values()) == {"truncated"}, got
    with pytest.raises(StoreTruncated, match=r"is truncated \(\d+ bytes on disk, DuckDB needs "
                       r"bytes up to \d+\)") as err:
        DuckDBStore(truncated, read_only=True).flows()
    assert isinstance(err.value, StoreCorrupt) and "move it aside" in str(err.value)
    assert DuckDBStore(truncated, read_only=True).check() == {
        "ok": False, "state": "truncated", "kind": "truncated", "error": str(err.value),
        "last_rowid": None}


def test_not_a_duckdb_file(not_duckdb: Path) -> None:
    assert set(outcomes(not_duckdb).values()) == {"not_duckdb"}
    with pytest.raises(StoreNotDuckDB, match=r"is not a DuckDB database .*check the path"):
        DuckDBStore(not_duckdb, read_only=True).flows()



def test_empty_file_is_a_failed_creation(tmp_path: Path) -> None:
    """What DuckDB leaves when processes create one file at once: no store yet for a
    reader, created afresh by a writer."""
    empty = tmp_path / "flows.duckdb"
    empty.touch()
    with pytest.raises(StoreMissing, match="the file is empty"):
        DuckDBStore(empty, read_only=True).flows()
    assert DuckDBStore(empty, read_only=True).check()["state"] == "missing"
    assert DuckDBStore(empty).write(_flows(2)) == 2
    assert len(DuckDBStore(empty, read_only=True).flows()) == 2


def _create(path: str, go: Any) -> None:
    go.wait()
    with DuckDBStore(path, lock_timeout=60)._connect(write=True) as con:
        con.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER)")


def test_processes_creating_one_store_at_once(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for i in range(40):   # without the creation lock, a few rounds in a hundred fail
        path = str(tmp_path / f"s{i}.duckdb")
        go = ctx.Event()
        procs = [ctx.Process(target=_create, args=(path, go)) for _ in range(4)]
        for p in procs:
            p.start()
        time.sleep(0.02)
        go.set()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0, f"round {i}"
        assert DuckDBStore(path, read_only=True).check()["state"] == "ok"


def test_corrupt_write_ahead_log(good: Path, tmp_path: Path) -> None:
    path = _copy(good, tmp_path)
    code = ("import duckdb, os, sys; con = duckdb.connect(sys.argv[1]); "
            "con.execute('PRAGMA disable_checkpoint_on_shutdown'); "
            "con.execute(\"SET checkpoint_threshold = '1TB'\"); "
            "con.execute(\"INSERT INTO agent_status SELECT range, 'n2', repeat('x', 200) "
            "FROM range(5000)\"); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    wal = path.with_name(path.name + ".wal")
    assert wal.stat().st_size > 1000
    flip(wal, wal.stat().st_size // 2)
    assert set(outcomes(path).values()) == {"wal_corrupt"}
    with pytest.raises(StoreWalCorrupt, match=r"write-ahead log .*\.wal .*move the \.wal file"):
        DuckDBStore(path, read_only=True).flows()
    wal.rename(wal.with_name("aside.wal"))   # what the message says to do
    assert DuckDBStore(path, read_only=True).last_rowid() == 2000


def test_only_what_duckdb_says_about_the_file_is_classified(tmp_path: Path) -> None:
    p = tmp_path / "s.duckdb"
    for text in ("Catalog Error: Table with name block does not exist!",
                 "Invalid Input Error: lock-free regex 'block' failed",
                 "Binder Error: Referenced column \"lock\" not found"):
        assert classify(duckdb.Error(text), p) is None and not is_lock(duckdb.Error(text))
    held = 'IO Error: Could not set lock on file "x": Conflicting lock is held in y (PID 1)'
    assert is_lock(duckdb.IOException(held)) and classify(duckdb.Error(held), p) is None
    con = duckdb.connect()
    with pytest.raises(duckdb.Error) as err:
        con.execute("SELECT regexp_matches('a', '(?<=a)b')")   # RE2 refuses: not the file's
    assert classify(err.value, p) is None


def test_missing_store_still_missing(tmp_path: Path) -> None:
    check = DuckDBStore(tmp_path / "none.duckdb").check()
    assert check["ok"] and check["state"] == "missing" and check["last_rowid"] == 0


# -- observe / map ----------------------------------------------------------------------
def _cli(*args: str) -> tuple[int, str, BaseException | None]:
    app = typer.Typer()
    observe.register(app)
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stderr, r.exception


@pytest.mark.parametrize("case", ["corrupt", "truncated", "not_duckdb", "locked"])
@pytest.mark.parametrize("command", ["observe", "map"])
def test_cli_one_line_and_nonzero(case: str, command: str, request: pytest.FixtureRequest,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path: Path = request.getfixturevalue(case)
    if case == "corrupt" and command == "map":   # a block the map reads
        good, tmp = request.getfixturevalue("good"), request.getfixturevalue("tmp_path")
        path = corrupt_block(good, tmp, lambda s: s.map_edges())

    def quick(p: Path, **kw: Any) -> FlowStore:
        return open_store(p, **{**kw, "lock_timeout": 0.3})

    monkeypatch.setattr(observe, "open_store", quick)
    extra = ["--all"] if command == "observe" else []
    code, err, exc = _cli(command, "--store", str(path), *extra)
    assert code == 2 and isinstance(exc, SystemExit), (code, err, exc)
    assert err.count("\n") == 1 and err.startswith("podflow: ") and str(path) in err, err
    want = {"corrupt": "is corrupt", "truncated": "is truncated",
            "not_duckdb": "is not a DuckDB database", "locked": "stayed locked by process"}
    assert want[case] in err
    assert "locked" not in err or case == "locked"


# -- serve --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["corrupt", "truncated", "not_duckdb"])
def test_serve_starts_reports_and_recovers(case: str, good: Path, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(case)
    app = create_app(path, web_dist=tmp_path / "nowhere")
    with TestClient(app, base_url=LOCAL) as client:   # the lifespan (metrics) starts too
        for url in ("/api/flows?limit=10000", "/api/map", "/api/inventory"):
            r = client.get(url)
            if r.status_code == 200:
                continue
            assert r.status_code == 503, (url, r.text)
            assert r.json()["kind"] == case and str(path) in r.json()["error"]
        h = client.get("/api/health")
        assert h.status_code == 503 and h.json()["status"] == "degraded"
        store = h.json()["store"]
        assert (store["ok"], store["kind"], store["state"]) == (False, case, case)
        assert str(path) in store["error"] and "move it aside" in store["error"]
        shutil.copy(good, path)   # restored from a backup
        h = client.get("/api/health")
        assert h.status_code == 200 and h.json()["store"]["ok"], h.json()
        assert h.json()["last_rowid"] == 2000
        assert client.get("/api/flows").status_code == 200


def test_serve_busy_store_is_healthy(locked: Path, tmp_path: Path) -> None:
    app = create_app(locked, web_dist=tmp_path / "nowhere")
    app.state.config.lock_timeout = 0.3
    with TestClient(app, base_url=LOCAL) as client:
        h = client.get("/api/health")
        assert h.status_code == 200 and h.json()["store"]["state"] == "busy"
        r = client.get("/api/flows")
        assert r.status_code == 503 and r.json()["kind"] == "busy"
        assert r.headers["retry-after"] == "1"


def test_metrics_follower_counts_damage_by_kind(truncated: Path) -> None:
    fol = Follower(truncated, MetricSet("flow"), interval=0.1)
    assert fol.poll() == 0
    assert fol.metrics.registry.get_sample_value("podflow_metrics_store_errors_total",
                                                 {"reason": "truncated"}) == 1
