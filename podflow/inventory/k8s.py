"""Kubernetes objects (``kubectl get X -A -o json``) -> typed, frozen records.

Pure parsing: every ``parse_*`` function takes a decoded JSON document in any of three shapes
(a ``List`` with ``items``, a single object, or a plain JSON list) and returns records.
Malformed items are skipped with a warning; a document of the wrong shape raises
``ValueError`` so the caller can keep its last good data.

Top-owner rule (:func:`top_owner`): Pod -> ReplicaSet -> Deployment and Pod -> Job -> CronJob
through the known ReplicaSets/Jobs; an unknown ReplicaSet falls back to the
``pod-template-hash`` heuristic (``frontend-7d4b9c`` -> Deployment ``frontend``); StatefulSet,
DaemonSet and other controllers are top owners themselves. A bare pod (no controller) has
no workload (None), as in Hubble, so it never masquerades as a controller.

Example::

    >>> pods = parse_pods({"kind": "Pod", "metadata": {"name": "web-5f9c-abcde",
    ...     "namespace": "shop", "labels": {"pod-template-hash": "5f9c"},
    ...     "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5f9c", "controller": True}]},
    ...     "spec": {"nodeName": "node1"}, "status": {"podIP": "10.244.0.5"}})
    >>> top_owner(pods[0], {})
    Workload(kind='Deployment', name='web')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from podflow.model.flow import Workload

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """One ``metadata.ownerReferences`` entry."""

    kind: str
    name: str
    controller: bool = False


@dataclass(frozen=True, slots=True)
class PodRecord:
    """A pod as the cluster state shows it."""

    namespace: str
    name: str
    uid: str
    ips: tuple[str, ...] = ()
    """``status.podIPs`` (or ``podIP``); empty while pending."""
    node_name: str | None = None
    host_network: bool = False
    labels: Labels = ()
    owners: tuple[OwnerRef, ...] = ()
    created: float | None = None
    """``metadata.creationTimestamp``, Unix seconds."""
    deleted: float | None = None
    """``metadata.deletionTimestamp`` (set when deletion was requested)."""
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    """A ReplicaSet or Job: an intermediate owner whose own owner is the workload."""

    kind: str
    namespace: str
    name: str
    owners: tuple[OwnerRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One entry of ``spec.ports``."""

    port: int
    protocol: str = "TCP"
    name: str | None = None
    target_port: int | str | None = None
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A Service and its frontends."""

    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    """``spec.clusterIPs`` (``None``/headless left out)."""
    external_ips: tuple[str, ...] = ()
    """``spec.externalIPs`` and ``status.loadBalancer.ingress[].ip``."""
    ports: tuple[ServicePort, ...] = ()
    selector: Labels = ()
    external_traffic_policy: str = "Cluster"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A Node and the addresses that stand for it."""

    name: str
    internal_ips: tuple[str, ...] = ()
    """``status.addresses`` of type InternalIP/ExternalIP plus flannel's public-ip."""
    pod_cidrs: tuple[str, ...] = ()
    labels: Labels = ()
    vtep_mac: str | None = None
    """From the ``flannel.alpha.coreos.com/backend-data`` annotation."""


@dataclass(frozen=True, slots=True)
class ClusterObjects:
    """One consistent read of the cluster state, input of ``Inventory.apply``."""

    pods: tuple[PodRecord, ...] = ()
    controllers: tuple[ControllerRecord, ...] = ()
    services: tuple[ServiceRecord, ...] = ()
    nodes: tuple[NodeRecord, ...] = ()
    namespaces: tuple[str, ...] = ()
    external_names: tuple[tuple[str, str], ...] = ()
    """(display name, IP or CIDR) from the ConfigMap ``podflow/external-names``."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def items_of(doc: Any) -> list[dict[str, Any]]:
    """The objects of a document: a ``List``'s items, a plain list, or a single object.

    Raises:
        ValueError: the document is none of these.
    """
    if isinstance(doc, list):
        raw = doc
    elif isinstance(doc, dict) and isinstance(doc.get("items"), list):
        raw = doc["items"]
    elif isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        raw = [doc]
    else:
        raise ValueError("expected a Kubernetes List, an object or a list of objects")
    return [x for x in raw if isinstance(x, dict)]


def parse_time(value: Any) -> float | None:
    """RFC 3339 timestamp (``2026-11-21T10:00:00Z``) -> Unix seconds, None if absent/bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _labels(d: Any) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in d.items())) if isinstance(d, dict) else ()


def _owners(meta: dict[str, Any]) -> tuple[OwnerRef, ...]:
    return tuple(OwnerRef(str(o["kind"]), str(o["name"]), bool(o.get("controller", False)))
                 for o in meta.get("ownerReferences") or () if "kind" in o and "name" in o)


def _parse_each(doc: Any, what: str, one: Any) -> list[Any]:
    out = []
    for item in items_of(doc):
        try:
            out.append(one(item))
        except (KeyError, TypeError, ValueError) as exc:
            name = (item.get("metadata") or {}).get("name", "?")
            log.warning("skipping malformed %s %r: %s", what, name, exc)
    return out


