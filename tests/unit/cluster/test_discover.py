"""The hub finds the agents from the API: the agent DaemonSet's running pods."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube.config.kubeconfig import KubeConfig

from podflow.cluster.discover import AGENT_SELECTOR, PORT_ANNOTATION, AgentDiscovery, agent_address
from podflow.cluster.hub import Hub, HubConfig
from tests.unit.cluster.test_hub import FakeAgent, stored, wait_for

SERVER = "https://api.test:6443"


def pod(name: str, ip: str | None, port: int | str | None = None, phase: str = "Running",
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "podflow", "uid": name,
                            "resourceVersion": "1"}
    if port is not None:
        meta["annotations"] = {PORT_ANNOTATION: str(port)}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "status": {"phase": phase, **({"podIP": ip} if ip else {})}}


def test_an_agent_pod_is_pulled_only_when_it_runs_with_an_address() -> None:
    assert agent_address(pod("a", "10.0.0.1")) == "10.0.0.1:4244"
    assert agent_address(pod("a", "10.0.0.1", 9000)) == "10.0.0.1:9000"
    assert agent_address(pod("a", "fd00::1", 9000)) == "[fd00::1]:9000"
    assert agent_address(pod("a", None)) is None
    assert agent_address(pod("a", "10.0.0.1", phase="Pending")) is None
    assert agent_address(pod("a", "10.0.0.1", deleting=True)) is None
    assert agent_address(pod("a", "10.0.0.1", "http")) is None
    assert agent_address(pod("a", "10.0.0.1", 70000)) is None


def _discovery(pods: list[dict[str, Any]], seen: list[str]) -> AgentDiscovery:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.params.get("watch"):
            def quiet() -> Iterator[bytes]:
                time.sleep(0.2)
                yield from ()
            return httpx.Response(200, content=quiet())
        return httpx.Response(200, json={"kind": "PodList", "apiVersion": "v1",
                                         "metadata": {"resourceVersion": "5"}, "items": pods})
    config = KubeConfig.from_server(SERVER).get()
    assert config is not None
    client = httpx.Client(base_url=SERVER, transport=httpx.MockTransport(handler))
    return AgentDiscovery(config, client=client)


def test_the_hub_pulls_the_agents_the_api_names(tmp_path: Path) -> None:
    agents = [FakeAgent(tmp_path / "spools", n) for n in ("node1", "node2")]
    seen: list[str] = []
    pods = [pod(a.node, "127.0.0.1", a.address.rsplit(":", 1)[1]) for a in agents]
    found = _discovery([*pods, pod("starting", None)], seen)
    found.start()
    try:
        wait_for(lambda: len(found.addresses()) == 2, 10)
        assert found.addresses() == sorted(a.address for a in agents)
        assert "/api/v1/namespaces/podflow/pods" in seen[0]
        assert "labelSelector=" in seen[0] and "component%3Dagent" in seen[0]
        for a in agents:
            a.send(5)
        gone: set[str] = set()

        def discover() -> list[str]:
            return [a for a in found.addresses() if a not in gone]

        hub = Hub(HubConfig(store=tmp_path / "flows.duckdb", peers=[], flush_interval=0.1,
                            discover=discover))
        t = threading.Thread(target=hub.run, daemon=True)
        t.start()
        wait_for(lambda: len(stored(tmp_path / "flows.duckdb")) == 10)
        gone.add(agents[1].address)   # node2's pod went away
        wait_for(lambda: [p.address for p in hub.peers] == [agents[0].address], 10)
        agents[0].send(3)   # the hub goes on with the others
        wait_for(lambda: len(stored(tmp_path / "flows.duckdb")) == 13)
        hub.stop.set()
        t.join(10)
    finally:
        found.stop()
        for a in agents:
            a.stop()
    assert AGENT_SELECTOR.startswith("app.kubernetes.io/name=podflow")
