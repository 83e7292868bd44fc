"""podflow's container image builds from package registries alone and runs.

deploy/tools/build-image.sh makes a Debian 12 base with debootstrap from the Debian mirror
(no container registry is reachable here), builds deploy/Containerfile on it with buildah
and runs ``podflow --version`` in the result. The test removes the image it built (and the
base, when it made it).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from podflow import __version__

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/debian:12-slim"


def _has_image(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", ref],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("buildah") is None or shutil.which("debootstrap") is None,
                    reason="needs buildah and debootstrap (scripts/install.sh installs them)")
def test_the_image_builds_and_runs_podflow() -> None:
    tag = f"localhost/podflow-test:{secrets.token_hex(3)}"
    had_base = _has_image(BASE)
    try:
        out = subprocess.run([str(ROOT / "deploy" / "tools" / "build-image.sh"), tag],
                             capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"podflow {__version__}" in out.stdout
        assert _has_image(tag)
    finally:
        subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
        if not had_base:
            subprocess.run(["buildah", "rmi", "-f", BASE], capture_output=True)
