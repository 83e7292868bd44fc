"""The lab's Kubernetes objects, written to its cluster-state directory as JSON in the shape
``kubectl get KIND -A -o json`` prints (the lab's run-time record is :mod:`podflow.lab.state`).

The agent reads this directory instead of an API server. Each file is a ``List`` of one kind:
pods, replicasets, deployments, services, endpointslices, nodes, namespaces, configmaps
(``podflow/external-names`` naming the lab's external hosts, and ``kube-system/coredns-hosts``
whose ``hosts`` key lists ``<ip> <name>`` lines for the externals' DNS names, read by the
lab's DNS server). Node annotations are the datapath's
(:meth:`~podflow.lab.datapath.Datapath.node_annotations`: flannel's backend, Calico's address
and VXLAN tunnel), host-network pods carry ``spec.hostNetwork``, the node IP and a
``hostPort`` equal to each ``containerPort`` (the agent names a host-network server by the
ports it declares). A LoadBalancer Service has its nodePorts and, as MetalLB's controller
sets it, ``status.loadBalancer.ingress[0].ip`` = its VIP. Files are written atomically and
only when their content changed; a deleted pod simply vanishes from ``pods.json``, as from a
real API list.

Example::

    write_cluster_state(LabState.load("shop"), lab_dir("shop") / "cluster-state")
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from podflow.lab.datapath import datapath_for
from podflow.lab.dnszone import HOSTS_CONFIGMAP
from podflow.lab.state import LabState, NodeState, PodState, ServiceState
from podflow.lab.traffic import parse_port

EXTERNAL_NAMES = ("podflow", "external-names")
"""Namespace and name of the ConfigMap mapping display names to external IPs/CIDRs."""

_UID_NS = uuid.UUID("6f1c2a52-6a0e-4b8e-9d3c-2f7a4c1b9e01")
_IMAGE = "podflow/lab-workload:latest"


def stable_uid(*parts: str) -> str:
    """A UID that is the same for the same names every time (uuid5)."""
    return str(uuid.uuid5(_UID_NS, "/".join(parts)))


def rfc3339(ts: float) -> str:
    """Unix seconds -> ``2024-05-01T12:00:00Z`` (Kubernetes timestamp form)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short_hash(*parts: str, n: int = 10) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = int(hashlib.sha256("/".join(parts).encode()).hexdigest(), 16)
    out = ""
    for _ in range(n):
        digest, r = divmod(digest, len(alphabet))
        out += alphabet[r]
    return out


def _meta(kind: str, ns: str | None, name: str, created: float, uid: str = "",
          **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    meta["uid"] = uid or stable_uid(kind, ns or "", name)
    meta["creationTimestamp"] = rfc3339(created)
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def _owner(kind: str, ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": name,
            "uid": stable_uid(kind, ns, name), "controller": True, "blockOwnerDeletion": True}


def _replicaset_of(pod: PodState) -> str:
    return pod.replicaset or f"{pod.workload}-{_short_hash(pod.namespace, pod.workload)}"


def _container_ports(ports: list[str], host_network: bool) -> list[dict[str, Any]]:
    """The container's ``ports``: a host-network pod binds them on its node, so each also
    has ``hostPort`` equal to ``containerPort`` (as the API server fills it in)."""
    out: list[dict[str, Any]] = []
    for spec in ports:
        proto, port = parse_port(spec)
        entry: dict[str, Any] = {"containerPort": port}
        if host_network:
            entry["hostPort"] = port
        entry["protocol"] = proto.upper()
        out.append(entry)
    return out


def pod_object(state: LabState, pod: PodState) -> dict[str, Any]:
    """One Pod as the API server returns it."""
    rs = _replicaset_of(pod)
    labels = {**pod.labels, "pod-template-hash": rs.removeprefix(f"{pod.workload}-")}
    created = pod.created or state.created
    node_ip = next((n.ip for n in state.nodes if n.name == pod.node), "")
    cond = [{"type": t, "status": "True", "lastTransitionTime": rfc3339(created)}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": _meta("Pod", pod.namespace, pod.name, created, pod.uid,
                          generateName=f"{rs}-", labels=labels,
                          ownerReferences=[_owner("ReplicaSet", pod.namespace, rs)]),
        "spec": {"nodeName": pod.node, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "containers": [{"name": pod.workload, "image": _IMAGE,
                                 "ports": _container_ports(pod.ports, pod.host_network)}],
                 **({"hostNetwork": True} if pod.host_network else {})},
        "status": {"phase": "Running", "conditions": cond, "hostIP": node_ip,
                   "hostIPs": [{"ip": node_ip}], "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
                   "startTime": rfc3339(created), "qosClass": "BestEffort"},
    }


