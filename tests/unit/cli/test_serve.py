"""``podflow serve``: the printed URL is the real one; the Host check is on (issue 8)."""

from __future__ import annotations

import http.client
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from podflow.cli import serve
from podflow.server.listen import listen_lines, url_for


def test_listen_lines_are_true_to_the_bound_address() -> None:
    [line] = listen_lines([("127.0.0.1", 43210)])
    assert line.startswith("open http://127.0.0.1:43210/ ")
    every = "\n".join(listen_lines([("0.0.0.0", 8080)]))
    assert "every IPv4 address" in every and "http://127.0.0.1:8080/" in every
    assert "http://0.0.0.0" not in every
    six = "\n".join(listen_lines([("::", 8080)]))
    assert "every IPv6 address" in six and "http://[::1]:8080/" in six
    [one] = listen_lines([("10.0.0.5", 9090)])
    assert "http://10.0.0.5:9090/" in one and "127.0.0.1" not in one
    assert len(listen_lines([("127.0.0.1", 1), ("::1", 2)])) == 2
    assert url_for("fe80::1", 80) == "http://[fe80::1]:80/"


def _app() -> typer.Typer:
    app = typer.Typer()
    serve.register(app)
    app.command("other")(lambda: None)  # keep `serve` a subcommand
    return app


def test_help_documents_the_host_check() -> None:
    r = CliRunner().invoke(_app(), ["serve", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "--allowed-host" in text and "DNS rebinding" in text and "--port 0" in text


def test_bad_allowed_host_is_a_clear_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(_app(), ["serve", "--store", str(tmp_path / "s.duckdb"),
                                    "--allowed-host", "http://x:80"])
    assert r.exit_code == 2 and "--allowed-host" in r.stderr


def test_an_unusable_kubeconfig_stops_serve_with_a_clear_error(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
                  "    server: https://127.0.0.1:6443\n"
                  f"    certificate-authority: {tmp_path / 'missing-ca.crt'}\n"
                  "users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n"
                  "  context: {cluster: c, user: u}\ncurrent-context: x\n")
    for path in (tmp_path / "nowhere", kc):
        r = CliRunner().invoke(_app(), ["serve", "--store", str(tmp_path / "s.duckdb"),
                                        "--kubeconfig", str(path)])
        assert r.exit_code == 2, r.output
        assert "no Kubernetes API configuration" in r.stderr and str(path) in r.stderr


def _get(port: int, path: str, host: str) -> tuple[int, bytes]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        con.request("GET", path, headers={"Host": host})
        resp = con.getresponse()
        return resp.status, resp.read()
    finally:
        con.close()


def test_port_0_prints_the_port_it_listens_on(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "podflow", "serve", "--store", str(tmp_path / "s.duckdb"),
         "--host", "127.0.0.1", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        out, port = "", 0
        deadline = time.monotonic() + 60
        while not port and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=1):
                out += proc.stdout.readline()
                m = re.search(r"open http://127\.0\.0\.1:(\d+)/", out)
                port = int(m.group(1)) if m else 0
        assert port, out
        status, _ = _get(port, "/api/filters", f"127.0.0.1:{port}")
        assert status == 200
        status, body = _get(port, "/api/filters", f"evil.example:{port}")
        assert status == 421 and b"DNS rebinding" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)
