"""The Kubernetes API test double: lists, watches, resourceVersions, 410, auth, kubeconfig."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from podflow.lab.apiserver import KubeAPIServer, ensure_certificates, write_kubeconfig

TOKEN = "s3cret-token"
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def pod(name: str, node: str, ns: str = "shop", uid: str = "", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{ns}-{name}",
                         "labels": labels or {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "img"}]},
            "status": {"phase": "Running"}}


def write_list(state: Path, name: str, items: list[dict[str, Any]]) -> None:
    """As the lab writes it: a List, replaced atomically."""
    tmp = state / f".{name}.tmp"
    tmp.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    os.replace(tmp, state / name)


PODS = [pod("a", "node1"), pod("b", "node2"), pod("c", "node1", ns="data"),
        pod("d", "node2", tier="web"), pod("e", "node1", app="e", tier="db")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA and server certificate for the module (openssl takes a fraction of a second)."""
    path = tmp_path_factory.mktemp("certs")
    ensure_certificates(path)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "cluster-state"
    path.mkdir()
    write_list(path, "pods.json", PODS)
    write_list(path, "nodes.json", [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "uid": n}}
        for n in ("node1", "node2")])
    write_list(path, "replicasets.json", [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet",
         "metadata": {"name": "web-7c9f", "namespace": "shop", "uid": "rs1"}}])
    return path


def start(state: Path, certs: Path, **kw: Any) -> KubeAPIServer:
    opts: dict[str, Any] = {"bookmark_interval": 0.2, "poll_interval": 0.05, **kw}
    server = KubeAPIServer(state, certs, TOKEN, **opts)
    server.start()
    return server


@pytest.fixture
def server(state: Path, certs: Path) -> Iterator[KubeAPIServer]:
    srv = start(state, certs)
    try:
        yield srv
    finally:
        srv.stop()


def client(srv: KubeAPIServer, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=5.0,
                        verify=ssl.create_default_context(cafile=str(srv.ca_path)))


@pytest.fixture
def api(server: KubeAPIServer) -> Iterator[httpx.Client]:
    with client(server) as c:
        yield c


class Watch:
    """The events of one watch stream, read as they come."""

    def __init__(self, api: httpx.Client, path: str, **params: str) -> None:
        self._cm = api.stream("GET", path, params={"watch": "true", **params})
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> dict[str, Any]:
        for line in self._lines:
            if line:
                event: dict[str, Any] = json.loads(line)
                return event
        raise EOFError("the stream ended")

    def next_change(self) -> dict[str, Any]:
        """The next event that is not a BOOKMARK."""
        while (ev := self.next())["type"] == "BOOKMARK":
            pass
        return ev

    def rest(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._lines if line]

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def names(doc: dict[str, Any]) -> list[str]:
    return [i["metadata"]["name"] for i in doc["items"]]


def test_list_carries_resource_versions_and_items_without_kind(api: httpx.Client) -> None:
    r = api.get("/api/v1/pods")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert (doc["kind"], doc["apiVersion"]) == ("PodList", "v1")
    assert names(doc) == ["c", "a", "b", "d", "e"]   # by namespace, then name
    list_rv = int(doc["metadata"]["resourceVersion"])
    assert all("kind" not in i and "apiVersion" not in i for i in doc["items"])
    assert len({rv_of(i) for i in doc["items"]}) == 5
    assert all(0 < rv_of(i) <= list_rv for i in doc["items"])
    nodes = api.get("/api/v1/nodes").json()
    assert (nodes["kind"], names(nodes)) == ("NodeList", ["node1", "node2"])


def test_namespaced_lists_single_gets_and_not_found(api: httpx.Client) -> None:
    assert names(api.get("/api/v1/namespaces/data/pods").json()) == ["c"]
    assert names(api.get("/api/v1/namespaces/shop/pods").json()) == ["a", "b", "d", "e"]
    rs = api.get("/apis/apps/v1/namespaces/shop/replicasets/web-7c9f").json()
    assert (rs["kind"], rs["apiVersion"], rs["metadata"]["uid"]) == ("ReplicaSet", "apps/v1",
                                                                     "rs1")
    assert rv_of(rs) > 0
    assert api.get("/api/v1/nodes/node2").json()["metadata"]["name"] == "node2"
    jobs = api.get("/apis/batch/v1/jobs").json()   # no jobs.json: an empty list
    assert (jobs["kind"], jobs["items"]) == ("JobList", [])
    assert api.get("/apis/networking.k8s.io/v1/namespaces/x/networkpolicies").json()[
        "items"] == []
    missing = api.get("/api/v1/namespaces/podflow/configmaps/external-names")
    assert missing.status_code == 404
    assert missing.json() | {"details": None} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "external-names" not found', "reason": "NotFound",
        "code": 404, "details": None}
    for path in ("/api/v1/widgets", "/apis/apps/v2/deployments", "/api/v1/nodes/a/b/c",
                 "/metrics", "/api/v1/namespaces/shop/nodes"):
        r = api.get(path)
        assert (r.status_code, r.json()["kind"], r.json()["code"]) == (404, "Status", 404)
    assert api.put("/api/v1/namespaces/shop/pods/a", json={}).status_code == 405


