"""``podflow hub``: pull every agent's spool into one store (cluster mode)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from podflow.cli.limits import MAX_SIZE_HELP, RETENTION_HELP, store_limits

HUB_HELP = """Pull what every agent collected into one flow store (cluster mode).

Each agent runs with --spool DIR --observer-listen ADDR: instead of writing a store it keeps
what its node collects in a bounded on-disk queue and serves it on ADDR. The hub pulls each
agent (--peers), writes the flows of all nodes into its store (where the two ends of a
cross-node connection join), and acknowledges what it committed, so the agent can delete it.

Nothing is lost or stored twice across restarts: the hub commits each agent's cursor in the
same transaction as the flows it covers and resumes from it; an agent keeps everything
until it is acknowledged (a killed agent's spool is read by the next one on its node). An
agent that cannot be reached is retried; its spool holds what it collects meanwhile.

Read the store as usual (`podflow observe --store`, `podflow serve --store`), or the
cluster's recent flows over Hubble's Observer API (--observer-listen: `hubble observe`,
`podflow observe --server`), as from Hubble Relay.

Agents: --peers lists them; --discover follows the agent DaemonSet's pods in the
Kubernetes API instead (new nodes are pulled as their agent starts).

Examples:

  podflow hub --store /var/lib/podflow/flows.duckdb --peers 10.0.0.1:4244,10.0.0.2:4244

  # in the cluster, beside the DaemonSet:
  podflow hub --store /data/flows.duckdb --discover --observer-listen 0.0.0.0:4245
"""


def hub(
    store: Annotated[Path, typer.Option("--store", help="DuckDB store file the hub writes "
                                        "(created if missing).")],
    peers: Annotated[list[str] | None, typer.Option(
        "--peers", metavar="ADDR[,ADDR...]", help="The agents' addresses (their "
        "--observer-listen): HOST:PORT or unix:PATH; comma-separated or repeated. Or "
        "--discover.")] = None,
    discover: Annotated[bool, typer.Option(
        "--discover", help="Find the agents from the Kubernetes API: the running pods of "
        "the agent DaemonSet (--agents-namespace, --agents-selector), each at its pod IP "
        "and its podflow.io/observer-port annotation, else --agents-port; followed as "
        "pods come and go. Uses --kubeconfig, else the in-cluster service account.")
    ] = False,
    agents_namespace: Annotated[str, typer.Option(
        "--agents-namespace", help="Namespace of the agent pods (--discover).")
    ] = "podflow",
    agents_selector: Annotated[str, typer.Option(
        "--agents-selector", help="Label selector of the agent pods (--discover).")
    ] = "app.kubernetes.io/name=podflow,app.kubernetes.io/component=agent",
    agents_port: Annotated[int, typer.Option(
        "--agents-port", min=1, max=65535, help="The agents' port when their pod has no "
        "podflow.io/observer-port annotation (--discover).")] = 4244,
    flush_interval: Annotated[float, typer.Option(
        "--flush-interval", min=0.05, help="Seconds between store writes.")] = 1.0,
    duration: Annotated[float | None, typer.Option(
        "--duration", min=0.1, help="Stop by itself after this many seconds.")] = None,
    observer_listen: Annotated[str | None, typer.Option(
        "--observer-listen", metavar="ADDR",
        help="Serve Hubble's Observer API over every agent's flows on HOST:PORT (Hubble "
             "Relay's :4245; port 0: a free one) or unix:PATH: `hubble observe --server "
             "ADDR` sees the whole cluster, each connection's views merged.")] = None,
    observer_buffer: Annotated[int, typer.Option(
        "--observer-buffer", metavar="N", min=1,
        help="Flow events the hub's Observer API keeps.")] = 16383,
    api_listen: Annotated[str | None, typer.Option(
        "--api-listen", metavar="HOST:PORT",
        help="Serve the web UI, the JSON API and /metrics over the hub's store here (as "
             "`podflow serve`; port 0: a free one). Off by default.")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="The cluster's API server, for the UI's inventory (nodes, "
        "pods, services).")] = None,
    retention: Annotated[str | None, typer.Option(
        "--retention", metavar="DURATION", help=RETENTION_HELP)] = None,
    max_size: Annotated[str | None, typer.Option(
        "--max-size", metavar="SIZE", help=MAX_SIZE_HELP)] = None,
    ready_file: Annotated[Path | None, typer.Option("--ready-file", hidden=True)] = None,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Pull every agent's spool into one store (see --help for the full story)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s hub %(levelname)s %(message)s", stream=sys.stderr)
    addresses = [a.strip() for item in peers or [] for a in item.split(",") if a.strip()]
    if not addresses and not discover:
        typer.echo("podflow hub: say where the agents are: --peers ADDR,... or --discover",
                   err=True)
        raise typer.Exit(2)
    from podflow.cluster.hub import Hub, HubConfig

    found = None
    if discover:
        from lightkube.core.exceptions import ConfigError

        from podflow.cluster.discover import AgentDiscovery
        from podflow.inventory.kubeapi import load_config

        try:
            found = AgentDiscovery(load_config(kubeconfig), namespace=agents_namespace,
                                   selector=agents_selector, port=agents_port)
        except (ConfigError, ValueError, OSError) as exc:
            typer.echo(f"podflow hub: --discover: {exc}", err=True)
            raise typer.Exit(2) from None
        found.start()

    limits = store_limits(retention, max_size, "hub")

    try:
        stats = Hub(HubConfig(store=store, peers=addresses, flush_interval=flush_interval,
                              discover=None if found is None else found.addresses,
                              duration=duration, ready_file=ready_file,
                              observer_listen=observer_listen,
                              observer_buffer=observer_buffer, api_listen=api_listen,
                              kubeconfig=kubeconfig, **limits)).run()
    except (OSError, ValueError) as exc:   # an address it cannot serve on
        typer.echo(f"podflow hub: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if found is not None:
            found.stop()
    typer.echo(json.dumps({"hub_stats": stats}, default=str), err=True)


def register(app: typer.Typer) -> None:
    """Add ``hub`` to the root app."""
    app.command(help=HUB_HELP)(hub)
