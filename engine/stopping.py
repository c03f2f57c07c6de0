"""Stopping a run cleanly: Ctrl-C or SIGTERM ends it at the next step boundary.

A signal that interrupted the middle of an optimizer step could leave some tensors
updated and others not (and frozen coordinates not yet copied back), so the signal only
raises a flag that the training loop checks between steps. A second Ctrl-C is the
escape hatch and interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class StopRequest:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set the returned StopRequest instead of killing."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signal handlers can only be installed from the main thread
        return

    def handle(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and request():
            raise KeyboardInterrupt  # asked twice: stop now
        request.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