def _pod(item: dict[str, Any]) -> PodRecord:
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    ips = tuple(str(p["ip"]) for p in status.get("podIPs") or () if p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (str(status["podIP"]),)
    return PodRecord(
        namespace=str(meta.get("namespace", "default")), name=str(meta["name"]),
        uid=str(meta.get("uid") or f"{meta.get('namespace', 'default')}/{meta['name']}"),
        ips=ips, node_name=spec.get("nodeName"), host_network=bool(spec.get("hostNetwork")),
        labels=_labels(meta.get("labels")), owners=_owners(meta),
        created=parse_time(meta.get("creationTimestamp")),
        deleted=parse_time(meta.get("deletionTimestamp")), phase=status.get("phase"))


def parse_pods(doc: Any) -> list[PodRecord]:
    """Pods from ``pods.json``."""
    return _parse_each(doc, "pod", _pod)


def parse_controllers(doc: Any, kind: str) -> list[ControllerRecord]:
    """ReplicaSets or Jobs (``kind``) from ``replicasets.json`` / ``jobs.json``."""
    def one(item: dict[str, Any]) -> ControllerRecord:
        meta = item["metadata"]
        return ControllerRecord(item.get("kind", kind), str(meta.get("namespace", "default")),
                                str(meta["name"]), _owners(meta))
    return _parse_each(doc, kind, one)


def _port(p: dict[str, Any]) -> ServicePort:
    tp = p.get("targetPort")
    return ServicePort(port=int(p["port"]), protocol=str(p.get("protocol", "TCP")).upper(),
                       name=p.get("name"), target_port=tp if tp is not None else int(p["port"]),
                       node_port=int(p["nodePort"]) if p.get("nodePort") else None)


def _service(item: dict[str, Any]) -> ServiceRecord:
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    cips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ext = list(spec.get("externalIPs") or ())
    ext += [i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or () if "ip" in i]
    return ServiceRecord(
        namespace=str(meta.get("namespace", "default")), name=str(meta["name"]),
        type=str(spec.get("type", "ClusterIP")),
        cluster_ips=tuple(str(c) for c in cips if c and c != "None"),
        external_ips=tuple(str(e) for e in ext),
        ports=tuple(_port(p) for p in spec.get("ports") or ()),
        selector=_labels(spec.get("selector")),
        external_traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"))


def parse_services(doc: Any) -> list[ServiceRecord]:
    """Services from ``services.json``."""
    return _parse_each(doc, "service", _service)


def _node(item: dict[str, Any]) -> NodeRecord:
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    ips = [str(a["address"]) for a in status.get("addresses") or ()
           if a.get("type") in ("InternalIP", "ExternalIP") and a.get("address")]
    ann = meta.get("annotations") or {}
    public = ann.get("flannel.alpha.coreos.com/public-ip")
    if public and public not in ips:
        ips.append(str(public))
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    vtep_mac = None
    backend = ann.get("flannel.alpha.coreos.com/backend-data")
    if backend:
        try:
            vtep_mac = json.loads(backend).get("VtepMAC")
        except (ValueError, AttributeError):
            log.warning("node %s: unreadable flannel backend-data %r", meta.get("name"), backend)
    return NodeRecord(name=str(meta["name"]), internal_ips=tuple(ips),
                      pod_cidrs=tuple(str(c) for c in cidrs), labels=_labels(meta.get("labels")),
                      vtep_mac=vtep_mac)


def parse_nodes(doc: Any) -> list[NodeRecord]:
    """Nodes from ``nodes.json``."""
    return _parse_each(doc, "node", _node)


def parse_namespaces(doc: Any) -> list[str]:
    """Namespace names from ``namespaces.json``."""
    return _parse_each(doc, "namespace", lambda item: str(item["metadata"]["name"]))


EXTERNAL_NAMES = ("podflow", "external-names")
"""(namespace, name) of the ConfigMap mapping display names to external IPs/CIDRs."""


def parse_external_names(doc: Any) -> list[tuple[str, str]]:
    """(name, IP-or-CIDR) pairs from the ``podflow/external-names`` ConfigMap in ``doc``."""
    out: list[tuple[str, str]] = []
    for item in items_of(doc):
        meta = item.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) == EXTERNAL_NAMES:
            out += [(str(k), str(v).strip()) for k, v in (item.get("data") or {}).items()]
    return out


def top_owner(pod: PodRecord, controllers: Mapping[tuple[str, str, str], ControllerRecord],
              ) -> Workload | None:
    """The pod's top owner, following ReplicaSets and Jobs through ``controllers``.

    ``controllers`` maps (kind, namespace, name) to the record. See the module docstring for
    the rules; returns None for a bare pod.
    """
    refs = [o for o in pod.owners if o.controller] or list(pod.owners)
    if not refs:
        return None
    ref = refs[0]
    for _ in range(4):  # Pod -> RS -> Deployment is the deepest chain in core Kubernetes
        known = controllers.get((ref.kind, pod.namespace, ref.name))
        if known is not None:
            up = [o for o in known.owners if o.controller] or list(known.owners)
            if not up:
                return Workload(ref.kind, ref.name)
            ref = up[0]
            continue
        if ref.kind == "ReplicaSet":
            deployment = _strip_hash(ref.name, dict(pod.labels))
            if deployment is not None:
                return Workload("Deployment", deployment)
        return Workload(ref.kind, ref.name)
    return Workload(ref.kind, ref.name)


def _strip_hash(rs_name: str, labels: Mapping[str, str]) -> str | None:
    """Deployment name from a ReplicaSet name ``<deployment>-<pod-template-hash>``, if it is one."""
    h = labels.get("pod-template-hash")
    if h and rs_name.endswith("-" + h):
        return rs_name[: -len(h) - 1]
    return None
