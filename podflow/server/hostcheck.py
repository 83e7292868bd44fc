"""Answer only requests addressed to this server: the Host and Origin checks.

A page on ``evil.example`` can make its own name resolve to ``127.0.0.1`` (DNS rebinding)
and then read a loopback server as if it were its own origin; the only trace left is the
``Host`` header, which still names ``evil.example``. :class:`HostCheck` wraps the whole ASGI
app (the API, the live stream, ``/metrics``, ``/docs``, the UI) and answers

- 400 when the ``Host`` header is missing or malformed;
- 421 (Misdirected Request) when it names a host the :class:`HostPolicy` does not allow;
- 403 when an ``Origin`` header is present and is neither the server's own origin (the
  same host and port as the ``Host`` header) nor one of the names allowed explicitly: no
  page of another site may drive this server.

:func:`policy_for_bind` derives the policy from the address the server listens on: a
loopback address (127.0.0.0/8, ::1, ``localhost``) answers loopback names only; a specific
address answers that address; all addresses (``0.0.0.0``, ``::``) answer loopback names and
any IP address (an address typed in a URL cannot be rebound). Names given with
``--allowed-host`` are added in every case; ``*`` turns the check off.

Example::

    >>> policy = policy_for_bind("127.0.0.1")
    >>> policy.allows("localhost"), policy.allows("127.0.0.2"), policy.allows("evil.example")
    (True, True, False)
    >>> split_host("[::1]:8080")
    ('::1', 8080)
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

ANY = "*"
"""The ``--allowed-host`` value that turns the Host check off."""
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_name(text: str) -> str:
    """A host (name or address, IPv6 without brackets) in its canonical lower-case form."""
    host = text.lower()
    if host.endswith(".") and host != ".":
        host = host[:-1]
    ip = _ip(host)
    if ip is not None:
        return str(ip)
    if not _NAME.fullmatch(host) or ".." in host:
        raise ValueError(f"bad host name {text!r}")
    return host


def split_host(value: str) -> tuple[str, int | None]:
    """``(host, port)`` of a Host header value (``name``, ``1.2.3.4:80``, ``[::1]:8080``).

    The host comes back canonical: lower-case, trailing dot removed, addresses normalised.
    Raises ValueError for anything else (a bare IPv6 address, a bad port, odd characters).
    """
    text = value.strip()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad host {value!r}: unclosed [")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad host {value!r}")
            port_text = rest[1:]
        if not isinstance(_ip(host.split("%", 1)[0]), ipaddress.IPv6Address):
            raise ValueError(f"bad host {value!r}: not an IPv6 address in brackets")
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
        if ":" in port_text_:
            raise ValueError(f"bad host {value!r}: IPv6 addresses go in brackets")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            raise ValueError(f"bad host {value!r}: bad port")
        port = int(port_text)
    return _host_name(host), port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    ip = _ip(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


def is_wildcard(host: str) -> bool:
    """True for the bind addresses meaning every address of the machine."""
    return host.strip() in ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which Host names a server answers (see the module doc)."""

    names: frozenset[str] = frozenset()
    """Canonical host names and addresses allowed besides the classes below."""
    loopback: bool = True
    """Loopback names and addresses are allowed."""
    any_ip: bool = False
    """Any IP address is allowed (a server listening on every address)."""
    any_host: bool = False
    """No Host check at all (``--allowed-host '*'``)."""
    bound: str = "127.0.0.1"
    """The address listened on, for messages."""

    def allows(self, host: str) -> bool:
        """True when requests for ``host`` (canonical, without port) are answered."""
        if self.any_host or host in self.names:
            return True
        if self.loopback and is_loopback(host):
            return True
        return self.any_ip and _ip(host) is not None

    def describe(self) -> str:
        """The allowed hosts in words, e.g. ``localhost, 127.0.0.0/8 and [::1]``."""
        if self.any_host:
            return "any host"
        parts = ["localhost, 127.0.0.0/8, [::1]"] if self.loopback else []
        if self.any_ip:
            parts.append("any IP address")
        parts += sorted(self.names)
        return ", ".join(parts) or "no host"


