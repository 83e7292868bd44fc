"""``podflow serve``: the HTTP API, live flows, ``/metrics`` and the web UI for one store.

Example::

    podflow serve --lab shop                   # http://127.0.0.1:8080/
    podflow serve --store flows.duckdb --cluster-state /var/run/podflow/state --port 9090
    podflow serve --lab shop --host 0.0.0.0 --allowed-host podflow.example.com --port 0
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
otherwise; --port 0 lets the system choose a free port, and the URL printed once the server
listens is always the real one. The UI must be built once: cd web && npm ci && npm run build.

Every request is checked against DNS rebinding: on a loopback --host (127.0.0.0/8, ::1,
localhost) only requests addressed to localhost, 127.x.x.x or [::1] (any port) are answered;
on another address, requests to that address; on every address (0.0.0.0, ::), requests to
loopback names or to any IP address. Other names, say a DNS name or a proxy's public name,
must be listed with --allowed-host NAME (repeatable; '*' turns the check off). Requests
carrying an Origin header other than the server's own (or an allowed name's) are refused.
"""


def serve(
    store: Store = None, lab: Lab = None,
    cluster_state: Annotated[Path | None, typer.Option(
        "--cluster-state", metavar="DIR",
        help="Kubernetes JSON directory for the inventory (default with --lab: the lab's).")
    ] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", metavar="PATH",
        help="Watch this cluster's API server (list+watch) for the inventory instead of a "
             "directory.")
    ] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", metavar="OPTIONS",
        help="Metrics handler options, Hubble-style, e.g. "
             "'flow:sourceContext=namespace;destinationContext=workload'.")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on (0.0.0.0 or :: for every address).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="TCP port (0: any free port, printed).")] = 8080,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", metavar="NAME",
        help="Also answer requests addressed to this host name or IP (repeatable; '*' for "
             "any). Needed for DNS names of the server; see the Host check above.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No access log.")] = False,
) -> None:
    """Serve the UI and API until Ctrl-C."""
    from podflow.server.app import app_info, create_app
    from podflow.server.hostcheck import policy_for_bind
    from podflow.server.listen import AnnouncingServer, listen_lines
    from podflow.server.runner import server_config

    path = store_path(store, lab)
    if kubeconfig is not None and cluster_state is not None:
        typer.echo("podflow serve: give --kubeconfig or --cluster-state, not both", err=True)
        raise typer.Exit(2)
    try:
        policy = policy_for_bind(host, allowed_host or ())
    except ValueError as exc:  # a bad --host or --allowed-host
        typer.echo(f"podflow serve: {exc}", err=True)
        raise typer.Exit(2) from None
    from podflow.inventory.source import ClusterConfigError

    try:
        app = create_app(path, lab=lab, cluster_state=cluster_state, kubeconfig=kubeconfig,
                         metrics_options=metrics,
                         hosts=policy)
    except ClusterConfigError as exc:
        typer.echo(f"podflow serve: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # bad --metrics options
        typer.echo(f"podflow serve: --metrics: {exc}", err=True)
        raise typer.Exit(2) from None
    info = app_info(app)
    typer.echo(f"podflow serve: store {info['store']}")
    if info["ui"] is None:
        typer.echo("  web UI not built: cd web && npm ci && npm run build   (API still works)")
    typer.echo(f"  metrics: {'/metrics' if info['metrics'] else 'not available'}")
    typer.echo(f"  answers requests addressed to: {policy.describe()}")

    def announce(addresses: list[tuple[str, int]]) -> None:
        for line in listen_lines(addresses):
            typer.echo(line)

    server = AnnouncingServer(server_config(app, host, port, quiet=quiet), announce)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve", help=SERVE_HELP)(serve)