def test_field_selectors(api: httpx.Client) -> None:
    def sel(expr: str, path: str = "/api/v1/pods") -> list[str]:
        r = api.get(path, params={"fieldSelector": expr})
        assert r.status_code == 200, r.text
        return names(r.json())

    assert sel("spec.nodeName=node1") == ["c", "a", "e"]
    assert sel("spec.nodeName=node1,metadata.namespace=shop") == ["a", "e"]
    assert sel("spec.nodeName!=node1") == ["b", "d"]
    assert sel("metadata.name==d") == ["d"]
    assert sel("spec.nodeName=") == []
    assert sel("metadata.name=node2", "/api/v1/nodes") == ["node2"]
    r = api.get("/api/v1/pods", params={"fieldSelector": "spec.bogus=x"})
    assert r.status_code == 400
    assert (r.json()["reason"], r.json()["message"]) == ("BadRequest",
                                                         "field label not supported: spec.bogus")
    assert api.get("/api/v1/nodes", params={"fieldSelector": "spec.nodeName=x"}).status_code \
        == 400


def test_label_selectors(api: httpx.Client) -> None:
    def sel(expr: str) -> list[str]:
        r = api.get("/api/v1/namespaces/shop/pods", params={"labelSelector": expr})
        assert r.status_code == 200, r.text
        return names(r.json())

    assert sel("app=a") == ["a"]
    assert sel("tier") == ["d", "e"]
    assert sel("!tier") == ["a", "b"]
    assert sel("tier,app!=e") == ["d"]
    assert sel("tier in (web, db),app notin (e)") == ["d"]
    assert api.get("/api/v1/pods", params={"labelSelector": "a=(b"}).status_code == 400


def test_limit_and_continue_page_through_one_list(api: httpx.Client,
                                                  server: KubeAPIServer) -> None:
    pages: list[list[str]] = []
    rvs, params = set(), {"limit": "2"}
    while True:
        doc = api.get("/api/v1/pods", params=params).json()
        pages.append(names(doc))
        rvs.add(doc["metadata"]["resourceVersion"])
        if not doc["metadata"].get("continue"):
            break
        assert doc["metadata"]["remainingItemCount"] == 5 - sum(map(len, pages))
        params = {"limit": "2", "continue": doc["metadata"]["continue"]}
    assert pages == [["c", "a"], ["b", "d"], ["e"]]
    assert len(rvs) == 1   # every page says the list's resourceVersion
    first = api.get("/api/v1/pods", params={"limit": "1"}).json()["metadata"]["continue"]
    for token in ("garbage", "eyJ2IjogMX0="):
        r = api.get("/api/v1/pods", params={"limit": "1", "continue": token})
        assert (r.status_code, r.json()["reason"], r.json()["code"]) == (410, "Expired", 410)
    assert api.get("/api/v1/nodes", params={"continue": first}).status_code == 410
    write_list(server.state_dir, "pods.json", PODS[:4])
    wait_for(lambda: len(names(api.get("/api/v1/pods").json())) == 4)
    server.compact()
    assert api.get("/api/v1/pods", params={"limit": "1", "continue": first}).status_code == 410


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_file_changes_become_events_with_increasing_versions(api: httpx.Client,
                                                             state: Path) -> None:
    list_rv = int(api.get("/api/v1/pods").json()["metadata"]["resourceVersion"])
    w = Watch(api, "/api/v1/pods", resourceVersion=str(list_rv))
    try:
        moved = [pod("a", "node2"), *PODS[1:]]
        write_list(state, "pods.json", moved)
        ev1 = w.next_change()
        write_list(state, "pods.json", [*moved, pod("f", "node1")])
        ev2 = w.next_change()
        write_list(state, "pods.json", [p for p in moved if p["metadata"]["name"] != "b"]
                   + [pod("f", "node1")])
        ev3 = w.next_change()
        write_list(state, "pods.json", [pod("a", "node2", uid="new-uid"), pod("f", "node1")]
                   + [p for p in moved[2:]])
        ev4, ev5 = w.next_change(), w.next_change()
    finally:
        w.close()
    got = [(e["type"], e["object"]["metadata"]["name"]) for e in (ev1, ev2, ev3, ev4, ev5)]
    assert got == [("MODIFIED", "a"), ("ADDED", "f"), ("DELETED", "b"), ("DELETED", "a"),
                   ("ADDED", "a")]
    assert ev1["object"]["spec"]["nodeName"] == "node2"
    assert (ev1["object"]["kind"], ev1["object"]["apiVersion"]) == ("Pod", "v1")
    assert (ev4["object"]["metadata"]["uid"], ev5["object"]["metadata"]["uid"]) == (
        "uid-shop-a", "new-uid")
    rvs = [rv_of(e["object"]) for e in (ev1, ev2, ev3, ev4, ev5)]
    assert list_rv < rvs[0] < rvs[1] < rvs[2] < rvs[3] < rvs[4]
    after = api.get("/api/v1/pods").json()
    assert int(after["metadata"]["resourceVersion"]) == rvs[-1]
    # resuming from the middle replays exactly what followed
    w = Watch(api, "/api/v1/pods", resourceVersion=str(rvs[2]), timeoutSeconds="1")
    try:
        assert [rv_of(e["object"]) for e in w.rest()] == rvs[3:]
    finally:
        w.close()


