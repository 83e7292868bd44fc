"""The ``podflow`` command (also installed as ``kubectl-podflow`` for ``kubectl podflow``).

Each command group lives in its own module with a ``register(app)`` function; this module
only assembles them, so front-ends differ only in which consumers they attach.
"""

from __future__ import annotations

import typer

from podflow import __version__
from podflow.cli import agent, capture, demo, hub, lab, observe, serve

app = typer.Typer(
    name="podflow",
    help=(
        "Who talks to whom in a Kubernetes cluster, whatever its CNI.\n\n"
        "podflow collects connections from the kernel (conntrack over netlink), undoes the NAT "
        "that hides identity (service DNAT, NodePort SNAT, egress masquerade, tunnel gateways), "
        "names both ends with the workload that held each IP at the time, and stores the "
        "history for observe/map.\n\n"
        "Start with `podflow demo`, or build a lab with `podflow lab up SPEC.yaml` and read it "
        "back with `podflow observe --lab NAME` and `podflow map --lab NAME`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"podflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """podflow: network-flow observability for Kubernetes, any CNI."""


for _module in (lab, agent, hub, observe, capture, serve, demo):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
