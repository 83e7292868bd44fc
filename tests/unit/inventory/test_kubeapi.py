"""ClusterAPI: list, watch, resume, relist on 410 and reconcile, errors said and counted.

The API server here is a scripted HTTP transport (httpx's MockTransport) answering with
recorded Kubernetes JSON (tests/data/k8s): the unit level needs no server; the lab's API
server test double (podflow.lab.apiserver) runs the same client end to end in other tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import pytest
from lightkube.config.kubeconfig import KubeConfig

from podflow.inventory.kubeapi import ClusterAPI, resources
from tests.conftest import DATA

K8S = DATA / "k8s"
SERVER = "https://api.test:6443"


def _items(name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((K8S / name).read_text())["items"]
    return items


def _list(items: list[dict[str, Any]], rv: str) -> httpx.Response:
    return httpx.Response(200, json={"kind": "List", "apiVersion": "v1",
                                     "metadata": {"resourceVersion": rv}, "items": items})


def _stream(events: Iterator[dict[str, Any]]) -> httpx.Response:
    def lines() -> Iterator[bytes]:
        for ev in events:
            yield (json.dumps(ev) + "\n").encode()
    return httpx.Response(200, content=lines())


def _quiet() -> Iterator[dict[str, Any]]:
    time.sleep(0.2)    # a watch with nothing to say ends (the client resumes it)
    yield from ()


def _api(handler: Callable[[httpx.Request], httpx.Response]) -> ClusterAPI:
    config = KubeConfig.from_server(SERVER).get()
    assert config is not None
    client = httpx.Client(base_url=SERVER, transport=httpx.MockTransport(handler))
    return ClusterAPI(config, client=client)


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_pods_are_listed_watched_and_reconciled_after_410() -> None:
    pods = _items("pods.json")
    gone = next(p for p in pods if p["metadata"]["name"] == "backend-5c7d8b9f4-a1b2c")
    step = threading.Event()
    watches: list[str] = []
    old = {p["metadata"]["name"] for p in pods}
    restarted = _items("pods-restarted.json")
    for p in restarted:   # a new pod is created when it appears (the recording is older)
        if p["metadata"]["name"] not in old:
            p["metadata"]["creationTimestamp"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 10))

    def pod_watch(rv: str) -> Iterator[dict[str, Any]]:
        if len(watches) == 1:                 # the first watch: a deletion, a bookmark
            step.wait(5)
            yield {"type": "DELETED", "object": {**gone, "metadata": {
                **gone["metadata"], "resourceVersion": "101"}}}
            yield {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                  "metadata": {"resourceVersion": "105"}}}
        elif len(watches) == 2:               # resumed from the bookmark: compacted
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                               "reason": "Expired", "message": "too old"}}
        else:
            yield from _quiet()

    def handler(req: httpx.Request) -> httpx.Response:
        q = req.url.params
        if req.url.path != "/api/v1/pods":
            return _stream(_quiet()) if q.get("watch") else _list([], "1")
        if q.get("watch"):
            assert q["allowWatchBookmarks"] == "true"
            watches.append(q["resourceVersion"])
            return _stream(pod_watch(q["resourceVersion"]))
        if not watches:
            return _list(pods, "100")
        return _list(restarted, "200")   # the relist after 410

    api = _api(handler)
    api.start()
    try:
        assert api.wait_synced(5)
        t0 = time.time()
        assert api.poll(t0)
        first = api.inventory.pod("10.244.0.3", t0)
        assert first is not None and first.pod_name == "backend-5c7d8b9f4-a1b2c"
        step.set()
        _until(lambda: api.health()["Pod"]["relists"] == 1 and api.health()["Pod"]["lists"] == 2)
        assert watches[:2] == ["100", "105"]   # resumed from the bookmark's version
        assert api.poll(t0 + 20)
        now = api.inventory.pod("10.244.0.3", t0 + 20)
        assert now is not None and now.pod_name == "backend-5c7d8b9f4-r8s9t"
        then = api.inventory.pod("10.244.0.3", t0)   # time-indexed: old flows keep it
        assert then is not None and then.pod_name == "backend-5c7d8b9f4-a1b2c"
        h = api.health(time.time())["Pod"]
        assert h["synced"] and h["resource_version"] == "200"
        assert h["objects"] == len(restarted) and h["errors"] == 0
    finally:
        api.stop()
    assert not api.poll(t0 + 30)


def test_a_refused_token_is_said_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"kind": "Status", "code": 401,
                                         "message": "Unauthorized", "reason": "Unauthorized"})

    api = _api(handler)
    with caplog.at_level(logging.ERROR, logger="podflow.inventory.kubeapi"):
        api.start()
        try:
            assert not api.wait_synced(0.3)
            _until(lambda: api.losses.by_reason().get("api_unauthorized", 0) >= len(resources()))
        finally:
            api.stop()
    said = [r for r in caplog.records if "refused the credentials" in r.getMessage()]
    assert len(said) == len(resources())          # once per resource, not per retry
    assert api.pod_count == 0 and "401" in str(api.health()["Pod"]["last_error"])


def test_bad_watch_lines_are_counted_and_skipped() -> None:
    pods = _items("pods.json")
    sent = threading.Event()

    def handler(req: httpx.Request) -> httpx.Response:
        q = req.url.params
        if req.url.path == "/api/v1/pods" and q.get("watch") and not sent.is_set():
            sent.set()
            extra = {**pods[0], "metadata": {**pods[0]["metadata"], "name": "extra-pod",
                                             "resourceVersion": "2"}}

            def lines() -> Iterator[bytes]:
                yield b"{not json\n"
                yield b'{"type": "ADDED", "object": "not an object"}\n'
                yield (json.dumps({"type": "ADDED", "object": extra}) + "\n").encode()
            return httpx.Response(200, content=lines())
        if q.get("watch"):
            return _stream(_quiet())
        return _list(pods if req.url.path == "/api/v1/pods" else [], "1")

    api = _api(handler)
    api.start()
    try:
        _until(lambda: api.pod_count == len(pods) + 1)
        assert api.losses.by_reason()["bad_watch_event"] == 2
    finally:
        api.stop()


def test_an_agent_can_watch_only_its_own_nodes_pods() -> None:
    pod = resources("node2")[0]
    assert pod.kind == "Pod" and pod.field_selector == "spec.nodeName=node2"
    cm = next(r for r in resources() if r.kind == "ConfigMap")
    assert cm.path.endswith("/namespaces/podflow/configmaps")
    assert cm.field_selector == "metadata.name=external-names"


def test_a_broken_watch_resumes_from_the_last_version_it_saw() -> None:
    pods = _items("pods.json")
    watches: list[str] = []

    def broken() -> Iterator[bytes]:
        gone = {**pods[0], "metadata": {**pods[0]["metadata"], "resourceVersion": "150"}}
        yield (json.dumps({"type": "DELETED", "object": gone}) + "\n").encode()
        raise ConnectionResetError("peer reset")   # the stream breaks mid-way

    def handler(req: httpx.Request) -> httpx.Response:
        q = req.url.params
        if req.url.path != "/api/v1/pods":
            return _stream(_quiet()) if q.get("watch") else _list([], "1")
        if q.get("watch"):
            watches.append(q["resourceVersion"])
            if len(watches) == 1:
                return httpx.Response(200, content=broken())
            return _stream(_quiet())
        return _list(pods, "100")

    api = _api(handler)
    api.start()
    try:
        _until(lambda: len(watches) >= 2)
        assert watches[:2] == ["100", "150"]          # not "100" again: no replay, no relist
        assert api.health()["Pod"]["lists"] == 1 and api.health()["Pod"]["errors"] == 1
        assert api.pod_count == len(pods) - 1
    finally:
        t0 = time.monotonic()
        api.stop()
        assert time.monotonic() - t0 < 2.0


def test_an_expired_continue_token_lists_once_more_whole() -> None:
    pods = _items("pods.json")
    asked: list[dict[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        q = dict(req.url.params)
        if req.url.path != "/api/v1/pods":
            return _stream(_quiet()) if q.get("watch") else _list([], "1")
        if q.get("watch"):
            return _stream(_quiet())
        asked.append(q)
        if "continue" in q:
            return httpx.Response(410, json={"kind": "Status", "code": 410,
                                             "reason": "Expired", "message": "expired"})
        if "limit" in q:
            doc = {"kind": "List", "metadata": {"resourceVersion": "100", "continue": "c1"},
                   "items": pods[:3]}
            return httpx.Response(200, json=doc)
        return _list(pods, "101")

    api = _api(handler)
    api.start()
    try:
        assert api.wait_synced(5)
        assert api.pod_count == len(pods)
        assert [("limit" in q, "continue" in q) for q in asked[:3]] == [
            (True, False), (True, True), (False, False)]
        assert api.health()["Pod"]["relists"] == 0
    finally:
        api.stop()
