"""What every vantage point's decoder shares: the decode context, the report, protocols.

Each vantage point has the same shape (see ``docs/architecture.md``): its source I/O in
:mod:`podflow.sources`, its raw record types in :mod:`podflow.model`, and in this package a
stateful but pure tracker (``cttrack``, ``socktrack``, ``pkttrack``) that turns raw records
into :class:`Report` s, and a pure decoder (``ctdecode``, ``sockdecode``, ``pktdecode``) that
turns one reported record into a Flow with a :class:`DecodeContext`. Connection keys are in
:mod:`podflow.pipeline.keys`.

Example::

    >>> from podflow.cni.profile import CniProfile
    >>> from podflow.inventory.history import Inventory
    >>> ctx = DecodeContext("node1", Inventory(), CniProfile("generic", "node1"))
    >>> ctx.final, PROTOCOLS[6].value, Report("record", True).final
    (False, 'TCP', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.flow import Protocol

PROTOCOLS = {6: Protocol.TCP, 17: Protocol.UDP, 1: Protocol.ICMP, 58: Protocol.ICMPV6,
             132: Protocol.SCTP}
"""IP protocol number -> Protocol (anything else is OTHER)."""


class Report(NamedTuple):
    """A record ready to become a Flow: ``final`` when the connection is over."""

    record: Any
    final: bool


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What decoding needs besides the entry: who observes, and the lookups."""

    node_name: str
    """The observing node (recorded in the ObservationPoint)."""
    inventory: Inventory
    """Time-indexed cluster inventory."""
    profile: CniProfile
    """The node's CNI profile (gateway rules, infrastructure filter)."""
    final: bool = False
    """The record is final (ENDED); otherwise ACTIVE. DESTROY entries are always final."""