def allowed_names(values: Iterable[str]) -> tuple[frozenset[str], bool]:
    """Canonical ``--allowed-host`` values and whether ``*`` was among them.

    Raises ValueError naming a value that is not a host name or address (no port, no URL).
    """
    names: set[str] = set()
    anything = False
    for raw in values:
        value = raw.strip()
        if value == ANY:
            anything = True
            continue
        inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            names.add(_host_name(inner))
        except ValueError:
            raise ValueError(f"--allowed-host {raw!r}: expected a host name or an IP address "
                             "(no scheme, no port), or '*' for any") from None
    return frozenset(names), anything


def _resolve(name: str) -> set[str]:
    """The addresses ``name`` resolves to (empty when it does not)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    found = (_ip(str(info[4][0]).split("%", 1)[0]) for info in infos)
    return {str(ip) for ip in found if ip is not None}


def policy_for_bind(bind: str, allowed: Iterable[str] = ()) -> HostPolicy:
    """The policy for a server listening on ``bind`` plus the ``allowed`` names.

    A name that is not ``localhost`` stands for itself and the addresses it resolves to.
    """
    names, anything = allowed_names(allowed)
    host = bind.strip()
    if is_wildcard(host):
        return HostPolicy(names, loopback=True, any_ip=True, any_host=anything,
                          bound=host or "0.0.0.0")
    canonical = _host_name(host[1:-1] if host.startswith("[") else host)
    if is_loopback(canonical):
        return HostPolicy(names, loopback=True, any_host=anything, bound=canonical)
    own = {canonical}
    if _ip(canonical) is None:
        own |= _resolve(canonical)
    return HostPolicy(frozenset(own) | names, loopback=False, any_host=anything,
                      bound=canonical)


LOOPBACK_ONLY = HostPolicy()
"""The default: loopback names and addresses only."""


def _authority(host: str, port: int | None, scheme: str = "http") -> tuple[str, int | None]:
    return host, None if port == _DEFAULT_PORTS.get(scheme) else port


def _origin(value: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of an Origin header; ValueError if it is not one."""
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS or "/" in rest:
        raise ValueError(value)
    host, port = split_host(rest)
    return scheme.lower(), host, port


def check_request(policy: HostPolicy, host_header: str | None,
                  origin_header: str | None) -> tuple[int, str] | None:
    """``(status, message)`` for a request to refuse, or None to answer it."""
    if host_header is None:
        if policy.any_host:
            return None
        return 400, "missing Host header"
    try:
        host, port = split_host(host_header)
    except ValueError as exc:
        return 400, f"malformed Host header: {exc}"
    if not policy.allows(host):
        return 421, (f"Host {host_header!r} is not allowed: this server listens on "
                     f"{policy.bound} and answers requests for {policy.describe()} only "
                     "(a guard against DNS rebinding). To reach it by another name, list "
                     "the name with `podflow serve --allowed-host NAME`.")
    if origin_header is None:
        return None
    try:
        scheme, o_host, o_port = _origin(origin_header)
    except ValueError:
        return 403, f"cross-origin request refused: Origin {origin_header!r}"
    same = _authority(o_host, o_port, scheme) == _authority(host, port)
    same = same or _authority(o_host, o_port, scheme) == _authority(host, port, "https")
    if same or o_host in policy.names or policy.any_host:
        return None
    return 403, (f"cross-origin request refused: Origin {origin_header!r} is not this "
                 f"server's own origin ({host_header})")


class HostCheck:
    """ASGI middleware applying a :class:`HostPolicy` to every HTTP and WebSocket request."""

    def __init__(self, app: ASGIApp, policy: HostPolicy = LOOPBACK_ONLY) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse (see :func:`check_request`) or pass the request on."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values: dict[bytes, list[str]] = {}
        for key, value in scope.get("headers", []):
            if key in (b"host", b"origin"):
                values.setdefault(key, []).append(value.decode("latin-1"))
        hosts, origins = values.get(b"host", []), values.get(b"origin", [])
        refusal = (400, "more than one Host or Origin header") if (
            len(hosts) > 1 or len(origins) > 1) else check_request(
            self.policy, hosts[0] if hosts else None, origins[0] if origins else None)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            status, message = refusal
            body = json.dumps({"error": message}).encode()
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
