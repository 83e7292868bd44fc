"""``podflow lab``: emulated clusters on the real kernel datapath (network namespaces)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

LAB_HELP = (
    "Emulated Kubernetes clusters built from real kernel objects.\n\n"
    "A lab is a cluster in network namespaces named pf-NAME-*: one per node (eth0 on an "
    "underlay bridge, flannel.1 VXLAN with flanneld's neighbour/FDB/route entries, flannel "
    "masquerade and kube-proxy iptables chains), one per pod (wired by the real CNI bridge + "
    "host-local plugins with the config Flannel delegates), and one per external host. "
    "Nothing is added to the machine's own network namespace. Files live in "
    "/var/lib/podflow/labs/NAME (PODFLOW_LAB_ROOT overrides).\n\n"
    "Examples:\n\n"
    "  podflow lab up shop.yaml                 # build; start agents, workloads\n"
    "  podflow lab status shop                  # nodes, pods, services, externals\n"
    "  podflow lab exec shop shop/frontend -- ip -br addr\n"
    "  podflow lab exec shop node/node1 -- iptables-save -t nat\n"
    "  podflow lab restart-pod shop shop/backend-7c9d8b6f5d-x2k9p\n"
    "  podflow lab verify shop                  # store vs ground truth\n"
    "  podflow lab down shop\n"
)

lab_app = typer.Typer(help=LAB_HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_show_locals=False)

T = TypeVar("T")


def _fail(msg: str) -> NoReturn:
    typer.echo(f"podflow lab: {msg}", err=True)
    raise typer.Exit(2)


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; user mistakes become one line on stderr and exit code 2."""
    from podflow.lab.netns import LabError
    from podflow.lab.spec import SpecError
    try:
        return fn()
    except (LabError, SpecError, FileNotFoundError) as e:
        _fail(str(e))
    except KeyError as e:
        _fail(str(e.args[0]) if e.args else "not found")


def _root() -> None:
    if os.geteuid() != 0:
        _fail("needs root (the lab creates network namespaces)")


@lab_app.command("up")
def up(
    spec: Path = typer.Argument(..., help="Lab spec (YAML): name, cni, nodes, CIDRs, "  # noqa: B008
                                "namespaces, workloads, services, externals, traffic."),
    no_agents: bool = typer.Option(False, "--no-agents", help="Do not start the per-node "
                                   "podflow agents."),
    no_workloads: bool = typer.Option(False, "--no-workloads", help="Do not start the "
                                      "server/traffic processes in pods and externals."),
) -> None:
    """Build a lab from SPEC, e.g. `podflow lab up shop.yaml --no-agents`.

    Takes a few seconds; on failure everything made so far is removed again.
    """
    from podflow.lab import manager
    from podflow.lab.spec import load_spec
    _root()
    parsed = _guard(lambda: load_spec(spec))
    started = time.monotonic()
    state = _guard(lambda: manager.up(parsed, agents=not no_agents, workloads=not no_workloads,
                                      spec_path=str(spec.resolve())))
    typer.echo(f"lab {state.name} up in {time.monotonic() - started:.1f}s: "
               f"{len(state.nodes)} nodes, {len(state.pods)} pods, {len(state.services)} "
               f"services, {len(state.externals)} externals"
               f"{'' if no_agents else ', agents running'}")
    typer.echo(f"  status: podflow lab status {state.name}    remove: podflow lab down "
               f"{state.name}")


@lab_app.command("down")
def down(
    name: str = typer.Argument(..., help="Lab name."),
    keep_store: bool = typer.Option(False, "--keep-store", help="Keep the lab's flow store "
                                    "(store.duckdb) for later `observe --lab NAME`."),
) -> None:
    """Remove a lab: processes, namespaces, files. Safe to repeat, also after a failed up;
    a lab that does not exist (any more) is reported with exit code 1."""
    from podflow.lab import manager
    from podflow.lab.state import check_lab_name
    _guard(lambda: check_lab_name(name))
    _root()
    if not _guard(lambda: manager.down(name, keep_store=keep_store)):
        typer.echo(f"podflow lab: lab {name} does not exist (nothing to remove)", err=True)
        raise typer.Exit(1)
    typer.echo(f"lab {name} removed" + (" (store kept)" if keep_store else ""))


def _tables(state: Any) -> list[Table]:
    nodes = Table("node", "netns", "underlay IP", "pod CIDR", "flannel.1", title="nodes")
    for n in state.nodes:
        nodes.add_row(n.name, n.netns, n.ip, n.podCIDR, f"{n.vtep_ip} {n.vtep_mac or ''}")
    pods = Table(Column("namespace/pod", no_wrap=True), "node", "IP",
                 Column("netns", overflow="fold"), Column("labels", overflow="fold"),
                 title="pods")
    for p in state.pods:
        pods.add_row(f"{p.namespace}/{p.name}", p.node, p.ip, p.netns,
                     ",".join(f"{k}={v}" for k, v in p.labels.items()))
    svcs = Table("namespace/service", "type", "clusterIP", "ports", "loadBalancer (holder)",
                 title="services")
    for s in state.services:
        ports = ", ".join(f"{p.name + ' ' if p.name else ''}{p.port}->{p.targetPort}/"
                          f"{p.protocol}" + (f" nodePort {p.nodePort}" if p.nodePort else "")
                          for p in s.ports)
        lb = f"{s.loadBalancerIP} ({s.lb_holder or 'not announced'})" \
            if s.loadBalancerIP else ""
        svcs.add_row(f"{s.namespace}/{s.name}", s.type, s.clusterIP, ports, lb)
    exts = Table("external", "IP", "netns", "ports", title="externals")
    for e in state.externals:
        exts.add_row(e.name, e.ip, e.netns, ", ".join(e.ports))
    return [nodes, pods, svcs, exts]


