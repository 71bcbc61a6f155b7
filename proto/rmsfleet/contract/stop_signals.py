"""SIGTERM and Ctrl-C as a threading.Event, set without a deadlock.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread is inside `Event.wait()` and holds the event's internal lock (a plain, non-reentrant
Lock). A handler that calls `event.set()` then waits for a lock its own thread holds, forever:
a collector that received SIGTERM in that instant never stopped (seen in the e2e suite under
load). So the handler only writes the signal's number to a pipe, which takes no Python lock,
and a thread of its own reads the pipe and sets the event."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(
    log: logging.Logger,
    message: str = "received %s, stopping",
    level: int = logging.INFO,
    signals: Iterable[signal.Signals] = DEFAULT_SIGNALS,
) -> threading.Event:
    """An event set when one of `signals` arrives (logged with `message` at `level`, in the
    relay thread, not in the handler). Call from the main thread, as signal.signal requires."""
    stop = threading.Event()
    read_end, write_end = os.pipe()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # A full pipe means a stop is already on its way: nothing to add.
        with contextlib.suppress(BlockingIOError):
            os.write(write_end, bytes([signum]))

    def relay() -> None:
        while True:
            received = os.read(read_end, 1)
            if not received:
                return
            log.log(level, message, signal.Signals(received[0]).name)
            stop.set()

    os.set_blocking(write_end, False)
    threading.Thread(target=relay, name="signal-relay", daemon=True).start()
    for signum in signals:
        signal.signal(signum, on_signal)
    return stop
