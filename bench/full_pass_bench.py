"""Full-pass benchmark: the evaluator's full pass and a /metrics scrape over N stored hosts.

    .venv/bin/python bench/full_pass_bench.py                 # 100000 hosts on PostgreSQL
    .venv/bin/python bench/full_pass_bench.py --hosts 20000 --db sqlite

A fresh database is migrated with `rmsfleet-collector migrate`, then N synthetic hosts (the
fleet of bench/synthetic_fleet.py: one history row each, a second one for hosts whose facts
changed) go straight into it with COPY (PostgreSQL) or one executemany (SQLite); no gRPC.
The evaluator and the metrics are built as server.start() builds them, then timed in-process:

  first full pass     evaluate_once() on a fleet with no violations yet: opens every one
  steady full pass    evaluate_once() again: same findings, nothing to write
  incremental pass    evaluate_changes() for --touched hosts (the hosts given directly)
  feed pass           evaluate_feed() after --touched hosts were written to the change feed:
                      what follows a committed batch since the feed (takes and deletes the rows
                      too, and refreshes the aggregates when violations moved, as the loop did
                      after evaluate_changes before the feed: timed side by side); the feed
                      insert and its commit, as the writer does it, timed apart
  scrape              prometheus_client.generate_latest(registry) with FleetStateCollector

plus, once, the parts of a full pass on their own (load, policies, reconcile, aggregates).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from bench.scratch_db import create_postgres, drop_postgres
from bench.synthetic_fleet import evolve, initial_fleet
from rmsfleet.collector import __version__
from rmsfleet.collector.clock import system_clock
from rmsfleet.collector.domain.model import PolicyConfig
from rmsfleet.collector.domain.policies import POLICIES, PolicyContext, evaluate_all
from rmsfleet.collector.evaluator import Evaluator, reconcile
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics, FleetStateCollector
from rmsfleet.collector.store.aggregates_sql import compute_aggregates
from rmsfleet.collector.store.change_feed_sql import FeedEntry, record_changes
from rmsfleet.collector.store.database import create_db_engine
from rmsfleet.collector.store.evaluation_sql import load_fleet, open_violations
from rmsfleet.collector.store.models import HostHistoryRow, HostRow, ViolationRow
from rmsfleet.collector.store.rows import facts_to_columns

BIN = Path(sys.executable).parent
DEFAULT_PG = os.environ.get("RMSFLEET_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


# --- the synthetic fleet as rows ----------------------------------------------------------------


def fleet_rows(
    hosts: int, seed: int, now: datetime, stale_share: float, change_share: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Host rows and history rows: every host has its first report in history; `change_share` of
    them changed facts once since (an upgrade step mostly), and `stale_share` stopped reporting."""
    rng = random.Random(seed)
    host_rows: list[dict[str, Any]] = []
    history_rows: list[dict[str, Any]] = []
    for index, facts in enumerate(initial_fleet(hosts, seed)):
        first_seen = now - timedelta(days=30, seconds=index % 86400)
        changes = [(first_seen, facts)]
        if rng.random() < change_share:
            changes.append((now - timedelta(days=rng.randint(1, 20)), evolve(facts, rng)))
        stale = rng.random() < stale_share
        last_seen = now - (timedelta(hours=rng.randint(1, 72)) if stale else timedelta(seconds=rng.randint(0, 600)))
        current = changes[-1][1]
        host_rows.append(
            {
                **facts_to_columns(current),
                "host_id": current.host_id,
                "first_seen": first_seen,
                "last_seen": last_seen,
                "observed_at": last_seen,
                "last_sequence": 100 + len(changes),
                "agent_version": "0.1.0",
            }
        )
        for sequence, (changed_at, version) in enumerate(changes, start=1):
            history_rows.append(
                {**facts_to_columns(version), "host_id": facts.host_id, "changed_at": changed_at, "sequence": sequence}
            )
    return host_rows, history_rows


def _columns(table: Any, rows: list[dict[str, Any]]) -> list[str]:
    names = [c.name for c in table.columns if c.name in rows[0]]
    missing = [c.name for c in table.columns if c.name not in rows[0] and not c.nullable and c.server_default is None]
    if missing and missing != ["id"]:
        raise RuntimeError(f"{table.name}: the synthetic rows lack required columns {missing}")
    return names


