"""Traffic to targets written by name (``dns/NAME:PORT``): resolve through the cluster DNS, connect.

One attempt is: a real DNS resolution (:func:`~podflow.lab.resolver.resolve_name`, a UDP
exchange with the nameserver of the pod's ``resolv.conf``), then a connection to the address
it answered. It yields up to two ground-truth records:

- the resolution, as a ``connect`` record with ``purpose: dns`` whose ``target`` is the lab
  object the nameserver address stands for (``service/kube-system/kube-dns:53``), so that
  ``lab verify`` judges the DNS flow like any other connection;
- the connection, as a ``connect`` record whose ``target``/``category`` are those of what
  the name resolved to (a ClusterIP -> ``service/...``/clusterip, a pod IP -> ``pod/...``/
  podip, an external host -> ``external/...``/egress) and whose ``spec_target`` is the name
  form; or an ``unresolved`` record when the name gave no lab address.

Which nameserver: :func:`resolv_conf_for` reads ``cfg["resolv_conf"]`` if set, else the
pod's ``/etc/netns/<netns>/resolv.conf`` (what ``ip netns exec`` shows it as
``/etc/resolv.conf``), else for pods the ``kube-system/kube-dns`` ClusterIP from the lab state
with the Kubernetes search path. The host's own resolv.conf is never used. ``cfg["dns_port"]``
(default 53) is the port asked, for tests on loopback.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from podflow.lab.dns import DNS_NAMESPACE, DNS_PORT, DNS_SERVICE, RCODES
from podflow.lab.dnszone import CLUSTER_DOMAIN
from podflow.lab.httpwire import HttpSpec
from podflow.lab.resolver import Resolution, ResolvConf, resolve_name
from podflow.lab.state import LabState
from podflow.lab.traffic import Resolved, Target, attempt, resolve, target_for_ip

KUBE_DNS = (DNS_NAMESPACE, DNS_SERVICE)
"""The cluster DNS Service."""


def kube_dns_conf(state: LabState, namespace: str) -> ResolvConf | None:
    """What kubelet writes for a ``ClusterFirst`` pod, or None without a kube-dns Service."""
    try:
        svc = state.service(*KUBE_DNS)
    except KeyError:
        return None
    search = (f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN)
    return ResolvConf((svc.clusterIP,), search, 5)


def resolv_conf_for(cfg: dict[str, Any], state: LabState | None) -> ResolvConf | None:
    """The resolver configuration of a workload process (see the module doc)."""
    conf = _conf(cfg, state)
    port = int(cfg.get("dns_port") or DNS_PORT)
    return None if conf is None else replace(conf, port=port)


def _conf(cfg: dict[str, Any], state: LabState | None) -> ResolvConf | None:
    paths = [cfg.get("resolv_conf")]
    if cfg.get("netns"):
        paths.append(f"/etc/netns/{cfg['netns']}/resolv.conf")
    for p in paths:
        if p and Path(p).is_file():
            conf = ResolvConf.read(Path(p))
            if conf.nameservers:
                return conf
    if state is not None and cfg.get("namespace"):
        return kube_dns_conf(state, str(cfg["namespace"]))
    return None


def resolution_record(res: Resolution, state: LabState, client: dict[str, Any],
                      started: float, duration: float) -> dict[str, Any] | None:
    """The ``connect`` record of a resolution, or None if it cannot be judged.

    None when no socket was bound or the nameserver is no lab address.
    """
    target = target_for_ip(state, res.nameserver, res.port)
    if target is None or res.local_port is None:
        return None
    final = res.answer or (res.lookups[-1] if res.lookups else None)
    ok = res.error is None and final is not None
    return {"type": "connect", "time": started, **client, "target": target.text,
            "category": target.category, "proto": res.proto, "remote_ip": res.nameserver,
            "remote_port": res.port, "local_ip": res.local_ip or client.get("client_ip"),
            "local_port": res.local_port, "outcome": "ok" if ok else
            ("timeout" if res.error == "timeout" else "error"),
            "error": res.error, "duration": round(duration, 6), "purpose": "dns",
            "dns_query": final.name if final else (res.asked[-1] if res.asked else res.name),
            "dns_queries": list(res.asked), "dns_answers": list(final.ips) if final else [],
            "dns_rcode": res.rcode}


def _unresolved(text: str, res: Resolution, client: dict[str, Any], started: float,
                error: str) -> dict[str, Any]:
    return {"type": "unresolved", "time": started, "client": client.get("client"),
            "client_ip": client.get("client_ip"), "workload": client.get("workload"),
            "node": client.get("node"), "spec_target": text, "error": error,
            "dns_queries": list(res.asked), "dns_rcode": res.rcode}


async def attempt_by_name(text: str, target: Target, state: LabState, conf: ResolvConf,
                          client: dict[str, Any], http: HttpSpec | None = None,
                          turn: int = 0) -> list[dict[str, Any]]:
    """Resolve ``target.name``, connect to the answer; the truth records (module doc)."""
    name = target.name or ""
    started, t0 = time.time(), time.monotonic()
    res = await resolve_name(name, conf)
    records = []
    rec = resolution_record(res, state, client, started, time.monotonic() - t0)
    if rec is not None:
        records.append(rec)
    answer = res.answer
    if answer is None:
        why = res.error or RCODES.get(res.rcode or 0, str(res.rcode))
        return [*records, _unresolved(text, res, client, started, why)]
    ip = answer.ips[turn % len(answer.ips)]
    canonical = target_for_ip(state, ip, target.port)
    picked = None
    if canonical is not None:
        try:
            picked = resolve(state, canonical, turn)
        except KeyError:
            picked = None
    if canonical is None or picked is None:
        return [*records, _unresolved(text, res, client, started,
                                      f"no lab address for {ip}:{target.port}")]
    dest = Resolved(ip, target.port, picked.proto)
    conn = await attempt(canonical.text, canonical.category, dest, client, http,
                         host=f"{name.rstrip('.')}:{target.port}")
    conn.update(spec_target=text, dns_query=answer.name, dns_queries=list(res.asked),
                dns_answers=list(answer.ips), dns_rcode=answer.rcode, resolved_ip=ip)
    return [*records, conn]
