"""Fuzz target: one cluster-state file (Kubernetes JSON) read into the time-indexed inventory.

The input is the content of a file in the agent's cluster-state directory. It goes through
what ``ClusterStateDir`` calls on the bytes it read (``parse_file``: ``decode_document``, then
its items sorted by kind and parsed), decoded once and parsed with every kind as the default
of items without one, so one mutated document exercises every parser; the records are
merged the way the directory reader merges them (``objects_from``), applied to an
:class:`~podflow.inventory.history.Inventory` at three times (appear, unchanged, vanish), and
looked up. A file may be refused only with ``DecodeError`` (counted by the reader, which
keeps its last good data); anything else raised is a crash.

Byte mutations rarely change the type of a JSON value (``"metadata": "oops"``), so a document
that decodes is read a second time with a few of its values replaced by values of other types
(:func:`confused`: which values and by what is drawn from a hash of the input, so every
mutated input also tries new type confusions).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from podflow.inventory.history import Inventory
from podflow.inventory.k8s import ClusterObjects
from podflow.inventory.snapshot_dir import KINDS, decode_document, objects_from, parse_document
from podflow.model.losses import DecodeError, Losses
from tests.fuzz.targets import Target

SEEDS = Path(__file__).resolve().parents[1] / "data" / "k8s"


def seeds() -> list[bytes]:
    """Every recorded cluster-state file."""
    return [p.read_bytes() for p in sorted(SEEDS.glob("*.json"))]


def _lookups(inv: Inventory, objs: ClusterObjects, at: float) -> None:
    """Ask the inventory about every address and port the records mention."""
    ips = [ip for p in objs.pods for ip in p.ips]
    ips += [ip for n in objs.nodes for ip in n.internal_ips]
    ips += [ip for s in objs.services for ip in (*s.cluster_ips, *s.external_ips)]
    ips += [v for _, v in objs.external_names]
    for ip in ips[:64]:
        inv.identity(ip, at)
        inv.node_for_pod_cidr(ip, at)
        inv.in_cluster(ip)
        for s in objs.services[:8]:
            for sp in s.ports[:4]:
                inv.service_by_frontend(ip, sp.port, sp.protocol, at)
                inv.service_by_nodeport(sp.node_port, sp.protocol, at)
    inv.identity("10.244.0.3", at)
    inv.nodes()


def run(data: bytes) -> None:
    """Parse ``data`` as every kind of file, apply, look up; DecodeError is the only refusal."""
    logging.disable(logging.WARNING)   # skipped objects are logged; millions of cases are not
    try:
        _run(data)
    finally:
        logging.disable(logging.NOTSET)


def _nest(depth: int) -> Any:
    """A list nested ``depth`` deep."""
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


ODD_VALUES: tuple[Any, ...] = (
    "oops", "", 0, -1, 65536, 2**63, 10**30, 1.5, float("inf"), float("nan"), True, None,
    [], {}, ["x"], {"a": 1}, "\ud800", "x" * 5000, {"metadata": "oops"},
    [{"metadata": {"name": 5}}], "0001-01-01T00:00:00", "[[[[[[[[[[[[[[[[", {"VtepMAC": 5},
    _nest(40), _nest(120),
)
"""Values of every JSON type (and of awkward ranges) that replace a document's values."""


def confused(doc: Any, data: bytes, values: tuple[Any, ...] = ODD_VALUES,
             limit: int = 5000) -> Any:
    """``doc`` with one to four values replaced by ``values``, chosen by a hash of ``data``;
    ``doc`` itself is changed and returned."""
    slots: list[tuple[Any, Any]] = []          # (container, key or index), breadth first
    todo = [doc] if isinstance(doc, (dict, list)) else []
    while todo and len(slots) < limit:
        node = todo.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            slots.append((node, key))
            if isinstance(value, (dict, list)):
                todo.append(value)
    if not slots:
        return values[data[0] % len(values)] if data else doc
    h = hashlib.blake2b(data, digest_size=16).digest()
    for i in range(1 + h[0] % 4):
        container, key = slots[int.from_bytes(h[1 + 3 * i:3 + 3 * i], "big") % len(slots)]
        container[key] = values[h[3 + 3 * i] % len(values)]
    return doc


def _run(data: bytes) -> None:
    # parse_file(name, data) is parse_document(decode_document(data), ...): decode once
    try:
        doc = decode_document(data)
    except DecodeError:
        return
    _parse_apply_lookup(doc)
    odd = json.dumps(confused(doc, data)).encode()
    try:
        doc = decode_document(odd)
    except DecodeError:
        return
    _parse_apply_lookup(doc)


def _parse_apply_lookup(doc: Any) -> None:
    losses = Losses()
    parsed: dict[str, list[Any]] = {}
    for default_kind in KINDS:
        try:
            by_kind = parse_document(doc, losses, default_kind, set())
        except DecodeError:
            continue
        for kind, records in by_kind.items():
            parsed.setdefault(kind, []).extend(records)
    objs = objects_from(parsed)
    inv = Inventory(retention=1000.0)
    for at, snapshot in ((100.0, objs), (200.0, objs), (5000.0, ClusterObjects())):
        inv.apply(snapshot, at)
        _lookups(inv, objs, at - 50.0)


TARGET = Target("k8s", seeds, run, examples=1000)
