"""Kubernetes objects (``kubectl get X -A -o json``) -> typed, frozen records.

Pure parsing: every ``parse_*`` function takes a decoded JSON document in any of three shapes
(a ``List`` with ``items``, a single object, or a plain JSON list) and returns records.
The input is untrusted: every field is read through :class:`Fields`, which never raises
anything but :class:`~podflow.model.losses.DecodeError`. An object that cannot be
understood (not an object, no name, a field of the wrong type) is logged, counted in the
caller's :class:`~podflow.model.losses.Losses` as ``bad_object`` and skipped, so the rest
of the document still loads; a document of the wrong shape raises ``DecodeError`` (a
``ValueError``, reason ``not_kubernetes``) so the caller can keep its last good data.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from podflow.model.flow import Workload
from podflow.model.losses import DecodeError, Losses

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """One ``metadata.ownerReferences`` entry."""

    kind: str
    name: str
    controller: bool = False


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """One ``spec.containers[].ports[]`` entry: a port a container says it serves.

    For a host-network pod the port is bound in the node's namespace, so it says which pod
    answers at ``<node IP>:<port>`` (Kubernetes requires ``hostPort``, when set, to equal
    ``containerPort`` there); for other pods ``hostPort`` is a node port forwarded to it.
    """

    port: int
    """``containerPort`` (1-65535)."""
    protocol: str = "TCP"
    """``protocol``, upper-case (``TCP``, ``UDP``, ``SCTP``); TCP when absent."""
    host_port: int | None = None
    """``hostPort``, if any."""


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
    ports: tuple[ContainerPort, ...] = ()
    """Ports declared by its containers (and by its sidecars: init containers with
    ``restartPolicy: Always``), in declaration order."""


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


def items_of(doc: Any, losses: Losses | None = None) -> list[dict[str, Any]]:
    """The objects of a document: a ``List``'s items, a plain list, or a single object.

    Items that are not JSON objects are skipped and counted as ``bad_object`` in ``losses``.

    Raises:
        DecodeError: (a ``ValueError``, reason ``not_kubernetes``) the document is none of
            these.
    """
    if isinstance(doc, list):
        raw: Any = doc
    elif isinstance(doc, dict) and "items" in doc:
        raw = [] if doc["items"] is None else doc["items"]
    elif isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        raw = [doc]
    else:
        raise DecodeError("not_kubernetes",
                          "expected a Kubernetes List, an object or a list of objects")
    if not isinstance(raw, list):
        raise DecodeError("not_kubernetes", "'items' is not a list")
    out = [x for x in raw if isinstance(x, dict)]
    if losses is not None and len(out) < len(raw):
        losses.count("bad_object", len(raw) - len(out))
    return out


def parse_time(value: Any) -> float | None:
    """RFC 3339 timestamp (``2026-11-21T10:00:00Z``) -> Unix seconds, None if absent/bad."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):   # out-of-range dates overflow
        return None


