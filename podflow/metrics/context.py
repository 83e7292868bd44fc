"""Hubble-style metrics options: the list syntax and the source/destination context labels.

The options string is what Hubble's ``--metrics`` flag takes: a list of handlers separated by
spaces or commas, each ``name[:option;option=value;...]``::

    flow:sourceContext=namespace;destinationContext=workload drop:sourceContext=pod dns:query

A comma separates two entries only when the text after it starts with a known handler name,
so ``labelsContext=source_namespace,destination_workload`` keeps its commas. Option keys are
case-insensitive; an option without ``=`` is a flag (``dns:query;ignoreAAAA``).

Context options, accepted by every flow handler (as in Hubble):

- ``sourceContext`` / ``destinationContext`` = ``identifier[|identifier...]``: adds one label,
  ``source`` / ``destination``, whose value is the first non-empty identifier of that end.
  Identifiers: ``namespace``, ``pod`` (``ns/pod``), ``pod-name``, ``pod-short``
  (``ns/`` + the pod name without its generated suffixes), ``workload`` (``ns/name`` of the
  top owner; podflow's), ``workload-name``, ``app`` (label ``app.kubernetes.io/name``, else
  ``k8s-app``, else ``app``), ``ip``, ``dns`` (the end's known name, e.g. an external host),
  ``identity`` (the labels as ``k=v,...``), ``reserved-identity`` (Cilium's reserved
  identity of an end that is no pod: ``reserved:host`` for a node or host-network pod,
  ``reserved:world`` outside the cluster, ``reserved:unknown``; ``""`` for a pod),
  ``node`` (podflow's: the node the end ran on). Fallbacks as in Hubble:
  ``sourceContext=workload-name|reserved-identity``.
- ``sourceEgressContext``, ``sourceIngressContext``, ``destinationEgressContext``,
  ``destinationIngressContext``: identifiers used instead of ``sourceContext`` /
  ``destinationContext`` (which must be given) when a count stands for that observation
  point (see ``traffic_direction`` below).
- ``labelsContext`` = comma list of ``source_ip``, ``source_pod``, ``source_namespace``,
  ``source_workload``, ``source_workload_kind``, ``source_app``, ``destination_ip``,
  ``destination_pod``, ``destination_namespace``, ``destination_workload``,
  ``destination_workload_kind``, ``destination_app``, ``traffic_direction``: one label each,
  named as listed.

``traffic_direction`` is the observation point a count stands for: ``egress`` on the
client's node, ``ingress`` on the server's node, ``unknown`` when neither end's node
observed the connection (:func:`directions`; a handler that counts per observation point,
as Hubble does per event, counts a connection seen at both ends once at each).

Example::

    >>> parse_metrics("flow:sourceContext=namespace;destinationContext=workload,drop",
    ...               ["flow", "drop"])
    [('flow', {'sourcecontext': 'namespace', 'destinationcontext': 'workload'}), ('drop', {})]
    >>> ContextOptions.parse({"labelscontext": "destination_workload,source_namespace"}
    ...                      ).label_names()
    ['source_namespace', 'destination_workload']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from podflow.model.flow import Endpoint, EndpointKind, Flow

Options = dict[str, str]
"""One handler's options, keys lower-cased."""

_RESERVED = {EndpointKind.NODE: "reserved:host", EndpointKind.HOST_NETWORK_POD: "reserved:host",
             EndpointKind.EXTERNAL: "reserved:world", EndpointKind.UNKNOWN: "reserved:unknown"}
"""Cilium's reserved identities by what an end is (a pod has none: its identity is its
labels)."""
_SHORT_POD = re.compile(r"^(.+?)(-[a-z0-9]+){1,2}$")
_APP_LABELS = ("app.kubernetes.io/name", "k8s-app", "app")


def _pod(e: Endpoint) -> str:
    return f"{e.namespace}/{e.pod_name}" if e.pod_name and e.namespace else (e.pod_name or "")


