"""Turn front-end parameters (CLI options, HTTP query strings) into one :class:`FilterSpec`.

Every front-end builds its filter here, so a value means the same thing everywhere. The
fields are *introspected* from :class:`~podflow.query.filter.FilterSpec`: each field's
annotation says how its values parse and its :class:`~podflow.query.filter.Declared`
metadata gives the flag, metavar and help, so a field added to the spec (say
``http_code: tuple[int, ...] = _f("CODE", "...")``) is a CLI option (:mod:`podflow.cli.filteropts`),
an HTTP query parameter and an OpenAPI entry without touching any of them. Conversion:

- ``tuple[int, ...]`` / ``tuple[str, ...]`` / ``tuple[float, ...]``: every value is one
  alternative (repeat a parameter to OR its values); ints and floats are parsed;
- fields declared ``time`` (``since`` / ``until``): RFC 3339, Unix seconds, or a duration
  before now (``5m``);
- other ``X | None`` scalars (int, float, str, bool): the last value given.

Bad values raise :class:`ValueError` naming the parameter, e.g.
``to_port: bad integer 'http'``.

Example::

    >>> spec = spec_from_multi({"to_port": ["9000", "6379"], "namespace": ["shop"]})
    >>> spec.to_port, spec.namespace
    ((9000, 6379), ('shop',))
    >>> spec_from_multi({"since": ["1970-01-01T00:01:00Z"]}).since
    60.0
    >>> info = filter_fields()["namespace"]
    >>> info.flag, info.short, info.metavar
    ('--namespace', '-n', 'NS')
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from podflow.query.filter import Declared, FilterSpec
from podflow.query.timeparse import parse_time


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """How one FilterSpec field is given as a parameter."""

    name: str
    """The field (and query parameter) name, e.g. ``to_port``."""
    kind: str
    """``int``, ``float``, ``str``, ``bool`` or ``time``."""
    repeated: bool
    """True for tuple fields: each value is one alternative (OR)."""
    help: str
    """One-line description, for ``--help`` and the OpenAPI document."""
    metavar: str = "VALUE"
    """The value's shape in help, e.g. ``[NS/]PREFIX``."""
    short: str | None = None
    """The CLI's short flag (``-n``), if any."""

    @property
    def flag(self) -> str:
        """The CLI's long flag: ``--`` and the name with dashes (``--to-port``)."""
        return "--" + self.name.replace("_", "-")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``GET /api/filters``)."""
        return {"name": self.name, "kind": self.kind, "repeated": self.repeated,
                "help": self.help, "metavar": self.metavar, "flag": self.flag,
                "short": self.short}


_SCALARS: dict[Any, str] = {int: "int", float: "float", str: "str", bool: "bool"}


def _describe(name: str, annotation: Any, declared: Declared | None) -> FieldInfo:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    repeated = origin is tuple
    if repeated:
        inner: Any = args[0] if args else str
    elif origin in (typing.Union, types.UnionType):
        inner = next((a for a in args if a is not type(None)), str)
    else:
        inner = annotation
    if declared is None:
        raise TypeError(f"FilterSpec.{name} has no filter declaration (metadata 'filter')")
    kind = "time" if declared.time else _SCALARS.get(inner, "str")
    return FieldInfo(name, kind, repeated, declared.help, declared.metavar, declared.short)


@lru_cache(maxsize=1)
def filter_fields() -> dict[str, FieldInfo]:
    """Every FilterSpec field by name, described for parameter parsing (in spec order)."""
    hints = typing.get_type_hints(FilterSpec)
    return {f.name: _describe(f.name, hints[f.name], f.metadata.get("filter"))
            for f in fields(FilterSpec)}


def filter_help() -> list[tuple[str, str]]:
    """``[(usage, help), ...]`` for every filter, e.g. ``("--namespace, -n NS", "...")``.

    The help table front-ends print, as mitmproxy's ``flowfilter.help``.
    """
    out = []
    for f in filter_fields().values():
        flags = f.flag + (f", {f.short}" if f.short else "")
        out.append((f"{flags} {f.metavar}", f.help))
    return out


def _convert(info: FieldInfo, raw: Any, now: float | None) -> Any:
    if info.kind == "time":
        try:
            value = (parse_time(str(raw), now=now) if not isinstance(raw, int | float)
                     else float(raw))
        except ValueError as exc:
            raise ValueError(f"{info.name}: {exc}") from None
        if not math.isfinite(value):
            raise ValueError(f"{info.name}: bad time {raw!r}: not a finite number")
        return value
    if info.kind == "int":
        if isinstance(raw, bool):
            raise ValueError(f"{info.name}: bad integer {raw!r}")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError(f"{info.name}: bad integer {raw!r}") from None
    if info.kind == "float":
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{info.name}: bad number {raw!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{info.name}: bad number {raw!r}: not a finite number")
        return number
    if info.kind == "bool":
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{info.name}: expected true or false, got {raw!r}")
    text = str(raw)
    if not text.strip():
        raise ValueError(f"{info.name}: empty value")
    return text


def spec_from_multi(values: Mapping[str, Iterable[Any] | None], *,
                    now: float | None = None, strict: bool = False) -> FilterSpec:
    """A FilterSpec from ``{field: [values ...]}`` (a query string's multi-dict, CLI lists).

    Keys that are not FilterSpec fields are ignored unless ``strict`` (then ValueError).
    ``None`` or empty value lists leave a field unconstrained. Raises ValueError with the
    parameter's name for malformed values, including those FilterSpec itself rejects.
    """
    known = filter_fields()
    args: dict[str, Any] = {}
    for key, raw in values.items():
        info = known.get(key)
        if info is None:
            if strict:
                raise ValueError(f"unknown filter {key!r} (known: {', '.join(known)})")
            continue
        if raw is None:
            continue
        items = [raw] if isinstance(raw, str | int | float) else list(raw)
        items = [v for v in items if v is not None and v != ""]
        if not items:
            continue
        converted = [_convert(info, v, now) for v in items]
        args[key] = tuple(converted) if info.repeated else converted[-1]
    try:
        return FilterSpec(**args)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    except TypeError as exc:
        raise ValueError(f"bad filter: {exc}") from None


def spec_to_params(spec: FilterSpec) -> list[tuple[str, str]]:
    """The inverse for links and follow-up requests: ``[(name, value), ...]`` pairs."""
    out: list[tuple[str, str]] = []
    for name, info in filter_fields().items():
        value = getattr(spec, name)
        if value in ((), None):
            continue
        for v in value if info.repeated else (value,):
            out.append((name, repr(v) if isinstance(v, float) else str(v)))
    return out