class Fields:
    """Type-safe reads of one decoded JSON object, for parsers of untrusted input.

    A missing or ``null`` field reads as its default; a field that is present with the
    wrong type (``"metadata": "oops"``, a number where a name belongs) raises
    :class:`DecodeError` with reason ``bad_object`` and the field's path, so the object is
    counted and skipped instead of half-understood.

    >>> pod = Fields({"metadata": {"name": "web"}, "spec": None}, "pod")
    >>> pod.obj("metadata").need_text("name"), pod.obj("spec").text("nodeName")
    ('web', None)
    >>> Fields({"metadata": "oops"}, "pod").obj("metadata")
    Traceback (most recent call last):
    ...
    podflow.model.losses.DecodeError: bad_object: pod.metadata: expected an object, got str
    """

    __slots__ = ("_d", "where")

    def __init__(self, value: Any, where: str) -> None:
        """Wrap ``value`` (must be a dict); ``where`` names it in error details."""
        if not isinstance(value, dict):
            raise _bad(where, "an object", value)
        self._d: dict[str, Any] = value
        self.where = where

    def _get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        value = self._d.get(key)
        if value is None:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise _bad(f"{self.where}.{key}", what, value)
        return value

    def has(self, key: str) -> bool:
        """Whether ``key`` is present and not null."""
        return self._d.get(key) is not None

    def obj(self, key: str) -> Fields:
        """The nested object ``key`` (empty if absent)."""
        value = self._get(key, (dict,), "an object")
        return Fields({} if value is None else value, f"{self.where}.{key}")

    def objs(self, key: str) -> list[Fields]:
        """The list of objects ``key`` (empty if absent)."""
        items = self._get(key, (list,), "a list") or []
        return [Fields(x, f"{self.where}.{key}[{i}]") for i, x in enumerate(items)]

    def text(self, key: str) -> str | None:
        """The string ``key``, None if absent."""
        value: str | None = self._get(key, (str,), "a string")
        if value is not None:
            _check_text(value, f"{self.where}.{key}")
        return value

    def need_text(self, key: str) -> str:
        """The non-empty string ``key``; a bad object without it."""
        value = self.text(key)
        if not value:
            raise DecodeError("bad_object", f"{self.where}.{key}: missing")
        return value

    def texts(self, key: str) -> list[str]:
        """The list of strings ``key`` (empty if absent)."""
        items = self._get(key, (list,), "a list") or []
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise _bad(f"{self.where}.{key}[{i}]", "a string", x)
            _check_text(x, f"{self.where}.{key}[{i}]")
        return list(items)

    def flag(self, key: str) -> bool:
        """The boolean ``key`` (False if absent)."""
        return bool(self._get(key, (bool,), "true or false"))

    def port(self, key: str) -> int | None:
        """The port number ``key`` (1-65535), None if absent or 0."""
        value: int | None = self._get(key, (int,), "a port number")
        if value is not None and not 0 <= value <= 65535:
            raise _bad(f"{self.where}.{key}", "a port number", value)
        return value or None

    def int_or_text(self, key: str) -> int | str | None:
        """``key`` as a port number or a port name (``targetPort``), None if absent."""
        if isinstance(self._d.get(key), str):
            return self.need_text(key)
        return self.port(key)

    def labels(self, key: str) -> Labels:
        """The string-to-string map ``key`` as sorted pairs (labels, selectors)."""
        value = self._get(key, (dict,), "a map of strings")
        if not value:
            return ()
        for k, v in value.items():
            where = f"{self.where}.{key}.{_clip(k)}"
            if not isinstance(v, str):
                raise _bad(where, "a string", v)
            _check_text(k, where)
            _check_text(v, where)
        return tuple(sorted(value.items()))


def _check_text(text: str, where: str) -> None:
    """Refuse a string that is not Unicode text (a lone surrogate from a ``\\ud800`` escape):
    the store, the API and the logs could not encode it."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("bad_object", f"{where}: not Unicode text") from None


def _clip(text: str, limit: int = 64) -> str:
    """``text`` for a log line: shortened, anything unprintable escaped."""
    if not text.isprintable():
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def _bad(where: str, expected: str, value: Any) -> DecodeError:
    return DecodeError("bad_object", f"{where}: expected {expected}, got {type(value).__name__}")


def _owners(meta: Fields) -> tuple[OwnerRef, ...]:
    return tuple(OwnerRef(kind, name, o.flag("controller"))
                 for o in meta.objs("ownerReferences")
                 if (kind := o.text("kind")) and (name := o.text("name")))


_WARN_LIMIT = 3
"""Malformed objects logged one by one per document; the rest are summed up in one line."""


def _parse_each(doc: Any, what: str, one: Callable[[Fields], T],
                losses: Losses | None) -> list[T]:
    """``one`` applied to every object of ``doc``; bad objects are logged, counted, skipped."""
    out: list[T] = []
    bad = 0
    for i, item in enumerate(items_of(doc, losses)):
        try:
            out.append(one(Fields(item, what)))
        except DecodeError as exc:
            bad += 1
            if losses is not None:
                losses.count(exc.reason)
            if bad <= _WARN_LIMIT:
                name = _name_of(item)
                log.warning("skipping malformed %s #%d %s: %s", what, i, name, exc.detail)
    if bad > _WARN_LIMIT:
        log.warning("skipped %d more malformed %ss", bad - _WARN_LIMIT, what)
    return out


def _name_of(item: dict[str, Any]) -> str:
    """The object's ``metadata.name`` for a log line, if it has a readable one."""
    meta = item.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return repr(_clip(name)) if isinstance(name, str) else "(no name)"


