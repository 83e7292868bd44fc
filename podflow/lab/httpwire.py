"""HTTP/1.1 as the lab's workloads speak it: requests from a spec, responses by path.

Servers answer ``/status/<code>`` (200-599) with that status and every other path with 200,
so a traffic entry can produce 404s and 500s on purpose; ``/delay/<seconds>`` (at most
:data:`MAX_DELAY`) is answered that long after the request, so a traffic entry can hold a
connection open (a long-lived connection, as ``httpbin``'s ``/delay``). Clients send the
method and path of the traffic entry's ``http`` section (default ``GET /podflow-lab``) with
``Connection: close``; :func:`parse_status` reads the status code back.

Example::

    >>> spec = parse_http({"method": "post", "path": "/status/503", "expect": 503})
    >>> spec
    HttpSpec(method='POST', path='/status/503', expect=503)
    >>> status_for_path(spec.path), status_for_path("/api/items?id=1")
    (503, 200)
    >>> parse_status(b"HTTP/1.1 404 Not Found\\r\\n\\r\\n")
    404
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
"""Methods a traffic entry may use."""
MAX_BODY = 65536
"""Largest request body a server reads (larger ones are answered 413)."""
_STATUS_PATH = re.compile(r"/status/([0-9]{3})")
_DELAY_PATH = re.compile(r"/delay/([0-9]{1,3})")
MAX_DELAY = 120
"""Longest answer delay a lab server honours (seconds)."""
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})[ \r]")


@dataclass(frozen=True, slots=True)
class HttpSpec:
    """The ``http`` section of a traffic entry."""

    method: str = "GET"
    """Request method."""
    path: str = "/podflow-lab"
    """Request target (path and query)."""
    expect: int | None = None
    """Status the client expects (recorded; a different one is logged, not an error)."""


def parse_http(d: Any) -> HttpSpec:
    """Validate ``{method, path, expect}`` (all optional); ValueError says what is wrong."""
    if d is None:
        return HttpSpec()
    if not isinstance(d, dict):
        raise ValueError(f"http: expected a mapping with method, path, expect; got {d!r}")
    unknown = set(d) - {"method", "path", "expect"}
    if unknown:
        raise ValueError(f"http: unknown key(s) {', '.join(sorted(unknown))} "
                         "(use method, path, expect)")
    method = str(d.get("method", "GET")).upper()
    if method not in METHODS:
        raise ValueError(f"http.method: {method!r} is not one of {', '.join(METHODS)}")
    path = str(d.get("path", "/podflow-lab"))
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"http.path: {path!r} must start with / and contain no spaces")
    expect = d.get("expect")
    if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int)
                               or not 100 <= expect <= 599):
        raise ValueError(f"http.expect: {expect!r} is not a status code (100-599)")
    return HttpSpec(method, path, expect)


def status_for_path(path: str) -> int:
    """The status a lab server answers ``path`` with."""
    m = _STATUS_PATH.fullmatch(path.split("?", 1)[0])
    code = int(m.group(1)) if m else 200
    return code if 200 <= code <= 599 else 200


def delay_for_path(path: str) -> float:
    """Seconds a lab server waits before answering ``path`` (``/delay/N``; else 0).

    >>> delay_for_path("/delay/60"), delay_for_path("/delay/999"), delay_for_path("/x")
    (60.0, 120.0, 0.0)
    """
    m = _DELAY_PATH.fullmatch(path.split("?", 1)[0])
    return float(min(int(m.group(1)), MAX_DELAY)) if m else 0.0


def build_request(spec: HttpSpec, host: str) -> bytes:
    """The request bytes (POST/PUT/PATCH carry a small body)."""
    body = b"podflow-lab\n" if spec.method in ("POST", "PUT", "PATCH") else b""
    head = f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: podflow-lab\r\n"
    if body:
        head += f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


def parse_status(response: bytes) -> int | None:
    """The status code of a response's status line, or None if it is not HTTP/1.x."""
    m = _STATUS_LINE.match(response)
    return int(m.group(1)) if m else None


def _response(code: int, body: bytes, head_only: bool) -> bytes:
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Status"
    head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + (b"" if head_only else body)


async def answer_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         who: str, timeout: float = 2.0) -> tuple[str, str, int] | None:
    """Read one request, answer it by path; (method, path, status) or None if malformed.

    Raises what the stream raises (timeouts, resets); the caller closes the writer.
    """
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        writer.write(_response(400, b"bad request\n", False))
        await writer.drain()
        return None
    method, path = parts[0], parts[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    code = status_for_path(path)
    if length > MAX_BODY:
        code = 413
    elif length:
        await asyncio.wait_for(reader.readexactly(length), timeout)
    if delay := delay_for_path(path):
        await asyncio.sleep(delay)
    writer.write(_response(code, f"podflow lab: {who}\n".encode(), method == "HEAD"))
    await writer.drain()
    return method, path, code
