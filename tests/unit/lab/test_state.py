"""Lab names select paths: they are validated wherever they do, and ``lab down`` of a lab
that does not exist says so (issue 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from podflow.cli.main import app
from podflow.lab import manager
from podflow.lab.state import LabNameError, LabState, check_lab_name, lab_dir, lab_store_path

BAD_NAMES = ["../x", "..", "a/b", "/etc", "shop\n", "Shop", "", "abcdefghijklm", "1lab",
             "shop-1", "shop\x00"]


@pytest.fixture
def lab_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODFLOW_LAB_ROOT", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_lab_name_never_leaves_the_lab_root(lab_root: Path, name: str) -> None:
    with pytest.raises(LabNameError, match="invalid lab name"):
        lab_dir(name)
    with pytest.raises(LabNameError):
        lab_store_path(name)
    with pytest.raises(FileNotFoundError):      # what callers catch for "no lab named X"
        LabState.load(name)
    with pytest.raises(ValueError):
        check_lab_name(name)


def test_valid_names_select_their_directory(lab_root: Path) -> None:
    assert lab_dir("shop") == lab_root / "shop"
    assert lab_store_path("lab12") == lab_root / "lab12" / "store.duckdb"
    with pytest.raises(FileNotFoundError, match="no lab named 'shop'"):
        LabState.load("shop")


def test_cli_refuses_a_path_as_lab_name(lab_root: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    outside = lab_root.parent / "x"
    outside.mkdir(exist_ok=True)
    (outside / "state.json").write_text("{}")
    r = CliRunner()
    for args in (["lab", "status", "../x"], ["lab", "down", "../x"],
                 ["lab", "restart-pod", "../x", "shop/web"]):
        res = r.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "invalid lab name '../x'" in res.output
    assert (outside / "state.json").exists()


def _no_kernel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keep ``down`` away from real namespaces and processes; record what it deletes."""
    deleted: list[str] = []
    monkeypatch.setattr(manager, "_require_root", lambda: None)
    monkeypatch.setattr(manager.nsu, "list_netns", lambda prefix: [])
    monkeypatch.setattr(manager.nsu, "kill_pids", lambda *a, **k: None)
    monkeypatch.setattr(manager.nsu, "delete_netns", deleted.append)
    monkeypatch.setattr(manager, "remove_all_resolv_confs", lambda name: None)
    return deleted


def test_down_of_an_unknown_lab_removes_nothing_and_says_so(
        lab_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_kernel(monkeypatch)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert manager.down("nosuch") is False
    res = CliRunner().invoke(app, ["lab", "down", "nosuch"])
    assert res.exit_code == 1
    assert "lab nosuch does not exist" in res.output and "removed" not in res.output


def test_down_of_a_half_built_lab_removes_its_files(
        lab_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_kernel(monkeypatch)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    (lab_root / "half" / "cluster-state").mkdir(parents=True)
    res = CliRunner().invoke(app, ["lab", "down", "half"])
    assert res.exit_code == 0 and "lab half removed" in res.output
    assert not (lab_root / "half").exists()
    assert manager.down("half") is False       # repeating is safe, and says so


def test_list_skips_what_is_not_a_lab(lab_root: Path) -> None:
    for name in ("Bad.Name", "broken"):
        (lab_root / name).mkdir()
        (lab_root / name / "state.json").write_text("{not json")
    res = CliRunner().invoke(app, ["lab", "list"])
    assert res.exit_code == 0, res.output
    assert "'Bad.Name'\tnot a readable lab: invalid lab name" in res.output
    assert "'broken'\tnot a readable lab" in res.output


def test_load_balancer_vip_and_holder_are_kept_and_shown(lab_root: Path) -> None:
    from podflow.lab.state import ServicePortState, ServiceState
    from tests.unit.lab.test_kubeobjects import lab_state

    st = lab_state()
    st.services.append(ServiceState(
        "shop", "frontend-lb", "LoadBalancer", "10.96.0.13", {"app": "frontend"},
        [ServicePortState("https", 443, 8080, "TCP", 30443)], loadBalancerIP="172.18.0.240",
        lb_holder="node2"))
    st.save()
    back = LabState.load("shop")
    assert back.service("shop", "frontend-lb").lb_holder == "node2"
    assert back.load_balancer("172.18.0.240") is back.services[-1]
    assert back.load_balancer("10.96.0.13") is None
    old = st.to_dict()          # a state.json written before LoadBalancer services existed
    for s in old["services"]:
        del s["loadBalancerIP"], s["lb_holder"]
    assert LabState.from_dict(old).services[-1].loadBalancerIP is None
    status = {s["name"]: s for s in back.to_status()["services"]}
    assert (status["frontend-lb"]["loadBalancerIP"], status["frontend-lb"]["lbHolder"]) == (
        "172.18.0.240", "node2")
    assert "loadBalancerIP" not in status["backend"], "only LoadBalancer Services show one"
    out = CliRunner().invoke(app, ["lab", "status", "shop"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "172.18.0.240 (node2)" in out.output