def _container_port(p: Fields) -> ContainerPort:
    port = p.port("containerPort")
    if port is None:
        raise DecodeError("bad_object", f"{p.where}.containerPort: missing")
    return ContainerPort(port=port, protocol=(p.text("protocol") or "TCP").upper(),
                         host_port=p.port("hostPort"))


def _container_ports(spec: Fields) -> tuple[ContainerPort, ...]:
    """The ports of the pod's containers and sidecars; a malformed entry (no or a bad
    ``containerPort``, a field of the wrong type) makes the pod a bad object, as a malformed
    service port makes its service one."""
    containers = spec.objs("containers")
    containers += [c for c in spec.objs("initContainers") if c.text("restartPolicy") == "Always"]
    return tuple(_container_port(p) for c in containers for p in c.objs("ports"))


def _pod(obj: Fields) -> PodRecord:
    meta, spec, status = obj.obj("metadata"), obj.obj("spec"), obj.obj("status")
    name = meta.need_text("name")
    namespace = meta.text("namespace") or "default"
    ips = tuple(ip for p in status.objs("podIPs") if (ip := p.text("ip")))
    pod_ip = status.text("podIP")
    if not ips and pod_ip:
        ips = (pod_ip,)
    return PodRecord(
        namespace=namespace, name=name, uid=meta.text("uid") or f"{namespace}/{name}",
        ips=ips, node_name=spec.text("nodeName"), host_network=spec.flag("hostNetwork"),
        labels=meta.labels("labels"), owners=_owners(meta),
        created=parse_time(meta.text("creationTimestamp")),
        deleted=parse_time(meta.text("deletionTimestamp")), phase=status.text("phase"),
        ports=_container_ports(spec))


def parse_pods(doc: Any, losses: Losses | None = None) -> list[PodRecord]:
    """Pods from ``pods.json``; malformed ones are counted in ``losses`` and skipped."""
    return _parse_each(doc, "pod", _pod, losses)


def parse_controllers(doc: Any, kind: str, losses: Losses | None = None,
                      ) -> list[ControllerRecord]:
    """ReplicaSets or Jobs (``kind``) from ``replicasets.json`` / ``jobs.json``."""
    def one(obj: Fields) -> ControllerRecord:
        meta = obj.obj("metadata")
        return ControllerRecord(obj.text("kind") or kind, meta.text("namespace") or "default",
                                meta.need_text("name"), _owners(meta))
    return _parse_each(doc, kind, one, losses)


def _port(p: Fields) -> ServicePort:
    port = p.port("port")
    if port is None:
        raise DecodeError("bad_object", f"{p.where}.port: missing")
    target = p.int_or_text("targetPort")
    return ServicePort(port=port, protocol=(p.text("protocol") or "TCP").upper(),
                       name=p.text("name"), target_port=port if target is None else target,
                       node_port=p.port("nodePort"))


