"""The lab's workload processes: servers and traffic clients inside pod and external netns.

One process per pod (or external host) runs, on asyncio, a server on every port of the spec
(TCP: a minimal HTTP/1.1 server answering 200 and closing; UDP: echo) and a client loop for
every traffic entry whose ``from`` is this pod's workload (``NS/WORKLOAD``) or this external
(``external/NAME``). Both sides write ground truth (see :mod:`podflow.lab.truth`).

The lab manager starts them with :func:`start_pod` / :func:`start_external`, which run
``ip netns exec NETNS python -m podflow.lab.workload --config FILE`` detached and return the
pids to kill on teardown. SIGTERM makes a process close its files and exit 0.

Example (what the manager does)::

    pids = start_pod(state, state.pods[0], lab_dir(state.name))
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import podflow
from podflow.lab.state import ExternalState, LabState, PodState
from podflow.lab.traffic import attempt, parse_every, parse_port, parse_target, resolve
from podflow.lab.truth import TruthWriter

log = logging.getLogger("podflow.lab.workload")

MAX_INFLIGHT = 16
"""Concurrent attempts per client loop; beyond this, ticks are skipped (bounded load)."""


def _launch(netns: str, config: dict[str, Any], lab_path: Path, tag: str) -> list[int]:
    run_dir, log_dir = lab_path / "run", lab_path / "logs"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / f"workload-{tag}.json"
    tmp = cfg_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, cfg_path)
    env = dict(os.environ)
    root = str(Path(podflow.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with (log_dir / f"workload-{tag}.log").open("ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "podflow.lab.workload",
             "--config", str(cfg_path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, close_fds=True)
    return [proc.pid]


def _traffic_from(state: LabState, source: str) -> list[dict[str, Any]]:
    return [dict(e) for e in state.spec.get("traffic") or [] if e.get("from") == source]


def pod_config(state: LabState, pod: PodState, lab_path: Path) -> dict[str, Any]:
    """The config a pod's workload process runs with."""
    workload = f"{pod.namespace}/{pod.workload}"
    return {"lab_path": str(lab_path), "who": f"{pod.namespace}/{pod.name}", "ip": pod.ip,
            "workload": workload, "node": pod.node, "labels": dict(pod.labels),
            "ports": list(pod.ports), "traffic": _traffic_from(state, workload)}


def external_config(state: LabState, ext: ExternalState, lab_path: Path) -> dict[str, Any]:
    """The config an external host's workload process runs with."""
    who = f"external/{ext.name}"
    return {"lab_path": str(lab_path), "who": who, "ip": ext.ip, "workload": who, "node": None,
            "labels": {}, "ports": list(ext.ports), "traffic": _traffic_from(state, who)}


def start_pod(state: LabState, pod: PodState, lab_path: Path) -> list[int]:
    """Start the workload process of ``pod`` inside its netns; return its pids."""
    cfg = pod_config(state, pod, lab_path)
    return _launch(pod.netns, cfg, lab_path, f"{pod.namespace}-{pod.name}")


def start_external(state: LabState, ext: ExternalState, lab_path: Path) -> list[int]:
    """Start the workload process of external host ``ext`` inside its netns; return pids."""
    return _launch(ext.netns, external_config(state, ext, lab_path), lab_path,
                   f"external-{ext.name}")


class StateCache:
    """``state.json``, re-read whenever its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._state: LabState | None = None

    def get(self) -> LabState | None:
        """The latest readable state (the previous one if the file is unreadable now)."""
        try:
            st = self.path.stat()
            key = (st.st_mtime_ns, st.st_size)
            if key != self._key:
                self._state = LabState.from_dict(json.loads(self.path.read_text()))
                self._key = key
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("cannot read %s: %s", self.path, exc)
        return self._state


class Workload:
    """The running servers and clients of one process."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        lab_path = Path(cfg["lab_path"])
        tag = str(cfg["who"]).replace("/", "-")
        self.truth = TruthWriter(lab_path / "truth" / f"{tag}-{os.getpid()}.jsonl")
        self.states = StateCache(lab_path / "state.json")
        self.inflight: set[asyncio.Task[None]] = set()
        self.identity = {"client": cfg["who"], "client_ip": cfg["ip"],
                         "workload": cfg.get("workload"), "node": cfg.get("node")}

    def _accept(self, port: int, peer: tuple[Any, ...], proto: str) -> None:
        self.truth.write({"type": "accept", "time": time.time(), "server": self.cfg["who"],
                          "server_ip": self.cfg["ip"], "local_port": port,
                          "peer_ip": peer[0], "peer_port": peer[1], "proto": proto,
                          "workload": self.cfg.get("workload"), "node": self.cfg.get("node")})

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        self._accept(port, writer.get_extra_info("peername"), "tcp")
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError,
                                 asyncio.LimitOverrunError):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
            body = f"podflow lab: {self.cfg['who']}\n".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def serve(self) -> list[Any]:
        """Open a server on every spec port; return the servers/transports to close."""
        loop = asyncio.get_running_loop()
        opened: list[Any] = []
        for spec in self.cfg.get("ports") or []:
            proto, port = parse_port(spec)
            if proto == "tcp":
                opened.append(await asyncio.start_server(self._http, "0.0.0.0", port))
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_UdpEcho, self, port), local_addr=("0.0.0.0", port))
                opened.append(transport)
        return opened

    async def client(self, entry: dict[str, Any]) -> None:
        """Connect to ``entry['to']`` every ``entry['every']`` until cancelled."""
        target, every = parse_target(entry["to"]), parse_every(entry.get("every", "1s"))
        turn = random.randrange(1 << 16)
        await asyncio.sleep(random.uniform(0, every))
        next_at = time.monotonic()
        while True:
            state = self.states.get()
            dest = None
            try:
                dest = resolve(state, target, turn) if state else None
            except KeyError as exc:
                log.warning("%s: %s", entry["to"], exc)
            turn += 1
            if dest is not None and len(self.inflight) < MAX_INFLIGHT:
                task = asyncio.create_task(self._one(entry["to"], target.category, dest))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
            next_at += every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _one(self, text: str, category: str, dest: Any) -> None:
        self.truth.write(await attempt(text, category, dest, self.identity))

    async def run(self) -> None:
        """Serve and generate traffic until SIGTERM/SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.truth.write({"type": "start", "time": time.time(), "who": self.cfg["who"],
                          "ip": self.cfg["ip"], "workload": self.cfg.get("workload"),
                          "node": self.cfg.get("node"), "labels": self.cfg.get("labels", {})})
        opened = await self.serve()
        clients = [asyncio.create_task(self.client(e)) for e in self.cfg.get("traffic") or []]
        log.info("%s: serving %s, %d client loop(s)", self.cfg["who"],
                 self.cfg.get("ports"), len(clients))
        await stop.wait()
        for task in clients + list(self.inflight):
            task.cancel()
        await asyncio.gather(*clients, *self.inflight, return_exceptions=True)
        for srv in opened:
            srv.close()
        self.truth.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, owner: Workload, port: int) -> None:
        self.owner, self.port = owner, port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._accept(self.port, addr, "udp")
        if self.transport is not None:
            self.transport.sendto(data, addr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m podflow.lab.workload --config FILE``."""
    parser = argparse.ArgumentParser(prog="python -m podflow.lab.workload")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = json.loads(args.config.read_text())
    asyncio.run(Workload(cfg).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
