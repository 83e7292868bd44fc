"""HTTP/1.x request and status lines from the first packet of each (pure, hand-written).

The kernel filter passes only TCP segments whose payload starts with a method or
``HTTP/1.``, so each request or response is seen through its first segment: the request
line, usually all headers, the status line. Parsing is by hand: dpkt's ``http.Request``
needs the complete header block and raises on a head split across segments, and all that is
needed here is one line plus the Host header.

Any bytes are safe: only the first 8 KiB are read, the request line must be exactly
``METHOD SP target SP HTTP/1.0|1.1`` and the status line ``HTTP/1.0|1.1 SP 3DIGIT`` (lines
end with CRLF or a bare LF, as RFC 9112 lets a recipient accept); a
payload that starts like HTTP but is not is counted in the ``losses`` given
(``bad_http_request_line``, ``bad_http_status_line``) and yields None. The target and Host
are kept as visible ASCII: other bytes (controls, spaces, 8-bit) are percent-encoded, so
nothing unprintable reaches the store or a terminal.

The stored path drops the query string and fragment by default (they often carry tokens:
``/login?token=...``); ``query=True`` keeps them (the packets source's ``http_query``
option).

Example::

    >>> r = parse_request(b"GET /items?id=3 HTTP/1.1\\r\\nHost: shop\\r\\n\\r\\n")
    >>> r.method, r.url, r.host, r.protocol
    ('GET', '/items', 'shop', 'HTTP/1.1')
    >>> parse_request(b"GET /items?id=3 HTTP/1.1\\r\\n\\r\\n", query=True).url
    '/items?id=3'
    >>> parse_response(b"HTTP/1.0 404 Not Found\\r\\n").code
    404
"""

from __future__ import annotations

from dataclasses import dataclass

from podflow.model.losses import Losses

METHODS = ("GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
"""Request methods recognised (those the kernel filter matches by their first 4 bytes)."""
_STARTS = tuple(m.encode() + b" " for m in METHODS)
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
_MAX_HEAD = 8192
_VISIBLE = [chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in range(256)]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request line and its Host header."""

    method: str
    """Method, e.g. ``GET``."""
    url: str
    """Request target, e.g. ``/items`` (with ``?id=3`` only when asked for)."""
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


def visible(raw: bytes) -> str:
    """``raw`` as visible ASCII: bytes outside ``!``..``~`` percent-encoded.

    >>> visible(b"/a b\\x00\\xff")
    '/a%20b%00%FF'
    """
    return "".join(_VISIBLE[b] for b in raw)


def strip_query(target: bytes) -> bytes:
    """A request target without its query string and fragment.

    >>> strip_query(b"/login?user=a&token=s3cret#top")
    b'/login'
    """
    return target.split(b"?", 1)[0].split(b"#", 1)[0]


def parse_request(payload: bytes, query: bool = False,
                  losses: Losses | None = None) -> HttpRequest | None:
    """The request in the first segment, or None when it is not HTTP/1.x.

    ``query``: keep the query string and fragment of the target (dropped by default).
    A payload that starts with a method but has no valid request line is counted in
    ``losses`` as ``bad_http_request_line``.
    """
    if not is_request(payload):
        return None
    head = payload[:_MAX_HEAD]
    line, _, rest = head.partition(b"\n")
    parts = line.removesuffix(b"\r").split(b" ")
    if len(parts) != 3 or parts[2] not in _VERSIONS or not parts[1]:
        if losses is not None:
            losses.count("bad_http_request_line")
        return None
    host = None
    for h in rest.split(b"\n"):
        h = h.removesuffix(b"\r")
        if not h:
            break
        name, sep, value = h.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = visible(value.strip())
            break
    target = parts[1] if query else strip_query(parts[1])
    return HttpRequest(parts[0].decode("ascii"), visible(target), parts[2].decode("ascii"),
                       host)


def parse_response(payload: bytes, losses: Losses | None = None) -> HttpResponse | None:
    """The status line, or None when it is not one (counted in ``losses`` as
    ``bad_http_status_line`` when the payload starts with ``HTTP/1.``)."""
    if not is_response(payload):
        return None
    parts = payload[:256].partition(b"\n")[0].removesuffix(b"\r").split(b" ", 2)
    if len(parts) < 2 or parts[0] not in _VERSIONS or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        if losses is not None:
            losses.count("bad_http_status_line")
        return None
    return HttpResponse(parts[0].decode("ascii"), int(parts[1]))
