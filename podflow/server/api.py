"""The JSON API under ``/api``: flows, live flows, the service map, inventory, health.

Every endpoint that reads flows takes the flow filter as query parameters named after the
fields of :class:`~podflow.query.filter.FilterSpec` (repeat one to OR its values; different
ones AND), parsed by :func:`podflow.query.params.spec_from_multi` exactly as the CLI parses
its flags, and listed in the OpenAPI document with the help each field declares; a field
added to FilterSpec is accepted and documented here without a change. Bad values answer
400 ``{"error": "..."}``, including values the store's engine refuses (a regular expression
RE2 does not take, a non-finite time): each filter is bound against DuckDB before any store
is read (:func:`podflow.store.sql.engine_error`). A store locked for too long answers 503;
a store that does not exist yet reads as empty; a damaged or unreadable one answers 503
``{"error": "...", "kind": "corrupt"}`` (the kinds of ``/api/health``).

Example::

    GET /api/flows?namespace=shop&to_port=9000&since=5m&limit=50
    GET /api/flows?before=1795000000.5&limit=50          # the next (older) page
    GET /api/flows/stream?to_namespace=data&last=20      # text/event-stream
    GET /api/map?namespace=shop&namespace=data&since=1h&services=true
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import duckdb
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from podflow import __version__
from podflow.model.serialize import flow_to_dict
from podflow.query.filter import FilterSpec
from podflow.query.params import filter_fields, spec_from_multi
from podflow.query.servicemap import AGENT_STALE, settled_time
from podflow.server.config import ServerConfig
from podflow.server.graph import build_graph, raw_id
from podflow.server.inventory import agents_summary, cluster_inventory, node_addresses
from podflow.server.l7 import l7_facts
from podflow.server.storehealth import StoreHealth
from podflow.server.stream import FlowFollower, sse_events
from podflow.store import open_store
from podflow.store.base import FlowStore, StoreMissing
from podflow.store.sql import engine_error

MAX_LIMIT = 10_000
"""Largest page of ``/api/flows``."""
ENGINE_REFUSALS = (duckdb.InvalidInputException, duckdb.ConversionException,
                   duckdb.OutOfRangeException)
"""DuckDB errors that a filter value causes (answered 400 when the request has a filter)."""

router = APIRouter(prefix="/api")


class BadRequest(ValueError):
    """A malformed parameter: answered 400 with its message."""


def _filter_openapi() -> list[dict[str, Any]]:
    types = {"int": "integer", "float": "number", "bool": "boolean"}
    out = []
    for f in filter_fields().values():
        schema: dict[str, Any] = {"type": types.get(f.kind, "string")}
        if f.repeated:
            schema = {"type": "array", "items": schema}
        out.append({"name": f.name, "in": "query", "required": False, "schema": schema,
                    "description": f.help, "style": "form", "explode": True})
    return out


def _extra(**own: tuple[str, str]) -> dict[str, Any]:
    """OpenAPI parameters: the endpoint's own (name=(type, help)) then the filter fields."""
    mine = [{"name": k, "in": "query", "required": False, "schema": {"type": t},
             "description": d} for k, (t, d) in own.items()]
    return {"parameters": mine + _filter_openapi()}


def _cfg(request: Request) -> ServerConfig:
    cfg: ServerConfig = request.app.state.config
    return cfg


def _spec(request: Request, own: tuple[str, ...] = ()) -> FilterSpec:
    multi: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key in own:
            continue
        if key not in filter_fields():
            raise BadRequest(f"unknown parameter {key!r}: filters are "
                             f"{', '.join(filter_fields())}; this endpoint also takes "
                             f"{', '.join(own) or 'nothing else'}")
        multi.setdefault(key, []).append(value)
    try:
        spec = spec_from_multi(multi)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _engine_checked(spec)


