"""Fuzz target: the lab spec loader on the bytes of a spec file.

The input is a spec file's content, read by :func:`podflow.lab.spec.parse_spec_bytes` (what
``load_spec`` calls on the bytes it read). The one allowed refusal is ``SpecError`` with a
clear message: one line, starting with the file name, a bounded length. A spec that loads
must also serialise the way ``lab up`` saves it (``state.json``: strict JSON). Anything else
raised is a crash. Each input is also turned into a type confusion of a seed spec (see
:func:`run`). Seeds are the embedded demo spec and the specs of the unit tests
(``tests/unit/lab/test_spec.py``, each of its invalid variants included).
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from podflow.lab.spec import SpecError, parse_spec_bytes
from tests.fuzz.target_k8s import _nest, confused
from tests.fuzz.targets import Target

SOURCE = "fuzz.yaml"
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
MAX_MESSAGE = 1000
"""Longest error message a spec may produce (the alias bomb once made gigabytes)."""


def _shop() -> dict[str, Any]:
    text = resources.files("podflow.lab").joinpath("specs/shop.yaml").read_text()
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _documents() -> list[Any]:
    """The specs the unit tests parse, valid and invalid."""
    from tests.unit.lab import test_spec as t

    l7 = {"name": "l7", "nodes": 1, "namespaces": ["a"],
          "workloads": [{"namespace": "a", "name": "w", "labels": {"app": "w"},
                         "ports": ["tcp/80"]}],
          "traffic": [{"from": "a/w", "to": "dns/w-svc.a.svc.cluster.local:80",
                       "http": {"method": "POST", "path": "/status/500", "expect": 500}}]}
    docs: list[Any] = [
        {"name": "tiny", "nodes": 1},
        {"name": "tiny", "nodes": 1, "dns": False},
        {"name": "tiny", "nodes": 1, "serviceCIDR": "10.100.0.0/16",
         "traffic": [{"from": "kube-system/coredns", "to": "service/kube-system/kube-dns:53"}]},
        l7,
        {**l7, "agents": {"sources": ["conntrack", "packets"], "options": {"syn_timeout": 3}}},
    ]
    for cni in ("macvlan", "calico-bgp"):
        doc = _shop()
        doc["cni"] = cni
        if cni == "macvlan":
            doc["services"] = []
            doc["traffic"] = [{"from": "shop/frontend", "to": "pod/shop/backend:9000"}]
        docs.append(doc)
    host = _shop()
    host["workloads"].append({"namespace": "shop", "name": "agent", "hostNetwork": True,
                              "node": 2})
    host["externals"][0]["dns"] = ["DB.example.com.", "pg.example.com"]
    docs.append(host)
    for mutate, _ in t.BAD:
        doc = copy.deepcopy(_shop())
        mutate(doc)
        docs.append(doc)
    return docs


def seeds() -> list[bytes]:
    """The demo spec as written, and the unit tests' specs as YAML."""
    demo = resources.files("podflow.lab").joinpath("specs/shop.yaml").read_bytes()
    return [demo] + [yaml.safe_dump(d, sort_keys=False).encode() for d in _documents()]


ODD_VALUES: tuple[Any, ...] = (
    "oops", "", 0, -1, 70000, 2**70, 1.5, float("inf"), float("nan"), True, None, [], {},
    ["x"], {"a": 1}, "x" * 300, "a\n", "../x", "tcp/0", "1s", {"name": 5},
    [{"namespace": "shop"}], _nest(10), _nest(40),
)
"""Values of every YAML type (and awkward ranges) that replace a seed spec's values."""


@lru_cache(maxsize=1)
def _seed_documents() -> tuple[Any, ...]:
    return tuple(_documents())


def run(data: bytes) -> None:
    """Load ``data`` as a spec; SpecError with a clear message is the only refusal.

    Byte mutations rarely change a value's type, so a seed spec (chosen by ``data``) is
    also loaded with a few values replaced by values of other types (``confused``)."""
    _load(data)
    docs = _seed_documents()
    doc = copy.deepcopy(docs[hashlib.blake2b(data, digest_size=2).digest()[0] % len(docs)])
    _load(yaml.dump(confused(doc, data, ODD_VALUES), Dumper=_DUMPER).encode())


def _load(data: bytes) -> None:
    try:
        spec = parse_spec_bytes(data, SOURCE)
    except SpecError as exc:
        message = str(exc)
        if not message.startswith(f"{SOURCE}: ") or "\n" in message \
                or len(message) > MAX_MESSAGE:
            raise AssertionError(f"unclear SpecError: {message[:2000]!r}") from exc
        return
    json.dumps(spec.to_dict(), allow_nan=False)


TARGET = Target("labspec", seeds, run, examples=400)