def _pod_short(e: Endpoint) -> str:
    if not e.pod_name:
        return ""
    short = _SHORT_POD.sub(r"\1", e.pod_name)
    return f"{e.namespace}/{short}" if e.namespace else short


def _workload(e: Endpoint) -> str:
    if e.workload is None:
        return ""
    return f"{e.namespace}/{e.workload.name}" if e.namespace else e.workload.name


def _app(e: Endpoint) -> str:
    labels = e.label_dict()
    return next((labels[k] for k in _APP_LABELS if labels.get(k)), "")


IDENTIFIERS: dict[str, Callable[[Endpoint], str]] = {
    "namespace": lambda e: e.namespace or "",
    "pod": _pod,
    "pod-name": lambda e: e.pod_name or "",
    "pod-short": _pod_short,
    "workload": _workload,
    "workload-name": lambda e: e.workload.name if e.workload else "",
    "app": _app,
    "ip": lambda e: e.ip,
    "dns": lambda e: e.name or "",
    "identity": lambda e: ",".join(f"{k}={v}" for k, v in e.labels),
    "node": lambda e: e.node_name or "",
    "reserved-identity": lambda e: _RESERVED.get(e.kind, ""),
}
"""Context identifiers: how one end of a flow becomes a label value."""

_END_LABELS: dict[str, Callable[[Endpoint], str]] = {
    "ip": lambda e: e.ip, "pod": lambda e: e.pod_name or "",
    "namespace": lambda e: e.namespace or "",
    "workload": lambda e: e.workload.name if e.workload else "",
    "workload_kind": lambda e: e.workload.kind if e.workload else "", "app": _app,
}
LABELS = [f"{end}_{k}" for end in ("source", "destination") for k in _END_LABELS] + [
    "traffic_direction"]
"""Labels ``labelsContext`` accepts, in the order they are added to a metric."""

_BY_DIRECTION = {f"{end}{d}context": (end, d) for end in ("source", "destination")
                 for d in ("egress", "ingress")}
"""``sourceEgressContext`` ... : the identifiers used instead when a count stands for that
observation point."""
CONTEXT_KEYS = frozenset({"sourcecontext", "destinationcontext", "labelscontext",
                          *_BY_DIRECTION})
"""Option keys handled here (the rest belong to the handler)."""


def directions(flow: Flow) -> tuple[str, ...]:
    """Every observation point of the connection, as Hubble names its direction there:
    ``egress`` when the client's node observed it, ``ingress`` when the server's node did
    (both for a connection seen at both ends, or between two pods of one node), else
    ``unknown``."""
    nodes = {o.node_name for o in flow.observations}
    out = tuple(d for d, e in (("egress", flow.source), ("ingress", flow.destination))
                if e.node_name and e.node_name in nodes)
    return out or ("unknown",)


def traffic_direction(flow: Flow) -> str:
    """``egress``/``ingress``/``unknown``: the first of :func:`directions` (see module doc)."""
    return directions(flow)[0]


