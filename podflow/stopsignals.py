"""SIGTERM and SIGINT set a stop event: how podflow's long-running loops end cleanly.

Example::

    stop = threading.Event()
    stop_on_signals(stop, "hub")
    while not stop.is_set(): ...
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals(stop: threading.Event, who: str) -> None:
    """Make SIGTERM and SIGINT set ``stop`` (logged with ``who``); only the main thread
    can install handlers, elsewhere (tests, embedded use) this does nothing."""
    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("%s: signal %d: stopping", who, signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