def test_watch_from_zero_lists_first_and_selectors_follow_objects(api: httpx.Client,
                                                                  state: Path) -> None:
    w = Watch(api, "/api/v1/pods", resourceVersion="0", fieldSelector="spec.nodeName=node2")
    try:
        initial = [w.next_change(), w.next_change()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
            ("ADDED", "b"), ("ADDED", "d")]
        write_list(state, "pods.json", [pod("a", "node2"), *PODS[1:]])
        assert (w.next_change()["type"], "entered") == ("ADDED", "entered")
        write_list(state, "pods.json", [pod("a", "node1", ns="shop", tier="x"), *PODS[1:]])
        ev = w.next_change()   # a pod that stops matching is DELETED for this watcher
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("DELETED", "a")
    finally:
        w.close()


def test_bookmarks_and_timeout_end_the_stream(api: httpx.Client) -> None:
    list_rv = api.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
    t0 = time.monotonic()
    w = Watch(api, "/api/v1/pods", resourceVersion=list_rv, allowWatchBookmarks="true",
              timeoutSeconds="1")
    try:
        assert w.response.headers["transfer-encoding"] == "chunked"
        events = w.rest()
    finally:
        w.close()
    elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 3.0
    assert len(events) >= 2
    assert all(e == {"type": "BOOKMARK", "object": {
        "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": list_rv}}}
        for e in events)
    w = Watch(api, "/apis/apps/v1/replicasets", resourceVersion=list_rv, timeoutSeconds="1")
    try:
        assert w.rest() == []   # no bookmarks unless asked for
    finally:
        w.close()


def test_watch_from_a_compacted_version_gets_410(api: httpx.Client, state: Path) -> None:
    old_rv = api.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
    write_list(state, "pods.json", PODS[1:])
    wait_for(lambda: api.get("/api/v1/pods").json()["metadata"]["resourceVersion"] != old_rv)
    r = api.post("/podflow-test/compact")
    assert (r.status_code, r.json()["status"]) == (200, "Success")
    w = Watch(api, "/api/v1/pods", resourceVersion=old_rv, allowWatchBookmarks="true")
    try:
        assert w.response.status_code == 200
        events = w.rest()
    finally:
        w.close()
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status", "Failure", "Expired", 410)
    assert status["message"].startswith(f"too old resource version: {old_rv} (")


def test_compaction_ends_open_watches_with_410(api: httpx.Client) -> None:
    """A compaction makes every version handed out so far too old, so a client that is
    watching lists again too (how the lab forces a relist)."""
    rv = api.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
    w = Watch(api, "/api/v1/pods", resourceVersion=rv, allowWatchBookmarks="true",
              timeoutSeconds="10")
    try:
        time.sleep(0.2)
        assert api.post("/podflow-test/compact").status_code == 200
        events = w.rest()
    finally:
        w.close()
    assert events[-1]["type"] == "ERROR" and events[-1]["object"]["code"] == 410
    assert all(e["type"] == "BOOKMARK" for e in events[:-1])


def test_history_is_bounded(state: Path, certs: Path) -> None:
    srv = start(state, certs, history=2)
    try:
        with client(srv) as api:
            rv0 = api.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
            for n in (4, 3, 2):
                write_list(state, "pods.json", PODS[:n])
                wait_for(lambda n=n: len(api.get("/api/v1/pods").json()["items"]) == n)
            w = Watch(api, "/api/v1/pods", resourceVersion=rv0)
            try:
                assert [e["type"] for e in w.rest()] == ["ERROR"]
            finally:
                w.close()
    finally:
        srv.stop()