@lab_app.command("status")
def status(
    name: str = typer.Argument(..., help="Lab name."),
    output: str = typer.Option("table", "-o", "--output", help="table or json."),
) -> None:
    """Show a lab's nodes, pods, services and externals, e.g. `podflow lab status shop -o json`.
    """
    from podflow.lab import manager
    if output not in ("table", "json"):
        _fail(f"--output must be table or json, got {output!r}")
    state = _guard(lambda: manager.status(name))
    if output == "json":
        typer.echo(json.dumps(state.to_status(), indent=2))
        return
    console = Console()
    console.print(f"[bold]lab {state.name}[/] ({state.cni}, pods {state.podCIDR}, "
                  f"services {state.serviceCIDR}, underlay {state.underlay})")
    if state.hub_pid is not None:
        console.print(f"hub (pid {state.hub_pid}): Observer API {state.hub_observer}; agents "
                      + ", ".join(f"{n.name} {n.agent_observer}" for n in state.nodes))
    for t in _tables(state):
        console.print(t)


@lab_app.command("exec", context_settings={"allow_interspersed_args": False,
                                           "ignore_unknown_options": True})
def exec_(
    name: str = typer.Argument(..., help="Lab name."),
    target: str = typer.Argument(..., help="NS/POD (or NS/WORKLOAD for its first pod), "
                                 "node/NAME or external/NAME."),
    command: list[str] = typer.Argument(None, help="Command and arguments, after --."),  # noqa: B008
) -> None:
    """Run a command in a pod's, node's or external host's netns; its exit code is ours.

    Example: `podflow lab exec shop external/visitor -- curl -s 172.18.0.1:30080`
    """
    from podflow.lab import manager
    _root()
    argv = [c for c in (command or [])]
    if argv and argv[0] == "--":
        argv = argv[1:]
    code = _guard(lambda: manager.exec_in(name, target, argv))
    raise typer.Exit(code)


@lab_app.command("restart-pod")
def restart_pod(
    name: str = typer.Argument(..., help="Lab name."),
    pod: str = typer.Argument(..., help="NS/POD to restart (NS/WORKLOAD: its first pod)."),
) -> None:
    """Delete a pod and let its 'ReplicaSet' recreate it on the same node: new name, new
    netns, new IP from IPAM. Service endpoints and the cluster state follow.
    """
    from podflow.lab import manager
    _root()
    ns, sep, pname = pod.partition("/")
    if not sep or not ns or not pname:
        _fail(f"expected NS/POD, got {pod!r}")
    old = _guard(lambda: manager.find_pod(manager.status(name), ns, pname))
    new = _guard(lambda: manager.restart_pod(name, ns, old.name))
    typer.echo(f"deleted {old.namespace}/{old.name} ({old.ip} on {old.node})")
    typer.echo(f"created {new.namespace}/{new.name} ({new.ip} on {new.node})")


@lab_app.command("verify")
def verify(
    name: str = typer.Argument(..., help="Lab name."),
    output: str = typer.Option("table", "-o", "--output", help="table or json."),
    settle: float = typer.Option(15.0, "--settle", min=0.0, help="Connections of the last "
                                 "SECONDS are not judged (the agents may not have stored them "
                                 "yet); counted from the last store of the slowest agent when "
                                 "one is behind."),
    live: float = typer.Option(0.0, "--live", min=0.0, metavar="SECONDS", help="Instead, "
                               "watch the live map for SECONDS: read the last 30 s of merged "
                               "flows every second and report every edge the ground truth "
                               "does not have (a connection shown half-resolved)."),
) -> None:
    """Compare the lab's flow store with its traffic ground truth (recall and precision per
    category); exit code 0 only when everything matched.

    With --live, sample the map while traffic runs; exit code 0 only when no snapshot
    showed a wrong edge, e.g. `podflow lab verify shop --live 60`."""
    if live:
        from podflow.lab.verify.live import watch
        report = watch(name, live)
        typer.echo("\n".join(report.lines()))
        raise typer.Exit(0 if report.ok else 1)
    from podflow.lab.verify import run_verify
    raise typer.Exit(run_verify(name, output, settle))


@lab_app.command("list")
def list_() -> None:
    """List the labs under the lab root."""
    from podflow.lab import manager
    from podflow.lab.state import lab_root
    names = manager.list_labs()
    if not names:
        typer.echo(f"no labs under {lab_root()}")
        return
    for n in names:
        try:
            st = manager.status(n)
            created = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st.created))
        except (manager.LabError, ValueError, TypeError, KeyError, OverflowError) as exc:
            typer.echo(f"{n!r}\tnot a readable lab: {exc}")   # a stray or damaged directory
            continue
        typer.echo(f"{n}\t{st.cni}\t{len(st.nodes)} nodes\t{len(st.pods)} pods\t"
                   f"created {created}")


def register(app: typer.Typer) -> None:
    """Add the ``lab`` command group to ``app``."""
    app.add_typer(lab_app, name="lab", help=LAB_HELP)
