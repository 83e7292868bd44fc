"""Flow <-> plain dict (JSON) with a schema version.

The dict form is what ``observe -o json`` prints and what stores may keep verbatim. It is
versioned: readers refuse a newer major version with a clear error instead of guessing. Both
directions are compiled from the field table (:data:`podflow.model.fields.FLOW`): keys are
attribute names, in the order declared there.

Example::

    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> f = Flow(time=1.5, source=Endpoint("10.0.0.1", 1), destination=Endpoint("10.0.0.2", 2),
    ...          protocol=Protocol.TCP)
    >>> flow_from_dict(flow_to_dict(f)) == f
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from typing import Any

from podflow.model.fields import ENDPOINT, FLOW, L7_RECORD, Struct, compile_function
from podflow.model.flow import L7, Endpoint, Flow

SCHEMA_VERSION = 1
"""Version of the serialised Flow; bump on incompatible change."""


class SchemaError(ValueError):
    """A serialised flow could not be read (wrong version or malformed)."""


class _Gen:
    """Python source of one struct's JSON encoder or decoder, as a single expression."""

    def __init__(self) -> None:
        self._ids: Iterator[int] = count()

    def var(self) -> str:
        return f"_v{next(self._ids)}"

    def _uses(self, src: str) -> Iterator[str]:
        """How to refer to the object ``src`` evaluates to: ``(_vN := src)`` the first time,
        ``_vN`` after (``src`` itself when it is a plain name)."""
        if src.isidentifier():
            while True:
                yield src
        v = self.var()
        yield f"({v} := {src})"
        while True:
            yield v

    def encode(self, s: Struct, src: str) -> str:
        use = self._uses(src)
        items = []
        for f in s.fields:
            if f.index:
                continue
            x = f"{next(use)}.{f.attr}"
            if f.struct is None:
                expr = f.codec.to_json.format(x=x, p="")
            elif f.many:
                w = self.var()
                expr = f"[{self.encode(f.struct, w)} for {w} in {x}]"
            elif f.optional:
                w = self.var()
                expr = f"(None if ({w} := {x}) is None else {self.encode(f.struct, w)})"
            else:
                expr = self.encode(f.struct, x)
            items.append(f"{f.attr!r}: {expr}")
        return "{" + ", ".join(items) + "}"

    def decode(self, s: Struct, src: str) -> str:
        if s.strict:
            return f"{s.cls.__name__}(**{src})"
        use = self._uses(src)
        args = []
        for f in s.fields:
            if f.index:
                continue
            d, k = next(use), repr(f.attr)
            if f.struct is None:
                default = s.default_json(f) if f.json != "req" else None
                raw = {"req": f"{d}[{k}]",
                       "get": f"{d}.get({k})" if default is None else f"{d}.get({k}, {default!r})",
                       "or": f"({d}.get({k}) or {default!r})"}[f.json]
                expr = f.codec.from_json.format(x=raw, p="")
            elif f.many:
                w = self.var()
                raw = f"{d}[{k}]" if f.json == "req" else f"{d}.get({k}, ())"
                expr = f"tuple({self.decode(f.struct, w)} for {w} in {raw})"
            elif f.optional:
                w = self.var()
                test = f"not ({w} := {d}.get({k}))" if f.json == "or" else (
                    f"({w} := {d}.get({k})) is None")
                expr = f"(None if {test} else {self.decode(f.struct, w)})"
            else:
                raw = f"{d}[{k}]" if f.json == "req" else f"({d}.get({k}) or {{}})"
                expr = self.decode(f.struct, raw)
            args.append(f"{f.attr}={expr}")
        return f"{s.cls.__name__}({', '.join(args)})"


def _compile(name: str, body: str) -> Callable[..., Any]:
    return compile_function(name, f"def {name}(o):\n    {body}\n", {
        "SCHEMA_VERSION": SCHEMA_VERSION})


def _encoder(s: Struct, name: str, head: str = "") -> Callable[[Any], dict[str, Any]]:
    body = _Gen().encode(s, "o")
    return _compile(name, "return {" + head + body[1:])


def _decoder(s: Struct, name: str) -> Callable[[dict[str, Any]], Any]:
    return _compile(name, "return " + _Gen().decode(s, "o"))


_flow_to_dict = _encoder(FLOW, "flow_to_dict", "'schema_version': SCHEMA_VERSION, ")
_flow_from_dict = _decoder(FLOW, "flow_from_dict")
_endpoint_to_dict = _encoder(ENDPOINT, "endpoint_to_dict")
_endpoint_from_dict = _decoder(ENDPOINT, "endpoint_from_dict")
_l7_to_dict = _encoder(L7_RECORD, "l7_to_dict")
_l7_from_dict = _decoder(L7_RECORD, "l7_from_dict")


def endpoint_to_dict(e: Endpoint) -> dict[str, Any]:
    """Serialise an Endpoint."""
    return _endpoint_to_dict(e)


def endpoint_from_dict(d: dict[str, Any]) -> Endpoint:
    """Read an Endpoint back."""
    e: Endpoint = _endpoint_from_dict(d)
    return e


def flow_to_dict(f: Flow) -> dict[str, Any]:
    """Serialise a Flow to JSON-ready dict (with ``schema_version``)."""
    return _flow_to_dict(f)


def l7_to_dict(l7: L7) -> dict[str, Any]:
    """Serialise an L7 record (Hubble-like field names)."""
    return _l7_to_dict(l7)


def l7_from_dict(d: dict[str, Any]) -> L7:
    """Read an L7 record back."""
    r: L7 = _l7_from_dict(d)
    return r


def flow_from_dict(d: dict[str, Any]) -> Flow:
    """Read a Flow back; raises :class:`SchemaError` on a newer or malformed record."""
    version = d.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaError(
            f"flow schema version {version!r} is newer than this podflow understands "
            f"({SCHEMA_VERSION}); upgrade podflow"
        )
    try:
        f: Flow = _flow_from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed flow record: {exc}") from exc
    return f
