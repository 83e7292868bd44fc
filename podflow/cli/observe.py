"""``podflow observe`` and ``podflow map``: read the flow store back, hubble-style.

Both take the same filters (values of one flag OR, different flags AND) and read either a
store file (``--store PATH``) or a lab's store (``--lab NAME``). Errors are one line on
stderr and exit code 2.

Example::

    podflow observe --lab shop --to-namespace data --last 50 -o json
    podflow map --lab shop -o json
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from podflow.cli.filteropts import FilterValues, with_filters
from podflow.cli.render import FLOW_FORMATS, MAP_FORMATS, print_edges, print_flows
from podflow.query.filter import FilterSpec
from podflow.query.params import spec_from_multi
from podflow.store import open_store
from podflow.store.base import StoreError
from podflow.store.follow import StoreFollower

FOLLOW_INTERVAL = 0.5
"""Seconds between two polls of the store in ``--follow`` mode."""

Store = Annotated[Path | None, typer.Option("--store", metavar="PATH",
                                            help="Flow store file (DuckDB).")]
Lab = Annotated[str | None, typer.Option("--lab", metavar="NAME", help="Read lab NAME's store.")]
Server = Annotated[str | None, typer.Option(
    "--server", metavar="ADDR", help="Read from a podflow agent or hub serving Hubble's "
    "Observer API: HOST:PORT or unix:PATH (an agent's --observer-listen).")]

def fail(message: str) -> NoReturn:
    """Print ``podflow: MESSAGE`` on stderr and exit 2."""
    typer.echo(f"podflow: {message}", err=True)
    raise typer.Exit(2)


def store_path(store: Path | None, lab: str | None) -> Path:
    """The store file chosen by ``--store`` or ``--lab`` (exactly one must be given)."""
    if store is None and lab is None:
        fail("say which flow store to read: --store PATH or --lab NAME")
    if store is not None and lab is not None:
        fail("give only one of --store PATH and --lab NAME")
    if store is not None:
        return store
    from podflow.lab.state import lab_store_path

    assert lab is not None
    try:
        return lab_store_path(lab)
    except ValueError as exc:  # not a lab name (--lab ../x): never a path
        fail(str(exc))


def build_spec(filters: FilterValues) -> FilterSpec:
    """A FilterSpec from the filter options' values, parsed as the HTTP API parses them."""
    return spec_from_multi(filters)


def from_server(address: str, spec: FilterSpec, fmt: str, *, number: int,
                follow_: bool) -> None:
    """Print what an agent or hub serves (``--server``): the newest ``number`` connections
    (0: all), then, with ``follow_``, each change as it comes until Ctrl-C."""
    from podflow.observer.client import FlowReader, ServerError

    def lost(n: int) -> None:
        typer.echo(f"podflow: {n} events lost: the server's buffer overtook this reader",
                   err=True)

    reader = FlowReader(address)
    try:
        if not follow_:
            print_flows(list(reader.flows(spec, number=number, on_lost=lost)), fmt, sys.stdout)
            return
        header = True
        for flow in reader.flows(spec, number=number, follow=True, on_lost=lost):
            print_flows([flow], fmt, sys.stdout, header=header, stream=True)
            sys.stdout.flush()
            header = False
    except ServerError as exc:
        fail(str(exc))


def follow(path: Path, spec: FilterSpec, fmt: str, last: int | None) -> None:
    """Print merged flows as they land (and again when they change) until Ctrl-C.

    The store follower (:mod:`podflow.store.follow`) does the reading: a store that does
    not exist yet or is busy is waited for; a damaged one stops with its error.
    """
    out = sys.stdout
    follower = StoreFollower(path, spec)
    flows = follower.start(last or 0)
    header = True
    while True:
        if follower.error is not None and not follower.error.retryable:
            raise follower.error
        if flows:
            print_flows(flows, fmt, out, header=header, stream=True)
            header = False
        time.sleep(FOLLOW_INTERVAL)
        flows = follower.poll()


def register(app: typer.Typer) -> None:
    """Add ``observe`` and ``map`` to the root app."""

    @app.command(epilog="Examples:\n\n  podflow observe --lab shop\n\n"
                 "  podflow observe --lab shop --to-service shop/backend --since 5m -o json\n\n"
                 "  podflow observe --store flows.duckdb -n data --protocol tcp -f\n\n"
                 "  podflow observe --lab shop --to-fqdn '*.example.com' --http-status 5+\n\n"
                 "  podflow observe --lab shop --type drop -o compact\n\n"
                 "  podflow observe --server 127.0.0.1:4244 -n shop -f\n\n"
                 "  podflow observe --lab shop --protocol dns -o compact")
    @with_filters()
    def observe(
        store: Store = None, lab: Lab = None, server: Server = None,
        last: Annotated[int | None, typer.Option(
            metavar="N", min=1,
            help="Show the newest N flows (default 20; with --follow: none before).")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Show every matching flow.")] = False,
        follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new and "
                                              "updated flows until Ctrl-C.")] = False,
        output: Annotated[str, typer.Option("--output", "-o", metavar="FORMAT", help="table, "
                                            "json, jsonl or compact.")] = "table",
        *, filters: FilterValues,
    ) -> None:
        """Show connections, one per connection (all vantage points merged), newest last.

        Filters work as in hubble observe: repeat a flag to OR its values, combine
        different flags to AND them. Endpoints are matched after NAT was undone.
        """
        if output not in FLOW_FORMATS:
            fail(f"unknown output {output!r}: use one of {', '.join(FLOW_FORMATS)}")
        if all_ and last is not None:
            fail("give only one of --last N and --all")
        if server is not None:
            if store is not None or lab is not None:
                fail("give only one of --server ADDR, --store PATH and --lab NAME")
            try:
                spec = build_spec(filters)
            except ValueError as exc:
                fail(str(exc))
            with contextlib.suppress(KeyboardInterrupt):
                from_server(server, spec, output,
                            number=0 if all_ else (last or (0 if follow_ else 20)),
                            follow_=follow_)
            return
        path = store_path(store, lab)
        try:
            spec = build_spec(filters)
            if follow_:
                try:
                    follow(path, spec, output, last)
                except KeyboardInterrupt:
                    return
            with open_store(path, read_only=True) as s:
                flows = s.flows(spec, last=None if all_ else (last or 20))
            print_flows(flows, output, sys.stdout)
        except (ValueError, StoreError) as exc:
            fail(str(exc))

    @app.command("map", epilog="Examples:\n\n  podflow map --lab shop\n\n"
                 "  podflow map --lab shop -n shop --since 10m -o json")
    @with_filters()
    def map_(
        store: Store = None, lab: Lab = None,
        output: Annotated[str, typer.Option("--output", "-o", metavar="FORMAT",
                                                help="table or json.")] = "table",
        *, filters: FilterValues,
    ) -> None:
        """Show the service map: workload -> workload edges, most connections first.

        Takes the same filters as observe; an edge aggregates the matching connections.
        """
        if output not in MAP_FORMATS:
            fail(f"unknown output {output!r}: use one of {', '.join(MAP_FORMATS)}")
        path = store_path(store, lab)
        try:
            spec = build_spec(filters)
            with open_store(path, read_only=True) as s:
                edges = s.map_edges(spec)
            print_edges(edges, output, sys.stdout)
        except (ValueError, StoreError) as exc:
            fail(str(exc))
