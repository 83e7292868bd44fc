"""The bounded fuzz stage: every decoder, a few thousand mutated recordings each, and every
saved crasher replayed. Derandomized, so the suite is repeatable; ``scripts/fuzz.sh`` runs
the long random campaigns."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.mutate import mutated
from tests.fuzz.targets import NAMES, crashers, load

SCALE = float(os.environ.get("PODFLOW_FUZZ_SCALE", "1"))
"""Multiplies every target's case count (``PODFLOW_FUZZ_SCALE=10`` for a longer stage)."""


@pytest.mark.parametrize("name", NAMES)
def test_decoder_survives_mutated_recordings(name: str) -> None:
    """No mutation of a golden recording makes the decoder raise."""
    target = load(name)
    seeds = tuple(target.seeds())
    assert seeds, f"{name}: no seed recordings"

    @settings(max_examples=max(1, int(target.examples * SCALE)), deadline=None,
              derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seeds))
    def case(data: bytes) -> None:
        target.run(data)

    case()


@pytest.mark.parametrize("name", NAMES)
def test_seeds_decode(name: str) -> None:
    """The unmutated recordings go through (a target that rejects its seeds fuzzes nothing)."""
    target = load(name)
    for seed in target.seeds():
        target.run(seed)


@pytest.mark.parametrize("path", [p for n in NAMES for p in crashers(n)],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_saved_crashers_stay_fixed(path: os.PathLike[str]) -> None:
    """Every input that once crashed a decoder is handled now."""
    from pathlib import Path

    p = Path(path)
    load(p.parent.name).run(p.read_bytes())
