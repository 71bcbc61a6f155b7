"""A full pass under load: what the collector's full pass costs the reports arriving meanwhile,
its memory and its /metrics time, on a large stored fleet (PostgreSQL).

    .venv/bin/python bench/full_pass_load_bench.py --hosts 1000000
    .venv/bin/python bench/full_pass_load_bench.py --hosts 100000 --ranges 5000,100000

A scratch database is filled with --hosts synthetic hosts (bench/full_pass_bench.py's rows, by
COPY). Then, for each full-pass range size in --ranges, a real `rmsfleet-collector serve` runs
twice on it (it runs one full pass before it serves):

  quiet        --full-pass-interval 3600: no full pass during the load
  full passes  --full-pass-interval 0.2: full passes back to back during the load

and the same load is sent each time (bench/ingest_bench.py's load generator in processes of its
own: --load-hosts of the stored hosts report --reports reports, --concurrency calls in flight,
each host's sequence numbers above what is stored). Printed per run: acknowledged reports/s (the
collector acknowledges a report after its batch committed) and, for the full-pass run, its ratio
to the quiet run with the same range size; call latency p50/p99; the full passes that ran in the
window and their mean length (from /metrics); the highest evaluation lag /metrics showed during
the load (how long a committed report waited for evaluation); the collector's peak RSS (VmHWM,
the first full pass included) and its RSS at the end; a /metrics scrape over HTTP (median of 20,
right after the load, while a pass runs); "start s": from start to SERVING, which is mostly the
first full pass, with no load. A full pass longer than the load window is waited for: "passes"
counts those that ended inside the window, "pass s" is the mean length of those that ended by
the time the first one did.

A range as large as the fleet is one step: what a full pass held before it went range by range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bench.full_pass_bench import DEFAULT_PG, bulk_insert, fleet_rows, make_safe, migrate
from bench.ingest_bench import (
    Run,
    Server,
    build_workload,
    measure,
    scrape_internals,
    start_collector,
    stop,
)
from bench.scratch_db import create_postgres, drop_postgres
from rmsfleet.collector.clock import system_clock
from rmsfleet.collector.store.database import create_db_engine
from rmsfleet.collector.store.models import HostHistoryRow, HostRow

# Stored hosts have sequences up to about 100 (full_pass_bench.fleet_rows); each run's reports
# go above the last run's.
SEQUENCE_STEP = 1000
LAG_METRIC = "rmsfleet_evaluation_lag_seconds"


@dataclass
class Outcome:
    range_size: int
    mode: str
    run: Run
    full_passes: float
    full_pass_seconds: float
    serving_after: float
    max_lag: float
    peak_rss_mib: float
    end_rss_mib: float
    scrape_ms: float


def fill(db_url: str, args: argparse.Namespace) -> None:
    migrate(db_url)
    started = time.perf_counter()
    hosts, history = fleet_rows(args.hosts, args.seed, system_clock(), 0.02, 0.1)
    engine = create_db_engine(db_url)
    try:
        bulk_insert(engine, HostRow.__table__, hosts)
        bulk_insert(engine, HostHistoryRow.__table__, history)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    print(f"filled {len(hosts)} hosts, {len(history)} history rows in {time.perf_counter() - started:.0f}s")


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape_ms(metrics_url: str, times: int = 20) -> float:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        with urllib.request.urlopen(metrics_url, timeout=30) as answer:
            answer.read()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


class LagWatch:
    """Reads the evaluation lag from /metrics twice a second while the load runs."""

    def __init__(self, metrics_url: str) -> None:
        self._url = metrics_url
        self.highest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                with urllib.request.urlopen(self._url, timeout=10) as answer:
                    exposition = answer.read().decode()
            except OSError:
                continue
            for family in text_string_to_metric_families(exposition):
                for sample in family.samples:
                    if sample.name == LAG_METRIC:
                        self.highest = max(self.highest, sample.value)


def one_run(db_url: str, args: argparse.Namespace, range_size: int, mode: str, base: int, workdir: Path) -> Outcome:
    interval = "3600" if mode == "quiet" else "0.2"
    extra = ["--full-pass-range", str(range_size), "--full-pass-interval", interval, "--log-level", "WARNING"]
    # The stored hosts do not report during the run: with the default 15 minutes they would all
    # turn stale within it. An hour keeps the 2% that were silent for hours stale, and no more.
    extra += ["--stale-after", "3600"]
    started = time.perf_counter()
    server: Server = start_collector(db_url, workdir, extra, timeout=args.start_timeout)
    serving_after = time.perf_counter() - started
    try:
        assert server.metrics_url is not None
        workload = build_workload(
            args.load_hosts, args.reports, args.concurrency, args.change_share, args.seed, sequence_base=base
        )
        if mode != "quiet":
            time.sleep(1.0)  # the first periodic full pass has begun
        before = scrape_internals(server.metrics_url)
        with LagWatch(server.metrics_url) as lag:
            run = measure(mode, server, workload, args.client_procs, args.deadline, db=True)
        after = scrape_internals(server.metrics_url)
        passes = _delta(after, before, "count")
        peak, scrape = rss_mib(server.process.pid, "VmHWM"), scrape_ms(server.metrics_url)
        if mode != "quiet":
            # A pass longer than the window ends after it: its length is still the figure.
            limit = time.monotonic() + args.start_timeout
            while _delta(after, before, "count") < 1 and time.monotonic() < limit:
                time.sleep(1.0)
                after = scrape_internals(server.metrics_url)
        seconds = _delta(after, before, "sum")
        counted = _delta(after, before, "count")
        return Outcome(
            range_size=range_size,
            mode=mode,
            run=run,
            full_passes=passes,
            full_pass_seconds=seconds / counted if counted else float("nan"),
            serving_after=serving_after,
            max_lag=lag.highest,
            peak_rss_mib=peak,
            end_rss_mib=rss_mib(server.process.pid, "VmRSS"),
            scrape_ms=scrape,
        )
    finally:
        stop(server)


def _delta(after: dict[str, float], before: dict[str, float], what: str) -> float:
    name = f"rmsfleet_evaluation_duration_seconds_{what}:full"
    return after.get(name, 0.0) - before.get(name, 0.0)


def print_table(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print()
    print(
        f"{args.hosts} stored hosts; load: {args.reports} reports from {args.load_hosts} of them, "
        f"{args.concurrency} in flight, {args.client_procs} load processes"
    )
    header = (
        f"{'range':>8} {'mode':<12} {'acked/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'start s':>7} "
        f"{'passes':>6} {'pass s':>7} {'max lag s':>9} {'peak MiB':>8} {'end MiB':>7} {'scrape ms':>9} errors"
    )
    print(header)
    print("-" * len(header))
    quiet = {o.range_size: o.run.accepted_per_second for o in outcomes if o.mode == "quiet"}
    for o in outcomes:
        rate = o.run.accepted_per_second
        base = quiet.get(o.range_size)
        ratio = f"{rate / base:.2f}" if base and o.mode != "quiet" else "-"
        lat = o.run.latencies
        p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else float("nan")
        errors = ", ".join(f"{k} {v}" for k, v in sorted(o.run.errors.items())) or "none"
        print(
            f"{o.range_size:>8} {o.mode:<12} {rate:>8.0f} {ratio:>6} {p50:>7.1f} {p99:>7.1f} {o.serving_after:>7.1f} "
            f"{o.full_passes:>6.0f} "
            f"{o.full_pass_seconds:>7.2f} {o.max_lag:>9.2f} {o.peak_rss_mib:>8.0f} {o.end_rss_mib:>7.0f} "
            f"{o.scrape_ms:>9.1f} {errors}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--ranges", default="20000,whole", help="full-pass range sizes; 'whole' = --hosts (one step)")
    parser.add_argument("--load-hosts", type=int, default=5000)
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--change-share", type=float, default=0.005, help="reports that change facts")
    parser.add_argument("--deadline", type=float, default=60.0, help="per-call timeout, seconds")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds for the first full pass")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL; a scratch database is created and dropped")
    args = parser.parse_args(argv)
    if args.load_hosts > args.hosts:
        parser.error("--load-hosts must not exceed --hosts")
    ranges = [args.hosts if r.strip() == "whole" else int(r) for r in args.ranges.split(",")]
    name = f"rmsfleet_fullpassload_{os.getpid()}"
    db_url = create_postgres(args.postgres, name)
    outcomes: list[Outcome] = []
    try:
        print(f"database: {make_safe(db_url)}")
        fill(db_url, args)
        base = SEQUENCE_STEP
        with tempfile.TemporaryDirectory(prefix="rmsfleet-fullpassload-") as scratch:
            for range_size in ranges:
                for mode in ("quiet", "full passes"):
                    outcome = one_run(db_url, args, range_size, mode, base, Path(scratch))
                    base += SEQUENCE_STEP
                    outcomes.append(outcome)
                    print(
                        f"range {range_size}, {mode}: {outcome.run.accepted_per_second:.0f} acked/s, "
                        f"{outcome.full_passes:.0f} full passes in the window",
                        flush=True,
                    )
        print_table(outcomes, args)
    finally:
        drop_postgres(args.postgres, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
