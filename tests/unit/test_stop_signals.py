"""SIGTERM and Ctrl-C stop agent, scanner and collector even when the signal lands while the
main thread holds the stop event's own lock (rmsfleet/contract/stop_signals.py). A handler that
set the event itself deadlocked there: a collector under load once never stopped after SIGTERM.

The scenario runs in a subprocess, so that the old behaviour fails the test by its timeout
instead of hanging the suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCENARIO = textwrap.dedent(
    """
    import logging, signal, sys
    from rmsfleet.contract.stop_signals import stop_on_signals

    # The relay logs from its own thread: to stderr, so it cannot interleave with the prints.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    stop = stop_on_signals(logging.getLogger("scenario"), signals=(signal.SIGUSR1,))
    # The instant in Event.wait() when the main thread holds the event's lock: the handler runs
    # right here, in this thread.
    with vars(stop)["_cond"]:
        signal.raise_signal(signal.SIGUSR1)
        print("handler returned", flush=True)
    print("stopped" if stop.wait(10) else "not stopped", flush=True)
    """
)


def test_a_signal_landing_while_the_event_lock_is_held_still_stops() -> None:
    done = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handler returned", "stopped"]
    assert done.stderr.splitlines() == ["received SIGUSR1, stopping"]


def test_every_signal_handler_goes_through_the_relay() -> None:
    """No command installs a handler of its own that could set an event from the handler."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    installing = sorted(
        str(path.relative_to(root))
        for folder in ("agent", "collector", "proto")
        for path in (root / folder).rglob("*.py")
        if "signal.signal(" in path.read_text()
    )
    assert installing == ["proto/rmsfleet/contract/stop_signals.py"]
