"""Hubble's flow filters (``flow.FlowFilter``), with Hubble's meaning, over Hubble events.

This is the filter language of the Observer API, declared once: ``GetFlows`` whitelists and
blacklists as the ``hubble`` CLI builds them from its flags. The semantics are Hubble's
(cilium/cilium ``pkg/hubble/filters``; see docs/design/hubble-observer-api.md), evaluated
on the events podflow serves (:mod:`podflow.observer.convert`):

- an event passes if it matches **any** whitelist filter (none: every event) and **no**
  blacklist filter; in one filter every field that is set must match, and one value of a
  repeated field is enough;
- pods and services are ``[NAMESPACE/][NAME-PREFIX]``: ``name`` alone is in namespace
  ``default``, ``ns/`` is anything in ``ns``, ``/name`` any namespace, ``/`` anything; an end
  without namespace and name never matches;
- IPs are exact addresses or CIDRs; ports are decimal strings; ``protocol`` is an L4 name
  (``tcp``, ``udp``, ``icmp``, ``icmpv4``, ``icmpv6``, ``sctp``) or an L7 one (``dns``,
  ``http``), any case; labels are Kubernetes label selectors over Cilium's labels
  (``app=web`` matches ``k8s:app=web``; ``k8s:app=web`` only that source);
  ``dns_query``, ``http_path`` and ``http_url`` are regular expressions searched in the value;
  ``http_status_code`` is a code or a prefix with ``+`` (``5+``, ``40+``); ``node_name`` and
  the FQDNs take ``*`` wildcards.

A filter podflow cannot evaluate faithfully is refused, never ignored: an empty value, a
malformed one, or a field this version does not know (a newer client's filter, Hubble's
experimental CEL expressions) is a :class:`ValueError` naming it, which the server returns
as ``INVALID_ARGUMENT``.

Example::

    >>> from podflow.observer.proto.hubble import flow_pb2 as pb
    >>> ev = pb.Flow(source=pb.Endpoint(namespace="shop", pod_name="web-1"))
    >>> match = compile_request([pb.FlowFilter(source_pod=["shop/"])], [])
    >>> match(ev), compile_request([pb.FlowFilter(source_pod=["web"])], [])(ev)
    (True, False)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.unknown_fields import UnknownFieldSet

from podflow.observer.proto.hubble import flow_pb2 as pb

Predicate = Callable[[pb.Flow], bool]

DEFAULT_NAMESPACE = "default"
"""Where a pod or service name without a namespace is looked for (Hubble's rule)."""


def _named(values: Sequence[str], field: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        if not v:
            raise ValueError(f"filter {field}: empty value")
        ns, sep, name = v.partition("/")
        out.append((ns, name) if sep else (DEFAULT_NAMESPACE, v))
    return out


def _match_named(patterns: list[tuple[str, str]], namespace: str, name: str) -> bool:
    if not namespace and not name:
        return False
    return any((not ns or ns == namespace) and name.startswith(prefix)
               for ns, prefix in patterns)


def _pod(end: str, values: Sequence[str], field: str) -> Predicate:
    patterns = _named(values, field)

    def match(ev: pb.Flow) -> bool:
        e = getattr(ev, end)
        return _match_named(patterns, e.namespace, e.pod_name)
    return match


def _service(attr: str, values: Sequence[str], field: str) -> Predicate:
    patterns = _named(values, field)

    def match(ev: pb.Flow) -> bool:
        s = getattr(ev, attr)
        return _match_named(patterns, s.namespace, s.name)
    return match


def _networks(values: Sequence[str], field: str) -> list[Any]:
    nets = []
    for v in values:
        try:
            nets.append(ipaddress.ip_network(v, strict=False) if "/" in v
                        else ipaddress.ip_network(ipaddress.ip_address(v)))
        except ValueError:
            raise ValueError(f"filter {field}: {v!r} is not an IP address or CIDR") from None
    return nets


def _ip(attr: str, values: Sequence[str], field: str) -> Predicate:
    nets = _networks(values, field)

    def match(ev: pb.Flow) -> bool:
        raw = getattr(ev.IP, attr)
        if not raw:
            return False
        addr = ipaddress.ip_address(raw)
        return any(addr in n for n in nets)
    return match


def _ports(values: Sequence[str], field: str) -> set[int]:
    out = set()
    for v in values:
        if not v.isdigit() or int(v) > 65535:
            raise ValueError(f"filter {field}: {v!r} is not a port number (0-65535)")
        out.add(int(v))
    return out


def _l4_ports(ev: pb.Flow) -> tuple[int, int] | None:
    case = ev.l4.WhichOneof("protocol")
    if case in ("TCP", "UDP", "SCTP"):
        l4 = getattr(ev.l4, case)
        return l4.source_port, l4.destination_port
    return None


def _port(index: int, values: Sequence[str], field: str) -> Predicate:
    ports = _ports(values, field)

    def match(ev: pb.Flow) -> bool:
        got = _l4_ports(ev)
        return got is not None and got[index] in ports
    return match


_L4 = {"tcp": ("TCP",), "udp": ("UDP",), "sctp": ("SCTP",), "icmp": ("ICMPv4", "ICMPv6"),
       "icmpv4": ("ICMPv4",), "icmpv6": ("ICMPv6",), "vrrp": (), "igmp": ()}
_L7 = {"dns": "dns", "http": "http", "kafka": None}


def _protocol(values: Sequence[str], field: str) -> Predicate:
    l4: set[str] = set()
    l7: set[str] = set()
    for v in values:
        p = v.lower()
        if p in _L4:
            l4.update(_L4[p])
        elif p in _L7:
            l7.update(x for x in (_L7[p],) if x is not None)
        else:
            raise ValueError(f"filter {field}: unknown protocol {v!r} (one of "
                             f"{', '.join([*_L4, *_L7])})")

    def match(ev: pb.Flow) -> bool:
        return ev.l4.WhichOneof("protocol") in l4 or (
            ev.HasField("l7") and ev.l7.WhichOneof("record") in l7)
    return match


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; everything else is literal (Hubble's rule)."""
    return re.compile(".*".join(map(re.escape, pattern.split("*"))) + r"\Z")


def _fqdn(attr: str, values: Sequence[str], field: str) -> Predicate:
    if not all(values):
        raise ValueError(f"filter {field}: empty value")
    globs = [_glob(v.rstrip(".").lower()) for v in values]

    def match(ev: pb.Flow) -> bool:
        return any(g.match(n.rstrip(".").lower()) for n in getattr(ev, attr) for g in globs)
    return match


_TERM = re.compile(r"""^\s*(?:
      (?P<not>!)\s*(?P<nkey>[^\s=!,()]+)
    | (?P<skey>[^\s=!,()]+)\s*(?P<sop>in|notin)\s*\((?P<set>[^)]*)\)
    | (?P<key>[^\s=!,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*))?
    )\s*$""", re.VERBOSE)


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return [*terms, cur]


LabelSet = list[tuple[str, str, str]]
"""Cilium labels as (source, key, value)."""


def _labels(raw: Sequence[str]) -> LabelSet:
    out = []
    for label in raw:
        head, _, value = label.partition("=")
        source, sep, key = head.partition(":")
        out.append((source, key, value) if sep else ("", head, value))
    return out


def _key(k: str) -> tuple[str, str]:
    source, sep, key = k.partition(":")
    return (source, key) if sep and source != "any" else ("", key if sep else k)


def _values_of(labels: LabelSet, key: tuple[str, str]) -> list[str]:
    return [v for s, k, v in labels if k == key[1] and (not key[0] or s == key[0])]


def _term(op: str, key: tuple[str, str], wanted: frozenset[str]) -> Callable[[LabelSet], bool]:
    """One selector term: ``exists``, ``!`` (absent), ``in``, ``notin``."""
    def check(labels: LabelSet) -> bool:
        got = _values_of(labels, key)
        if op == "exists":
            return bool(got)
        if op == "!":
            return not got
        hit = any(v in wanted for v in got)
        return hit if op == "in" else not hit
    return check


def _selector(text: str, field: str) -> Callable[[LabelSet], bool]:
    """A Kubernetes label selector over Cilium labels."""
    checks: list[Callable[[LabelSet], bool]] = []
    for term in _split_terms(text):
        m = _TERM.match(term)
        if not text.strip() or m is None:
            raise ValueError(f"filter {field}: bad label selector {text!r}")
        if m["not"]:
            checks.append(_term("!", _key(m["nkey"]), frozenset()))
        elif m["skey"]:
            vals = frozenset(v.strip() for v in m["set"].split(","))
            checks.append(_term(m["sop"], _key(m["skey"]), vals))
        elif m["op"] is None:
            checks.append(_term("exists", _key(m["key"]), frozenset()))
        else:   # k=v is "in (v)", k!=v "notin (v)", as Kubernetes defines them
            checks.append(_term("notin" if m["op"] == "!=" else "in", _key(m["key"]),
                                frozenset((m["value"] or "",))))
    return lambda labels: all(c(labels) for c in checks)


def _label(get: Callable[[pb.Flow], Sequence[str]], values: Sequence[str],
           field: str) -> Predicate:
    selectors = [_selector(v, field) for v in values]

    def match(ev: pb.Flow) -> bool:
        labels = _labels(get(ev))
        return any(s(labels) for s in selectors)
    return match


def _workload(end: str, values: Sequence[pb.Workload], field: str) -> Predicate:
    wanted = [(w.name, w.kind) for w in values]
    if any(not n and not k for n, k in wanted):
        raise ValueError(f"filter {field}: a workload needs a name or a kind")

    def match(ev: pb.Flow) -> bool:
        return any((not n or w.name == n) and (not k or w.kind == k)
                   for w in getattr(ev, end).workloads for n, k in wanted)
    return match


def _regex(get: Callable[[pb.Flow], str | None], values: Sequence[str],
           field: str) -> Predicate:
    try:
        pats = [re.compile(v) for v in values]
    except re.error as exc:
        raise ValueError(f"filter {field}: bad regular expression: {exc}") from None

    def match(ev: pb.Flow) -> bool:
        got = get(ev)
        return got is not None and any(p.search(got) for p in pats)
    return match


def _http(ev: pb.Flow) -> pb.HTTP | None:
    return ev.l7.http if ev.HasField("l7") and ev.l7.HasField("http") else None


def _dns_query(ev: pb.Flow) -> str | None:
    return ev.l7.dns.query if ev.HasField("l7") and ev.l7.HasField("dns") else None


def _http_path(ev: pb.Flow) -> str | None:
    h = _http(ev)
    return None if h is None else (urlsplit(h.url).path or "/")


_STATUS = re.compile(r"^[1-5][0-9]{2}$|^[1-5][0-9]?\+$")


def _http_status(values: Sequence[str], field: str) -> Predicate:
    checks = []
    for v in values:
        if not _STATUS.match(v):
            raise ValueError(f"filter {field}: {v!r} is not a status code (100-599) or a "
                             "prefix with + (5+, 40+)")
        checks.append((v.rstrip("+"), v.endswith("+")))

    def match(ev: pb.Flow) -> bool:
        h = _http(ev)
        if h is None or not h.code:
            return False
        code = str(h.code)
        return any(code.startswith(d) if prefix else code == d for d, prefix in checks)
    return match


def _http_header(values: Sequence[pb.HTTPHeader], field: str) -> Predicate:
    wanted = [(h.key.lower(), h.value) for h in values]

    def match(ev: pb.Flow) -> bool:
        h = _http(ev)
        return h is not None and any((x.key.lower(), x.value) in wanted for x in h.headers)
    return match


_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


def _tcp_flags(values: Sequence[pb.TCPFlags], field: str) -> Predicate:
    wanted = [{f for f in _FLAG_NAMES if getattr(v, f)} for v in values]

    def match(ev: pb.Flow) -> bool:
        if ev.l4.WhichOneof("protocol") != "TCP":
            return False
        got = {f for f in _FLAG_NAMES if getattr(ev.l4.TCP.flags, f)}
        return any(w <= got for w in wanted)
    return match


def _node_name(values: Sequence[str], field: str) -> Predicate:
    if not all(values):
        raise ValueError(f"filter {field}: empty value")
    globs = []
    for v in values:
        _cluster, _, node = v.rpartition("/")
        globs.append(_glob(node or "*"))

    def match(ev: pb.Flow) -> bool:
        return any(g.match(ev.node_name) for g in globs)
    return match


def _event_type(values: Sequence[pb.EventTypeFilter], field: str) -> Predicate:
    def match(ev: pb.Flow) -> bool:
        return any(ev.event_type.type == t.type and (
            not t.match_sub_type or ev.event_type.sub_type == t.sub_type) for t in values)
    return match


def _member(get: Callable[[pb.Flow], Any], values: Sequence[Any], field: str) -> Predicate:
    wanted = set(values)
    return lambda ev: get(ev) in wanted


def _interface(values: Sequence[pb.NetworkInterface], field: str) -> Predicate:
    def match(ev: pb.Flow) -> bool:
        i = ev.interface
        return ev.HasField("interface") and any(
            (not v.index or v.index == i.index) and (not v.name or v.name == i.name)
            for v in values)
    return match


Builder = Callable[[Sequence[Any], str], Predicate]
_BUILDERS: dict[str, Builder] = {
    "uuid": partial(_member, lambda ev: ev.uuid),
    "source_ip": partial(_ip, "source"),
    "destination_ip": partial(_ip, "destination"),
    "source_ip_xlated": partial(_ip, "source_xlated"),
    "source_pod": partial(_pod, "source"),
    "destination_pod": partial(_pod, "destination"),
    "source_service": partial(_service, "source_service"),
    "destination_service": partial(_service, "destination_service"),
    "source_fqdn": partial(_fqdn, "source_names"),
    "destination_fqdn": partial(_fqdn, "destination_names"),
    "source_label": partial(_label, lambda ev: ev.source.labels),
    "destination_label": partial(_label, lambda ev: ev.destination.labels),
    "node_labels": partial(_label, lambda ev: ev.node_labels),
    "source_workload": partial(_workload, "source"),
    "destination_workload": partial(_workload, "destination"),
    "traffic_direction": partial(_member, lambda ev: ev.traffic_direction),
    "verdict": partial(_member, lambda ev: ev.verdict),
    "drop_reason_desc": partial(_member, lambda ev: ev.drop_reason_desc),
    "interface": _interface,
    "event_type": _event_type,
    "http_status_code": _http_status,
    "protocol": _protocol,
    "source_port": partial(_port, 0),
    "destination_port": partial(_port, 1),
    "reply": partial(_member, lambda ev: ev.is_reply.value if ev.HasField("is_reply")
                     else (False if ev.verdict == pb.DROPPED else None)),
    "dns_query": partial(_regex, _dns_query),
    "source_identity": partial(_member, lambda ev: ev.source.identity),
    "destination_identity": partial(_member, lambda ev: ev.destination.identity),
    "http_method": partial(_member, lambda ev: (h.method.upper() if (h := _http(ev)) else None)),
    "http_path": partial(_regex, _http_path),
    "http_url": partial(_regex, lambda ev: h.url if (h := _http(ev)) else None),
    "http_header": _http_header,
    "tcp_flags": _tcp_flags,
    "node_name": _node_name,
    "ip_version": partial(_member, lambda ev: ev.IP.ipVersion),
    "trace_id": partial(_member, lambda ev: None),   # podflow carries no trace context
}
"""Each FlowFilter field podflow evaluates, by name."""


def compile_filter(f: pb.FlowFilter) -> Predicate:
    """One filter: every set field must match; ValueError if podflow cannot evaluate it."""
    fields = UnknownFieldSet(f)
    unknown = sorted({fields[i].field_number for i in range(len(fields))})
    if unknown:
        raise ValueError(f"podflow does not support flow filter field(s) "
                         f"{', '.join(map(str, unknown))} (a newer Hubble filter?)")
    checks = []
    for desc, values in f.ListFields():
        builder = _BUILDERS.get(desc.name)
        if builder is None:   # declared in the proto but not evaluated: say so
            raise ValueError(f"podflow does not support the {desc.name} flow filter")
        if any(isinstance(v, str) and not v for v in values):
            raise ValueError(f"filter {desc.name}: empty value")
        if desc.name == "http_method":
            values = [v.upper() for v in values]
        checks.append(builder(values, desc.name))
    return lambda ev: all(c(ev) for c in checks)


def compile_request(whitelist: Sequence[pb.FlowFilter],
                    blacklist: Sequence[pb.FlowFilter]) -> Predicate:
    """Whitelist minus blacklist (see the module doc)."""
    wl = [compile_filter(f) for f in whitelist]
    bl = [compile_filter(f) for f in blacklist]
    if not wl and not bl:
        return lambda ev: True
    return lambda ev: (not wl or any(p(ev) for p in wl)) and not any(p(ev) for p in bl)
