"""The web UI in a real browser (Debian's chromium, driven by Playwright) against a live lab.

A small 2-node Flannel-VXLAN lab with agents and traffic (frontend -> backend service ->
cache service, backend -> the external db) feeds the store; ``create_app`` serves it with
uvicorn on 127.0.0.1. The test checks that

* the map draws exactly the expected workloads and external, and the expected edges;
* clicking the frontend -> backend edge on the canvas fills the table with that edge's
  flows only (every row frontend -> backend on 9000/TCP, all of them in the store);
* following live adds flows that arrive after the click;
* the JSON and SVG exports download the drawn map;

and saves a screenshot as ``artifacts/ui-map.png``. Skips when the UI is not built or
chromium is missing. Traffic stays inside the lab's own namespaces and loopback.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.state import lab_store_path
from podflow.query.filter import FilterSpec
from podflow.server.app import create_app
from podflow.server.config import find_web_dist
from podflow.server.runner import ServerThread
from podflow.store.base import StoreError
from podflow.store.duckdb import DuckDBStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
FE, BE, CACHE, DB = ("workload:shop/frontend", "workload:shop/backend",
                     "workload:data/cache", "external:db")
EDGES = {f"{FE}->{BE}", f"{BE}->{CACHE}", f"{BE}->{DB}"}


def _spec(name: str) -> dict[str, object]:
    return {
        "name": name, "cni": "flannel-vxlan", "nodes": 2,
        "podCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/16", "underlay": "172.18.0.0/24",
        "namespaces": ["shop", "data"],
        "workloads": [
            {"namespace": "shop", "name": "frontend", "replicas": 1, "node": 1,
             "labels": {"app": "frontend"}, "ports": ["tcp/8080"]},
            {"namespace": "shop", "name": "backend", "replicas": 1, "node": 2,
             "labels": {"app": "backend"}, "ports": ["tcp/9000"]},
            {"namespace": "data", "name": "cache", "replicas": 1, "node": 1,
             "labels": {"app": "cache"}, "ports": ["tcp/6379"]},
        ],
        "services": [
            {"namespace": "shop", "name": "backend", "selector": {"app": "backend"},
             "ports": [{"name": "api", "port": 9000}]},
            {"namespace": "data", "name": "cache", "selector": {"app": "cache"},
             "ports": [{"name": "redis", "port": 6379}]},
        ],
        "externals": [{"name": "db", "ip": "192.168.100.10", "ports": ["tcp/5432"]}],
        "traffic": [
            {"from": "shop/frontend", "to": "service/shop/backend:9000", "every": "500ms"},
            {"from": "shop/backend", "to": "service/data/cache:6379", "every": "1s"},
            {"from": "shop/backend", "to": "external/db:5432", "every": "1s"},
        ],
    }


def _edge_ids(store: Path) -> set[str]:
    try:
        with DuckDBStore(store, read_only=True, lock_timeout=2) as st:
            edges = st.map_edges(FilterSpec())
    except StoreError:
        return set()
    ids = set()
    for e in edges:
        ends = []
        for m in (e.source, e.destination):
            ends.append(f"workload:{m.namespace}/{m.name}" if m.kind == "pod"
                        else f"external:{m.name}" if m.name else f"ip:{m.ip}")
        ids.add("->".join(ends))
    return ids


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running lab with flows for every expected edge, served on 127.0.0.1."""
    if find_web_dist() is None:
        pytest.skip("web UI not built: run `cd web && npm ci && npm run build`")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium)")
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "ui" + secrets.token_hex(2)
    server: ServerThread | None = None
    try:
        manager.up(parse_spec(_spec(name)))
        store = lab_store_path(name)
        deadline = time.time() + 90
        while not _edge_ids(store) >= EDGES:
            assert time.time() < deadline, f"edges never all appeared: {_edge_ids(store)}"
            time.sleep(1)
        server = ServerThread(create_app(store, lab=name), "127.0.0.1").start()
        yield server.url, store
    finally:
        if server is not None:
            server.stop()
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