def bulk_insert(engine: Engine, table: Any, rows: list[dict[str, Any]]) -> None:
    """COPY on PostgreSQL (the fastest path in), one executemany elsewhere."""
    names = _columns(table, rows)
    if engine.dialect.name != "postgresql":
        with engine.begin() as connection:
            connection.execute(insert(table), rows)
        return
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[name] for name in names])
        raw.commit()
    finally:
        raw.close()


# --- databases ----------------------------------------------------------------------------------


def migrate(db_url: str) -> None:
    done = subprocess.run(
        [str(BIN / "rmsfleet-collector"), "migrate", "--db", db_url], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


# --- timing -------------------------------------------------------------------------------------


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count(session: Session, table: Any) -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one())


def run(args: argparse.Namespace, db_url: str) -> None:
    now = system_clock()
    print(f"database: {make_safe(db_url)}")
    seconds, _ = timed(lambda: migrate(db_url))
    print(f"migrate: {seconds:.1f}s")
    seconds, (host_rows, history_rows) = timed(
        lambda: fleet_rows(args.hosts, args.seed, now, args.stale_share, args.change_share)
    )
    print(f"generated {len(host_rows)} hosts and {len(history_rows)} history rows in {seconds:.1f}s")

    engine = create_db_engine(db_url)
    try:
        started = time.perf_counter()
        bulk_insert(engine, HostRow.__table__, host_rows)
        inserted = time.perf_counter()
        bulk_insert(engine, HostHistoryRow.__table__, history_rows)
        print(f"bulk insert: hosts {inserted - started:.1f}s, history {time.perf_counter() - inserted:.1f}s")
        touched = {row["host_id"] for row in random.Random(args.seed).sample(host_rows, min(args.touched, args.hosts))}
        host_rows.clear()
        history_rows.clear()
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("ANALYZE"))  # as autovacuum would have by now
        measure(engine, args, touched)
    finally:
        engine.dispose()


def measure(engine: Engine, args: argparse.Namespace, touched: set[str]) -> None:
    # Built as server.start() builds them.
    sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, __version__)
    aggregates = AggregatesHolder()
    registry.register(FleetStateCollector(aggregates, lambda: [p.id for p in POLICIES], system_clock))
    policy = PolicyConfig()
    evaluator = Evaluator(sessions, policy, system_clock, metrics, aggregates)

    rss_before = rss_mib()
    first, changes = timed(evaluator.evaluate_once)
    steady = [timed(evaluator.evaluate_once)[0] for _ in range(args.repeat)]
    incremental = [timed(lambda: evaluator.evaluate_changes(touched))[0] for _ in range(args.repeat)]

    def step_before_the_feed() -> None:
        # What the loop ran per batch before the change feed: the pass over the hosts it was
        # given, then an aggregates refresh when violations moved (evaluate_feed does the same).
        changes = evaluator.evaluate_changes(touched)
        if changes is not None and (changes.opened or changes.updated or changes.resolved):
            evaluator.refresh_aggregates(system_clock())

    steps_before = [timed(step_before_the_feed)[0] for _ in range(args.repeat)]
    entries = [FeedEntry(host, True) for host in sorted(touched)]

    def write_feed() -> None:
        with sessions.begin() as session:
            record_changes(session, entries, system_clock())

    feed_inserts, feed_passes = [], []
    for _ in range(args.repeat):
        feed_inserts.append(timed(write_feed)[0])
        feed_passes.append(timed(evaluator.evaluate_feed)[0])
    exposition = generate_latest(registry)
    scrapes = [timed(lambda: generate_latest(registry))[0] for _ in range(max(args.repeat, 5))]
    with sessions() as session:
        hosts, violations = count(session, HostRow.__table__), count(session, ViolationRow.__table__)
    parts = breakdown(sessions, policy)
    profile = profile_incremental(evaluator, touched) if args.profile else ""

    print()
    print(f"{hosts} hosts, {violations} violations opened by the first pass ({changes})")
    print(f"{'measure':<44} {'seconds':>9}")
    print("-" * 54)
    print(f"{'first full pass (opens the violations)':<44} {first:>9.3f}")
    print(f"{'steady full pass, median of ' + str(args.repeat):<44} {statistics.median(steady):>9.3f}")
    print(f"{f'incremental pass, {len(touched)} touched hosts, median':<44} {statistics.median(incremental):>9.3f}")
    print(f"{'  the same, then a refresh if violations moved':<44} {statistics.median(steps_before):>9.3f}")
    print(f"{f'feed pass (same refresh), {len(touched)} rows, median':<44} {statistics.median(feed_passes):>9.3f}")
    print(f"{f'feed insert and commit, {len(touched)} rows, median':<44} {statistics.median(feed_inserts):>9.4f}")
    print(f"{'scrape (generate_latest), median of ' + str(len(scrapes)):<44} {statistics.median(scrapes):>9.4f}")
    print()
    print("one steady full pass, part by part:")
    for name, seconds in parts:
        print(f"  {name:<42} {seconds:>9.3f}")
    if profile:
        print()
        print(f"one incremental pass over {len(touched)} touched hosts, profiled (cumulative):")
        print(profile)
    lines = exposition.decode().splitlines()
    series = sum(1 for line in lines if line and not line.startswith("#"))
    print()
    print(f"scrape: {len(exposition)} bytes, {series} series")
    print(
        f"memory: RSS {rss_before:.0f} MiB before the passes, {rss_mib():.0f} MiB after, "
        f"peak {peak_rss_mib():.0f} MiB (this process: rows generated, bulk insert, passes)"
    )


