"""Fuzz target: rtnetlink replies read inside a candidate namespace, through nsdiscovery.

The input is one ``recv()`` on the candidate's route socket: an ``RTM_GETLINK`` dump reply
or the ``RTM_GETNSID`` answer. :func:`podflow.sources.nsdiscovery.probe` reads both; here
the input goes through :func:`~podflow.sources.nsdiscovery.parse_links` and
:func:`~podflow.sources.nsdiscovery.parse_nsid`, and their results through
:func:`~podflow.sources.nsdiscovery.belongs`, the way ``probe`` does. None of them may
raise; what they skip is counted.
"""

from __future__ import annotations

from podflow.model.losses import Losses
from podflow.sources import nsdiscovery
from tests.conftest import DATA
from tests.fuzz.targets import Target


def seeds() -> list[bytes]:
    """The recorded link dump and nsid answer."""
    return [(DATA / "sockdiag" / n).read_bytes() for n in ("pod_links.bin", "pod_nsid.bin")]


def run(data: bytes) -> None:
    """Decode ``data`` as a link dump and as an nsid answer; decide membership."""
    losses = Losses()
    links, _done = nsdiscovery.parse_links(data, losses)
    nsid = nsdiscovery.parse_nsid(data, losses)
    for node_nsid in (nsid, 0):
        nsdiscovery.belongs(links, node_nsid)


TARGET = Target("nsdiscovery", seeds, run, examples=1500)
