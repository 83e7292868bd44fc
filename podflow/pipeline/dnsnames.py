"""DNS-based naming of external endpoints (pure): the names a pod resolved to an IP.

When a pod asks for ``db.example.com`` and connects to the answer ``192.0.2.10``, the flow
to ``192.0.2.10`` should say ``db.example.com``. :class:`DnsNameCache` learns from DNS flows
(``l7.dns`` with a NOERROR answer): for the client that asked, each answer address maps to
the query name (and the CNAMEs on the way, which ``names`` keeps), valid from the answer
until its TTL runs out (at least ``min_ttl``: applications keep using an address after the
TTL, so the floor is generous). :meth:`DnsNameCache.apply` then names the EXTERNAL ends
that have no name yet: the destination by ``(source ip, destination ip)``, the source of a
reply the same way round. A name from the ``podflow/external-names`` ConfigMap is never
replaced. Bounded (least recently learnt entries go first).

How the agent uses it: feed every decoded flow with ``l7.dns`` to :meth:`observe` before it
is stored, and pass every flow through :meth:`apply` before it is stored.

Example::

    >>> from podflow.model.flow import DnsInfo, Endpoint, EndpointKind, Flow, L7, Protocol
    >>> c = DnsNameCache()
    >>> pod = Endpoint("10.244.0.5", 41000, EndpointKind.POD)
    >>> dns = Flow(100.0, pod, Endpoint("10.96.0.10", 53, EndpointKind.SERVICE), Protocol.UDP,
    ...            l7=L7(dns=DnsInfo("db.example.com", ("A",), 0, ("192.0.2.10",), 60)))
    >>> c.observe(dns)
    1
    >>> f = Flow(101.0, pod, Endpoint("192.0.2.10", 5432, EndpointKind.EXTERNAL), Protocol.TCP)
    >>> c.apply(f).destination.name
    'db.example.com'
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from podflow.model.flow import Endpoint, EndpointKind, Flow

NAMEABLE = (EndpointKind.EXTERNAL,)
"""Endpoint kinds that get a DNS name (in-cluster ends are named by the inventory)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """One learnt answer: who asked, for which name, valid when."""

    name: str
    """The name the client asked for."""
    names: tuple[str, ...]
    """The query name and the CNAMEs of the answer, in order."""
    since: float
    """When the answer was seen (the DNS flow's start)."""
    until: float
    """When it stops being used for naming (answer time + max(TTL, min_ttl))."""


class DnsNameCache:
    """See the module docstring."""

    def __init__(self, min_ttl: float = 300.0, max_entries: int = 100_000,
                 skew: float = 2.0, any_client: bool = False) -> None:
        """``skew``: a flow may start this long before the answer (clocks, batching);
        ``any_client``: fall back to any client's resolution of the address (off: a name
        one pod resolved is not assumed for another)."""
        self.min_ttl = min_ttl
        self.max_entries = max_entries
        self.skew = skew
        self.any_client = any_client
        self._by_pair: OrderedDict[tuple[str, str], Resolution] = OrderedDict()
        self._by_ip: dict[str, Resolution] = {}
        self.learnt = 0
        """Answers learnt."""
        self.named = 0
        """Endpoints named by :meth:`apply`."""

    def __len__(self) -> int:
        """Entries held."""
        return len(self._by_pair)

    def observe(self, flow: Flow) -> int:
        """Learn from a DNS flow; how many addresses it taught (0 for anything else)."""
        dns = flow.l7.dns if flow.l7 is not None else None
        if dns is None or dns.rcode != 0 or not dns.ips or not dns.query:
            return 0
        ttl = max(float(dns.ttl or 0), self.min_ttl)
        res = Resolution(dns.query, (dns.query, *dns.cnames), flow.time, flow.time + ttl)
        client = flow.source.ip
        for ip in dns.ips:
            key = (client, ip)
            self._by_pair.pop(key, None)
            self._by_pair[key] = res
            self._by_ip[ip] = res
        while len(self._by_pair) > self.max_entries:
            (_c, ip), old = self._by_pair.popitem(last=False)
            if self._by_ip.get(ip) is old:
                del self._by_ip[ip]
        self.learnt += len(dns.ips)
        return len(dns.ips)

    def lookup(self, client_ip: str, ip: str, at: float) -> Resolution | None:
        """What ``client_ip`` resolved to ``ip``, valid at ``at``."""
        res = self._by_pair.get((client_ip, ip))
        if res is None and self.any_client:
            res = self._by_ip.get(ip)
        if res is None or not res.since - self.skew <= at <= res.until:
            return None
        return res

    def _name(self, end: Endpoint, other: Endpoint, at: float) -> Endpoint:
        if end.kind not in NAMEABLE or end.name is not None:
            return end
        res = self.lookup(other.ip, end.ip, at)
        if res is None:
            return end
        self.named += 1
        return dataclasses.replace(end, name=res.name)

    def apply(self, flow: Flow) -> Flow:
        """``flow`` with its unnamed external end(s) named, or ``flow`` itself."""
        dst = self._name(flow.destination, flow.source, flow.time)
        src = self._name(flow.source, flow.destination, flow.time)
        if dst is flow.destination and src is flow.source:
            return flow
        return dataclasses.replace(flow, source=src, destination=dst)
