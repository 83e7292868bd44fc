"""``dns``: DNS queries, responses and answer types (Hubble's dns metrics).

Metrics, for connections with an L7 DNS record (from a packet source):

- ``hubble_dns_queries_total{<context>, rcode, qtypes, ips_returned[, query]}``: every
  query; ``rcode`` is ``""`` (``"Policy denied"`` when the flow was dropped) and
  ``ips_returned`` ``"0"``, as Hubble labels request events;
- ``hubble_dns_responses_total{<context>, rcode, qtypes, ips_returned[, query]}``: every
  query that got an answer, ``rcode`` named as Hubble names it (``No Error``,
  ``Non-Existent Domain`` ...), ``ips_returned`` the number of addresses in the answer;
- ``hubble_dns_response_types_total{<context>, type, qtypes[, query]}``: one per answer
  record, ``type`` ``A``/``AAAA`` (by address family) or ``CNAME``.

Options: ``query`` adds the ``query`` label (the name asked; high cardinality),
``ignoreAAAA`` skips queries that asked only for ``AAAA``.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import DnsInfo, Endpoint, Flow, L7, Protocol
    >>> reg = CollectorRegistry()
    >>> h = DnsHandler(reg, {})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.96.0.10", 53), Protocol.UDP,
    ...     l7=L7(dns=DnsInfo("db.example", ("A",), 0, ("192.0.2.1",)))), 0.0)
    >>> reg.get_sample_value("hubble_dns_responses_total", {"rcode": "No Error",
    ...     "qtypes": "A", "ips_returned": "1"})
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler
from podflow.model.flow import Flow, Verdict

RCODES = {0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
          4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
          7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
          9: "Not Authorized", 10: "Name not contained in zone",
          11: "DSO-TYPE Not Implemented", 16: "Bad OPT Version", 17: "Key not recognized",
          18: "Signature out of time window", 19: "Bad TKEY Mode", 20: "Duplicate key name",
          21: "Algorithm not supported", 22: "Bad Truncation",
          23: "Bad/missing Server Cookie"}
"""DNS response codes (RFC 6895 registry) named as Hubble's ``rcode`` label names them."""


class DnsHandler(Handler):
    """Counts DNS queries, responses and answer types (see the module doc)."""

    name = "dns"
    help = ("hubble_dns_queries_total / hubble_dns_responses_total{rcode,qtypes,ips_returned}"
            " and hubble_dns_response_types_total{type,qtypes}: DNS seen by a packet source.")
    options_help = {"query": "add the 'query' label (the name asked)",
                    "ignoreaaaa": "skip queries that ask only for AAAA"}

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the three metrics."""
        super().__init__(registry, options, ttl)
        self.with_query = "query" in options
        self.ignore_aaaa = "ignoreaaaa" in options
        ctx = self.context.label_names()
        extra = ["query"] if self.with_query else []
        labels = [*ctx, "rcode", "qtypes", "ips_returned", *extra]
        self.queries = self.counter("hubble_dns_queries", "Number of DNS queries observed",
                                    labels)
        self.responses = self.counter("hubble_dns_responses",
                                      "Number of DNS responses observed", labels)
        self.types = self.counter("hubble_dns_response_types",
                                  "Number of DNS response records by type",
                                  [*ctx, "type", "qtypes", *extra])

    def process(self, flow: Flow, now: float) -> None:
        """Count the query, and its response when one was seen."""
        dns = flow.l7.dns if flow.l7 is not None else None
        if dns is None or (self.ignore_aaaa and dns.qtypes == ("AAAA",)):
            return
        ctx = self.context.label_values(flow)
        qtypes = ",".join(dns.qtypes)
        extra = [dns.query] if self.with_query else []
        if flow.verdict is Verdict.DROPPED:
            self.queries.inc([*ctx, "Policy denied", qtypes, "0", *extra], now)
            return
        self.queries.inc([*ctx, "", qtypes, "0", *extra], now)
        if dns.rcode is None:
            return
        rcode = RCODES.get(dns.rcode, str(dns.rcode))
        self.responses.inc([*ctx, rcode, qtypes, str(len(dns.ips)), *extra], now)
        for rtype in [("AAAA" if ":" in ip else "A") for ip in dns.ips] + [
                "CNAME" for _ in dns.cnames]:
            self.types.inc([*ctx, rtype, qtypes, *extra], now)
