"""``lab verify`` output: one-line texts of truth records and flows, and the report tables.

:func:`record_text` and :func:`flow_text` describe the two sides of a mismatch;
:func:`print_report` prints a :class:`~podflow.lab.verify.report.VerifyReport` as rich tables
(scores, then the mismatches) and the verdict.
"""

from __future__ import annotations

import time

from podflow.lab.truth import ConnectRecord
from podflow.lab.verify.report import Ratio, VerifyReport
from podflow.model.flow import Address, Flow


def record_text(r: ConnectRecord) -> str:
    """One line describing a truth record."""
    return (f"{r.time:.3f} {r.proto} {r.client} {r.local_ip}:{r.local_port} -> {r.target} "
            f"({r.remote_ip}:{r.remote_port}) {r.outcome}")


def flow_text(f: Flow) -> str:
    """One line describing a flow: ends, service, NAT."""
    s, d = f.source, f.destination
    ds = f.destination_service
    svc = f" svc={ds.namespace}/{ds.name}" if ds else ""
    nat = f" orig_dst={f.nat.original_destination}" if f.nat.original_destination else ""
    nat += f" snat={f.nat.translated_source}" if f.nat.translated_source else ""
    return (f"{f.time:.3f} {f.protocol} {s.kind}:{s.display()} {Address(s.ip, s.port)} -> "
            f"{d.kind}:{d.display()} {Address(d.ip, d.port)}{svc}{nat}")


def _cell(r: Ratio) -> str:
    if r.total == 0:
        return "[dim]-[/dim]"
    color = "green" if r.hit == r.total else "red"
    return f"[{color}]{100 * r.value:5.1f}%[/{color}] ({r.hit}/{r.total})"


def print_report(report: VerifyReport, name: str) -> None:
    """Print the report as rich tables (scores, then mismatches per category)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"lab {name}: store vs ground truth "
                        f"({time.strftime('%H:%M:%S', time.localtime(report.window.start))}"
                        f" - {time.strftime('%H:%M:%S', time.localtime(report.window.end))})")
    for col in ("category", "conn recall", "conn precision", "edge recall", "edge precision"):
        table.add_column(col)
    for c, s in report.scores.items():
        table.add_row(c, *(_cell(r) for r in s.ratios().values()))
    console.print(table)
    for mm in report.mismatches:
        console.print(f"[red]{mm.kind}[/red] [{', '.join(mm.categories)}] {mm.what}\n"
                      f"    reason: {mm.reason}" + (f"\n    nearest: {mm.nearest}"
                                                     if mm.nearest else ""), highlight=False)
    verdict = "[green]PASS[/green]" if report.ok else "[red]FAIL[/red]"
    console.print(f"{verdict}: every category at 100%" if report.ok else f"{verdict}")
