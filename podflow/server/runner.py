"""Run the server in a background thread (``podflow demo``, tests) or in the foreground.

:class:`ServerThread` starts uvicorn on a daemon thread, waits until it accepts connections,
and stops it (closing live streams after a short grace period). Listens on 127.0.0.1 unless
told otherwise.

Example::

    with ServerThread(create_app(store), port=free_port()) as srv:
        print(srv.url)        # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

GRACE = 2.0
"""Seconds open connections (live streams) get to finish when the server stops."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def server_config(app: FastAPI, host: str, port: int, *, quiet: bool) -> uvicorn.Config:
    """The uvicorn configuration every podflow front-end uses."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning" if quiet else "info",
                          access_log=not quiet, timeout_graceful_shutdown=int(GRACE),
                          lifespan="on")


class ServerThread:
    """uvicorn serving ``app`` on a daemon thread (see the module doc)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                 quiet: bool = True) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(server_config(app, host, self.port, quiet=quiet))
        self.thread = threading.Thread(target=self.server.run, name="podflow-http",
                                       daemon=True)

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``."""
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 15.0) -> ServerThread:
        """Start serving; RuntimeError if not accepting connections within ``timeout``."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the HTTP server on {self.host}:{self.port} did not start "
                                   "(port in use?)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server on {self.host}:{self.port} did not start "
                                   f"within {timeout:g}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Ask the server to exit and wait for it (bounded)."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=GRACE + 5)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(timeout=2)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
