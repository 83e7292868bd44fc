"""``podflow lab verify``: compare what the store holds with the lab's ground truth.

One module per job:

- :mod:`~podflow.lab.verify.load`: read a lab's state, truth, window and stored flows;
- :mod:`~podflow.lab.verify.match`: match truth records and flows, strictly (client identity
  at the time, service, backend selected by the service, NAT tuples, and the server's own
  ``accept`` record);
- :mod:`~podflow.lab.verify.score`: :func:`evaluate` (pure) scores recall and precision of
  connections and of workload edges per category;
- :mod:`~podflow.lab.verify.report`: the result types (:class:`VerifyReport`, its JSON form);
- :mod:`~podflow.lab.verify.render`: one-line texts and the printed tables.

:func:`run_verify` loads a lab, evaluates and prints the report.

Example::

    report = evaluate(read_truth(lab_dir("shop")), LabState.load("shop"), flows,
                      Window(start, time.time() - 15))
    report.ok  # True only when every score is 100%
"""

from __future__ import annotations

import json
import sys

from podflow.lab.verify.load import VerifyInputError, load_inputs
from podflow.lab.verify.render import print_report
from podflow.lab.verify.report import (
    CATEGORIES,
    MAX_MISMATCHES,
    Mismatch,
    Ratio,
    Score,
    VerifyReport,
    Window,
)
from podflow.lab.verify.score import evaluate

__all__ = ["CATEGORIES", "MAX_MISMATCHES", "Mismatch", "Ratio", "Score", "VerifyReport",
           "Window", "evaluate", "print_report", "run_verify"]


def run_verify(name: str, output: str = "table", settle: float = 15.0) -> int:
    """``podflow lab verify NAME``: 0 if everything is 100%, 1 if not, 2 on usage errors."""
    def fail(msg: str) -> int:
        print(f"lab verify: {msg}", file=sys.stderr)
        return 2

    if output not in ("table", "json"):
        return fail(f"unknown output {output!r} (table or json)")
    try:
        inputs = load_inputs(name, settle)
    except VerifyInputError as exc:
        return fail(str(exc))
    report = evaluate(inputs.truth, inputs.state, inputs.flows, inputs.window)
    if output == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, name)
    return 0 if report.ok else 1
