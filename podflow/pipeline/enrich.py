"""Enrichment: an address -> an :class:`~podflow.model.flow.Endpoint` with its identity at a
given time (pure).

Resolution order (see :meth:`podflow.inventory.history.Inventory.identity`): the pod that
held the IP at that time; a node InternalIP; a CNI gateway/tunnel address standing for a
node (the profile's rule, e.g. flannel's VTEP ``10.244.N.0`` and cni0 gateway
``10.244.N.1``); a service VIP; a named external from the ``podflow/external-names``
ConfigMap; else ``external`` outside the cluster's ranges and ``unknown`` inside them.

Host-network pods share their node's address. The *server* end of a connection is named by
port ownership: a decoder passes the protocol (``proto``) for the destination only, and a
node address whose port a host-network pod on that node declared
(``spec.containers[].ports[]``) becomes that pod (kind ``host-network-pod``). The *client*
end is never looked up by port: its port is ephemeral and may equal a declared one, and a
host-network client cannot be told from its node by address and port, so it stays the node.

Example::

    >>> from podflow.inventory.history import Inventory
    >>> from podflow.inventory.k8s import ClusterObjects, PodRecord
    >>> inv = Inventory()
    >>> _ = inv.apply(ClusterObjects(pods=(PodRecord("shop", "web-1", "u1", ("10.244.0.5",),
    ...                                               created=100.0),)), at=200.0)
    >>> endpoint(Address("10.244.0.5", 8080), inv, None, 150.0).display()
    'shop/web-1'
"""

from __future__ import annotations

from podflow.inventory.history import AddressRules, Inventory
from podflow.model.flow import Address, Endpoint


def endpoint(addr: Address, inv: Inventory, profile: AddressRules | None,
             at: float, proto: str | None = None) -> Endpoint:
    """The Endpoint for ``addr`` with the identity its IP had at ``at``.

    Args:
        addr: the address (NAT already undone).
        inv: the time-indexed inventory.
        profile: the CNI profile (gateway/tunnel address rules), or None.
        at: the time of the flow (its start), Unix seconds.
        proto: the L4 protocol as the inventory names it (``TCP``, ``UDP``, ``SCTP``:
            :data:`podflow.pipeline.nat.L4_NAMES`), given by callers for the connection's
            *server* end only: then a node address at a port a host-network pod declared
            resolves to that pod. Leave it None for the client end (see the module doc).
    """
    if proto is None:
        ident = inv.identity(addr.ip, at, profile)
    else:
        ident = inv.identity(addr.ip, at, profile, port=addr.port, proto=proto)
    return Endpoint(ip=addr.ip, port=addr.port, kind=ident.kind, namespace=ident.namespace,
                    pod_name=ident.pod_name, workload=ident.workload, labels=ident.labels,
                    node_name=ident.node_name, name=ident.name)
