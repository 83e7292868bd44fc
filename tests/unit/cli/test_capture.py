"""``podflow capture``: filters -> addresses and a BPF expression; argument errors."""

from __future__ import annotations

from typer.testing import CliRunner

from podflow.cli.capture import expression, pod_addresses
from podflow.cli.main import app
from podflow.inventory.k8s import PodRecord
from podflow.query.filter import FilterSpec

PODS = [PodRecord("shop", "web-1", "u1", ("10.244.0.5",)),
        PodRecord("shop", "db-1", "u2", ("10.244.0.6",)),
        PodRecord("data", "web-9", "u3", ("10.244.1.5",)),
        PodRecord("shop", "web-old", "u4", ("10.244.0.7",), deleted=5.0)]


def test_pod_addresses() -> None:
    assert pod_addresses(PODS, FilterSpec(pod=("web",))) == ["10.244.0.5", "10.244.1.5"]
    assert pod_addresses(PODS, FilterSpec(pod=("shop/web",))) == ["10.244.0.5"]
    assert pod_addresses(PODS, FilterSpec(namespace=("shop",))) == ["10.244.0.5", "10.244.0.6"]
    assert pod_addresses(PODS, FilterSpec(namespace=("shop",), pod=("db",))) == ["10.244.0.6"]


def test_expression() -> None:
    spec = FilterSpec(ip=("10.0.0.0/8",), port=(80, 443), protocol=("tcp",))
    assert expression(spec, ["10.244.0.5"]) == (
        "(host 10.244.0.5) and (net 10.0.0.0/8) and (port 80 or port 443) and (tcp)")
    assert expression(FilterSpec(), []) == ""


def test_cli_errors() -> None:
    r = CliRunner()
    res = r.invoke(app, ["capture", "--write", "/tmp/x.pcap", "--node", "n1"])
    assert res.exit_code == 2 and "--node needs --lab" in res.output
    res = r.invoke(app, ["capture", "--write", "/tmp/x.pcap", "--pod", "web"])
    assert res.exit_code == 2 and "--cluster-state" in res.output
    res = r.invoke(app, ["capture", "--write", "/tmp/x.pcap", "--protocol", "bogus"])
    assert res.exit_code == 2 and "unknown protocol" in res.output