def _identifiers(key: str, value: str) -> tuple[str, ...]:
    out = []
    for ident in value.split("|"):
        ident = ident.strip().lower()
        if ident not in IDENTIFIERS:
            raise ValueError(f"unknown {key} identifier {ident!r} in {value!r}; known: "
                             f"{', '.join(IDENTIFIERS)}")
        out.append(ident)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ContextOptions:
    """Which context labels a handler adds, parsed from its options."""

    source: tuple[str, ...] = ()
    """Identifiers of ``sourceContext`` (first non-empty wins); empty: no ``source`` label."""
    destination: tuple[str, ...] = ()
    """Identifiers of ``destinationContext``; empty: no ``destination`` label."""
    labels: tuple[str, ...] = ()
    """``labelsContext`` labels, in :data:`LABELS` order."""
    by_direction: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """``(end, direction, identifiers)`` of ``sourceEgressContext`` and its kin."""

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> ContextOptions:
        """Read the context keys of ``options`` (others are ignored); ValueError if bad."""
        src: tuple[str, ...] = ()
        dst: tuple[str, ...] = ()
        if "sourcecontext" in options:
            src = _identifiers("sourceContext", options["sourcecontext"])
        if "destinationcontext" in options:
            dst = _identifiers("destinationContext", options["destinationcontext"])
        wanted: set[str] = set()
        if "labelscontext" in options:
            for label in options["labelscontext"].split(","):
                if label.strip() not in LABELS:
                    raise ValueError(f"unknown labelsContext label {label.strip()!r}; "
                                     f"known: {', '.join(LABELS)}")
                wanted.add(label.strip())
        by_direction = []
        for key, (end, d) in _BY_DIRECTION.items():
            if key not in options:
                continue
            name = f"{end}{d.capitalize()}Context"
            if not (src if end == "source" else dst):
                raise ValueError(f"{name} needs {end}Context (it replaces it for {d} "
                                 f"observations; without it there is no {end} label)")
            by_direction.append((end, d, _identifiers(name, options[key])))
        return cls(src, dst, tuple(x for x in LABELS if x in wanted), tuple(by_direction))

    def label_names(self) -> list[str]:
        """The label names these options add, in the order of :meth:`label_values`."""
        names = list(self.labels)
        if self.source:
            names.append("source")
        if self.destination:
            names.append("destination")
        return names

    def label_values(self, flow: Flow, direction: str | None = None, *,
                     swap: bool = False) -> list[str]:
        """The values of :meth:`label_names` for one flow, counted at the observation point
        ``direction`` (None: the first of :func:`directions`); ``swap``: for a message the
        server sent (a DNS response), whose source is the server, as Hubble records it."""
        src, dst = (flow.destination, flow.source) if swap else (flow.source, flow.destination)
        point = direction or traffic_direction(flow)
        values = []
        for label in self.labels:
            if label == "traffic_direction":
                values.append(point)
                continue
            end, _, key = label.partition("_")
            values.append(_END_LABELS[key](src if end == "source" else dst))
        for name, idents, e in (("source", self.source, src),
                                ("destination", self.destination, dst)):
            if idents:
                idents = next((i for end, d, i in self.by_direction
                               if end == name and d == point), idents)
                values.append(next((v for v in (IDENTIFIERS[i](e) for i in idents) if v), ""))
        return values


def _entry(text: str, known: Collection[str]) -> tuple[str, Options]:
    name, sep, rest = text.partition(":")
    if name not in known:
        raise ValueError(f"unknown metric {name!r} in {text!r}; known: {', '.join(known)}")
    opts: Options = {}
    for part in rest.split(";") if sep else ():
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not key or (eq and not value.strip()):
            raise ValueError(f"bad option {part!r} of metric {name!r}: expected key=value "
                             f"or a flag")
        if key in opts:
            raise ValueError(f"option {key!r} given twice for metric {name!r}")
        opts[key] = value.strip() if eq else "true"
    return name, opts


def _names_apart(pieces: list[str]) -> Iterator[str]:
    """A comma before a piece's options (``flow,icmpx:...``) always separates entries, so
    an unknown name is reported alone."""
    for piece in pieces:
        head, sep, rest = piece.partition(":")
        *names, last = head.split(",")
        yield from names
        yield last + sep + rest


def parse_metrics(text: str, known: Collection[str]) -> list[tuple[str, Options]]:
    """The entries of an options string (see the module doc); ValueError if malformed."""
    if not known:
        return []
    names = "|".join(re.escape(n) for n in sorted(known, key=len, reverse=True))
    splitter = re.compile(rf",(?=(?:{names})(?::|,|\s|$))")
    out: list[tuple[str, Options]] = []
    for word in text.split():
        for piece in _names_apart(splitter.split(word)):
            if not piece.strip(","):
                continue
            name, opts = _entry(piece.strip(","), known)
            if any(n == name for n, _ in out):
                raise ValueError(f"metric {name!r} given twice in {text!r}")
            out.append((name, opts))
    return out
