"""``podflow agent``: collect flows on one node and write them to a store."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from podflow.cli.limits import (
    MAX_SIZE_HELP,
    RETENTION_HELP,
    parse_store_size,
    store_limits,
)
from podflow.server.listen import parse_listen

if TYPE_CHECKING:
    from podflow.agent.runner import Agent
    from podflow.cluster.feed import SpoolSink
    from podflow.cluster.spool import Spool
    from podflow.metrics.node import NodeMetrics
    from podflow.observer.server import ObserverServer

AGENT_HELP = """Collect the connections of one node and write them to a flow store.

The agent reads conntrack over netlink in the node's network namespace (events plus a
periodic dump to resync), detects the node's CNI from its interfaces, routes and CNI
config, undoes service DNAT / NodePort SNAT / egress masquerade, names both ends from the
cluster state as it was when each connection started, and writes one record per
connection to the store. Several agents (one per node) may share one store file.

It learns only from the kernel and the cluster state, so it works on any node, lab-built
or not. It sets net.netfilter.nf_conntrack_acct, nf_conntrack_timestamp and
nf_conntrack_events to 1 in the node's namespace (without them counters, timestamps and
DESTROY events are missing).

Cluster state: the Kubernetes API, listed then watched (pods, services, endpointslices,
nodes, namespaces, replicasets, jobs, networkpolicies and the ConfigMap
podflow/external-names; get/list/watch only). In a pod it uses its service account; else
--kubeconfig, $KUBECONFIG or ~/.kube/config. --cluster-state DIR reads a directory of
Kubernetes JSON instead (offline mode). The health report, /metrics and --explain show each
watch's state (synced, resourceVersion age, relists, errors); a refused token is an error
in the log, never an empty inventory in silence.

