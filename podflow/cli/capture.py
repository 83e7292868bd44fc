"""``podflow capture``: write what a node (or any namespace) sees to a standard pcap.

Filters are observe's, where they mean something for packets: ``--pod``/``--namespace``
become the addresses those pods hold now (from the lab's or ``--cluster-state`` inventory),
``--ip`` CIDRs, ``--port`` and ``--protocol``; values of one flag OR, different flags AND
(see :class:`podflow.query.filter.FilterSpec`). They are compiled to a kernel BPF filter
(:mod:`podflow.sources.bpf`), so nothing else is copied. Without ``--interface`` every device
of the namespace is captured (like ``tcpdump -i any``: a forwarded packet shows once per
device it crosses). The file opens in tcpdump and Wireshark; match is on the outer headers.

Example::

    podflow capture --lab shop --node node1 --pod shop/frontend --port 9000 \\
        --write /tmp/frontend.pcap --count 100
    tcpdump -nr /tmp/frontend.pcap
"""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from podflow.cli.filteropts import FilterValues, with_filters
from podflow.inventory.k8s import PodRecord
from podflow.query.filter import L4_PROTOCOLS, FilterSpec
from podflow.query.l7filter import L7_PROTOCOLS
from podflow.query.params import spec_from_multi
from podflow.sources import bpf
from podflow.sources.packets import open_packet_socket, read_packets

CAPTURE_FILTERS = ("namespace", "pod", "ip", "port", "protocol")
"""The filters that mean something for packets (the rest need decoded flows)."""


def pod_addresses(pods: Iterable[PodRecord], spec: FilterSpec) -> list[str]:
    """Addresses of the running pods that ``spec.pod`` and ``spec.namespace`` select.

    Example::

        >>> p = PodRecord("shop", "web-1", "u1", ("10.244.0.5",))
        >>> pod_addresses([p], FilterSpec(pod=("shop/web",)))
        ['10.244.0.5']
    """
    out = []
    for p in pods:
        if p.deleted is not None or p.host_network:
            continue
        if spec.namespace and p.namespace not in spec.namespace:
            continue
        if spec.pod and not any(
                p.name.startswith(v.partition("/")[2] if "/" in v else v)
                and ("/" not in v or p.namespace == v.partition("/")[0]) for v in spec.pod):
            continue
        out += [ip for ip in p.ips if ip not in out]
    return out


def expression(spec: FilterSpec, hosts: list[str]) -> str:
    """The pcap-filter expression for ``spec`` with pod/namespace resolved to ``hosts``."""
    return bpf.capture_expression(hosts=hosts, nets=spec.ip, ports=spec.port,
                                  protocols=spec.protocol)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"podflow: {message}", err=True)
    return typer.Exit(2)


def _where(lab: str | None, node: str | None, netns: str | None,
           cluster_state: Path | None) -> tuple[str | None, Path | None]:
    if lab is None:
        if node is not None:
            raise _fail("--node needs --lab")
        return netns, cluster_state
    from podflow.lab.state import LabState, lab_dir

    if netns is not None or node is None:
        raise _fail("with --lab, give --node NODE (and no --netns)")
    try:
        state = LabState.load(lab)
        return state.node(node).netns, cluster_state or lab_dir(lab) / "cluster-state"
    except (OSError, KeyError) as exc:
        raise _fail(str(exc)) from None


def _hosts(spec: FilterSpec, cluster_state: Path | None,
           kubeconfig: Path | None = None) -> list[str]:
    if not (spec.pod or spec.namespace):
        return []
    if cluster_state is None and kubeconfig is None:
        raise _fail("--pod/--namespace need --lab, --kubeconfig or --cluster-state")
    from podflow.inventory.source import ClusterConfigError, open_cluster

    try:
        cs = open_cluster(cluster_state=cluster_state, kubeconfig=kubeconfig)
    except ClusterConfigError as exc:
        raise _fail(str(exc)) from None
    cs.start()
    try:
        if not cs.wait_synced(10.0):
            raise _fail(f"{cs.description}: pods not listed within 10 s "
                        f"({cs.health().get('Pod', {}).get('last_error') or 'no answer'})")
        cs.poll(time.time())
        pods = cs.objects().pods
    finally:
        cs.stop()
    hosts = pod_addresses(pods, spec)
    if not hosts:
        raise _fail("no running pod matches --pod/--namespace")
    return hosts


def capture_to(path: Path, netns: str | None, interfaces: list[str] | None, expr: str,
               count: int | None, duration: float | None, snaplen: int = 262144) -> int:
    """Capture into ``path`` until ``count`` packets, ``duration`` s or Ctrl-C; how many."""
    from podflow.pcap import open_writer

    program = bpf.compile_filter(expr, snaplen)
    sel = selectors.DefaultSelector()
    targets: list[str | None] = list(interfaces) if interfaces else [None]
    socks = [open_packet_socket(netns, i, program) for i in targets]
    for s, i in zip(socks, targets, strict=True):
        sel.register(s, selectors.EVENT_READ, i is None)
    writer = open_writer(path, snaplen)
    stop = [False]
    old = signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    end = None if duration is None else time.time() + duration
    try:
        while not stop[0] and (count is None or writer.count < count) and (
                end is None or time.time() < end):
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                got: list[tuple[float, str, bytes]] = []
                read_packets(sock, "", got, 256, skip_lo=key.data)
                for ts, _w, data in got:
                    if count is None or writer.count < count:
                        writer.write(ts, data)
            writer.flush()
    finally:
        signal.signal(signal.SIGINT, old)
        writer.out.close()
        for s in socks:
            s.close()
        sel.close()
    return writer.count


def register(app: typer.Typer) -> None:
    """Add ``capture`` to ``app``."""

    @app.command("capture")
    @with_filters(CAPTURE_FILTERS)
    def capture(
        write: Annotated[Path, typer.Option("--write", "-w", help="pcap file to write.")],
        lab: Annotated[str | None, typer.Option(help="Lab NAME (with --node).")] = None,
        node: Annotated[str | None, typer.Option(help="The lab node to capture on.")] = None,
        netns: Annotated[str | None, typer.Option(help="Network namespace (name or path); "
                                                  "default: this one.")] = None,
        cluster_state: Annotated[Path | None, typer.Option(
            help="Cluster-state directory, for --pod/--namespace without --lab.")] = None,
        kubeconfig: Annotated[Path | None, typer.Option(
            help="The cluster's API server, for --pod/--namespace without --lab.")] = None,
        interface: Annotated[list[str] | None, typer.Option(
            "--interface", "-i", help="Device(s); default: every device.")] = None,
        count: Annotated[int | None, typer.Option(help="Stop after N packets.")] = None,
        duration: Annotated[float | None, typer.Option(help="Stop after S seconds.")] = None,
        *, filters: FilterValues,
    ) -> None:
        """Write the packets a node sees to a pcap (tcpdump/Wireshark), observe's filters."""
        try:
            spec = spec_from_multi(filters)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        if l7 := [p.lower() for p in spec.protocol if p in L7_PROTOCOLS]:
            raise _fail(f"--protocol {l7[0]}: capture filters packets by their L4 protocol "
                        f"({', '.join(L4_PROTOCOLS[:-1])}); an L7 protocol is known only "
                        "once decoded (use observe --protocol)")
        ns, cluster = _where(lab, node, netns, cluster_state)
        expr = expression(spec, _hosts(spec, cluster, kubeconfig))
        try:
            n = capture_to(write, ns, interface, expr, count, duration)
        except (OSError, ValueError, RuntimeError) as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"{n} packets written to {write}" + (f" (filter: {expr})" if expr else ""),
                   err=True)
