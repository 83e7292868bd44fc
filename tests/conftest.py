"""Shared pytest set-up: integration tests need root and network namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests under tests/integration unless we are root (CI runs as root)."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration test: needs root and network namespaces")
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(skip)
