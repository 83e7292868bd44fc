"""podflow's /metrics on loopback and a real Prometheus (Debian's) scraping it, for tests.

:func:`serve_metrics` serves :func:`podflow.metrics.asgi.metrics_app` over a store with
uvicorn on 127.0.0.1; :func:`run_prometheus` starts ``prometheus`` scraping it every second
and waits for its first scrape; :func:`query` evaluates PromQL. Both context managers stop
what they started, on failure too.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from podflow.metrics.asgi import metrics_app

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
MISSING = "Debian's prometheus is not installed (apt-get install prometheus)"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(port: int, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query (AssertionError if Prometheus refused it)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@contextmanager
def serve_metrics(store_path: Path, options: str, *, backfill: float = float("inf"),
                  interval: float = 0.5) -> Iterator[int]:
    """podflow's metrics app for ``store_path`` on 127.0.0.1; yields its port."""
    port = free_port()
    app = metrics_app(store_path, options, interval=interval, backfill=backfill)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def run_prometheus(workdir: Path, target_port: int, *, ready: str,
                   agents: Sequence[str] = ()) -> Iterator[int]:
    """Prometheus scraping 127.0.0.1:``target_port`` every second (job ``podflow``) and the
    ``agents``' ``HOST:PORT`` (job ``podflow-agent``, one ``instance`` each, as a Hubble
    setup scrapes every node's :9965), its data under ``workdir``; yields its port once
    ``ready`` (PromQL) returns data."""
    prom_port = free_port()
    cfg = workdir / "prometheus.yml"
    jobs = [("podflow", [f"127.0.0.1:{target_port}"])] + ([("podflow-agent", list(agents))]
                                                          if agents else [])
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n" + "".join(
                       f"  - job_name: {job}\n    static_configs:\n"
                       f"      - targets: {json.dumps(targets)}\n" for job, targets in jobs))
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if query(prom_port, 'up{job="podflow"} == 1') and query(prom_port, ready):
                    break
            except OSError:
                pass
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.5)
        else:
            raise AssertionError("prometheus never scraped podflow: "
                                 + log_path.read_text()[-2000:])
        yield prom_port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
