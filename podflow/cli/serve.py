"""``podflow serve``: the HTTP API, live flows, ``/metrics`` and the web UI for one store.

Example::

    podflow serve --lab shop                   # http://127.0.0.1:8080/
    podflow serve --store flows.duckdb --cluster-state /var/run/podflow/state --port 9090
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from podflow.cli.observe import Lab, Store, store_path

SERVE_HELP = """Serve the web UI (service map + flow table), the JSON API and /metrics.

Reads the store given by --store PATH or --lab NAME; the inventory (nodes, pods, services)
comes from --cluster-state DIR (a lab's own directory with --lab). API documentation is at
/docs, the OpenAPI document at /openapi.json. Listens on 127.0.0.1 unless --host says
otherwise. The UI must be built once: cd web && npm ci && npm run build.
"""


def serve(
    store: Store = None, lab: Lab = None,
    cluster_state: Annotated[Path | None, typer.Option(
        "--cluster-state", metavar="DIR",
        help="Kubernetes JSON directory for the inventory (default with --lab: the lab's).")
    ] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", metavar="OPTIONS",
        help="Metrics handler options, Hubble-style, e.g. "
             "'flow:sourceContext=namespace;destinationContext=workload'.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No access log.")] = False,
) -> None:
    """Serve the UI and API until Ctrl-C."""
    import uvicorn

    from podflow.server.app import app_info, create_app
    from podflow.server.runner import server_config

    path = store_path(store, lab)
    try:
        app = create_app(path, lab=lab, cluster_state=cluster_state, metrics_options=metrics)
    except ValueError as exc:  # bad --metrics options
        typer.echo(f"podflow serve: --metrics: {exc}", err=True)
        raise typer.Exit(2) from None
    info = app_info(app)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    typer.echo(f"podflow serve: store {info['store']}")
    if info["ui"] is None:
        typer.echo("  web UI not built: cd web && npm ci && npm run build   (API still works)")
    typer.echo(f"  metrics: {'/metrics' if info['metrics'] else 'not available'}")
    typer.echo(f"open http://{shown}:{port}/   (API docs: http://{shown}:{port}/docs)")
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(server_config(app, host, port, quiet=quiet)).run()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve", help=SERVE_HELP)(serve)
