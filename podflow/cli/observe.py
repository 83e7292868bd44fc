"""``podflow observe`` and ``podflow map``: read the flow store back, hubble-style.

Both take the same filters (values of one flag OR, different flags AND) and read either a
store file (``--store PATH``) or a lab's store (``--lab NAME``). Errors are one line on
stderr and exit code 2.

Example::

    podflow observe --lab shop --to-namespace data --last 50 -o json
    podflow map --lab shop -o json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from podflow.cli.render import FLOW_FORMATS, MAP_FORMATS, print_edges, print_flows
from podflow.model.flow import Flow
from podflow.query.filter import FilterSpec
from podflow.query.timeparse import parse_time
from podflow.store.base import StoreBusy, StoreError, StoreMissing
from podflow.store.duckdb import DuckDBStore

FOLLOW_INTERVAL = 0.5
"""Seconds between two polls of the store in ``--follow`` mode."""

_F = "Filters"
_Strs = list[str] | None
_Ints = list[int] | None


def _opt(metavar: str, help_: str, *names: str) -> Any:
    return typer.Option(*names, metavar=metavar, help=help_, rich_help_panel=_F)


Store = Annotated[Path | None, typer.Option("--store", metavar="PATH",
                                            help="Flow store file (DuckDB).")]
Lab = Annotated[str | None, typer.Option("--lab", metavar="NAME", help="Read lab NAME's store.")]
Ns = Annotated[_Strs, _opt("NS", "Either end in namespace NS.", "--namespace", "-n")]
FromNs = Annotated[_Strs, _opt("NS", "Source in namespace NS.")]
ToNs = Annotated[_Strs, _opt("NS", "Destination in namespace NS.")]
Pod = Annotated[_Strs, _opt("[NS/]PREFIX", "Either end is a pod whose name starts with PREFIX.")]
FromPod = Annotated[_Strs, _opt("[NS/]PREFIX", "Source pod name starts with PREFIX.")]
ToPod = Annotated[_Strs, _opt("[NS/]PREFIX", "Destination pod name starts with PREFIX.")]
Label = Annotated[_Strs, _opt("K=V[,K2]", "Either end has all these labels (K alone: present).",
                              "--label", "-l")]
FromLabel = Annotated[_Strs, _opt("K=V[,K2]", "Source has all these labels.")]
ToLabel = Annotated[_Strs, _opt("K=V[,K2]", "Destination has all these labels.")]
Svc = Annotated[_Strs, _opt("[NS/]NAME", "Went through this Service.")]
ToSvc = Annotated[_Strs, _opt("[NS/]NAME", "Same as --service.")]
Wl = Annotated[_Strs, _opt("[NS/]NAME", "Either end owned by this workload (Deployment ...).")]
FromWl = Annotated[_Strs, _opt("[NS/]NAME", "Source owned by this workload.")]
ToWl = Annotated[_Strs, _opt("[NS/]NAME", "Destination owned by this workload.")]
Ip = Annotated[_Strs, _opt("CIDR", "Either end's IP (after NAT was undone) in CIDR or equal.")]
FromIp = Annotated[_Strs, _opt("CIDR", "Source IP in CIDR.")]
ToIp = Annotated[_Strs, _opt("CIDR", "Destination IP in CIDR.")]
Port = Annotated[_Ints, _opt("PORT", "Either end's port.")]
FromPort = Annotated[_Ints, _opt("PORT", "Source port.")]
ToPort = Annotated[_Ints, _opt("PORT", "Destination port (the backend's, after NAT).")]
Proto = Annotated[_Strs, _opt("PROTO", "TCP, UDP, ICMP, ICMPv6, SCTP.")]
Node = Annotated[_Strs, _opt("NODE", "Observed on this node.")]
Verd = Annotated[_Strs, _opt("VERDICT", "FORWARDED, DROPPED, ERROR, UNKNOWN.")]
Fqdn = Annotated[_Strs, _opt("NAME", "Either end named NAME (* wildcard: *.example.com), or "
                             "the DNS query or Service FQDN of the destination.")]
FromFqdn = Annotated[_Strs, _opt("NAME", "Source endpoint named NAME (* wildcard).")]
ToFqdn = Annotated[_Strs, _opt("NAME", "Destination named NAME, DNS query for NAME, or via "
                               "the Service NAME.NS.svc.cluster.local (* wildcard).")]
HttpStatus = Annotated[_Strs, _opt("CODE", "HTTP status code (404) or prefix (5+, 40+).")]
HttpMethod = Annotated[_Strs, _opt("METHOD", "HTTP method (GET, POST ...).")]
HttpPath = Annotated[_Strs, _opt("REGEX", "HTTP path matches REGEX (searched; ^/api/ for a "
                                 "prefix; the query string is not matched).")]
Rcode = Annotated[_Strs, _opt("RCODE", "DNS response code: NOERROR, NXDOMAIN, ... or a number.")]
EvType = Annotated[_Strs, _opt("TYPE", "drop (verdict DROPPED), l7 (has DNS/HTTP), trace "
                               "(every other flow), as hubble's event types.", "--type", "-t")]
Since = Annotated[str | None, _opt("TIME", "Flows alive since TIME: RFC3339, Unix seconds, or a "
                                   "duration ago (30s, 5m, 2h, 1d).")]
Until = Annotated[str | None, _opt("TIME", "Flows started until TIME (same forms).")]

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


def build_spec(**kw: Any) -> FilterSpec:
    """A FilterSpec from the CLI's keyword arguments (lists -> tuples, times parsed)."""
    args: dict[str, Any] = {}
    for key, value in kw.items():
        if key in ("since", "until"):
            args[key] = None if value is None else parse_time(str(value))
        elif value:
            args[key] = tuple(value)
    return FilterSpec(**args)


