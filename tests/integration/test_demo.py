"""`podflow demo` shows the app's map (names across nodes and through the NodePort) and
cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from podflow.lab.netns import list_netns

pytestmark = pytest.mark.integration


def test_demo_shows_the_map_and_leaves_nothing(tmp_path: Path) -> None:
    if list_netns("pf-shop-"):
        pytest.skip("a lab named shop is running on this machine; the demo uses that name")
    env = {**os.environ, "PODFLOW_LAB_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "podflow", "demo", "--duration", "20"],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr
    final = out.stdout.rsplit("service map of lab shop", 1)[-1]
    rows = [" ".join(line.replace("│", " ").split()) for line in final.splitlines()]
    assert any(r.startswith("shop/frontend shop/backend shop/backend 9000/TCP") for r in rows)
    assert any(r.startswith("shop/backend data/cache data/cache 6379/TCP") for r in rows)
    assert any(r.startswith("shop/backend db (192.168.100.10) 5432/TCP") for r in rows)
    assert any(r.startswith("visitor (192.168.100.20) shop/frontend shop/frontend 8080/TCP")
               for r in rows)
    assert list_netns("pf-shop-") == []