@pytest.fixture()
def page(served: tuple[str, Path]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 900},
                                  accept_downloads=True)
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.goto(served[0])
            pg.wait_for_function("window.__podflow && window.__podflow.mapLoads >= 1",
                                 timeout=20_000)
            yield pg
            assert errors == [], errors
        finally:
            browser.close()


def _click_edge(pg: Any, edge_id: str) -> None:
    """Click the edge's midpoint until the UI selects it.

    The map refreshes every 5 s and lays itself out again when elements come or go, so a
    position read before a refresh can miss; each attempt reads the position afresh.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    loads = pg.evaluate("window.__podflow.flowLoads")
    for attempt in range(5):
        pos = pg.evaluate("""(id) => {
            const cy = window.__podflow.cy, e = cy.getElementById(id);
            if (e.empty()) return null;
            const p = e.renderedMidpoint(), r = cy.container().getBoundingClientRect();
            return {x: r.left + p.x, y: r.top + p.y};
        }""", edge_id)
        assert pos is not None, f"edge {edge_id} is not drawn"
        pg.mouse.click(pos["x"], pos["y"])
        try:
            pg.wait_for_function(
                "(id) => document.querySelector('#selection').dataset.id === id",
                arg=edge_id, timeout=8_000)
            break
        except PlaywrightTimeout:
            if attempt == 4:
                raise
    pg.wait_for_function("(n) => window.__podflow.flowLoads > n", arg=loads, timeout=20_000)


def _rows(pg: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = pg.eval_on_selector_all(
        "[data-testid=flow-row]",
        "rs => rs.map(r => ({src: r.dataset.src, dst: r.dataset.dst, key: r.dataset.key, "
        "port: r.children[4].textContent}))")
    return rows


def test_map_and_table_in_chromium(page: Any, served: tuple[str, Path]) -> None:
    graph = page.evaluate("window.__podflow.graph")
    assert set(graph["nodes"]) == {FE, BE, CACHE, DB}, graph
    assert set(graph["edges"]) == EDGES, graph
    labels = page.evaluate("window.__podflow.cy.nodes().map(n => n.data('label'))")
    assert "frontend\nshop" in labels and any(lbl.startswith("db") for lbl in labels)

    _click_edge(page, f"{FE}->{BE}")
    rows = _rows(page)
    assert rows, "the table shows no flow for the clicked edge"
    assert {(r["src"], r["dst"], r["port"]) for r in rows} == {
        ("shop/frontend", "shop/backend", "9000/TCP")}
    with DuckDBStore(served[1], read_only=True) as st:
        stored = {f"{f.flow_id}|{f.time}" for f in st.flows(FilterSpec(
            from_workload=("shop/frontend",), to_workload=("shop/backend",)))}
    assert {r["key"].rsplit("|", 1)[0] for r in rows} <= {k.rsplit("|", 1)[0] for k in stored}

    newest = max(float(r["key"].rsplit("|", 1)[1]) for r in rows)
    page.check("#follow")
    page.wait_for_function(
        """(t) => window.__podflow.flows.some(f => f.time > t)""", arg=newest, timeout=20_000)
    assert {(r["src"], r["dst"]) for r in _rows(page)} == {("shop/frontend", "shop/backend")}

    out = ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "ui-map.png"))
    assert (out / "ui-map.png").stat().st_size > 10_000


def test_exports_download_the_map(page: Any, tmp_path: Path) -> None:
    with page.expect_download() as got:
        page.click("[data-testid=export-json]")
    saved = tmp_path / "map.json"
    got.value.save_as(saved)
    model = json.loads(saved.read_text())
    assert {n["id"] for n in model["nodes"]} == {FE, BE, CACHE, DB}
    with page.expect_download() as got:
        page.click("[data-testid=export-svg]")
    svg = tmp_path / "map.svg"
    got.value.save_as(svg)
    text = svg.read_text()
    assert text.lstrip().startswith(("<?xml", "<svg")) and "frontend" in text
    with page.expect_download() as got:
        page.click("[data-testid=export-png]")
    png = tmp_path / "map.png"
    got.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
