"""The lab manager: build, inspect, change and remove an emulated cluster.

``up`` builds, in order: fabric and nodes (underlay, then the spec's datapath: tunnels and
peers, routes or BGP, see :mod:`podflow.lab.datapath`) -> pods (netns wired by the
datapath's CNI; host-network pods just join their node) -> services (ClusterIPs, kube-proxy
and the datapath's masquerade on every node, each LoadBalancer VIP on the node MetalLB's L2
election picks, see :mod:`podflow.lab.metallb`) -> cluster DNS resolv.conf files -> cluster
state -> agents -> workload processes. ``state.json`` is saved before each object is made,
so ``down`` can remove a half-built lab; a failing ``up`` does so itself.

Example::

    state = up(load_default_spec(), agents=False)
    exec_in("shop", "shop/frontend", ["ip", "-br", "addr"])
    restart_pod("shop", "shop", state.pods[0].name)
    down("shop")
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence

from podflow.lab import fabric, kubeproxy, metallb
from podflow.lab import netns as nsu
from podflow.lab import state as st
from podflow.lab.datapath import (
    create_pod_network,
    datapath_for,
    remove_all_resolv_confs,
    remove_pod_network,
    update_dns,
)
from podflow.lab.netns import LabError
from podflow.lab.spec import LAB_NAME_PATTERN, LabSpec
from podflow.lab.state import LabState, NodeState, PodState

__all__ = ["LabError", "down", "exec_in", "list_labs", "restart_pod", "status", "up"]

_SAFE = "bcdfghjklmnpqrstvwxz2456789"   # the alphabet Kubernetes uses in generated names


def _prefix(name: str) -> str:
    if not LAB_NAME_PATTERN.match(name):
        raise LabError(f"invalid lab name {name!r}: lowercase letters and digits, at most 12")
    return f"{st.LAB_PREFIX}{name}-"


def _safe(seed: bytes, n: int) -> str:
    return "".join(_SAFE[b % len(_SAFE)] for b in hashlib.sha256(seed).digest()[:n])


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces)")


def up(spec: LabSpec, *, agents: bool = True, workloads: bool = True,
       spec_path: str | None = None) -> LabState:
    """Build lab ``spec.name``; on any failure remove everything and raise LabError."""
    _require_root()
    prefix = _prefix(spec.name)
    if (st.lab_dir(spec.name) / "state.json").exists() or nsu.list_netns(prefix):
        raise LabError(f"lab {spec.name!r} already exists; remove it with "
                       f"`podflow lab down {spec.name}`")
    state = LabState(name=spec.name, cni=spec.cni, spec_path=spec_path, podCIDR=spec.podCIDR,
                     serviceCIDR=spec.serviceCIDR, underlay=spec.underlay, created=time.time(),
                     spec=spec.to_dict())
    step = "starting"
    try:
        step = "building the fabric and nodes"
        fabric.build_network(state, spec, datapath_for(spec.cni))
        step = "creating pods"
        _create_pods(state, spec)
        step = "programming services"
        _allocate_services(state, spec)
        _apply_iptables(state)
        metallb.announce(state)
        update_dns(state)
        state.save()
        step = "writing the cluster state"
        _write_cluster_state(state)
        step = "starting the Kubernetes API server"
        from podflow.lab.apiproc import start_apiserver
        start_apiserver(state)
        state.save()
        if agents:
            step = "starting agents"
            from podflow.lab.agents import start_agents, start_hub
            start_agents(state)
            state.save()
            if spec.agent_mode == "hub":
                step = "starting the hub"
                start_hub(state)
        if workloads:
            step = "starting workload processes"
            _start_workloads(state)
    except KeyboardInterrupt:
        down(spec.name)
        raise
    except Exception as e:
        try:
            down(spec.name)
        except Exception as e2:   # pragma: no cover - best effort
            raise LabError(f"lab up {spec.name} failed while {step}: {e}; and removing it "
                           f"failed too: {e2}") from e
        raise LabError(f"lab up {spec.name} failed while {step}: {e} "
                       "(everything it had made was removed)") from e
    return state


def _create_pods(state: LabState, spec: LabSpec) -> None:
    rr = 0
    for w in spec.workloads:
        for _ in range(w.replicas):
            if w.node is None:
                node = state.nodes[rr % len(state.nodes)]
                rr += 1
            else:
                node = state.nodes[w.node - 1]
            _new_pod(state, w.namespace, w.name, dict(w.labels), [str(p) for p in w.ports],
                     node, host_network=w.hostNetwork)


def _new_pod(state: LabState, namespace: str, workload: str, labels: dict[str, str],
             ports: list[str], node: NodeState, index: int | None = None,
             host_network: bool = False) -> PodState:
    """Create one pod the way kubelet + a runtime + CNI do, and record it in ``state``.

    A host-network pod gets no netns of its own: it lives in the node's, with the node IP.
    """
    rs = f"{workload}-{_safe(f'{namespace}/{workload}/{sorted(labels.items())}'.encode(), 10)}"
    taken = {p.name for p in state.pods}
    name = f"{rs}-{''.join(secrets.choice(_SAFE) for _ in range(5))}"
    while name in taken:
        name = f"{rs}-{''.join(secrets.choice(_SAFE) for _ in range(5))}"
    tag = hashlib.sha1(f"{namespace}/{name}".encode()).hexdigest()[:8]
    netns = node.netns if host_network else f"{_prefix(state.name)}p-{tag}"
    pod = PodState(namespace=namespace, name=name, workload=workload, node=node.name, ip="",
                   netns=netns, labels=labels, uid=str(uuid.uuid4()), replicaset=rs,
                   ports=ports, created=time.time(), host_network=host_network)
    state.pods.insert(len(state.pods) if index is None else index, pod)
    state.save()
    pod.ip = create_pod_network(state, node, pod, datapath_for(state.cni))
    state.save()
    return pod


def _allocate_services(state: LabState, spec: LabSpec) -> None:
    net = ipaddress.IPv4Network(spec.serviceCIDR)
    reserved = {net.network_address, net.network_address + 1, net.network_address + 10,
                net.broadcast_address}
    free = (ip for ip in net if ip not in reserved)
    for s in spec.services:
        ports = [st.ServicePortState(p.name, p.port, p.targetPort, p.protocol, p.nodePort)
                 for p in s.ports]
        state.services.append(st.ServiceState(
            namespace=s.namespace, name=s.name, type=s.type,
            clusterIP=s.clusterIP or str(next(free)),
            selector=dict(s.selector), ports=ports, externalTrafficPolicy=s.externalTrafficPolicy,
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{spec.name}/{s.namespace}/{s.name}")),
            loadBalancerIP=s.loadBalancerIP))


def _apply_iptables(state: LabState) -> None:
    """(Re-)program every node's nat and filter tables: kube-proxy's chains + the datapath's
    masquerade."""
    restore = "iptables-nft-restore" if shutil.which("iptables-nft-restore") \
        else "iptables-restore"
    dp = datapath_for(state.cni)
    for n in state.nodes:
        text = kubeproxy.render(state, n.name, dp.nat_rules(state, n))
        nsu.run(nsu.in_netns(n.netns, [restore]), input=text)


def _write_cluster_state(state: LabState) -> None:
    try:
        from podflow.lab.kubeobjects import write_cluster_state
    except ImportError as e:
        raise LabError(f"podflow.lab.kubeobjects is not available: {e}") from e
    write_cluster_state(state, st.lab_dir(state.name) / "cluster-state")


def _start_workloads(state: LabState) -> None:
    from podflow.lab.workload import start_external, start_pod
    state.workloads_started = True
    for pod in state.pods:
        pod.pids = start_pod(state, pod, st.lab_dir(state.name))
        state.save()
    for ext in state.externals:
        ext.pids = start_external(state, ext, st.lab_dir(state.name))
        state.save()


def down(name: str, *, keep_store: bool = False) -> bool:
    """Remove lab ``name`` completely; idempotent, works with a partial or missing state.

    Returns False when there was nothing to remove (no state, no files, no namespaces: the
    lab does not exist, or no longer does); LabError for an invalid name.
    """
    _require_root()
    prefix = _prefix(name)
    state: LabState | None
    try:
        state = LabState.load(name)
    except (OSError, ValueError, TypeError, KeyError):
        state = None
    if state is None and not st.lab_dir(name).exists() and not nsu.list_netns(prefix):
        remove_all_resolv_confs(name)   # what an interrupted down may have left
        return False
    if state is not None:
        try:
            from podflow.lab.agents import stop_agents, stop_hub
            stop_agents(state)   # first: in hub mode they hand their last records over
            stop_hub(state)
        except Exception:   # the kill below covers what is left
            pass
        api_pid = state.apiserver_pid
        try:
            from podflow.lab.apiproc import stop_apiserver
            stop_apiserver(state)
        except Exception:   # the kill below covers what is left
            pass
        recorded = [p for pod in state.pods for p in pod.pids]
        recorded += [api_pid] if api_pid else []
        recorded += [p for ext in state.externals for p in ext.pids]
        recorded += [n.agent_pid for n in state.nodes if n.agent_pid]
        recorded += [state.hub_pid] if state.hub_pid else []
        nsu.kill_pids(recorded, since=state.created)
        with contextlib.suppress(Exception):   # the netns kill below covers what is left
            datapath_for(state.cni).stop(state)
    namespaces = nsu.list_netns(prefix)
    nsu.kill_pids([p for ns in namespaces for p in nsu.netns_pids(ns)])
    if state is not None:
        try:
            dp = datapath_for(state.cni)
        except LabError:
            dp = None
        for pod in state.pods:
            if dp is not None and pod.netns.startswith(prefix):
                remove_pod_network(state, pod, dp)
    for ns in sorted(namespaces, key=lambda n: ("-p-" not in n, n)):
        nsu.delete_netns(ns)
    remove_all_resolv_confs(name)
    _remove_files(name, keep_store)
    return True


def _remove_files(name: str, keep_store: bool) -> None:
    d = st.lab_dir(name)
    if not d.is_dir():
        return
    if not keep_store:
        shutil.rmtree(d, ignore_errors=True)
        return
    for child in d.iterdir():
        if child.name.startswith("store.duckdb"):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def status(name: str) -> LabState:
    """The saved state of lab ``name``; LabError if there is no such lab."""
    _prefix(name)
    try:
        return LabState.load(name)
    except FileNotFoundError as e:
        raise LabError(str(e)) from e


def list_labs() -> list[str]:
    """Names of the labs with a state file under the lab root."""
    root = st.lab_root()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "state.json").exists())


def resolve_target(state: LabState, target: str) -> str:
    """The netns of ``NS/POD`` (or ``NS/WORKLOAD``: its first pod), ``node/NAME`` or
    ``external/NAME``; LabError listing what exists if nothing matches."""
    kind, _, rest = target.partition("/")
    try:
        if kind == "node":
            return state.node(rest).netns
        if kind == "external":
            return state.external(rest).netns
        return find_pod(state, kind, rest).netns
    except KeyError:
        known = [f"{p.namespace}/{p.name}" for p in state.pods]
        known += [f"node/{n.name}" for n in state.nodes]
        known += [f"external/{e.name}" for e in state.externals]
        raise LabError(f"no {target!r} in lab {state.name!r}; try one of: "
                       f"{', '.join(known)}") from None


def find_pod(state: LabState, namespace: str, name: str) -> PodState:
    """Pod ``namespace/name``, or the first pod of workload ``name``; KeyError if none."""
    try:
        return state.pod(namespace, name)
    except KeyError:
        pods = state.pods_of(namespace, name)
        if pods:
            return pods[0]
        raise


def exec_in(name: str, target: str, argv: Sequence[str]) -> int:
    """Run ``argv`` inside the netns of ``target`` (see :func:`resolve_target`); its exit code."""
    _require_root()
    if not argv:
        raise LabError("no command given (put it after --)")
    netns = resolve_target(status(name), target)
    try:
        return subprocess.call(nsu.in_netns(netns, list(argv)))
    except KeyboardInterrupt:
        return 130


def restart_pod(name: str, namespace: str, pod: str) -> PodState:
    """Delete a pod and create its replacement on the same node, as a ReplicaSet would:
    new name, new netns, new IP from IPAM; services and cluster state follow. Returns it."""
    _require_root()
    state = status(name)
    try:
        old = find_pod(state, namespace, pod)
    except KeyError:
        raise LabError(f"no pod {namespace}/{pod} in lab {name!r}") from None
    index = state.pods.index(old)
    nsu.kill_pids(old.pids, since=state.created)
    remove_pod_network(state, old, datapath_for(state.cni))
    state.pods.remove(old)
    state.save()
    new = _new_pod(state, old.namespace, old.workload, dict(old.labels), list(old.ports),
                   state.node(old.node), index, host_network=old.host_network)
    _apply_iptables(state)
    metallb.announce(state)
    update_dns(state)
    state.save()
    _write_cluster_state(state)
    if state.workloads_started:
        from podflow.lab.workload import start_pod
        new.pids = start_pod(state, new, st.lab_dir(name))
        state.save()
    return new
