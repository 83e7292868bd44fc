"""The names the lab's cluster DNS answers, built from the cluster-state directory.

Like CoreDNS with the ``kubernetes`` and ``hosts`` plugins:

- ``<service>.<namespace>.svc.cluster.local`` -> the Service's ClusterIP (headless Services,
  without a ClusterIP, are not answered);
- ``<a-b-c-d>.<namespace>.pod.cluster.local`` -> ``a.b.c.d`` (CoreDNS's default
  ``pods insecure`` mode: any well-formed dashed IPv4 address is answered);
- names from the ConfigMap ``kube-system/coredns-hosts`` (key ``hosts``, lines in
  ``/etc/hosts`` form: ``<ip> <name> [<name> ...]``, ``#`` comments);
- everything else in ``cluster.local`` is NXDOMAIN, names that only exist as the parent of
  another (``shop.svc.cluster.local``) are NOERROR without answers, and names outside the
  cluster domain that no hosts line gives are NXDOMAIN (the lab has no upstream resolver).

``A`` questions get the IPv4 addresses, ``AAAA`` the IPv6 ones (an empty NOERROR for every
cluster name), other types an empty NOERROR for names that exist.

Example::

    >>> z = Zone({"backend.shop.svc.cluster.local": "10.96.0.11"},
    ...          parse_hosts("192.168.100.10 db.example.com"))
    >>> z.lookup("Backend.shop.svc.cluster.local.", "A")
    Answer(rcode=0, ips=('10.96.0.11',), ttl=5, authoritative=True)
    >>> z.lookup("db.example.com", "AAAA").ips, z.lookup("nope.svc.cluster.local", "A").rcode
    ((), 3)
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLUSTER_DOMAIN = "cluster.local"
"""The cluster's DNS domain."""
HOSTS_CONFIGMAP = ("kube-system", "coredns-hosts")
"""Namespace and name of the ConfigMap whose ``hosts`` key lists extra names."""
CLUSTER_TTL = 5
"""TTL of cluster names (CoreDNS's ``kubernetes`` plugin default)."""
HOSTS_TTL = 3600
"""TTL of hosts names (CoreDNS's ``hosts`` plugin default)."""
NOERROR, NXDOMAIN = 0, 3
"""Response codes the zone produces."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the zone says about one question."""

    rcode: int
    """0 NOERROR or 3 NXDOMAIN."""
    ips: tuple[str, ...] = ()
    """Addresses of the asked family (empty for NXDOMAIN and NODATA)."""
    ttl: int = CLUSTER_TTL
    """TTL of the answers."""
    authoritative: bool = True
    """Whether the name is in a zone the server is authoritative for."""


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """``/etc/hosts``-style text -> lowercase name -> addresses (bad lines are skipped)."""
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            ip = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            log.warning("hosts: bad address in %r", line)
            continue
        for name in fields[1:]:
            key = name.lower().rstrip(".")
            if ip not in out.get(key, ()):
                out[key] = (*out.get(key, ()), ip)
    return out


def _dashed_ip(label: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(label.replace("-", ".")))
    except ValueError:
        return None


def _parents(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


class Zone:
    """Service names and hosts names; :meth:`lookup` answers one question."""

    def __init__(self, services: dict[str, str], hosts: dict[str, tuple[str, ...]],
                 domain: str = CLUSTER_DOMAIN) -> None:
        self.domain = domain.lower().strip(".")
        self.services = {k.lower(): v for k, v in services.items()}
        self.hosts = hosts
        self.parents = {self.domain, f"svc.{self.domain}", f"pod.{self.domain}"}
        for name in [*self.services, *self.hosts]:
            self.parents.update(_parents(name))

    def _cluster(self, name: str) -> tuple[str, ...] | None:
        """Addresses of a cluster name, or None if it does not exist."""
        if name in self.services:
            return (self.services[name],)
        labels = name[: -len(self.domain) - 1].split(".")
        if len(labels) == 3 and labels[2] == "pod":
            ip = _dashed_ip(labels[0])
            return (ip,) if ip else None
        return None

    def lookup(self, name: str, qtype: str) -> Answer:
        """The answer to ``name``/``qtype`` (``A``, ``AAAA``, or any other type name)."""
        n = name.lower().rstrip(".")

        def family(ips: tuple[str, ...]) -> tuple[str, ...]:
            want = {"A": 4, "AAAA": 6}.get(qtype)
            return tuple(ip for ip in ips if ipaddress.ip_address(ip).version == want)

        if n in self.hosts:
            return Answer(NOERROR, family(self.hosts[n]), HOSTS_TTL)
        in_cluster = n == self.domain or n.endswith("." + self.domain)
        if in_cluster and (ips := self._cluster(n)) is not None:
            return Answer(NOERROR, family(ips), CLUSTER_TTL)
        if n in self.parents:
            return Answer(NOERROR, (), CLUSTER_TTL if in_cluster else HOSTS_TTL)
        return Answer(NXDOMAIN, (), CLUSTER_TTL, authoritative=in_cluster)


def _items(path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    items = doc.get("items") if isinstance(doc, dict) else None
    return [i for i in items or [] if isinstance(i, dict)]


def zone_from_objects(services: list[dict[str, Any]], configmaps: list[dict[str, Any]],
                      domain: str = CLUSTER_DOMAIN) -> Zone:
    """A zone from Service and ConfigMap objects (as the Kubernetes API returns them)."""
    names: dict[str, str] = {}
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not meta.get("name"):
            continue
        names[f"{meta['name']}.{meta.get('namespace', 'default')}.svc.{domain}"] = ip
    hosts: dict[str, tuple[str, ...]] = {}
    for cm in configmaps:
        meta = cm.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) == HOSTS_CONFIGMAP:
            hosts.update(parse_hosts(str((cm.get("data") or {}).get("hosts", ""))))
    return Zone(names, hosts, domain)


def load_zone(directory: Path, domain: str = CLUSTER_DOMAIN) -> Zone:
    """The zone of a cluster-state directory (``services.json``, ``configmaps.json``)."""
    return zone_from_objects(_items(directory / "services.json"),
                             _items(directory / "configmaps.json"), domain)


class ZoneCache:
    """The zone of a directory, rebuilt whenever one of its two files changes."""

    FILES = ("services.json", "configmaps.json")

    def __init__(self, directory: Path, domain: str = CLUSTER_DOMAIN) -> None:
        self.directory, self.domain = directory, domain
        self._key: tuple[tuple[int, int], ...] | None = None
        self._zone = Zone({}, {}, domain)

    def _stat(self) -> tuple[tuple[int, int], ...]:
        out = []
        for f in self.FILES:
            try:
                st = (self.directory / f).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, -1))
        return tuple(out)

    def get(self) -> Zone:
        """The current zone (the previous one if the files cannot be read now)."""
        key = self._stat()
        if key != self._key:
            try:
                self._zone = load_zone(self.directory, self.domain)
                self._key = key
            except (OSError, ValueError) as exc:
                log.warning("cannot read cluster state in %s: %s", self.directory, exc)
        return self._zone
