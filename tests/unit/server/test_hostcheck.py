"""The Host/Origin guard of the HTTP server (issue 8: DNS rebinding of a loopback server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Message

from podflow.server.hostcheck import (
    HostCheck,
    HostPolicy,
    allowed_names,
    check_request,
    is_loopback,
    policy_for_bind,
    split_host,
)


def test_split_host() -> None:
    assert split_host("LocalHost.:8080") == ("localhost", 8080)
    assert split_host("127.0.0.1") == ("127.0.0.1", None)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("[0:0::1]") == ("::1", None)
    assert split_host("node-1.example.com:443") == ("node-1.example.com", 443)
    for bad in ("", ":80", "::1", "[::1", "[::1]x", "[1.2.3.4]", "a:b", "a:-1", "a:65536",
                "a b", "a/b", "a..b", "é.example", "-a"):
        with pytest.raises(ValueError):
            split_host(bad)


def test_loopback_and_bind_policies() -> None:
    assert is_loopback("localhost") and is_loopback("127.9.9.9") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("10.0.0.1")
    lo = policy_for_bind("127.0.0.1")
    assert lo.allows("localhost") and lo.allows("::1") and not lo.allows("10.0.0.1")
    assert not lo.allows("evil.example") and not lo.allows("localhost.evil.example")
    for bind in ("::1", "[::1]", "localhost", "127.0.0.2"):
        policy = policy_for_bind(bind)
        assert policy.loopback and not policy.any_ip and not policy.names, bind
    everywhere = policy_for_bind("0.0.0.0", ["podflow.example.com"])
    assert everywhere.allows("10.1.2.3") and everywhere.allows("fe80::1")
    assert everywhere.allows("localhost") and everywhere.allows("podflow.example.com")
    assert not everywhere.allows("evil.example")
    one = policy_for_bind("10.0.0.5", ["[FD00::1]"])
    assert one.allows("10.0.0.5") and one.allows("fd00::1")
    assert not one.allows("10.0.0.6") and not one.allows("localhost")
    assert policy_for_bind("127.0.0.1", ["*"]).allows("anything.example")
    # a loopback server behind a local proxy: the proxy's name, explicitly
    assert policy_for_bind("127.0.0.1", ["podflow.example.com"]).allows("podflow.example.com")


@pytest.mark.parametrize("value", ["http://x", "x:80", "a b", ""])
def test_allowed_host_values_are_checked(value: str) -> None:
    with pytest.raises(ValueError, match="--allowed-host"):
        allowed_names([value])


def test_check_request_host_and_origin() -> None:
    lo = HostPolicy()
    assert check_request(lo, "127.0.0.1:8080", None) is None
    assert check_request(lo, None, None) == (400, "missing Host header")
    status, msg = check_request(lo, "evil.example:8080", None) or (0, "")
    assert status == 421 and "DNS rebinding" in msg
    assert check_request(lo, "127.0.0.1:8080", "http://127.0.0.1:8080") is None
    assert check_request(lo, "localhost", "http://localhost:80") is None
    for origin in ("http://evil.example", "http://127.0.0.1:8081", "http://localhost:8080",
                   "null", "http://127.0.0.1:8080/path", "127.0.0.1:8080"):
        assert (check_request(lo, "127.0.0.1:8080", origin) or (0,))[0] == 403, origin
    proxied = policy_for_bind("10.0.0.5", ["podflow.example.com"])
    assert check_request(proxied, "10.0.0.5:8080", "https://podflow.example.com") is None


def _call(app: HostCheck, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_middleware_refuses_before_the_app_runs() -> None:
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    app = HostCheck(inner, HostPolicy())
    sent = _call(app, {"type": "http", "headers": []})
    assert sent[0]["status"] == 400 and b"missing Host" in sent[1]["body"]
    sent = _call(app, {"type": "http", "headers": [(b"host", b"localhost"),
                                                   (b"host", b"evil.example")]})
    assert sent[0]["status"] == 400
    sent = _call(app, {"type": "websocket", "headers": [(b"host", b"evil.example")]})
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert reached == []
    _call(app, {"type": "lifespan"})
    _call(app, {"type": "http", "headers": [(b"host", b"127.0.0.1:1")]})
    assert reached == ["lifespan", "http"]