def _workloads(state: LabState) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) -> spec workload dict (labels, replicas), spec first, then pods."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for w in state.spec.get("workloads") or []:
        out[(w["namespace"], w["name"])] = {"labels": dict(w.get("labels") or {}),
                                            "replicas": int(w.get("replicas", 1))}
    for p in state.pods:
        out.setdefault((p.namespace, p.workload), {"labels": dict(p.labels), "replicas": 0})
    return out


def _apps(state: LabState) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deployments and ReplicaSets."""
    deps, rsets = [], []
    for (ns, name), w in sorted(_workloads(state).items()):
        pods = state.pods_of(ns, name)
        replicas = max(w["replicas"], len(pods))
        sel = {"matchLabels": w["labels"]}
        status = {"replicas": len(pods), "readyReplicas": len(pods),
                  "availableReplicas": len(pods), "observedGeneration": 1}
        deps.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": _meta("Deployment", ns, name, state.created, labels=w["labels"],
                                       generation=1),
                     "spec": {"replicas": replicas, "selector": sel,
                              "template": {"metadata": {"labels": w["labels"]}}},
                     "status": status})
        for rs in sorted({_replicaset_of(p) for p in pods}):
            labels = {**w["labels"], "pod-template-hash": rs.removeprefix(f"{name}-")}
            rsets.append({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                          "metadata": _meta("ReplicaSet", ns, rs, state.created, labels=labels,
                                            ownerReferences=[_owner("Deployment", ns, name)]),
                          "spec": {"replicas": replicas,
                                   "selector": {"matchLabels": labels},
                                   "template": {"metadata": {"labels": labels}}},
                          "status": status})
    return deps, rsets


def _selected(state: LabState, svc: ServiceState) -> list[PodState]:
    return sorted((p for p in state.pods if p.namespace == svc.namespace and svc.selector
                   and all(p.labels.get(k) == v for k, v in svc.selector.items())),
                  key=lambda p: p.name)


def _service(state: LabState, svc: ServiceState) -> dict[str, Any]:
    ports = []
    for sp in svc.ports:
        port: dict[str, Any] = {"name": sp.name, "protocol": sp.protocol, "port": sp.port,
                                "targetPort": sp.targetPort}
        if sp.name is None:
            del port["name"]
        if svc.type in ("NodePort", "LoadBalancer") and sp.nodePort is not None:
            port["nodePort"] = sp.nodePort
        ports.append(port)
    spec: dict[str, Any] = {"type": svc.type, "clusterIP": svc.clusterIP,
                            "clusterIPs": [svc.clusterIP], "ports": ports,
                            "selector": svc.selector, "sessionAffinity": "None",
                            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                            "internalTrafficPolicy": "Cluster"}
    status: dict[str, Any] = {}
    if svc.type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = svc.externalTrafficPolicy
    if svc.type == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = True
        if svc.loadBalancerIP:
            status["ingress"] = [{"ip": svc.loadBalancerIP, "ipMode": "VIP"}]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta("Service", svc.namespace, svc.name, state.created, svc.uid),
            "spec": spec, "status": {"loadBalancer": status}}


def _endpointslice(state: LabState, svc: ServiceState) -> dict[str, Any]:
    name = f"{svc.name}-{_short_hash(svc.namespace, svc.name, n=5)}"
    svc_uid = svc.uid or stable_uid("Service", svc.namespace, svc.name)
    eps = [{"addresses": [p.ip], "conditions": {"ready": True, "serving": True,
                                                "terminating": False},
            "nodeName": p.node,
            "targetRef": {"kind": "Pod", "namespace": p.namespace, "name": p.name,
                          "uid": p.uid or stable_uid("Pod", p.namespace, p.name)}}
           for p in _selected(state, svc)]
    ports = [{"name": sp.name or "", "port": sp.targetPort, "protocol": sp.protocol}
             for sp in svc.ports]
    owner = {"apiVersion": "v1", "kind": "Service", "name": svc.name, "uid": svc_uid,
             "controller": True, "blockOwnerDeletion": True}
    labels = {"kubernetes.io/service-name": svc.name,
              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": _meta("EndpointSlice", svc.namespace, name, state.created,
                              generateName=f"{svc.name}-", labels=labels,
                              ownerReferences=[owner]),
            "addressType": "IPv4", "endpoints": eps, "ports": ports}


def node_annotations(state: LabState, node: NodeState) -> dict[str, str]:
    """The annotations the datapath's agent (flanneld, calico/node) puts on a Node."""
    return datapath_for(state.cni).node_annotations(state, node)


