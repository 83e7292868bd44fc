"""The podflow HTTP server: JSON API, live stream, Prometheus metrics and the web UI.

:func:`create_app` assembles one FastAPI application reading one flow store. It is the same
app behind ``podflow serve``, ``podflow demo`` and the browser test: front-ends differ only
in what they attach. Routes:

- ``/api/...`` (:mod:`podflow.server.api`), OpenAPI at ``/openapi.json``, docs at ``/docs``
  (Swagger UI served from the UI build, :mod:`podflow.server.docs`; no CDN);
- ``/metrics`` from :func:`podflow.metrics.asgi.metrics_app` when that module is present;
- ``/`` the built web UI (``web/dist``); when it is not built, ``/`` says how to build it.

Every request, on every route, first passes the Host/Origin check of
:mod:`podflow.server.hostcheck` (loopback names only, unless ``hosts`` says otherwise).

Example::

    app = create_app(Path("/var/lib/podflow/labs/shop/store.duckdb"), lab="shop")
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from podflow import __version__
from podflow.server.api import BadRequest, router
from podflow.server.config import ServerConfig, find_web_dist
from podflow.server.docs import docs_page
from podflow.server.hostcheck import LOOPBACK_ONLY, HostCheck, HostPolicy
from podflow.server.storehealth import StoreHealth
from podflow.store.base import StoreBusy, StoreError

log = logging.getLogger(__name__)

NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>podflow</title></head>
<body style="font-family: sans-serif; max-width: 46em; margin: 3em auto">
<h1>podflow: the web UI is not built</h1>
<p>The API works (<a href="/docs">/docs</a>, <a href="/api/map">/api/map</a>), but the UI's
files were not found in <code>{where}</code>. Build them once from the checkout:</p>
<pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>(<code>scripts/install.sh</code> does this when <code>npm</code> is available), or point
<code>PODFLOW_WEB_DIST</code> at a built copy, then reload this page.</p></body></html>"""


class _AsgiEndpoint:
    """Wraps an ASGI callable so Starlette's Route treats it as an app, not a view."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _mount_metrics(app: FastAPI, store_path: Path, options: str | None) -> Any:
    try:
        module = importlib.import_module("podflow.metrics.asgi")
    except ModuleNotFoundError as exc:
        if exc.name not in ("podflow.metrics.asgi", "podflow.metrics"):
            log.warning("/metrics not served: %s", exc)
        else:
            log.info("/metrics not served: podflow.metrics.asgi is not available")
        return None
    except Exception as exc:  # a broken metrics module must not take the API down
        log.warning("/metrics not served: importing podflow.metrics.asgi failed: %s", exc)
        return None
    metrics: ASGIApp = module.metrics_app(store_path, options)  # ValueError: bad options
    app.router.routes.append(Route("/metrics", _AsgiEndpoint(metrics), methods=["GET"],
                                   include_in_schema=False))
    return metrics


def create_app(store_path: Path, *, lab: str | None = None,
               cluster_state: Path | None = None, kubeconfig: Path | None = None,
               metrics_options: str | None = None,
               web_dist: Path | None = None, hosts: HostPolicy | None = None) -> FastAPI:
    """The server for ``store_path`` (see the module doc).

    ``lab`` names the lab being served (its cluster-state directory is used unless
    ``cluster_state`` or ``kubeconfig`` is given); ``kubeconfig`` watches an API server for
    the inventory instead of a directory (raises
    :class:`~podflow.inventory.source.ClusterConfigError` when it cannot be used);
    ``metrics_options`` are handed to the metrics app (Hubble-style, e.g.
    ``flow:sourceContext=namespace``); ``web_dist`` overrides where the built UI is looked
    for; ``hosts`` is the Host/Origin policy (default: loopback names
    only, right for a server listening on a loopback address).
    """
    if lab is not None and cluster_state is None and kubeconfig is None:
        from podflow.lab.state import lab_dir

        cluster_state = lab_dir(lab) / "cluster-state"
    dist = find_web_dist(web_dist)
    cfg = ServerConfig(Path(store_path), lab=lab, cluster_state_dir=cluster_state,
                       kubeconfig=kubeconfig,
                       web_dist=dist)
    if kubeconfig is not None:
        cfg.open_cluster()   # an unusable kubeconfig stops the server here, said clearly
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # mounted apps get no lifespan events: start the metrics follower with the server,
        # so counters count from server start rather than from the first scrape
        metrics = holder.get("metrics")
        if metrics is not None and hasattr(metrics, "start"):
            await asyncio.to_thread(metrics.start)
        try:
            yield
        finally:
            if metrics is not None and hasattr(metrics, "stop"):
                await asyncio.to_thread(metrics.stop)
            await asyncio.to_thread(cfg.close)

    app = FastAPI(title="podflow", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Flows, service map and inventory of a podflow store. Flow "
                  "filters are the query parameters listed on each endpoint: repeat one to "
                  "OR its values, combine different ones to AND them.")
    app.state.config = cfg
    app.state.store_health = StoreHealth(cfg.store_path)
    app.add_middleware(HostCheck, policy=LOOPBACK_ONLY if hosts is None else hosts)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(StoreBusy)
    async def _busy(request: Request, exc: StoreBusy) -> JSONResponse:
        return JSONResponse({"error": str(exc), "kind": exc.kind}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        # a damaged or unreadable file is the store being unavailable (503, its kind
        # says why, /api/health repeats it); a bare StoreError is a bug (500)
        request.app.state.store_health.record(exc)
        code = 500 if type(exc) is StoreError else 503
        return JSONResponse({"error": str(exc), "kind": exc.kind}, status_code=code)

    app.include_router(router)

    @app.get("/docs", include_in_schema=False)
    def _docs(request: Request) -> HTMLResponse:
        return docs_page(dist, title=app.title, openapi_url=app.openapi_url or "/openapi.json",
                         root_path=str(request.scope.get("root_path", "")).rstrip("/"))

    holder["metrics"] = _mount_metrics(app, cfg.store_path, metrics_options)
    cfg.metrics_mounted = holder["metrics"] is not None
    if dist is not None:
        app.mount("/", StaticFiles(directory=dist, html=True), name="ui")
    else:
        page = NOT_BUILT.format(where=find_where(web_dist))

        @app.get("/", include_in_schema=False)
        def _not_built() -> HTMLResponse:
            return HTMLResponse(page, status_code=503)
        log.warning("web UI not built (%s): run `cd web && npm ci && npm run build`",
                    find_where(web_dist))
    return app


def find_where(web_dist: Path | None) -> str:
    """Where the UI build is looked for (for messages)."""
    from podflow.server.config import default_web_dist

    return str(web_dist or default_web_dist())


def app_info(app: FastAPI) -> dict[str, Any]:
    """What an app serves: store, lab, UI directory, metrics (for start-up messages)."""
    cfg: ServerConfig = app.state.config
    return {"store": str(cfg.store_path), "lab": cfg.lab,
            "ui": None if cfg.web_dist is None else str(cfg.web_dist),
            "metrics": cfg.metrics_mounted}
