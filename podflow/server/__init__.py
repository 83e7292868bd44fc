"""HTTP API, live flow stream, metrics mount and web UI (see :mod:`podflow.server.app`)."""

from podflow.server.app import create_app

__all__ = ["create_app"]