def _node(state: LabState, node: NodeState) -> dict[str, Any]:
    ann = node_annotations(state, node)
    labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": _meta("Node", None, node.name, state.created, labels=labels,
                              annotations=ann),
            "spec": {"podCIDR": node.podCIDR, "podCIDRs": [node.podCIDR]},
            "status": {"addresses": [{"type": "InternalIP", "address": node.ip},
                                     {"type": "Hostname", "address": node.name}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def _namespaces(state: LabState) -> list[dict[str, Any]]:
    names = {"default", "kube-system", EXTERNAL_NAMES[0], *(state.spec.get("namespaces") or [])}
    names |= {p.namespace for p in state.pods} | {s.namespace for s in state.services}
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": _meta("Namespace", None, ns, state.created,
                               labels={"kubernetes.io/metadata.name": ns}),
             "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
            for ns in sorted(names)]


def _configmaps(state: LabState) -> list[dict[str, Any]]:
    ns, name = EXTERNAL_NAMES
    data = {e.name: e.ip for e in sorted(state.externals, key=lambda e: e.name)}
    hosts = "".join(f"{e.ip} {' '.join(e.dns_names)}\n"
                    for e in sorted(state.externals, key=lambda e: e.name) if e.dns_names)
    hns, hname = HOSTS_CONFIGMAP
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": _meta("ConfigMap", ns, name, state.created,
                               labels={"app.kubernetes.io/part-of": "podflow"}),
             "data": data},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": _meta("ConfigMap", hns, hname, state.created,
                               labels={"app.kubernetes.io/part-of": "podflow"}),
             "data": {"hosts": hosts}}]


def cluster_objects(state: LabState) -> dict[str, list[dict[str, Any]]]:
    """File name -> items, for every file of the directory."""
    deps, rsets = _apps(state)
    pods = sorted(state.pods, key=lambda p: (p.namespace, p.name))
    svcs = sorted(state.services, key=lambda s: (s.namespace, s.name))
    return {
        "pods.json": [pod_object(state, p) for p in pods],
        "replicasets.json": rsets,
        "deployments.json": deps,
        "services.json": [_service(state, s) for s in svcs],
        "endpointslices.json": [_endpointslice(state, s) for s in svcs],
        "nodes.json": [_node(state, n) for n in sorted(state.nodes, key=lambda n: n.index)],
        "namespaces.json": _namespaces(state),
        "configmaps.json": _configmaps(state),
    }


def write_cluster_state(state: LabState, directory: Path) -> None:
    """Write or refresh the cluster-state directory (atomic, only changed files rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    for fname, items in cluster_objects(state).items():
        doc = {"apiVersion": "v1", "kind": "List", "items": items,
               "metadata": {"resourceVersion": ""}}
        text = json.dumps(doc, indent=4) + "\n"
        target = directory / fname
        try:
            if target.read_text() == text:
                continue
        except OSError:
            pass
        tmp = directory / f".{fname}.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)
