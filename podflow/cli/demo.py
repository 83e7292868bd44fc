"""``podflow demo``: a 3-node Flannel-VXLAN lab with an app, agents and a live map."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from podflow.cli.render import edges_table
from podflow.query.servicemap import Edge

if TYPE_CHECKING:
    from podflow.server.runner import ServerThread

DEMO_HELP = """Build a demo cluster on the real kernel datapath and watch its service map live.

Builds the embedded `shop` lab (3 Flannel-VXLAN nodes in network namespaces, real CNI
plugins, kube-proxy iptables rules): a frontend behind a NodePort, a backend service, a
cache, and a database outside the cluster, with traffic between them and a visitor coming
in through the NodePort. One podflow agent per node writes to the lab's store; the map
below is read back from that store, so every edge you see was reconstructed from conntrack
(NAT undone, names from the cluster state). The same map, interactive, with the flow table
and live follow, is served on 127.0.0.1: open the URL printed before the map. Ctrl-C stops
and removes everything.

Afterwards (with --keep) try:  podflow observe --lab shop   podflow map --lab shop
"""


def _read_edges(store_path: str) -> tuple[list[Edge], str | None]:
    from podflow.query.filter import FilterSpec
    from podflow.store import open_store

    if not os.path.exists(store_path):
        return [], "waiting for the first flows ..."
    try:
        with open_store(store_path, read_only=True) as st:
            return st.map_edges(FilterSpec()), None
    except Exception as exc:  # busy store: keep the last map and try again
        return [], f"store busy ({type(exc).__name__}); retrying"


def demo(
    duration: float | None = typer.Option(
        None, "--duration", min=1, help="Stop by itself after this many seconds."),
    keep: bool = typer.Option(False, "--keep", help="Leave the lab running at the end "
                              "(remove it later with `podflow lab down shop`)."),
    refresh: float = typer.Option(2.0, "--refresh", min=0.5, help="Map refresh, seconds."),
    port: int = typer.Option(0, "--port", min=0, max=65535,
                             help="Port of the web UI on 127.0.0.1 (0: any free port)."),
) -> None:
    """Build the demo lab, show the live service map until Ctrl-C, then clean up."""
    if os.geteuid() != 0:
        typer.echo("podflow demo: needs root (it builds network namespaces)", err=True)
        raise typer.Exit(2)
    from podflow.lab import manager
    from podflow.lab.spec import load_default_spec
    from podflow.lab.state import lab_store_path

    console = Console(width=None if sys.stdout.isatty() else 160)
    spec = load_default_spec()
    console.print(f"[bold]podflow demo[/]: building lab [cyan]{spec.name}[/] "
                  f"({spec.nodes} nodes, {spec.cni}) ...")
    started = time.time()
    state = manager.up(spec)
    console.print(f"lab up in {time.time() - started:.1f}s: {len(state.nodes)} nodes, "
                  f"{len(state.pods)} pods, {len(state.services)} services; agents running")
    store = str(lab_store_path(state.name))
    end = None if duration is None else time.time() + duration
    edges: list[Edge] = []
    server = None
    try:
        server = _start_ui(state.name, port, console)
        url = f" — {server.url}" if server is not None else ""
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while end is None or time.time() < end:
                new, note = _read_edges(store)
                edges = new or edges
                title = (f"service map of lab {state.name} — {len(edges)} edges, "
                         f"{time.time() - started:.0f}s{url} (Ctrl-C to stop)")
                body = Group(edges_table(edges), Text(note or "", style="dim"))
                live.update(Panel(body, title=title))
                time.sleep(refresh)
    except KeyboardInterrupt:
        pass
    finally:
        console.print()
        if server is not None:
            server.stop()
        if keep:
            console.print(f"lab {state.name} left running: `podflow lab down {state.name}`")
        else:
            console.print("removing the lab ...")
            manager.down(state.name)
            console.print("done.")


def _start_ui(lab: str, port: int, console: Console) -> ServerThread | None:
    """Serve the web UI for ``lab`` on 127.0.0.1 and print its URL (None if it cannot)."""
    from podflow.lab.state import lab_store_path
    from podflow.server.app import app_info, create_app
    from podflow.server.runner import ServerThread

    try:
        app = create_app(lab_store_path(lab), lab=lab)
        server = ServerThread(app, "127.0.0.1", port).start()
    except (RuntimeError, OSError) as exc:
        console.print(f"[yellow]web UI not started: {exc}[/]")
        return None
    if app_info(app)["ui"] is None:
        console.print("[yellow]web UI not built (cd web && npm ci && npm run build); "
                      "the API is served anyway[/]")
    console.print(f"[bold]open {server.url}[/]  (web UI: interactive map, flows; "
                  f"API docs at {server.url}docs)")
    return server


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo", help=DEMO_HELP)(demo)