def _service(obj: Fields) -> ServiceRecord:
    meta, spec, status = obj.obj("metadata"), obj.obj("spec"), obj.obj("status")
    cluster_ip = spec.text("clusterIP")
    cips = spec.texts("clusterIPs") or ([cluster_ip] if cluster_ip else [])
    ext = spec.texts("externalIPs")
    ext += [ip for i in status.obj("loadBalancer").objs("ingress") if (ip := i.text("ip"))]
    return ServiceRecord(
        namespace=meta.text("namespace") or "default", name=meta.need_text("name"),
        type=spec.text("type") or "ClusterIP",
        cluster_ips=tuple(c for c in cips if c and c != "None"),
        external_ips=tuple(ext), ports=tuple(_port(p) for p in spec.objs("ports")),
        selector=spec.labels("selector"),
        external_traffic_policy=spec.text("externalTrafficPolicy") or "Cluster")


def parse_services(doc: Any, losses: Losses | None = None) -> list[ServiceRecord]:
    """Services from ``services.json``; malformed ones are counted and skipped."""
    return _parse_each(doc, "service", _service, losses)


_BACKEND_DATA_LIMIT = 4096
"""Longest flannel ``backend-data`` annotation read (it holds a small JSON object)."""


def _vtep_mac(node: str, backend: str | None) -> str | None:
    """``VtepMAC`` from flannel's ``backend-data`` annotation (None if absent or unreadable)."""
    if not backend or backend == "null":
        return None
    data: Any = None
    if len(backend) <= _BACKEND_DATA_LIMIT:
        try:
            data = json.loads(backend)
        except (ValueError, RecursionError):
            data = None
    mac = data.get("VtepMAC") if isinstance(data, dict) else None
    if isinstance(mac, str):
        return mac
    if not isinstance(data, dict) or "VtepMAC" in data:
        log.warning("node %s: unreadable flannel backend-data %r", _clip(node), _clip(backend))
    return None


def _node(obj: Fields) -> NodeRecord:
    meta, spec, status = obj.obj("metadata"), obj.obj("spec"), obj.obj("status")
    name = meta.need_text("name")
    ips = [ip for a in status.objs("addresses")
           if a.text("type") in ("InternalIP", "ExternalIP") and (ip := a.text("address"))]
    ann = meta.obj("annotations")
    public = ann.text("flannel.alpha.coreos.com/public-ip")
    if public and public not in ips:
        ips.append(public)
    pod_cidr = spec.text("podCIDR")
    cidrs = spec.texts("podCIDRs") or ([pod_cidr] if pod_cidr else [])
    return NodeRecord(name=name, internal_ips=tuple(ips), pod_cidrs=tuple(cidrs),
                      labels=meta.labels("labels"),
                      vtep_mac=_vtep_mac(name, ann.text("flannel.alpha.coreos.com/backend-data")))


def parse_nodes(doc: Any, losses: Losses | None = None) -> list[NodeRecord]:
    """Nodes from ``nodes.json``; malformed ones are counted and skipped."""
    return _parse_each(doc, "node", _node, losses)


def parse_namespaces(doc: Any, losses: Losses | None = None) -> list[str]:
    """Namespace names from ``namespaces.json``; malformed ones are counted and skipped."""
    return _parse_each(doc, "namespace", lambda obj: obj.obj("metadata").need_text("name"),
                       losses)


EXTERNAL_NAMES = ("podflow", "external-names")
"""(namespace, name) of the ConfigMap mapping display names to external IPs/CIDRs."""


def _external_names(obj: Fields) -> list[tuple[str, str]]:
    meta = obj.obj("metadata")
    if (meta.text("namespace"), meta.text("name")) != EXTERNAL_NAMES:
        return []
    return [(k, v.strip()) for k, v in obj.labels("data")]


def parse_external_names(doc: Any, losses: Losses | None = None) -> list[tuple[str, str]]:
    """(name, IP-or-CIDR) pairs from the ``podflow/external-names`` ConfigMap in ``doc``."""
    found = _parse_each(doc, "configmap", _external_names, losses)
    return [pair for pairs in found for pair in pairs]


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