def _key(f: Flow) -> tuple[object, ...]:
    return (f.flow_id or id(f), f.time, f.state, f.traffic, f.end_time, f.observations)


def follow(path: Path, spec: FilterSpec, fmt: str, last: int | None) -> None:
    """Print merged flows as they land (and again when they change) until Ctrl-C."""
    out = sys.stdout
    seen: dict[tuple[str, float], tuple[object, ...]] = {}
    after: int | None = None
    header = True
    while True:
        try:
            store = DuckDBStore(path, read_only=True)
            if after is None:
                after = store.last_rowid()
                flows = store.flows(spec, last=last) if last else []
            else:
                top = store.last_rowid()
                flows = store.flows(spec, after_rowid=after) if top > after else []
                after = top
        except StoreMissing:
            flows = []
            after = 0 if after is None else after   # all that lands from now on is new
        except StoreBusy:
            flows = []
        fresh = []
        for f in flows:
            k, sig = (f.flow_id, f.time), _key(f)
            if seen.get(k) != sig:
                seen[k] = sig
                fresh.append(f)
        if len(seen) > 200_000:
            for k in list(seen)[:100_000]:
                del seen[k]
        if fresh:
            print_flows(fresh, fmt, out, header=header, stream=True)
            header = False
        time.sleep(FOLLOW_INTERVAL)


