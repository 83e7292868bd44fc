"""Finding the agents a hub pulls: the agent DaemonSet's pods, from the Kubernetes API.

The hub lists and watches the pods of the agent DaemonSet (a namespace and a label
selector; podflow's own chart and manifests by default) with the same list+watch client the
agents use (:class:`~podflow.inventory.kubeapi.ClusterAPI`), and pulls every pod that runs
and has an address: ``podIP:PORT``, where the port is the pod's ``podflow.io/observer-port``
annotation when it has one (the chart sets it from the agent's ``--observer-listen``), else
the default (Hubble's 4244). The agents run on the host network, so the pod IP is the
node's. A pod that goes away is dropped, a new one is pulled, as its events arrive.

Example::

    found = AgentDiscovery(load_config(None))
    found.start()
    found.addresses()    # ['10.0.0.1:4244', '10.0.0.2:4244']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2 as httpx
from lightkube.config.kubeconfig import SingleConfig

from podflow.inventory.kubeapi import ClusterAPI, Resource

AGENT_NAMESPACE = "podflow"
"""Where podflow's manifests and chart run the agents."""
AGENT_SELECTOR = "app.kubernetes.io/name=podflow,app.kubernetes.io/component=agent"
"""The labels of the agent DaemonSet's pods in podflow's manifests and chart."""
AGENT_PORT = 4244
"""The agents' Observer and feed port unless a pod says otherwise (Hubble's)."""
PORT_ANNOTATION = "podflow.io/observer-port"
"""A pod annotation naming its agent's port."""


def agent_address(pod: Mapping[str, Any], default_port: int = AGENT_PORT) -> str | None:
    """Where to pull the agent of ``pod`` (None: not running, no address yet, going away,
    or an unusable port annotation)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not isinstance(ip, str) or not ip or \
            meta.get("deletionTimestamp"):
        return None
    raw = (meta.get("annotations") or {}).get(PORT_ANNOTATION, default_port)
    try:
        port = int(raw)
    except (TypeError, ValueError):
        return None
    if not 0 < port < 65536:
        return None
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class AgentDiscovery:
    """The agent pods, listed and watched (see the module doc)."""

    def __init__(self, config: SingleConfig, *, namespace: str = AGENT_NAMESPACE,
                 selector: str = AGENT_SELECTOR, port: int = AGENT_PORT,
                 client: httpx.Client | None = None) -> None:
        self.port = port
        self.api = ClusterAPI(config, client=client, watched=[Resource(
            "Pod", f"/api/v1/namespaces/{namespace}/pods", label_selector=selector)])

    def start(self) -> None:
        """Start the list+watch (its own thread)."""
        self.api.start()

    def stop(self) -> None:
        """Stop watching."""
        self.api.stop()

    def addresses(self) -> list[str]:
        """The agents to pull now, sorted."""
        found = (agent_address(p, self.port) for p in self.api.objects_of("Pod"))
        return sorted({a for a in found if a is not None})
