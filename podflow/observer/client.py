"""Reading flows from a podflow agent or hub over the Observer API (``observe --server``).

The request carries the podflow filter in its query form (so every podflow filter works,
evaluated by the server exactly as ``observe --store`` evaluates it) and asks for one event
per connection, its newest, so that ``--last N`` means N connections; each event's podflow
record is read back (:func:`~podflow.observer.convert.from_hubble`). A server that is no
podflow (a Hubble Relay) sends no records: its events are skipped and counted
(:attr:`FlowReader.foreign`). Events the server's ring overwrote before this reader got
them are counted in :attr:`FlowReader.lost`.

Example::

    reader = FlowReader("127.0.0.1:4244")
    for flow in reader.flows(FilterSpec(namespace=("shop",)), number=20):
        print(flow.source.display(), "->", flow.destination.display())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import grpc

from podflow.model.flow import Flow
from podflow.model.serialize import SchemaError
from podflow.observer.convert import from_hubble
from podflow.observer.proto.hubble import observer_pb2 as obs
from podflow.observer.proto.hubble import observer_pb2_grpc as obs_grpc
from podflow.query.filter import FilterSpec
from podflow.query.params import spec_to_params

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the server to answer before giving up with an error."""


class ServerError(Exception):
    """The server could not be reached or refused the request (message says which)."""


def _describe(address: str, exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = code.name if code is not None else "error"
    return f"{address}: {name}: {detail}"


class FlowReader:
    """One server's flows (see the module doc)."""

    def __init__(self, address: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
        """``address``: ``HOST:PORT`` or ``unix:PATH``."""
        self.address = address
        self.timeout = timeout
        self.lost = 0
        """Events the server reported lost to this reader."""
        self.foreign = 0
        """Events without a podflow record (another Hubble server's), skipped."""

    def flows(self, spec: FilterSpec, *, number: int = 20, follow: bool = False,
              on_lost: Callable[[int], None] | None = None) -> Iterator[Flow]:
        """The newest ``number`` matching connections (0: all), oldest first; with
        ``follow``, then every change as it comes. :class:`ServerError` on failure."""
        req = obs.GetFlowsRequest(number=number, follow=follow,
                                  podflow_filter=urlencode(spec_to_params(spec)),
                                  podflow_per_connection=True)
        with grpc.insecure_channel(self.address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=self.timeout)
            except grpc.FutureTimeoutError:
                raise ServerError(f"{self.address}: no answer within {self.timeout:g} s "
                                  "(is an agent or hub serving there?)") from None
            stub = obs_grpc.ObserverStub(channel)   # type: ignore[no-untyped-call]
            stream = stub.GetFlows(req)
            try:
                for resp in stream:
                    kind = resp.WhichOneof("response_types")
                    if kind == "lost_events":
                        self.lost += resp.lost_events.num_events_lost
                        if on_lost is not None:
                            on_lost(resp.lost_events.num_events_lost)
                    elif kind == "flow":
                        try:
                            flow = from_hubble(resp.flow)
                        except (SchemaError, ValueError) as exc:
                            raise ServerError(f"{self.address}: unreadable flow: {exc}") \
                                from None
                        if flow is None:
                            self.foreign += 1
                        else:
                            yield flow
            except grpc.RpcError as exc:
                raise ServerError(_describe(self.address, exc)) from None
            finally:
                stream.cancel()

    def status(self) -> obs.ServerStatusResponse:
        """The server's ``ServerStatus``; :class:`ServerError` on failure."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                stub = obs_grpc.ObserverStub(channel)   # type: ignore[no-untyped-call]
                resp: obs.ServerStatusResponse = stub.ServerStatus(
                    obs.ServerStatusRequest(), timeout=self.timeout)
            except grpc.RpcError as exc:
                raise ServerError(_describe(self.address, exc)) from None
        return resp