Sources (--sources, comma-separated; default: the detected CNI profile's defaults):
conntrack (the node's connection tracking: NAT, short-lived connections), sockets (TCP/UDP
sockets of every pod namespace of the node and of host-network processes, over inet_diag:
the application's view, RTT, retransmits, owning process; polled every --poll-interval,
so it misses connections shorter than that), packets (AF_PACKET: L7, failed connections).
`--explain` prints the detected profile with its evidence and the chosen sources, then
exits without collecting.

Metrics (--metrics-listen 0.0.0.0:9965): the agent serves Prometheus metrics of what this
node observed, as a Hubble agent does on :9965 (Prometheus then labels each series with
the agent's pod and node; the stock Hubble dashboards group by pod). The handlers and
labels are Hubble's --metrics syntax (--metrics), as for `podflow serve`, whose /metrics
is the whole cluster's view over the store.

Flows (--observer-listen 0.0.0.0:4244): the agent keeps its newest flow events in a ring
(--observer-buffer) and serves them over Hubble's Observer API, as a Cilium agent does on
:4244: `hubble observe --server ADDR` and `hubble status --server ADDR` work unchanged, with
Hubble's filters; `podflow observe --server ADDR` takes podflow's.

Hub mode (--spool DIR, with --observer-listen): instead of writing a store, the agent
keeps what it collects in a bounded on-disk queue until `podflow hub` has pulled and
committed it; a hub that is down or restarting loses nothing, nor does a killed agent (the
next one on the node serves the same spool). At exit the agent waits a few seconds for the
hub to take its last records.

Retention (--retention 14d, --max-size 20GB): every minute the agent deletes whole
connections that ended longer ago than --retention, and the oldest ones while the store's
data exceeds 55% of --max-size (down to 45%: DuckDB's file needs the rest as free space,
and it reuses the freed space rather than shrinking the file). Agents sharing a store
should get the same limits.

Examples:

  # on a node (the DaemonSet in deploy/ runs this with its service account):
  podflow agent --node $(hostname) --store /var/lib/podflow/flows.duckdb

  # a lab node, from the lab's API server:
  podflow agent --node node1 --netns pf-shop-node1 \\
      --kubeconfig /var/lib/podflow/labs/shop/kubeconfig --store flows.duckdb --explain

  # cluster mode: spool for a hub, serve it (and Hubble's Observer API) on :4244
  podflow agent --node $(hostname) --spool /var/lib/podflow/spool \\
      --observer-listen 0.0.0.0:4244

  # offline, from a directory kept current by `kubectl get ... -o json`:
  podflow agent --node node1 --cluster-state /var/run/podflow/state --store /data/f.duckdb
"""


_DEFAULT_CNI_DIR = Path("/etc/cni/net.d")
_DEFAULT_SUBNET_ENV = Path("/run/flannel/subnet.env")


def agent(
    node: Annotated[str, typer.Option("--node", help="Kubernetes node name this agent "
                                      "speaks for.")],
    store: Annotated[Path | None, typer.Option(
        "--store", help="DuckDB store file to write (created if missing; may be shared by "
        "agents). Or --spool, for a hub.")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="Kubeconfig of the cluster's API server (list+watch of pods, "
        "services, endpointslices, nodes, ...). Default: the in-cluster service account "
        "when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG or ~/.kube/config.")] = None,
    cluster_state: Annotated[Path | None, typer.Option(
        "--cluster-state", help="Offline mode, instead of the API: a directory of Kubernetes "
        "JSON (pods.json, services.json, nodes.json, ... as `kubectl get X -A -o json` "
        "prints them), kept current by something else.")] = None,
    netns: Annotated[str | None, typer.Option(
        "--netns", help="Named network namespace of the node (/var/run/netns/NAME); "
        "default: the agent's own.")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", min=0.1, help="Stop by itself after this many seconds.")] = None,
    cni_conf_dir: Annotated[Path, typer.Option(
        "--cni-conf-dir", help="The node's CNI configuration directory.")] = _DEFAULT_CNI_DIR,
    subnet_env: Annotated[Path, typer.Option(
        "--subnet-env", help="flanneld's subnet.env on Flannel nodes.")] = _DEFAULT_SUBNET_ENV,
    resync_interval: Annotated[float, typer.Option(
        "--resync-interval", min=0.2, help="Seconds between conntrack dumps (resync, and how "
        "soon a closed TCP connection is reported with its final counters).")] = 2.0,
    sources: Annotated[str | None, typer.Option(
        "--sources", help="Sources to run, comma-separated (conntrack, sockets, packets); "
        "default: the detected CNI profile's defaults.")] = None,
    poll_interval: Annotated[float, typer.Option(
        "--poll-interval", min=0.05, help="Seconds between polls of the sockets source "
        "(connections shorter than this are missed by it).")] = 1.0,
    netns_prefix: Annotated[str | None, typer.Option(
        "--netns-prefix", help="Only look for pod namespaces among named namespaces "
        "(/var/run/netns) starting with this prefix; for machines that host several "
        "emulated nodes, such as podflow's lab.")] = None,
    source_option: Annotated[list[str] | None, typer.Option(
        "--source-option", help="KEY=VALUE passed to the sources (repeatable), e.g. "
        "sidecar=true, interfaces=cni0,flannel.1, syn_timeout=5; values parse as JSON "
        "when they can, else as text.")] = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Print the detected CNI profile, its evidence, the chosen sources "
        "and why, then exit without collecting.")] = False,
    retention: Annotated[str | None, typer.Option(
        "--retention", metavar="DURATION", help=RETENTION_HELP)] = None,
    max_size: Annotated[str | None, typer.Option(
        "--max-size", metavar="SIZE", help=MAX_SIZE_HELP)] = None,
    metrics_listen: Annotated[str | None, typer.Option(
        "--metrics-listen", metavar="HOST:PORT",
        help="Serve this node's Prometheus metrics on HOST:PORT (Hubble's :9965; port 0: a "
             "free one, logged). Off by default.")] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", metavar="OPTIONS",
        help="Metrics handlers and labels, Hubble-style, e.g. 'flow:sourceContext=pod "
             "dns:query http' (default: every handler, no context labels).")] = None,
    observer_listen: Annotated[str | None, typer.Option(
        "--observer-listen", metavar="ADDR",
        help="Serve this node's recent flows over Hubble's Observer API (gRPC) on HOST:PORT "
             "(Hubble's :4244; port 0: a free one, logged) or unix:PATH; read them with "
             "`hubble observe --server ADDR` or `podflow observe --server ADDR`. Off by "
             "default.")] = None,
    observer_buffer: Annotated[int, typer.Option(
        "--observer-buffer", metavar="N", min=1,
        help="Flow events the Observer API keeps (a ring, newest kept; each connection is "
             "one event per change).")] = 4095,
    spool: Annotated[Path | None, typer.Option(
        "--spool", metavar="DIR",
        help="Hub mode, instead of --store: keep what this node collects in a bounded "
             "on-disk queue in DIR until a `podflow hub` has pulled and committed it "
             "(served on --observer-listen, which hub mode needs).")] = None,
    spool_size: Annotated[str | None, typer.Option(
        "--spool-size", metavar="SIZE", help="Bound of the spool (default 1GB); when full, "
        "new flows wait in memory and are counted as lost past that.")] = None,
    ready_file: Annotated[Path | None, typer.Option("--ready-file", hidden=True)] = None,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Collect the connections of one node (see --help for the full story)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format=f"%(asctime)s agent[{node}] %(levelname)s %(message)s",
                        stream=sys.stderr)
    from podflow.sources.registry import parse_sources

    try:
        chosen = parse_sources(sources) if sources is not None else None
    except ValueError as exc:
        typer.echo(f"podflow agent: --sources: {exc}", err=True)
        raise typer.Exit(2) from None
    limits = store_limits(retention, max_size, "agent")
    if (store is None) == (spool is None):
        typer.echo("podflow agent: give --store FILE, or --spool DIR for a hub", err=True)
        raise typer.Exit(2)
    if spool is not None and observer_listen is None:
        typer.echo("podflow agent: --spool needs --observer-listen ADDR (the hub pulls "
                   "there)", err=True)
        raise typer.Exit(2)
    try:
        spool_bytes = None if spool_size is None else parse_store_size(spool_size)
    except ValueError as exc:
        typer.echo(f"podflow agent: --spool-size: {exc}", err=True)
        raise typer.Exit(2) from None
    if os.geteuid() != 0:
        typer.echo("podflow agent: needs root (netlink conntrack, network namespaces)",
                   err=True)
        raise typer.Exit(2)
    if netns is not None and not Path("/var/run/netns", netns).exists():
        typer.echo(f"podflow agent: no network namespace named {netns!r}", err=True)
        raise typer.Exit(2)
    if cluster_state is not None and kubeconfig is not None:
        typer.echo("podflow agent: give --kubeconfig or --cluster-state, not both", err=True)
        raise typer.Exit(2)
    if cluster_state is not None and not cluster_state.is_dir():
        typer.echo(f"podflow agent: --cluster-state {cluster_state} is not a directory",
                   err=True)
        raise typer.Exit(2)
    try:
        options = parse_source_options(source_option or [])
    except ValueError as exc:
        typer.echo(f"podflow agent: --source-option: {exc}", err=True)
        raise typer.Exit(2) from None
    if netns_prefix:
        options["netns_prefix"] = netns_prefix
    from podflow.agent.runner import Agent, AgentConfig
    from podflow.inventory.source import ClusterConfigError

    cfg = AgentConfig(node_name=node, cluster_state=cluster_state, kubeconfig=kubeconfig,
                      store=store, netns=netns, spool=spool, spool_bytes=spool_bytes,
                      cni_conf_dir=cni_conf_dir, subnet_env=subnet_env, duration=duration,
                      resync_interval=resync_interval, ready_file=ready_file, sources=chosen,
                      poll_interval=poll_interval, source_options=options, **limits)
    from podflow.cluster.spool import SpoolError

    try:
        runner = Agent(cfg)
    except (ClusterConfigError, SpoolError) as exc:
        typer.echo(f"podflow agent: {exc}", err=True)
        raise typer.Exit(2) from None
    if explain:
        typer.echo(explain_text(runner, chosen is not None))
        return
    if metrics is not None and metrics_listen is None:
        typer.echo("podflow agent: --metrics needs --metrics-listen HOST:PORT", err=True)
        raise typer.Exit(2)
    served = None if metrics_listen is None else node_metrics(node, metrics_listen, metrics)
    runner.node_metrics = served
    runner.observer = None if observer_listen is None else \
        observer_server(node, observer_listen, observer_buffer, runner.spool)
    try:
        stats = runner.run()
    finally:
        if served is not None:
            served.close()
        if runner.spool is not None:   # let the hub take the last records (a few seconds)
            drain_spool(runner.spool.spool)
        if runner.observer is not None:
            runner.observer.stop()
    typer.echo(json.dumps({"agent_stats": asdict(stats)}, default=str), err=True)


def node_metrics(node: str, listen: str, options: str | None) -> NodeMetrics:
    """This agent's metrics server, bound (exit 2 with the reason if it cannot be)."""
    from podflow.metrics.node import NodeMetrics

    try:
        host, port = parse_listen(listen)
        nm = NodeMetrics(node, options)
    except ValueError as exc:
        typer.echo(f"podflow agent: --metrics-listen/--metrics: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        bound = nm.serve(host, port)
    except OSError as exc:
        typer.echo(f"podflow agent: --metrics-listen {listen}: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.getLogger(__name__).info("metrics on %s:%d/metrics", host, bound)
    return nm


DRAIN_TIMEOUT = 5.0
"""Seconds an agent in hub mode waits at exit for the hub to acknowledge its spool (what is
left stays in the spool for the next agent on the node)."""


def drain_spool(spool: Spool, timeout: float = DRAIN_TIMEOUT) -> None:
    """Wait until the hub acknowledged every spooled record, at most ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while spool.pending and time.monotonic() < end:
        time.sleep(0.1)
    if spool.pending:
        logging.getLogger(__name__).info("%d spooled records not acknowledged yet: they stay "
                                         "in %s for the next agent", spool.pending, spool.dir)


def observer_server(node: str, listen: str, capacity: int,
                    spool: SpoolSink | None = None) -> ObserverServer:
    """This agent's Observer API (and its spool's feed in hub mode), bound (exit 2 with the
    reason if it cannot be)."""
    from podflow.cluster.feed import FeedService, add_feed
    from podflow.observer.buffer import FlowBuffer
    from podflow.observer.server import ObserverServer

    if not listen.startswith("unix:"):
        try:
            parse_listen(listen)
        except ValueError as exc:
            typer.echo(f"podflow agent: --observer-listen: {exc}", err=True)
            raise typer.Exit(2) from None
    services = [] if spool is None else \
        [partial(add_feed, service=FeedService(spool.spool, node))]
    server = ObserverServer(FlowBuffer(node, capacity), listen, services)
    try:
        server.start()
    except OSError as exc:
        typer.echo(f"podflow agent: --observer-listen {listen}: {exc}", err=True)
        raise typer.Exit(2) from None
    return server


def parse_source_options(items: list[str]) -> dict[str, Any]:
    """``["sidecar=true", "interfaces=a,b"]`` -> ``{"sidecar": True, "interfaces": ["a", "b"]}``.

    >>> parse_source_options(["syn_timeout=5", "mode=fast"])
    {'syn_timeout': 5, 'mode': 'fast'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw.split(",") if "," in raw else raw
        out[key.strip()] = value
    return out


def explain_text(agent: Agent, user_chosen: bool) -> str:
    """What ``--explain`` prints: the profile and its evidence, the sources and why."""
    import time

    from podflow.sources.registry import SOURCES

    try:
        agent.start_inventory()
        det = agent.detect()
        watches = agent.cluster.health(time.time())
    finally:
        agent.cluster.stop()
    names = agent.choose_sources(det)
    node = agent.cfg.node_name + (f" (netns {agent.cfg.netns})" if agent.cfg.netns else "")
    lines = [f"node: {node}", f"cluster state: {agent.cluster.description} "
             f"({agent.cluster.pod_count} pods)"]
    for kind, h in watches.items():
        state = "synced" if h.get("synced") else "NOT synced"
        age = h.get("resource_version_age")
        lines.append(f"  - {kind}: {state}, {h.get('objects', 0)} objects, resourceVersion "
                     f"{h.get('resource_version') or '-'}"
                     + (f" ({age:.0f}s old)" if isinstance(age, float) else "")
                     + f", {h.get('relists', 0)} relists, {h.get('errors', 0)} errors"
                     + (f" (last: {h['last_error']})" if h.get("last_error") else ""))
    lines += [f"CNI profile: {det.profile.name}", "evidence:"]
    lines += [f"  - {e}" for e in det.evidence]
    defaults = ",".join(getattr(det.profile, "default_sources", ()) or ("conntrack",))
    why = "chosen with --sources" if user_chosen else \
        f"the {det.profile.name} profile's defaults ({defaults})"
    lines.append(f"sources: {','.join(names)} ({why})")
    for n in names:
        lines.append(f"  - {n}: {SOURCES[n].help}")
    if "sockets" in names:
        lines.append(f"  sockets poll interval: {agent.cfg.poll_interval:g}s")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``agent`` to ``app``."""
    app.command("agent", help=AGENT_HELP)(agent)
