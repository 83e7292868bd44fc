"""ICMP types as Hubble names them, and the tag a failure reason carries.

Hubble labels ``hubble_icmp_total{type}`` with gopacket's ``ICMPv4TypeCode`` /
``ICMPv6TypeCode`` strings: the type's name, with the code's name in parentheses for the
types whose codes are named (``EchoRequest``, ``DestinationUnreachable(Port)``,
``TimeExceeded(TTLExceeded)``); an unnamed code shows as ``(Code: N)`` and an unnamed type
as its number. The packets vantage names the ICMP error that failed a connection in the
flow's ``drop_reason_desc``, tagged ``(ICMP 3/3)`` or ``(ICMPv6 1/4)`` (:func:`tag`), which
:func:`parse_tag` reads back: one declaration of the format for the writer and the readers.

Example::

    >>> type_name(False, 3, 3), type_name(True, 1, 4), type_name(False, 8, 0)
    ('DestinationUnreachable(Port)', 'DestinationUnreachable(PortUnreachable)', 'EchoRequest')
    >>> parse_tag("refused: port unreachable " + tag(False, 3, 3) + " from 10.0.0.2")
    (False, 3, 3)
"""

from __future__ import annotations

import re

_V4_TYPES = {0: "EchoReply", 3: "DestinationUnreachable", 4: "SourceQuench", 5: "Redirect",
             8: "EchoRequest", 9: "RouterAdvertisement", 10: "RouterSolicitation",
             11: "TimeExceeded", 12: "ParameterProblem", 13: "TimestampRequest",
             14: "TimestampReply", 15: "InfoRequest", 16: "InfoReply",
             17: "AddressMaskRequest", 18: "AddressMaskReply"}
_V4_CODES = {
    3: {0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
        5: "SourceRoutingFailed", 6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated",
        9: "NetAdminProhibited", 10: "HostAdminProhibited", 11: "NetTOS", 12: "HostTOS",
        13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff"},
    5: {0: "Net", 1: "Host", 2: "TOS+Net", 3: "TOS+Host"},
    11: {0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"},
    12: {0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"},
}
_V6_TYPES = {1: "DestinationUnreachable", 2: "PacketTooBig", 3: "TimeExceeded",
             4: "ParameterProblem", 128: "EchoRequest", 129: "EchoReply",
             133: "RouterSolicitation", 134: "RouterAdvertisement",
             135: "NeighborSolicitation", 136: "NeighborAdvertisement", 137: "Redirect"}
_V6_CODES = {
    1: {0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc", 3: "AddressUnreachable",
        4: "PortUnreachable", 5: "SrcAddressFailedPolicy", 6: "RejectRouteToDst"},
    3: {0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"},
    4: {0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader", 2: "UnrecognizedIPv6Option"},
}
ECHO = {False: (8, 0), True: (128, 129)}
"""Echo request and reply types per family (True: ICMPv6)."""

_TAG = re.compile(r"\(ICMP(v6)? (\d{1,3})/(\d{1,3})\)")


def type_name(v6: bool, icmp_type: int, code: int) -> str:
    """Hubble's ``type`` label of an ICMP message (see the module doc)."""
    types, codes = (_V6_TYPES, _V6_CODES) if v6 else (_V4_TYPES, _V4_CODES)
    name = types.get(icmp_type)
    if name is None:
        return f"{icmp_type}({code})"
    named = codes.get(icmp_type)
    if named is None:
        return name
    return f"{name}({named.get(code, f'Code: {code}')})"


def tag(v6: bool, icmp_type: int, code: int) -> str:
    """The tag naming an ICMP message in a failure reason, e.g. ``(ICMP 3/1)``."""
    return f"(ICMP{'v6' if v6 else ''} {icmp_type}/{code})"


def parse_tag(reason: str | None) -> tuple[bool, int, int] | None:
    """``(v6, type, code)`` of the ICMP message a reason names, or None."""
    m = _TAG.search(reason or "")
    if m is None:
        return None
    return m.group(1) is not None, int(m.group(2)), int(m.group(3))
