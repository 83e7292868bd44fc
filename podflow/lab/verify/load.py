"""``lab verify`` inputs: a lab's state, ground truth, judged window and stored flows.

:func:`load_inputs` reads them for lab ``name`` and raises :class:`VerifyInputError` with a
one-line reason when there is nothing to judge yet (no lab, no truth, no successful
connection older than the settle time, no store).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from podflow.lab.state import LabState, lab_dir, lab_store_path
from podflow.lab.truth import Truth, read_truth
from podflow.lab.verify.report import Window
from podflow.model.flow import Flow
from podflow.query.servicemap import AGENT_STALE, settled_time


class VerifyInputError(Exception):
    """What ``lab verify`` cannot judge yet, and why (the message)."""


@dataclass(frozen=True)
class VerifyInputs:
    """Everything :func:`~podflow.lab.verify.score.evaluate` needs."""

    state: LabState
    """The lab state now."""
    truth: Truth
    """The lab's ground truth."""
    window: Window
    """From the first truth record to the settle time before now, or before the last time
    the slowest agent stored anything (:meth:`~podflow.store.base.FlowStore.progress`)."""
    flows: list[Flow]
    """Every flow of the lab's store."""


def load_inputs(name: str, settle: float) -> VerifyInputs:
    """Read lab ``name``'s state, truth and store; VerifyInputError if it cannot be judged."""
    try:
        state = LabState.load(name)
    except FileNotFoundError as exc:
        raise VerifyInputError(str(exc)) from None
    truth = read_truth(lab_dir(name))
    first = truth.first_time
    if first is None:
        raise VerifyInputError(f"no ground truth in {lab_dir(name) / 'truth'} "
                               "(is traffic running?)")
    store = lab_store_path(name)
    if not store.exists():
        raise VerifyInputError(f"no store at {store} (were agents started?)")
    from podflow.store import open_store

    now = time.time()
    with open_store(store, read_only=True) as st:
        progress = st.progress(now - AGENT_STALE)  # first: the flows read next hold as much
        flows = list(st.flows())
    window = Window(first, settled_time(now, progress, settle))
    if not any(window.start <= r.time <= window.end and r.outcome == "ok"
               for r in truth.connects):
        raise VerifyInputError(f"no successful connection older than {settle:g}s in the "
                               "ground truth yet")
    return VerifyInputs(state, truth, window, flows)