def test_every_request_needs_the_token(server: KubeAPIServer) -> None:
    for token in (None, "wrong", TOKEN + "x"):
        with client(server, token) as api:
            for r in (api.get("/api/v1/pods"), api.get("/api/v1/pods?watch=true"),
                      api.get("/version"), api.post("/podflow-test/compact")):
                assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca_path))) as raw:
        r = raw.get(f"{server.url}/api/v1/pods", headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401


def test_a_restarted_server_never_goes_back(state: Path, certs: Path) -> None:
    first = start(state, certs)
    try:
        with client(first) as api:
            write_list(state, "pods.json", PODS[:4])
            wait_for(lambda: len(api.get("/api/v1/pods").json()["items"]) == 4)
            old = api.get("/api/v1/pods").json()
    finally:
        first.stop()
    old_rv = int(old["metadata"]["resourceVersion"])
    second = start(state, certs)
    try:
        with client(second) as api:
            new = api.get("/api/v1/pods").json()
            assert names(new) == names(old)
            assert int(new["metadata"]["resourceVersion"]) > old_rv
            assert min(rv_of(i) for i in new["items"]) > old_rv
            w = Watch(api, "/api/v1/pods", resourceVersion=str(old_rv))
            try:
                events = w.rest()
            finally:
                w.close()
            assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]
    finally:
        second.stop()


def test_kubeconfig_names_server_ca_and_token(tmp_path: Path, server: KubeAPIServer) -> None:
    path = tmp_path / "kube" / "config"
    write_kubeconfig(path, server.url, server.ca_path, TOKEN)
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    assert cluster == {"server": server.url, "certificate-authority": str(server.ca_path)}
    assert user == {"token": TOKEN}
    assert server.url.startswith("https://127.0.0.1:")
    ctx_ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
    with httpx.Client(verify=ctx_ssl) as c:   # the CA verifies the server as localhost too
        url = cluster["server"].replace("127.0.0.1", "localhost")
        r = c.get(f"{url}/api/v1/nodes", headers={"Authorization": f"Bearer {user['token']}"})
        assert r.status_code == 200


def _request_threads() -> int:
    return sum(1 for t in threading.enumerate() if "process_request" in t.name)


def test_disconnects_free_their_threads_quietly(server: KubeAPIServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = _request_threads()
    for _ in range(3):
        with client(server) as api:
            w = Watch(api, "/api/v1/pods", allowWatchBookmarks="true")
            w.next_change()
        # the client is gone mid-stream (no read of the rest)
    wait_for(lambda: _request_threads() == before, timeout=4.0)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_stop_ends_open_watches(state: Path, certs: Path) -> None:
    srv = start(state, certs)
    api = client(srv)
    try:
        w = Watch(api, "/api/v1/pods")
        w.next_change()
        idle = api.get("/api/v1/nodes")   # a keep-alive connection left open as well
        assert idle.status_code == 200
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 2.0
        assert len(w.rest()) == 4   # the other initial ADDED, then the end of the stream
        w.close()
    finally:
        srv.stop()
        api.close()


def test_a_bad_file_keeps_the_last_good_state(api: httpx.Client, state: Path) -> None:
    rv = api.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
    (state / ".tmp").write_text("{not json")
    os.replace(state / ".tmp", state / "pods.json")
    time.sleep(0.2)
    doc = api.get("/api/v1/pods").json()
    assert (doc["metadata"]["resourceVersion"], len(doc["items"])) == (rv, 5)


def test_runs_as_a_process_until_sigterm(tmp_path: Path, state: Path, certs: Path) -> None:
    token_file, url_file, kubeconfig = (tmp_path / n for n in ("token", "url", "kubeconfig"))
    token_file.write_text(TOKEN + "\n")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podflow.lab.apiserver", "--state", str(state), "--certs",
         str(certs), "--token-file", str(token_file), "--port", "0", "--url-file",
         str(url_file), "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: url_file.exists() or proc.poll() is not None, timeout=10.0)
        assert proc.poll() is None, proc.communicate()
        startup = time.monotonic() - t0
        url = url_file.read_text().strip()
        assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == url
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        with httpx.Client(verify=ctx, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            assert names(c.get(f"{url}/api/v1/nodes").json()) == ["node1", "node2"]
            r = c.post(f"{url}/podflow-test/compact")
            assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert startup < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
