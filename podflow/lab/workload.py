"""The lab's workload processes: servers and traffic clients inside pod and external netns.

One process per pod (or external host) runs, on asyncio, a server on every port of the spec
(TCP: a minimal HTTP/1.1 server answering by path, see :mod:`podflow.lab.httpwire`; UDP:
echo) and a client loop for every traffic entry whose ``from`` is this pod's workload
(``NS/WORKLOAD``) or this external (``external/NAME``); targets written by name
(``dns/NAME:PORT``) are resolved through the cluster DNS first (:mod:`podflow.lab.named`).
A pod labelled ``k8s-app: kube-dns`` serves DNS (:mod:`podflow.lab.dns`) on its port-53
ports instead, from the lab's cluster-state directory. Both sides write ground truth (see
:mod:`podflow.lab.truth`).

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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import podflow
from podflow.lab.dns import DNS_LABELS, DNS_PORT, DnsServer, QueryEvent
from podflow.lab.dnszone import ZoneCache
from podflow.lab.httpwire import HttpSpec, answer_request, parse_http
from podflow.lab.named import attempt_by_name, resolv_conf_for
from podflow.lab.state import ExternalState, LabState, PodState
from podflow.lab.traffic import Target, attempt, parse_every, parse_port, parse_target, resolve
from podflow.lab.truth import TruthWriter

log = logging.getLogger("podflow.lab.workload")

MAX_INFLIGHT = 16
CLIENT_START_DELAY = 2.0
"""Seconds a lab pod's clients wait before their first connection (config key
``client_start_delay``; servers of pods started with it listen by then, as a real cluster's
readiness probes would ensure). A bare config (tests) has none."""
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
            "ports": list(pod.ports), "traffic": _traffic_from(state, workload),
            "netns": pod.netns, "namespace": pod.namespace,
            "cluster_state": str(lab_path / "cluster-state"),
            "client_start_delay": CLIENT_START_DELAY}


def external_config(state: LabState, ext: ExternalState, lab_path: Path) -> dict[str, Any]:
    """The config an external host's workload process runs with."""
    who = f"external/{ext.name}"
    return {"lab_path": str(lab_path), "who": who, "ip": ext.ip, "workload": who, "node": None,
            "labels": {}, "ports": list(ext.ports), "traffic": _traffic_from(state, who),
            "netns": ext.netns, "client_start_delay": CLIENT_START_DELAY}


def start_pod(state: LabState, pod: PodState, lab_path: Path, **overrides: Any) -> list[int]:
    """Start the workload process of ``pod`` inside its netns; return its pids.

    ``overrides`` replace config keys (e.g. ``resolv_conf=PATH`` in tests).
    """
    cfg = {**pod_config(state, pod, lab_path), **overrides}
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

    def _dns_query(self, ev: QueryEvent) -> None:
        q = ev.log
        self.truth.write({"type": "dns", "time": ev.time, "server": self.cfg["who"],
                          "server_ip": self.cfg["ip"], "local_port": ev.local_port,
                          "peer_ip": ev.peer[0], "peer_port": ev.peer[1], "proto": ev.proto,
                          "id": q.id, "query": q.query, "qtype": q.qtype, "rcode": q.rcode,
                          "answers": list(q.ips), "ttl": q.ttl})

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        self._accept(port, writer.get_extra_info("peername"), "tcp")
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError,
                                 asyncio.LimitOverrunError):
            await answer_request(reader, writer, str(self.cfg["who"]))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def is_dns(self) -> bool:
        """True when this process serves cluster DNS: its pod has the cluster DNS labels
        (:data:`~podflow.lab.dns.DNS_LABELS`), so it serves DNS on its port-53 ports."""
        labels = self.cfg.get("labels") or {}
        return all(labels.get(k) == v for k, v in DNS_LABELS.items())

    async def serve(self) -> list[Any]:
        """Open a server on every spec port; return the servers/transports to close."""
        loop = asyncio.get_running_loop()
        opened: list[Any] = []
        dns = None
        if self.is_dns():
            zone_dir = Path(self.cfg.get("cluster_state")
                            or Path(self.cfg["lab_path"]) / "cluster-state")
            dns = DnsServer(ZoneCache(zone_dir).get, self._dns_query, self._accept)
        for spec in self.cfg.get("ports") or []:
            proto, port = parse_port(spec)
            if dns is not None and port == int(self.cfg.get("dns_port") or DNS_PORT):
                opened += await dns.start("0.0.0.0", port, (proto,))
            elif proto == "tcp":
                opened.append(await asyncio.start_server(self._http, "0.0.0.0", port))
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_UdpEcho, self, port), local_addr=("0.0.0.0", port))
                opened.append(transport)
        return opened

    def _tick(self, text: str, target: Target, http: HttpSpec, turn: int
              ) -> Coroutine[Any, Any, None] | None:
        """The attempt to make now for one entry, or None when there is nothing to do."""
        state = self.states.get()
        if state is None:
            return None
        if target.kind == "dns":
            conf = resolv_conf_for(self.cfg, state)
            if conf is None:
                log.warning("%s: no resolv.conf and no kube-dns Service to resolve with", text)
                return None
            return self._named(text, target, state, conf, http, turn)
        try:
            dest = resolve(state, target, turn)
        except KeyError as exc:
            log.warning("%s: %s", text, exc)
            return None
        return None if dest is None else self._one(text, target.category, dest, http)

    async def client(self, entry: dict[str, Any]) -> None:
        """Connect to ``entry['to']`` every ``entry['every']`` until cancelled."""
        try:
            target, every = parse_target(entry["to"]), parse_every(entry.get("every", "1s"))
            http = parse_http(entry.get("http"))
        except ValueError as exc:
            log.error("traffic entry %s: %s", entry, exc)
            return
        turn = random.randrange(1 << 16)
        # like a readiness gate: pods started together get to listen before clients fire
        delay = float(self.cfg.get("client_start_delay") or 0.0)
        await asyncio.sleep(delay + random.uniform(0, every))
        next_at = time.monotonic()
        while True:
            if len(self.inflight) < MAX_INFLIGHT:
                coro = self._tick(entry["to"], target, http, turn)
                if coro is not None:
                    task = asyncio.create_task(coro)
                    self.inflight.add(task)
                    task.add_done_callback(self.inflight.discard)
            turn += 1
            next_at += every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _one(self, text: str, category: str, dest: Any, http: HttpSpec) -> None:
        self.truth.write(await attempt(text, category, dest, self.identity, http))

    async def _named(self, text: str, target: Target, state: LabState, conf: Any,
                     http: HttpSpec, turn: int) -> None:
        for rec in await attempt_by_name(text, target, state, conf, self.identity, http, turn):
            self.truth.write(rec)

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
