"""``dns``: DNS queries, responses and answer types (Hubble's dns metrics).

Metrics, for connections with an L7 DNS record (from a packet source), counting every
message of the exchange as Hubble counts its DNS events (a stub resolver walking its search
list asks several names on one socket: ``db.example.com.app.svc.cluster.local`` NXDOMAIN,
..., then ``db.example.com``):

- ``hubble_dns_queries_total{<context>, rcode, qtypes, ips_returned[, query]}``: every
  query message; ``rcode`` is ``""`` (``"Policy denied"`` when the flow was dropped) and
  ``ips_returned`` ``"0"``, as Hubble labels request events;
- ``hubble_dns_responses_total{<context>, rcode, qtypes, ips_returned[, query]}``: every
  response message, ``rcode`` named as Hubble names it (``No Error``,
  ``Non-Existent Domain`` ...), ``ips_returned`` the number of addresses in the answer (of
  a ``No Error`` response; ``0`` otherwise);
- ``hubble_dns_response_types_total{<context>, type, qtypes[, query]}``: one per answer
  record, ``type`` ``A``/``AAAA`` (by address family) or ``CNAME``.

The context labels follow the message, as Hubble's DNS proxy records it: a query's
``source`` is the client and its ``destination`` the DNS server; a response's ``source`` is
the server and its ``destination`` the client (so "Missing DNS responses" lines each
client's responses up with its queries, and "Pods with DNS errors" lists the clients).

The ``query`` label is the name that answered (the one the application meant), for every
message of the exchange. Options: ``query`` adds the ``query`` label (high cardinality),
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

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally
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

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The query, and its response and answer records when one was seen."""
        dns = flow.l7.dns if flow.l7 is not None else None
        if dns is None or (self.ignore_aaaa and dns.qtypes == ("AAAA",)):
            return
        ctx = self.context.label_values(flow)
        qtypes = ",".join(dns.qtypes)
        extra = [dns.query] if self.with_query else []
        asked = max(1, dns.queries)
        if flow.verdict is Verdict.DROPPED:
            yield Tally(self.queries, ("query",), (*ctx, "Policy denied", qtypes, "0", *extra),
                        amount=asked)
            return
        yield Tally(self.queries, ("query",), (*ctx, "", qtypes, "0", *extra), amount=asked)
        rcodes = dns.rcodes or (() if dns.rcode is None else (dns.rcode,))
        if not rcodes:
            return
        back = self.context.label_values(flow, swap=True)
        for code in sorted(set(rcodes)):
            ips = str(len(dns.ips)) if code == 0 else "0"
            yield Tally(self.responses, ("response", str(code)),
                        (*back, RCODES.get(code, str(code)), qtypes, ips, *extra),
                        amount=rcodes.count(code))
        records = [("AAAA" if ":" in ip else "A") for ip in dns.ips] + [
            "CNAME" for _ in dns.cnames]
        for i, rtype in enumerate(records):
            yield Tally(self.types, ("record", str(i)), (*back, rtype, qtypes, *extra))
