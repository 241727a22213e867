"""SIGTERM and Ctrl-C during `train_loop`: the first asks for a stop, a second forces one.

The handlers only set a flag (`StopRequest.requested`); the loop checks it after every
call, saves a checkpoint and raises `TrainingInterrupted`. A second signal raises
KeyboardInterrupt at once, and the loop lets that one through without saving.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class StopRequest:
    """Set by the SIGTERM/SIGINT handlers; the loop checks it after every call.

    `forced` is set by a second signal, which raises KeyboardInterrupt at once: the loop
    lets that one propagate without saving.
    """

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self.reason = ""


class StopRequested(Exception):
    """Raised inside the loop when a stop was requested; turned into TrainingInterrupted."""


@contextlib.contextmanager
def stop_signals(stop: StopRequest) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into `stop.requested` (main thread only); restore after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.requested:
            # A second SIGTERM or Ctrl-C: stop waiting (for a step, the data, a save) now.
            stop.forced = True
            raise KeyboardInterrupt(
                f"second stop signal ({name} after {stop.reason}): stopped at once, "
                "without saving a checkpoint"
            )
        stop.requested = True
        stop.reason = name

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
