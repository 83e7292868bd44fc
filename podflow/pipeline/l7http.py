"""HTTP/1.x request and status lines from the first packet of each (pure, hand-written).

The kernel filter passes only TCP segments whose payload starts with a method or
``HTTP/1.``, so each request or response is seen through its first segment: the request
line, usually all headers, the status line. Parsing is by hand: dpkt's ``http.Request``
needs the complete header block and raises on a head split across segments, and all that is
needed here is one line plus the Host header.

Example::

    >>> r = parse_request(b"GET /items?id=3 HTTP/1.1\\r\\nHost: shop\\r\\n\\r\\n")
    >>> r.method, r.url, r.host, r.protocol
    ('GET', '/items?id=3', 'shop', 'HTTP/1.1')
    >>> parse_response(b"HTTP/1.0 404 Not Found\\r\\n").code
    404
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
"""Request methods recognised (those the kernel filter matches by their first 4 bytes)."""
_STARTS = tuple(m.encode() + b" " for m in METHODS)
_MAX_HEAD = 8192


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request line and its Host header."""

    method: str
    """Method, e.g. ``GET``."""
    url: str
    """Request target, e.g. ``/items?id=3``."""
    protocol: str
    """``HTTP/1.0`` or ``HTTP/1.1``."""
    host: str | None = None
    """Host header, when in the first segment."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A status line."""

    protocol: str
    """``HTTP/1.0`` or ``HTTP/1.1``."""
    code: int
    """Status code."""


def is_request(payload: bytes) -> bool:
    """The payload starts with ``METHOD SP``."""
    return payload.startswith(_STARTS)


def is_response(payload: bytes) -> bool:
    """The payload starts with ``HTTP/1.``."""
    return payload.startswith(b"HTTP/1.")


def parse_request(payload: bytes) -> HttpRequest | None:
    """The request in the first segment, or None when it is not HTTP/1.x."""
    if not is_request(payload):
        return None
    head = payload[:_MAX_HEAD]
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    host = None
    for h in rest.split(b"\r\n"):
        if not h:
            break
        name, sep, value = h.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1")
            break
    return HttpRequest(parts[0].decode("ascii"), parts[1].decode("latin-1"),
                       parts[2].decode("ascii", "replace"), host)


def parse_response(payload: bytes) -> HttpResponse | None:
    """The status line, or None when it is not one."""
    if not is_response(payload):
        return None
    parts = payload[:256].partition(b"\r\n")[0].split(b" ", 2)
    if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
        return None
    return HttpResponse(parts[0].decode("ascii", "replace"), int(parts[1]))
