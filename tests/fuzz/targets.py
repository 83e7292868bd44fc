"""The registry of fuzz targets: one module ``tests/fuzz/target_<name>.py`` per decoder.

A target turns arbitrary bytes into a call of one decoder, the way the agent would make it.
Its ``run`` must return for every input: a decoder may refuse input only in the way it is
documented to (a counted skip, or the one clear error type a command turns into a message);
anything else it raises is a crash. ``seeds`` are the golden recordings under ``tests/data``
that mutation starts from, so the cases reach deep into each format.

The test suite runs a bounded stage of every target (``tests/fuzz/test_fuzz.py``);
``scripts/fuzz.sh`` runs long coverage-guided campaigns (``tests/fuzz/campaign.py``). A
crasher found either way is saved under ``tests/data/fuzz/<target>/`` and replayed by the
suite from then on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CRASHERS = Path(__file__).resolve().parents[1] / "data" / "fuzz"
"""Saved inputs that once crashed a decoder, one folder per target."""


@dataclass(frozen=True)
class Target:
    """One decoder under fuzzing (see the module docstring)."""

    name: str
    """Registry name, also the folder of its crashers."""
    seeds: Callable[[], list[bytes]]
    """The starting corpus: golden recordings, split into the units the decoder reads."""
    run: Callable[[bytes], object]
    """Decode one input; raises only on a defect."""
    examples: int = 1500
    """Cases in the test suite's bounded stage."""


NAMES = ("ctnetlink", "sockdiag", "nflog", "nsdiscovery", "packets", "pcap", "k8s", "labspec")
"""Every target, in the order the suite runs them."""


def load(name: str) -> Target:
    """The target of ``tests/fuzz/target_<name>.py``."""
    target = importlib.import_module(f"tests.fuzz.target_{name}").TARGET
    assert isinstance(target, Target) and target.name == name
    return target


def crashers(name: str) -> list[Path]:
    """Saved crashers of one target (replayed by the suite)."""
    folder = CRASHERS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