def breakdown(sessions: sessionmaker[Session], policy: PolicyConfig) -> list[tuple[str, float]]:
    ctx = PolicyContext(now=system_clock(), config=policy)
    with sessions() as session:
        load_seconds, fleet = timed(lambda: load_fleet(session))
        policy_seconds, findings = timed(lambda: evaluate_all(fleet, ctx))
        open_seconds, current = timed(lambda: open_violations(session))
        reconcile_seconds, _plan = timed(lambda: reconcile(current, findings, ctx))
        aggregate_seconds, _aggregates = timed(lambda: compute_aggregates(session, ctx.now, policy.stale_after))
        session.rollback()
    return [
        (f"load_fleet ({len(fleet.hosts)} hosts, {len(fleet.history)} histories)", load_seconds),
        (f"evaluate_all ({len(findings)} findings)", policy_seconds),
        (f"open_violations ({len(current)})", open_seconds),
        ("reconcile", reconcile_seconds),
        ("compute_aggregates", aggregate_seconds),
    ]


def profile_incremental(evaluator: Evaluator, touched: set[str]) -> str:
    """Where one incremental pass spends its time: the functions with the most cumulative time."""
    profiler = cProfile.Profile()
    profiler.runcall(lambda: evaluator.evaluate_changes(touched))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"rmsfleet|sqlalchemy/engine/base", 14)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip() and "Ordered by" not in line)


def make_safe(url: str) -> str:
    return url.rsplit("@", maxsplit=1)[-1]


@contextlib.contextmanager
def scratch_database(args: argparse.Namespace) -> Iterator[str]:
    if args.db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="rmsfleet-fullpass-") as scratch:
            yield f"sqlite:///{Path(scratch) / 'fullpass.db'}"
        return
    name = f"rmsfleet_fullpass_{os.getpid()}"
    url = create_postgres(args.postgres, name)
    try:
        yield url
    finally:
        if args.keep_db:
            print(f"kept {url}")
        else:
            drop_postgres(args.postgres, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stale-share", type=float, default=0.02, help="hosts silent for hours (stale agents)")
    parser.add_argument("--change-share", type=float, default=0.1, help="hosts with a second history row")
    parser.add_argument("--touched", type=int, default=200, help="hosts an incremental pass looks at")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of each pass")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL; a scratch database is created and dropped")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile one incremental pass (cumulative time)")
    args = parser.parse_args(argv)
    if args.hosts <= 0 or args.repeat <= 0:
        parser.error("--hosts and --repeat must be > 0")
    with scratch_database(args) as db_url:
        run(args, db_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
