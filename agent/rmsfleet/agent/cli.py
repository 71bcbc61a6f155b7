"""`rmsfleet-agent`: read this host's RMS facts and report them to a collector."""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from rmsfleet.agent import __version__
from rmsfleet.agent.facts import FactsFileError, load_facts_file
from rmsfleet.agent.sender import Sender, SendFailure
from rmsfleet.agent.wire import report_request

log = logging.getLogger("rmsfleet.agent")
EXIT_BAD_FACTS = 2
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmsfleet-agent", description="Report this host's RMS facts to a collector.")
    parser.add_argument("--collector", help="collector address HOST:PORT (RMSFLEET_COLLECTOR)")
    parser.add_argument("--facts", type=Path, help="facts file (RMSFLEET_FACTS)")
    parser.add_argument("--once", action="store_true", help="report once, exit 0 when acknowledged")
    parser.add_argument("--interval", type=float, help="seconds between reports (RMSFLEET_INTERVAL; default 60)")
    parser.add_argument("--jitter", type=float, default=0.1, help="random share added to each interval (default 0.1)")
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds to wait for each acknowledgement")
    parser.add_argument("--log-level", default="INFO")
    return parser


def next_sequence(previous: int) -> int:
    """Without a state directory the sequence is the time in microseconds: it still grows across
    restarts, so a new run is never mistaken for a retry of an old one."""
    return max(previous + 1, time.time_ns() // 1000)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    collector = args.collector or env.get("RMSFLEET_COLLECTOR")
    facts_path = args.facts or (Path(env["RMSFLEET_FACTS"]) if env.get("RMSFLEET_FACTS") else None)
    if not collector:
        return _fail("no collector address: pass --collector HOST:PORT or set RMSFLEET_COLLECTOR", EXIT_BAD_FACTS)
    if facts_path is None:
        return _fail("no facts source: pass --facts FILE or set RMSFLEET_FACTS", EXIT_BAD_FACTS)
    interval = args.interval or float(env.get("RMSFLEET_INTERVAL", "60"))
    sender = Sender(collector, deadline=args.deadline)
    try:
        if args.once:
            return report_once(sender, facts_path, 0)[0]
        return run_forever(sender, facts_path, interval, args.jitter)
    finally:
        sender.close()


def report_once(sender: Sender, facts_path: Path, previous_sequence: int) -> tuple[int, int]:
    """Read, validate, send. Returns (exit code, sequence used)."""
    try:
        facts = load_facts_file(facts_path)
    except FactsFileError as exc:
        return _fail(str(exc), EXIT_BAD_FACTS), previous_sequence
    sequence = next_sequence(previous_sequence)
    request = report_request(facts, datetime.now(UTC), sequence, __version__)
    try:
        response = sender.send(request)
    except SendFailure as exc:
        if exc.retryable:
            return _fail(f"cannot reach the collector at {sender.address}: {exc}", EXIT_UNREACHABLE), sequence
        return _fail(f"the collector at {sender.address} refused the report: {exc}", EXIT_REFUSED), sequence
    log.info(
        "reported %s (sequence %d) to %s: %s",
        facts.host_id,
        sequence,
        sender.address,
        "applied" if response.applied else "already applied",
    )
    return 0, sequence


def run_forever(sender: Sender, facts_path: Path, interval: float, jitter: float) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sequence = 0
    while not stop.is_set():
        _code, sequence = report_once(sender, facts_path, sequence)
        # Jitter spreads thousands of agents that started together across the interval.
        stop.wait(interval * (1 + random.uniform(0, max(jitter, 0.0))))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"rmsfleet-agent: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
