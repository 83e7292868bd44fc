"""The lab's persisted state: what was built, where, with which addresses.

The lab manager writes it to ``<lab dir>/state.json`` after every change; ``lab status``,
``lab exec``, the workload launcher, the cluster-state writer and ``lab verify`` read it.
The agent never reads it: agents learn from the kernel and the cluster-state directory only.

``to_status()`` gives exactly the object ``podflow lab status -o json`` prints.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LAB_PREFIX = "pf-"
"""Every netns the lab creates starts with this prefix (and then the lab name)."""

DEFAULT_LAB_ROOT = "/var/lib/podflow/labs"
"""Where labs keep their files unless ``PODFLOW_LAB_ROOT`` says otherwise."""


LAB_NAME_PATTERN = re.compile(r"\A[a-z][a-z0-9]{0,11}\Z")
"""Lab names: short, so netns and interface names stay short and prefixes never overlap (a
DNS label; anchored at both ends of the string, so ``match`` and ``fullmatch`` agree)."""


class LabNameError(FileNotFoundError, ValueError):
    """A lab name that no lab can have (``../x``, ``Shop``, ``a\\n``).

    A ``FileNotFoundError`` (callers that report "no lab named X" report it too) and a
    ``ValueError`` (it is a bad argument)."""


def check_lab_name(name: str) -> str:
    """``name`` if it is a valid lab name, else :class:`LabNameError`.

    Every path chosen by a lab name goes through here (:func:`lab_dir`), so ``--lab ../x``
    can never reach outside the lab root.

    >>> check_lab_name("shop")
    'shop'
    >>> check_lab_name("../etc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    podflow.lab.state.LabNameError: invalid lab name '../etc': lowercase letters and digits...
    """
    if not isinstance(name, str) or not LAB_NAME_PATTERN.fullmatch(name):
        shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
        raise LabNameError(f"invalid lab name {shown}: lowercase letters and digits, at most "
                           "12, starting with a letter")
    return name


def lab_root() -> Path:
    """The directory holding one sub-directory per lab."""
    return Path(os.environ.get("PODFLOW_LAB_ROOT", DEFAULT_LAB_ROOT))


def lab_dir(name: str) -> Path:
    """The directory of lab ``name`` (state.json, cluster-state/, truth/, store.duckdb ...).

    Raises:
        LabNameError: ``name`` is not a valid lab name (see :func:`check_lab_name`).
    """
    return lab_root() / check_lab_name(name)


def lab_store_path(name: str) -> Path:
    """The DuckDB store the lab's agents write and ``--lab NAME`` reads."""
    return lab_dir(name) / "store.duckdb"


@dataclass
class NodeState:
    """One emulated node."""

    name: str
    """Node name, e.g. ``node1`` (1-based index in the spec's node count)."""
    index: int
    """1-based node number (``node: 3`` in a workload spec means index 3)."""
    netns: str
    """Network namespace of the node, e.g. ``pf-shop-node1``."""
    ip: str
    """Underlay IP of the node's eth0."""
    podCIDR: str
    """The node's /24 pod CIDR."""
    vtep_ip: str | None = None
    """Tunnel address (the .0 of the pod CIDR): flannel.1 (flannel-vxlan) or vxlan.calico
    (calico-vxlan); None on datapaths without a tunnel."""
    vtep_mac: str | None = None
    """flannel.1 / vxlan.calico MAC address."""
    agent_pid: int | None = None
    """PID of the podflow agent started for this node, if any."""
    agent_metrics: str | None = None
    """``HOST:PORT`` where that agent serves this node's /metrics (loopback)."""
    agent_observer: str | None = None
    """``HOST:PORT`` where that agent serves Hubble's Observer API (loopback)."""


@dataclass
class PodState:
    """One pod: a netns wired by the CNI plugins, with workload processes in it."""

    namespace: str
    """Kubernetes namespace."""
    name: str
    """Pod name, e.g. ``frontend-6d4f9c7b8-x2k9p``."""
    workload: str
    """Deployment name it belongs to."""
    node: str
    """Node name it runs on."""
    ip: str
    """Pod IP from IPAM."""
    netns: str
    """Network namespace of the pod."""
    labels: dict[str, str] = field(default_factory=dict)
    """Pod labels (the workload's labels)."""
    uid: str = ""
    """Pod UID (metadata.uid)."""
    replicaset: str = ""
    """Owning ReplicaSet name (``<workload>-<hash>``)."""
    ports: list[str] = field(default_factory=list)
    """Listening ports as in the spec, e.g. ``tcp/8080``."""
    created: float = 0.0
    """Unix seconds when the pod was created (metadata.creationTimestamp)."""
    pids: list[int] = field(default_factory=list)
    """PIDs of processes the lab started in this pod (server, clients)."""
    host_network: bool = False
    """``spec.hostNetwork``: the pod runs in its node's netns with the node IP (``netns`` is
    the node's; teardown must never delete it)."""


@dataclass
class ServicePortState:
    """One port of a Service."""

    name: str | None
    """Port name."""
    port: int
    """Service port."""
    targetPort: int
    """Container port."""
    protocol: str = "TCP"
    """TCP or UDP."""
    nodePort: int | None = None
    """nodePort for NodePort and LoadBalancer services."""


@dataclass
class ServiceState:
    """One Service as kube-proxy programs it."""

    namespace: str
    """Kubernetes namespace."""
    name: str
    """Service name."""
    type: str
    """``ClusterIP``, ``NodePort`` or ``LoadBalancer``."""
    clusterIP: str
    """Allocated ClusterIP from the service CIDR."""
    selector: dict[str, str]
    """Pod selector."""
    ports: list[ServicePortState]
    """Ports."""
    externalTrafficPolicy: str = "Cluster"
    """``Cluster`` or ``Local`` (NodePort and LoadBalancer only)."""
    uid: str = ""
    """metadata.uid."""
    loadBalancerIP: str | None = None
    """LoadBalancer only: the VIP from the lab's pool (``status.loadBalancer.ingress[0].ip``)."""
    lb_holder: str | None = None
    """LoadBalancer only: the node announcing the VIP (MetalLB's L2 leader, see
    :mod:`podflow.lab.metallb`); None while no node may (no ready endpoint)."""


@dataclass
class ExternalState:
    """A host outside the cluster."""

    name: str
    """Name from the spec, e.g. ``db``."""
    ip: str
    """Its IP address."""
    netns: str
    """Its network namespace."""
    ports: list[str] = field(default_factory=list)
    """Listening ports as in the spec."""
    pids: list[int] = field(default_factory=list)
    """PIDs of processes the lab started there."""
    dns_names: list[str] = field(default_factory=list)
    """DNS names the cluster DNS answers with ``ip`` (ConfigMap ``kube-system/coredns-hosts``)."""


@dataclass
class LabState:
    """Everything one lab built."""

    name: str
    """Lab (cluster) name."""
    cni: str
    """CNI datapath, e.g. ``flannel-vxlan``."""
    spec_path: str | None
    """The spec file it was built from (None for the embedded demo spec)."""
    podCIDR: str
    """Cluster pod CIDR."""
    serviceCIDR: str
    """Service CIDR."""
    underlay: str
    """Underlay CIDR."""
    created: float
    """Unix seconds when ``lab up`` started."""
    nodes: list[NodeState] = field(default_factory=list)
    """Nodes, in index order."""
    pods: list[PodState] = field(default_factory=list)
    """Pods currently running."""
    services: list[ServiceState] = field(default_factory=list)
    """Services."""
    externals: list[ExternalState] = field(default_factory=list)
    """External hosts."""
    extra_netns: list[str] = field(default_factory=list)
    """Other namespaces the lab made (the fabric/router netns)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The validated spec as a plain dict (traffic section included)."""
    workloads_started: bool = False
    """True once ``up`` started workload processes (``restart-pod`` then starts the new pod's)."""
    dns_ip: str | None = None
    """The nameserver pods use (the kube-dns ClusterIP, or the DNS pod's IP on datapaths
    without services); None when the lab has no cluster DNS."""
    apiserver_pid: int | None = None
    """The lab's Kubernetes API server process (:mod:`podflow.lab.apiproc`)."""
    apiserver_url: str | None = None
    """Its URL (the port stays across restarts); None for a lab without one."""
    hub_pid: int | None = None
    """The lab's ``podflow hub`` process (spec ``agents.mode: hub``)."""
    hub_observer: str | None = None
    """``HOST:PORT`` where the hub serves Hubble's Observer API (loopback)."""
    hub_api: str | None = None
    """``http://HOST:PORT`` where the hub serves the web UI, the API and /metrics (None:
    the lab's hub does not; ``podflow serve --lab NAME`` does)."""

    # -- lookups -----------------------------------------------------------------------
    def node(self, name: str) -> NodeState:
        """The node called ``name``; KeyError if none."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in lab {self.name!r}")

    def pod(self, namespace: str, name: str) -> PodState:
        """The pod ``namespace/name``; KeyError if none."""
        for p in self.pods:
            if p.namespace == namespace and p.name == name:
                return p
        raise KeyError(f"no pod {namespace}/{name} in lab {self.name!r}")

    def pods_of(self, namespace: str, workload: str) -> list[PodState]:
        """The running pods of a workload."""
        return [p for p in self.pods if p.namespace == namespace and p.workload == workload]

    def service(self, namespace: str, name: str) -> ServiceState:
        """The Service ``namespace/name``; KeyError if none."""
        for s in self.services:
            if s.namespace == namespace and s.name == name:
                return s
        raise KeyError(f"no service {namespace}/{name} in lab {self.name!r}")

    def load_balancer(self, ip: str) -> ServiceState | None:
        """The LoadBalancer Service whose VIP is ``ip``, if any."""
        return next((s for s in self.services if s.loadBalancerIP == ip), None)

    def external(self, name: str) -> ExternalState:
        """The external host ``name``; KeyError if none."""
        for e in self.externals:
            if e.name == name:
                return e
        raise KeyError(f"no external {name!r} in lab {self.name!r}")

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Full state as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabState:
        """Read state written by :meth:`to_dict`."""
        d = dict(d)
        d["nodes"] = [NodeState(**n) for n in d.get("nodes", [])]
        d["pods"] = [PodState(**p) for p in d.get("pods", [])]
        d["services"] = [
            ServiceState(**{**s, "ports": [ServicePortState(**p) for p in s["ports"]]})
            for s in d.get("services", [])
        ]
        d["externals"] = [ExternalState(**e) for e in d.get("externals", [])]
        return cls(**d)

    def save(self, path: Path | None = None) -> None:
        """Write atomically to ``<lab dir>/state.json`` (or ``path``)."""
        target = path or (lab_dir(self.name) / "state.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, target)

    @classmethod
    def load(cls, name: str) -> LabState:
        """Read lab ``name``'s state; FileNotFoundError with a clear message if none (a
        :class:`LabNameError` if ``name`` is not a lab name)."""
        path = lab_dir(name) / "state.json"
        if not path.exists():
            raise FileNotFoundError(f"no lab named {name!r} (looked for {path})")
        return cls.from_dict(json.loads(path.read_text()))

    def to_status(self) -> dict[str, Any]:
        """The object ``podflow lab status NAME -o json`` prints."""
        return {
            "name": self.name,
            "cni": self.cni,
            "nodes": [{"name": n.name, "netns": n.netns, "ip": n.ip, "podCIDR": n.podCIDR,
                       "metrics": n.agent_metrics, "observer": n.agent_observer}
                      for n in self.nodes],
            "hub": None if self.hub_pid is None else {
                "pid": self.hub_pid, "store": str(lab_store_path(self.name)),
                "observer": self.hub_observer, "api": self.hub_api,
                "peers": [n.agent_observer for n in self.nodes]},
            "pods": [{"namespace": p.namespace, "name": p.name, "workload": p.workload,
                      "node": p.node, "ip": p.ip, "netns": p.netns, "labels": p.labels}
                     for p in self.pods],
            "services": [{"namespace": s.namespace, "name": s.name, "type": s.type,
                          "clusterIP": s.clusterIP,
                          **({"loadBalancerIP": s.loadBalancerIP, "lbHolder": s.lb_holder}
                             if s.loadBalancerIP else {}),
                          "ports": [{"name": p.name, "port": p.port, "targetPort": p.targetPort,
                                     "nodePort": p.nodePort, "protocol": p.protocol}
                                    for p in s.ports]}
                         for s in self.services],
            "externals": [{"name": e.name, "ip": e.ip, "netns": e.netns}
                          for e in self.externals],
        }