def register(app: typer.Typer) -> None:
    """Add ``observe`` and ``map`` to the root app."""

    @app.command(epilog="Examples:\n\n  podflow observe --lab shop\n\n"
                 "  podflow observe --lab shop --to-service shop/backend --since 5m -o json\n\n"
                 "  podflow observe --store flows.duckdb -n data --protocol tcp -f\n\n"
                 "  podflow observe --lab shop --to-fqdn '*.example.com' --http-status 5+\n\n"
                 "  podflow observe --lab shop --type drop -o compact")
    def observe(
        store: Store = None, lab: Lab = None,
        namespace: Ns = None, from_namespace: FromNs = None, to_namespace: ToNs = None,
        pod: Pod = None, from_pod: FromPod = None, to_pod: ToPod = None,
        label: Label = None, from_label: FromLabel = None, to_label: ToLabel = None,
        service: Svc = None, to_service: ToSvc = None,
        workload: Wl = None, from_workload: FromWl = None, to_workload: ToWl = None,
        ip: Ip = None, from_ip: FromIp = None, to_ip: ToIp = None,
        port: Port = None, from_port: FromPort = None, to_port: ToPort = None,
        protocol: Proto = None, node: Node = None, verdict: Verd = None,
        fqdn: Fqdn = None, from_fqdn: FromFqdn = None, to_fqdn: ToFqdn = None,
        http_status: HttpStatus = None, http_method: HttpMethod = None,
        http_path: HttpPath = None, dns_rcode: Rcode = None, type: EvType = None,
        since: Since = None, until: Until = None,
        last: Annotated[int | None, typer.Option(
            metavar="N", min=1,
            help="Show the newest N flows (default 20; with --follow: none before).")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Show every matching flow.")] = False,
        follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new and "
                                              "updated flows until Ctrl-C.")] = False,
        output: Annotated[str, typer.Option("--output", "-o", metavar="FORMAT", help="table, "
                                            "json, jsonl or compact.")] = "table",
    ) -> None:
        """Show connections, one per connection (all vantage points merged), newest last.

        Filters work as in hubble observe: repeat a flag to OR its values, combine
        different flags to AND them. Endpoints are matched after NAT was undone.
        """
        if output not in FLOW_FORMATS:
            fail(f"unknown output {output!r}: use one of {', '.join(FLOW_FORMATS)}")
        if all_ and last is not None:
            fail("give only one of --last N and --all")
        path = store_path(store, lab)
        try:
            spec = build_spec(**{k: v for k, v in locals().items() if k in _FILTERS})
            if follow_:
                try:
                    follow(path, spec, output, last)
                except KeyboardInterrupt:
                    return
            with DuckDBStore(path, read_only=True) as s:
                flows = s.flows(spec, last=None if all_ else (last or 20))
            print_flows(flows, output, sys.stdout)
        except (ValueError, StoreError) as exc:
            fail(str(exc))

    @app.command("map", epilog="Examples:\n\n  podflow map --lab shop\n\n"
                 "  podflow map --lab shop -n shop --since 10m -o json")
    def map_(
        store: Store = None, lab: Lab = None,
        namespace: Ns = None, from_namespace: FromNs = None, to_namespace: ToNs = None,
        pod: Pod = None, from_pod: FromPod = None, to_pod: ToPod = None,
        label: Label = None, from_label: FromLabel = None, to_label: ToLabel = None,
        service: Svc = None, to_service: ToSvc = None,
        workload: Wl = None, from_workload: FromWl = None, to_workload: ToWl = None,
        ip: Ip = None, from_ip: FromIp = None, to_ip: ToIp = None,
        port: Port = None, from_port: FromPort = None, to_port: ToPort = None,
        protocol: Proto = None, node: Node = None, verdict: Verd = None,
        fqdn: Fqdn = None, from_fqdn: FromFqdn = None, to_fqdn: ToFqdn = None,
        http_status: HttpStatus = None, http_method: HttpMethod = None,
        http_path: HttpPath = None, dns_rcode: Rcode = None, type: EvType = None,
        since: Since = None, until: Until = None,
        output: Annotated[str, typer.Option("--output", "-o", metavar="FORMAT",
                                                help="table or json.")] = "table",
    ) -> None:
        """Show the service map: workload -> workload edges, most connections first.

        Takes the same filters as observe; an edge aggregates the matching connections.
        """
        if output not in MAP_FORMATS:
            fail(f"unknown output {output!r}: use one of {', '.join(MAP_FORMATS)}")
        path = store_path(store, lab)
        try:
            spec = build_spec(**{k: v for k, v in locals().items() if k in _FILTERS})
            with DuckDBStore(path, read_only=True) as s:
                edges = s.map_edges(spec)
            print_edges(edges, output, sys.stdout)
        except (ValueError, StoreError) as exc:
            fail(str(exc))


_FILTERS = frozenset(f for f in FilterSpec.__dataclass_fields__)
