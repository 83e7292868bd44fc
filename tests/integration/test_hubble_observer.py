"""The stock Hubble CLI reads podflow's lab agents over Hubble's Observer API.

A 2-node flannel-vxlan lab makes HTTP through a ClusterIP Service across nodes, DNS
lookups, and SYNs into a blackholed address (dropped connections). Each lab agent serves
its node's flows over the Observer API (``lab status -o json`` names the address). Then:

- ``hubble status`` is healthy against every agent;
- ``hubble observe`` with each of its filters gives the same connections as
  ``podflow observe --server`` with podflow's (both over a window that ended 20 s ago,
  so that every connection in it has been reported);
- an agent serves what it stored: the connections its node observed in the window are the
  store's connections observed on that node;
- ``hubble observe --follow`` streams new connections as they happen.

The ``hubble`` tests skip, with the reason, when ``../shared/tools/hubble`` is absent.
"""

from __future__ import annotations

import json
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.state import LabState, lab_store_path
from tests.hubblecli import HUBBLE, hubble, hubble_keys, needs_hubble, podflow_key
from tests.integration.test_hubble_dashboards import BLACKHOLE, SYN, _in
from tests.integration.test_hubble_dashboards import _spec as dashboards_spec

pytestmark = pytest.mark.integration

RUN = 40.0
"""Seconds of traffic before the window is read."""
SETTLE = 20.0
"""The window ends this long before it is read: every connection in it has been reported."""


def _spec(name: str) -> dict[str, object]:
    """The dashboards' lab (two nodes, web -> Service api across them, an external), with
    less traffic: HTTP every second and a DNS lookup every 2 s."""
    spec = dashboards_spec(name)
    spec["traffic"] = [
        {"from": "app/web", "to": "service/app/api:9000", "every": "1s"},
        {"from": "app/web", "to": "dns/db.example.com:5432", "every": "2s"},
    ]
    return spec


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabState, str]]:
    """(the lab after RUN seconds of traffic, the end of the window as RFC 3339)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "ho" + secrets.token_hex(2)
    try:
        state = manager.up(parse_spec(_spec(name)))
        fabric = next(n for n in state.extra_netns if n.endswith("-fabric"))
        subprocess.run(["ip", "-n", fabric, "route", "add", "blackhole", f"{BLACKHOLE}/32"],
                       check=True)
        web = state.pods_of("app", "web")[0]
        end = time.time() + RUN
        while time.time() < end:
            _in(web.netns, SYN, BLACKHOLE, 5432, 2).wait(30)
            time.sleep(5)
        until = time.time() - SETTLE
        yield LabState.load(name), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def _podflow(*args: str) -> list[dict[str, Any]]:
    r = subprocess.run([sys.executable, "-m", "podflow", "observe", "-o", "json", *args],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    out: list[dict[str, Any]] = json.loads(r.stdout)
    return out


def _observers(state: LabState) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-m", "podflow", "lab", "status", state.name, "-o",
                        "json"], capture_output=True, text=True, timeout=60, check=True)
    nodes = json.loads(r.stdout)["nodes"]
    return {n["name"]: n["observer"] for n in nodes}


def test_each_agent_serves_what_it_stored(lab: tuple[LabState, str]) -> None:
    state, until = lab
    observers = _observers(state)
    assert set(observers) == {n.name for n in state.nodes} and all(observers.values())
    store = str(lab_store_path(state.name))
    for node, addr in observers.items():
        served = _podflow("--server", addr, "--all", "-n", "app", "--until", until)
        stored = _podflow("--store", store, "--all", "-n", "app", "--node", node,
                          "--until", until)
        assert served, f"{node} served nothing"
        assert {podflow_key(f) for f in served} == {podflow_key(f) for f in stored}, node
        assert all(node in {o["node_name"] for o in f["observations"]} for f in served)


@needs_hubble
def test_hubble_status_against_every_agent(lab: tuple[LabState, str]) -> None:
    state, _ = lab
    for node, addr in _observers(state).items():
        r = hubble(addr, "status")
        assert r.returncode == 0, (node, r.stderr)
        assert "Ok" in r.stdout and "Current/Max Flows:" in r.stdout, r.stdout


@needs_hubble
@pytest.mark.parametrize(("hubble_args", "podflow_args"), [
    ((), ()),
    (("--namespace", "app"), ("-n", "app")),
    (("--pod", "app/web"), ("--pod", "app/web")),
    (("--to-service", "app/api"), ("--to-service", "app/api")),
    (("--verdict", "DROPPED"), ("--verdict", "DROPPED")),
    (("--protocol", "tcp"), ("--protocol", "TCP")),
    (("--protocol", "udp"), ("--protocol", "UDP")),
    (("--protocol", "dns"), ("--protocol", "dns")),
    (("--protocol", "http"), ("--protocol", "http")),
    (("--namespace", "app", "--protocol", "tcp", "--verdict", "FORWARDED"),
     ("-n", "app", "--protocol", "TCP", "--verdict", "FORWARDED")),
])
def test_hubble_filters_agree_with_podflow(lab: tuple[LabState, str],
                                           hubble_args: tuple[str, ...],
                                           podflow_args: tuple[str, ...]) -> None:
    state, until = lab
    web = state.pods_of("app", "web")[0]
    addr = _observers(state)[web.node]   # the client's node sees every kind of traffic
    served = _podflow("--server", addr, "--all", "--until", until, *podflow_args)
    want = {podflow_key(f) for f in served}
    assert want, f"the lab made no {podflow_args} traffic"
    assert hubble_keys(addr, "--all", "--until", until, *hubble_args) == want


@needs_hubble
def test_hubble_last_and_follow(lab: tuple[LabState, str]) -> None:
    state, _ = lab
    web = state.pods_of("app", "web")[0]
    addr = _observers(state)[web.node]
    assert len(hubble_keys(addr, "--last", "5", "--namespace", "app")) >= 1
    proc = subprocess.Popen([str(HUBBLE), "observe", "--server", addr, "--follow", "-o", "json",
                             "--to-service", "app/api"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = time.time()
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no flow within 30 s"
        line = json.loads(proc.stdout.readline())   # the traffic runs every second
        assert line["flow"]["destination_service"] == {"name": "api", "namespace": "app"}
        assert line["flow"]["source"]["pod_name"].startswith("web-")
        assert time.time() - started < 30
    finally:
        proc.terminate()
        proc.wait(10)
