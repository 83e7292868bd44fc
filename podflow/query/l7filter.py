r"""The L7 and event-type fields of :class:`~podflow.query.filter.FilterSpec`.

Semantics (values of one field OR, fields AND, as everywhere in the filter):

- ``to_fqdn`` matches the destination endpoint's name (an external named by DNS or by the
  ``podflow/external-names`` ConfigMap, a node), the flow's DNS query (a DNS flow is "to" the
  name it asks about) and the FQDN of the Service it went through
  (``<svc>.<ns>.svc.cluster.local``); ``from_fqdn`` the source endpoint's name only (a DNS
  query never names the client); ``fqdn`` either. Case-insensitive, trailing dot ignored,
  ``*`` matches any characters, dots included (``*.example.com``), as in Hubble.
- ``http_status`` is a code (``404``) or a prefix ending in ``+`` (``5+`` = 500-599, ``40+`` =
  400-409), as in Hubble; ``http_method`` is case-insensitive; ``http_path`` is a regular
  expression *searched* in the path of the URL (query string excluded), as Hubble does: anchor
  it for a prefix (``^/api/``). Patterns must be RE2-compatible (no look-around, no
  back-references) because the store evaluates them with DuckDB's RE2; ``\d``, ``\w`` are
  ASCII.
- ``dns_rcode`` is a name (``NXDOMAIN``) or number (``3``), matching the DNS response code.
- ``type`` follows Hubble's event types: ``drop`` = verdict DROPPED (Hubble's DropNotify),
  ``l7`` = the flow has an L7 (DNS/HTTP) record (Hubble's L7 LogRecordNotify), ``trace`` =
  every other flow, neither dropped nor L7 (Hubble's TraceNotify). A dropped flow with an L7
  record is both ``drop`` and ``l7``. Hubble's other types (``sock``, ``policy-verdict``,
  ``capture``, ``debug``) have no podflow equivalent and are refused.

:func:`l7_matches` is the predicate; the SQL over the store's columns (``dst_name``,
``dns_query``, ``http_code`` ...) is :func:`podflow.store.sql.l7_sql`, and tests keep them in
agreement. :data:`L7_PROTOCOLS` are the L7 names ``protocol`` takes, as ``hubble observe
--protocol`` does: ``dns`` / ``http`` select the flows with a DNS / HTTP record
(:func:`has_l7_protocol`).

Example::

    >>> status_range("5+"), status_range("40+"), status_range("404")
    ((500, 599), (400, 409), (404, 404))
    >>> fqdn_pattern("*.Example.com.")[1]
    '%.example.com'
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Any

from podflow.model.flow import Flow, Verdict
from podflow.query.enginecheck import re2_error

CLUSTER_DOMAIN = "cluster.local"
"""Domain of Service FQDNs matched by ``to_fqdn``."""
EVENT_TYPES = ("drop", "l7", "trace")
"""Accepted ``type`` values (see the module doc)."""
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4,
          "REFUSED": 5}
"""DNS response code names accepted by ``dns_rcode``."""
L7_PROTOCOLS = ("DNS", "HTTP")
"""The L7 protocols ``protocol`` takes (normalised upper-case), besides the L4 ones."""


@lru_cache(maxsize=1024)
def fqdn_pattern(value: str) -> tuple[re.Pattern[str], str]:
    """An FQDN pattern as a regex and as a LIKE pattern."""
    v = value.lower().rstrip(".")
    if not re.fullmatch(r"[a-z0-9*_.-]+", v):
        raise ValueError(f"bad FQDN pattern {value!r}: letters, digits, - _ . and * only")
    rx = re.compile(".*".join(re.escape(part) for part in v.split("*")), re.DOTALL)
    return rx, v.replace("_", "\\_").replace("*", "%")


def _name_py(name: str | None, value: str) -> bool:
    if name is None:
        return False
    return fqdn_pattern(value)[0].fullmatch(name.lower().rstrip(".")) is not None


def _fqdns(flow: Flow, end: str) -> list[str | None]:
    """The names ``from``/``to`` FQDN filters look at, for one end."""
    if end == "src":
        return [flow.source.name]
    dns = flow.l7.dns if flow.l7 else None
    svc = flow.destination_service
    return [flow.destination.name, dns.query if dns else None,
            f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}" if svc else None]


@lru_cache(maxsize=256)
def status_range(value: str) -> tuple[int, int]:
    """``"404"`` -> (404, 404), ``"5+"`` -> (500, 599); ValueError if malformed."""
    m = re.fullmatch(r"([0-9]{3})|([0-9]{1,3})\+", value.strip())
    if not m:
        raise ValueError(f"bad HTTP status {value!r}: a code (404) or a prefix and + (5+)")
    if m.group(1):
        return int(m.group(1)), int(m.group(1))
    p = m.group(2)
    scale = 10 ** (3 - len(p))
    return int(p) * scale, (int(p) + 1) * scale - 1


@lru_cache(maxsize=256)
def _path_rx(value: str) -> re.Pattern[str]:
    """The Python form of an ``http_path`` pattern, once RE2 (the store) accepts it too.

    A pattern either engine refuses, or one Python reads ambiguously (its FutureWarning
    about nested sets, where RE2 sees ``[[:alpha:]]`` as a class), raises ValueError.
    """
    if re.search(r"\(\?(?:[=!]|<[=!]|P=)|\\[1-9]", value):
        raise ValueError(f"bad HTTP path pattern {value!r}: look-around and back-references "
                         "are not supported (patterns are RE2)")
    reason = re2_error(value)
    if reason is not None:
        raise ValueError(f"bad HTTP path pattern {value!r}: not valid RE2 ({reason}); the "
                         "store matches with RE2, which has no look-around, back-references, "
                         "possessive quantifiers or atomic groups")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(value, re.ASCII)
    except re.error as exc:
        raise ValueError(f"bad HTTP path pattern {value!r}: {exc}") from None
    except (FutureWarning, DeprecationWarning) as exc:
        raise ValueError(f"bad HTTP path pattern {value!r}: Python and RE2 read it "
                         f"differently ({exc}); escape the [ or spell the class out") from None


def _rcode(value: str) -> str:
    v = str(value).strip().upper()
    if v.isdigit() and 0 <= int(v) <= 65535:
        return str(int(v))
    if v in RCODES:
        return str(RCODES[v])
    raise ValueError(f"bad DNS rcode {value!r}: a number or one of {', '.join(RCODES)}")


def _type(value: str) -> str:
    v = value.strip().lower()
    if v not in EVENT_TYPES:
        raise ValueError(f"unknown type {value!r} (one of {', '.join(EVENT_TYPES)})")
    return v


def has_l7(flow: Flow) -> bool:
    """True when the flow carries a DNS or HTTP record (or an L7 latency)."""
    l7 = flow.l7
    return l7 is not None and (l7.dns is not None or l7.http is not None
                               or l7.latency_ns is not None)


def has_l7_protocol(flow: Flow, protocol: str) -> bool:
    """True when ``flow`` carries the record of ``protocol`` (``DNS`` or ``HTTP``)."""
    l7 = flow.l7
    if l7 is None:
        return False
    return (l7.dns if protocol == "DNS" else l7.http if protocol == "HTTP" else None) is not None


def check_l7_values(spec: Any) -> None:
    """Normalise (``object.__setattr__``) and validate the L7/type fields of a FilterSpec."""
    object.__setattr__(spec, "http_method", tuple(m.upper() for m in spec.http_method))
    object.__setattr__(spec, "http_status", tuple(v.strip() for v in spec.http_status))
    object.__setattr__(spec, "dns_rcode", tuple(_rcode(v) for v in spec.dns_rcode))
    object.__setattr__(spec, "type", tuple(_type(v) for v in spec.type))
    for name in ("fqdn", "from_fqdn", "to_fqdn"):
        for v in getattr(spec, name):
            fqdn_pattern(v)
    for v in spec.http_status:
        status_range(v)
    for v in spec.http_path:
        _path_rx(v)


def l7_matches(spec: Any, flow: Flow) -> bool:
    """The predicate of every L7/type field of ``spec`` (a FilterSpec)."""
    for name, ends in (("fqdn", ("src", "dst")), ("from_fqdn", ("src",)),
                       ("to_fqdn", ("dst",))):
        values = getattr(spec, name)
        if values and not any(_name_py(n, v) for v in values for e in ends
                              for n in _fqdns(flow, e)):
            return False
    http = flow.l7.http if flow.l7 else None
    code = http.code if http else None
    if spec.http_status and not (code is not None and any(
            lo <= code <= hi for lo, hi in map(status_range, spec.http_status))):
        return False
    method = http.method.upper() if http and http.method is not None else None
    if spec.http_method and method not in spec.http_method:
        return False
    url = http.url if http else None
    if spec.http_path and not (url is not None and any(
            _path_rx(p).search(url.split("?", 1)[0]) for p in spec.http_path)):
        return False
    dns = flow.l7.dns if flow.l7 else None
    if spec.dns_rcode and not (dns is not None and dns.rcode is not None
                               and str(dns.rcode) in spec.dns_rcode):
        return False
    if spec.type:
        kinds = {"drop": flow.verdict is Verdict.DROPPED, "l7": has_l7(flow),
                 "trace": flow.verdict is not Verdict.DROPPED and not has_l7(flow)}
        return any(kinds[t] for t in spec.type)
    return True