def _engine_checked(spec: FilterSpec) -> FilterSpec:
    """``spec`` once DuckDB binds its SQL; BadRequest with the engine's reason otherwise."""
    reason = None if spec.is_empty() else engine_error(spec)
    if reason is not None:
        raise BadRequest(f"the store's engine refuses this filter: {reason}")
    return spec


def _time(request: Request, name: str) -> float | None:
    """A Unix-seconds parameter; BadRequest unless it is a finite number."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}: bad time {raw!r} (Unix seconds)") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}: bad time {raw!r}: not a finite number of Unix seconds")
    return value


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: bad integer {raw!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def _bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise BadRequest(f"{name}: expected true or false, got {raw!r}")


def _read(cfg: ServerConfig, fn: Callable[[FlowStore], Any], empty: Any,
          spec: FilterSpec | None = None) -> Any:
    """``fn`` over the store; ``empty`` when there is none yet.

    When the query carries a filter (``spec``), a value the engine refuses mid-query
    answers 400, not 500 (the up-front check in :func:`_spec` should have caught it).
    """
    try:
        return fn(open_store(cfg.store_path, read_only=True, lock_timeout=cfg.lock_timeout))
    except StoreMissing:
        return empty
    except ENGINE_REFUSALS as exc:
        if spec is None or spec.is_empty():
            raise
        raise BadRequest(f"the store's engine refuses this filter: "
                         f"{str(exc).strip().splitlines()[0]}") from None


@router.get("/flows", openapi_extra=_extra(
    limit=("integer", f"Page size, 1-{MAX_LIMIT} (default 100): the newest flows."),
    before=("number", "Only flows that started before this Unix time (next.before)."),
    after_rowid=("integer", "Only flows with rows newer than this last_rowid.")),
    summary="Flows matching a filter (paged)")
def flows(request: Request) -> dict[str, Any]:
    """Merged flows (one per connection) matching the filter, oldest first.

    ``limit`` (default 100) newest flows; ``before=T`` (Unix seconds) pages back: only flows
    that started before T (the response's ``next.before``). ``after_rowid=R`` returns only
    flows with rows newer than R (new or updated connections; ``last_rowid`` of an earlier
    response), at most ``limit`` of them, oldest first.
    """
    own = ("limit", "before", "after_rowid")
    spec = _spec(request, own)
    limit = _int(request, "limit", 100, 1, MAX_LIMIT) or 100
    after = _int(request, "after_rowid", None, 0, 2**62)
    before = _time(request, "before")
    if before is not None:
        cut = math.nextafter(before, -math.inf)
        spec = replace(spec, until=cut if spec.until is None else min(spec.until, cut))

    def query(store: FlowStore) -> dict[str, Any]:
        top = store.last_rowid()
        if after is not None:
            got = store.flows(spec, after_rowid=after, limit=limit)
            nxt = None
        else:
            got = store.flows(spec, last=limit)
            nxt = {"before": got[0].time} if len(got) == limit else None
        return {"flows": [flow_to_dict(f) for f in got], "count": len(got),
                "last_rowid": top, "next": nxt}

    result: dict[str, Any] = _read(_cfg(request), query, {"flows": [], "count": 0,
                                                           "last_rowid": 0, "next": None},
                                   spec)
    return result


@router.get("/flows/stream", openapi_extra=_extra(
    last=("integer", "First send the newest N matching flows (default 0).")),
    summary="Live flows (Server-Sent Events)", response_class=EventSourceResponse)
def flows_stream(request: Request) -> EventSourceResponse:
    """New and updated flows matching the filter as ``event: flow`` (a flow object each).

    ``last=N`` first sends the newest N matching flows. ``event: status`` reports
    ``{"store": "ok" | "busy" | "missing" | <damage kind>}`` when it changes (``corrupt``,
    ``truncated``, ... as ``/api/health`` names them); the store is polled every 0.5 s.
    """
    spec = _spec(request, ("last",))
    last = _int(request, "last", 0, 0, MAX_LIMIT) or 0
    cfg = _cfg(request)
    follower = FlowFollower(cfg.store_path, spec, lock_timeout=cfg.lock_timeout)
    return EventSourceResponse(sse_events(follower, last, cfg.poll_interval), ping=15,
                               headers={"Cache-Control": "no-store"})


@router.get("/map", openapi_extra=_extra(
    services=("boolean", "Draw Services as nodes between clients and backends."),
    world=("boolean", "Group externals without a known name into one 'world' node.")),
    summary="The service map as a graph")
def service_map(request: Request) -> dict[str, Any]:
    """Nodes (workloads, services, externals, cluster nodes) and edges over matching flows.

    ``services=true`` draws each Service as a node between its clients and backends;
    ``world=true`` groups the externals no name is known for into one ``world`` node.
    Connections still being merged across agents are left out for their first
    :data:`~podflow.query.servicemap.LIVE_SETTLE` seconds, longer while an agent is behind
    (``settled`` defaults to :func:`~podflow.query.servicemap.settled_time`; ``settled=0s``
    shows every stored connection as it is).
    """
    spec = _spec(request, ("services", "world"))
    live = "settled" not in request.query_params
    services, world = _bool(request, "services"), _bool(request, "world")
    cfg = _cfg(request)
    with cfg.inventory_lock:
        inv = cluster_inventory(cfg.cluster_state)

    def query(store: FlowStore) -> dict[str, Any]:
        q = spec
        if live:
            now = time.time()
            q = replace(spec, settled=settled_time(now, store.progress(now - AGENT_STALE)))
        edges = store.map_edges(q)
        facts = l7_facts(store, q, raw_id)
        return build_graph(edges, facts, node_ips=node_addresses(inv), world=world,
                           services=services)

    graph: dict[str, Any] = _read(cfg, query, {"nodes": [], "edges": []}, spec)
    graph["generated_at"] = time.time()
    return graph


@router.get("/inventory", summary="Nodes, pods, services, CNI profile and sources")
def inventory(request: Request) -> dict[str, Any]:
    """The cluster state podflow reads and what its agents report (profile, sources)."""
    cfg = _cfg(request)
    with cfg.inventory_lock:
        inv = cluster_inventory(cfg.cluster_state)
    if cfg.lab is not None:
        inv["lab"] = cfg.lab
        inv["externals"] = inv["externals"] or cfg.lab_externals()
    inv.update(_read(cfg, lambda s: agents_summary(s.statuses()), agents_summary([])))
    return inv


@router.get("/filters", summary="The flow filter fields this server accepts")
def filters() -> list[dict[str, Any]]:
    """One entry per FilterSpec field: name, kind (int/str/time ...), repeated, help."""
    return [f.to_dict() for f in filter_fields().values()]


@router.get("/health", summary="Liveness, store state and what is mounted")
def health(request: Request) -> JSONResponse:
    """``{"status": "ok", "store": {...}, ...}``; 503 with ``"status": "degraded"`` when
    the store cannot be read.

    ``store`` is ``{"path", "exists", "ok", "state", "kind", "error", "last_rowid"}``
    (:mod:`podflow.server.storehealth`): ``state`` ``ok``, ``missing`` and ``busy`` are
    healthy; ``corrupt``, ``truncated``, ``not_duckdb``, ``wal_corrupt``, ``schema`` and
    ``unreadable`` are not, and ``error`` names the file and what to do. The server keeps
    serving meanwhile and recovers when the file becomes readable.
    """
    cfg = _cfg(request)
    checker = getattr(request.app.state, "store_health", None) or StoreHealth(cfg.store_path)
    store, ok = checker.report(lock_timeout=min(cfg.lock_timeout, 1.0))
    body: dict[str, Any] = {"status": "ok" if ok else "degraded", "version": __version__,
                            "store": store, "store_exists": store["exists"],
                            "last_rowid": store["last_rowid"], "lab": cfg.lab,
                            "ui": cfg.web_dist is not None, "metrics": cfg.metrics_mounted}
    return JSONResponse(body, status_code=200 if ok else 503)
