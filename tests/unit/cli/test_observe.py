"""``podflow observe`` / ``podflow map`` against a temporary store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from podflow.cli import observe
from podflow.cli.render import compact_line, fmt_l7, fmt_latency
from podflow.model.flow import L7, Flow, HttpInfo, Verdict
from podflow.store.correlate import merge_all
from podflow.store.duckdb import DuckDBStore
from tests.unit.query.test_filter import corpus, l7_flows

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    observe.register(app)
    return app


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "flows.duckdb"
    DuckDBStore(path).write(corpus())
    return path


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(_app(), list(args))
    return r.exit_code, r.stdout, r.stderr


def test_json_all_and_filters(store: Path) -> None:
    code, out, _ = run("observe", "--store", str(store), "--all", "-o", "json")
    assert code == 0
    got = json.loads(out)
    assert len(got) == len(merge_all(corpus()))
    assert {"source", "destination", "nat", "observations", "flow_id"} <= set(got[0])
    code, out, _ = run("observe", "--store", str(store), "-o", "json", "--to-namespace",
                       "data", "--protocol", "tcp", "--protocol", "icmp")
    assert code == 0
    assert [f["flow_id"] for f in json.loads(out)] == ["f2", ""]
    code, out, _ = run("observe", "--store", str(store), "-o", "jsonl", "--last", "2")
    assert [json.loads(line)["flow_id"] for line in out.splitlines()] == ["f6", "f7"]
    code, out, _ = run("observe", "--store", str(store), "-o", "json", "--since",
                       "1970-01-01T00:02:30Z", "--node", "node1")
    assert [f["flow_id"] for f in json.loads(out)] == ["f6", "f7"]


def test_table_and_compact(store: Path) -> None:
    code, out, _ = run("observe", "--store", str(store), "--service", "shop/frontend")
    assert code == 0
    assert "via 172.18.0.1:30080" in out and "snat 10.244.0.0:61000" in out
    assert "node1,node3" in out
    code, out, _ = run("observe", "--store", str(store), "-o", "compact", "--to-port", "5432")
    assert "shop/backend-xyz 10.244.1.7:9000 -> db 192.168.100.10:5432" in out
    assert "snat 172.18.0.2:61234" in out


def test_map(store: Path) -> None:
    code, out, _ = run("map", "--store", str(store), "-o", "json")
    assert code == 0
    edges = json.loads(out)
    assert edges[0]["connections"] >= edges[-1]["connections"]
    egress = [e for e in edges if e["destination"]["kind"] == "external"
              and e["destination"]["name"] == "db"]
    assert egress[0]["snat"] == ["172.18.0.2"] and egress[0]["port"] == 5432
    code, out, _ = run("map", "--store", str(store), "-n", "data")
    assert code == 0 and "data/cache" in out and "db (192.168.100.10)" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["observe"], "--store PATH or --lab NAME"),
    (["observe", "--store", "x", "--lab", "y"], "only one of"),
    (["observe", "--store", "/nonexistent/flows.duckdb"], "no flow store"),
    (["observe", "--ip", "10.0.0.300"], "bad IP"),
    (["observe", "--protocol", "foo"], "unknown protocol"),
    (["observe", "--since", "yesterday"], "bad time"),
    (["observe", "-o", "xml"], "unknown output"),
    (["observe", "--last", "3", "--all"], "only one of --last"),
    (["map", "-o", "jsonl"], "unknown output"),
    (["observe", "--port", "http"], "--port"),
    (["observe", "--bogus"], "bogus"),
    (["observe", "--http-status", "5xx"], "bad HTTP status"),
    (["observe", "--type", "policy-verdict"], "unknown type"),
    (["observe", "--http-path", "(?=x)"], "look-around"),
    (["observe", "--to-fqdn", "a b"], "bad FQDN"),
    (["map", "--dns-rcode", "bogus"], "bad DNS rcode"),
])
def test_bad_flags_exit_2(store: Path, args: list[str], message: str) -> None:
    if "--store" not in args and "--lab" not in args and args != ["observe"]:
        args = [*args, "--store", str(store)]
    code, out, err = run(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


def test_lab_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODFLOW_LAB_ROOT", str(tmp_path))
    DuckDBStore(tmp_path / "shop" / "store.duckdb").write(corpus())
    code, out, _ = run("observe", "--lab", "shop", "-o", "json", "--last", "1")
    assert code == 0 and len(json.loads(out)) == 1


def test_follow_waits_for_store_and_prints_updates(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "later.duckdb"
    flows = corpus()
    polls = {"n": 0}

    def fake_sleep(_: float) -> None:
        polls["n"] += 1
        if polls["n"] == 2:
            DuckDBStore(path).write(flows[:2])
        elif polls["n"] == 4:
            DuckDBStore(path).write(flows[2:3])
        elif polls["n"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(observe.time, "sleep", fake_sleep)
    code, out, _ = run("observe", "--store", str(path), "-f", "-o", "jsonl")
    assert code == 0
    assert [json.loads(line)["flow_id"] for line in out.splitlines()] == ["f1", "f2", "f3"]


@pytest.mark.parametrize("update", [
    {"l7": L7(http=HttpInfo("GET", "/api/items", "backend:9000", 200))},
    {"verdict": Verdict.DROPPED, "drop_reason_desc": "POLICY_DENIED"},
], ids=["l7", "verdict"])
def test_follow_prints_l7_and_verdict_updates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              update: dict[str, object]) -> None:
    """A later view of an already printed connection that adds only its L7 record or its
    verdict (same observation point, counters, state and times) is printed again, as the
    web UI's stream shows it (issue 9: the CLI's follower used to miss it)."""
    path = tmp_path / "flows.duckdb"
    first: Flow = corpus()[0]   # f1, seen by node1's conntrack
    later = replace(first, **update)  # type: ignore[arg-type]
    DuckDBStore(path).write([corpus()[1]])
    polls = {"n": 0}

    def fake_sleep(_: float) -> None:
        polls["n"] += 1
        if polls["n"] == 1:
            DuckDBStore(path).write([first])
        elif polls["n"] == 3:
            DuckDBStore(path).write([later])
        elif polls["n"] == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(observe.time, "sleep", fake_sleep)
    code, out, _ = run("observe", "--store", str(path), "-f", "-o", "jsonl")
    assert code == 0
    seen = [json.loads(line) for line in out.splitlines()]
    assert [d["flow_id"] for d in seen] == ["f1", "f1"]
    merged = DuckDBStore(path).flows()
    assert len(merged) == 2   # the store merged the two views into one connection
    if "l7" in update:
        assert seen[0].get("l7") is None
        assert seen[1]["l7"]["http"]["url"] == "/api/items"
    else:
        assert seen[0]["verdict"] == "FORWARDED" and seen[1]["verdict"] == "DROPPED"
    assert {k: v for k, v in seen[1].items() if k not in ("l7", "verdict",
                                                          "drop_reason_desc")} == \
        {k: v for k, v in seen[0].items() if k not in ("l7", "verdict", "drop_reason_desc")}


@pytest.fixture
def l7_store(tmp_path: Path) -> Path:
    path = tmp_path / "l7.duckdb"
    DuckDBStore(path).write(corpus() + l7_flows())
    return path


def _ids(*args: str) -> list[str]:
    code, out, err = run("observe", *args, "--all", "-o", "json")
    assert code == 0, err
    return [f["flow_id"] for f in json.loads(out)]


def test_l7_and_verdict_flags(l7_store: Path) -> None:
    st = str(l7_store)
    assert _ids("--store", st, "--to-fqdn", "*.example.com") == ["d1", "h2", "t1"]
    assert _ids("--store", st, "--fqdn", "crawler.example.net", "--fqdn", "db") == [
        "f3", "h5"]
    assert _ids("--store", st, "--from-fqdn", "*.example.com") == []
    assert _ids("--store", st, "--http-status", "5+") == ["h2"]
    assert _ids("--store", st, "--http-status", "404", "--http-status", "200") == ["h1", "h3"]
    assert _ids("--store", st, "--http-method", "post") == ["h2"]
    assert _ids("--store", st, "--http-path", "^/api/") == ["h1", "h4"]
    assert _ids("--store", st, "--dns-rcode", "NXDOMAIN") == ["d2"]
    assert _ids("--store", st, "--verdict", "DROPPED") == ["f5", "h4"]
    assert _ids("--store", st, "--type", "drop") == ["f5", "h4"]
    assert _ids("--store", st, "-t", "l7", "--to-namespace", "kube-system") == ["d1", "d2"]
    trace = _ids("--store", st, "--type", "trace")
    assert "t1" in trace and not {"h4", "d1", "f5"} & set(trace)
    code, out, _ = run("map", "--store", st, "--http-status", "5+", "-o", "json")
    assert code == 0 and [e["destination"]["name"] for e in json.loads(out)] == [
        "db.example.com"]


def test_l7_rendering(l7_store: Path) -> None:
    code, out, _ = run("observe", "--store", str(l7_store), "-o", "compact", "--type", "l7")
    assert code == 0
    assert "DNS A db.example.com -> 192.168.100.10 NOERROR 200µs" in out
    assert "DNS A nothing.shop.svc.cluster.local NXDOMAIN" in out
    assert "HTTP GET /api/items?id=3 200 3.1ms" in out
    assert "HTTP POST /status/503 503" in out
    assert "HTTP DELETE /api/items/7 (no response)  DROPPED ended (refused)" in out
    assert "\x1b[" not in out                    # no colours when not a terminal
    code, out, _ = run("observe", "--store", str(l7_store), "--http-status", "5+")
    assert code == 0 and "L7" in out and "HTTP POST /status/503 503" in out
    flows = {f.flow_id: f for f in l7_flows()}
    assert fmt_l7(flows["h5"]) == "5ns" and fmt_l7(corpus()[0]) == ""
    assert fmt_latency(1_234_000_000) == "1.23s"
    dropped = compact_line(flows["h4"], utc=True, color=True)
    assert "\x1b[1;31mDROPPED\x1b[0m ended (refused)" in dropped
    assert flows["h4"].verdict is Verdict.DROPPED


@pytest.mark.parametrize("command", ["observe", "map"])
def test_help_lists_every_filter_with_its_declared_help(command: str) -> None:
    from podflow.query.params import filter_fields

    r = runner.invoke(_app(), [command, "--help"], env={"COLUMNS": "300"})
    assert r.exit_code == 0
    for f in filter_fields().values():
        line = next((x for x in r.stdout.splitlines() if f" {f.flag} " in x), None)
        assert line is not None, f.flag
        assert f.metavar in line and f.help in line, line
        if f.short:
            assert f" {f.short} " in line


def test_protocol_takes_l7_names(l7_store: Path) -> None:
    st = str(l7_store)
    assert _ids("--store", st, "--protocol", "dns") == ["d1", "d2"]
    assert _ids("--store", st, "--protocol", "HTTP") == ["h1", "h2", "h3", "h4"]
    assert _ids("--store", st, "--protocol", "dns", "--protocol", "http",
                "--to-namespace", "kube-system") == ["d1", "d2"]
    code, out, _ = run("map", "--store", st, "--protocol", "dns", "-o", "json")
    assert code == 0 and {e["destination"]["name"] for e in json.loads(out)} == {"coredns"}
    code, _, err = run("observe", "--store", st, "--protocol", "kafka")
    assert code == 2 and "unknown protocol 'kafka'" in err


def test_capture_takes_its_filters_from_the_declaration() -> None:
    from podflow.cli.capture import CAPTURE_FILTERS
    from podflow.cli.main import app
    from podflow.query.params import filter_fields

    r = runner.invoke(app, ["capture", "--help"], env={"COLUMNS": "300"})
    assert r.exit_code == 0
    for name in CAPTURE_FILTERS:
        f = filter_fields()[name]
        assert any(f" {f.flag} " in x and f.help in x for x in r.stdout.splitlines()), name
    assert "--to-port" not in r.stdout and "--since" not in r.stdout
    r = runner.invoke(app, ["capture", "--write", "/tmp/x.pcap", "--protocol", "dns"])
    assert r.exit_code == 2 and "--protocol dns: capture filters packets" in r.stderr
