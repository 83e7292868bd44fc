"""The stock Hubble CLI as a test client of podflow's Observer API (``../shared/tools``).

Tests that use it are marked :data:`needs_hubble`: they skip, with the reason, when the
shared tool is absent (a fresh clone without the shared folder).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

HUBBLE = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "hubble"
"""The CLI built from cilium/hubble's own source (see ../shared/tools/README.md)."""

needs_hubble = pytest.mark.skipif(not HUBBLE.exists(), reason=f"{HUBBLE} is absent "
                                  "(../shared/tools: the stock Hubble CLI)")

Key = tuple[str, int, str, int]
"""A connection as both CLIs print it: client IP and port, server IP and port."""


def hubble(addr: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``hubble ARGS --server ADDR``."""
    return subprocess.run([str(HUBBLE), *args, "--server", addr], capture_output=True,
                          text=True, timeout=60, check=False)


def hubble_keys(addr: str, *args: str) -> set[Key]:
    """The connections ``hubble observe -o json ARGS`` prints (it must succeed)."""
    r = hubble(addr, "observe", "-o", "json", *args)
    assert r.returncode == 0, r.stderr
    keys = set()
    for line in r.stdout.splitlines():
        f = json.loads(line)["flow"]
        l4 = next(iter(f["l4"].values()))
        keys.add((f["IP"]["source"], l4.get("source_port", 0), f["IP"]["destination"],
                  l4.get("destination_port", 0)))
    return keys


def podflow_key(flow: dict[str, object]) -> Key:
    """The same key of a flow as ``podflow observe -o json`` prints it."""
    src, dst = flow["source"], flow["destination"]
    assert isinstance(src, dict) and isinstance(dst, dict)
    return src["ip"], src["port"] or 0, dst["ip"], dst["port"] or 0
