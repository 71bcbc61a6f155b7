"""Ingest benchmark: the collector against the fastest do-nothing gRPC server, same load, same run.

    .venv/bin/python bench/ingest_bench.py --db sqlite|postgres --hosts 5000 --reports 20000 --concurrency 64

Every target runs as its own subprocess (no shared GIL with the load generator):
  noop-threadpool   bench/noop_server.py --kind threadpool  (grpc.server + ThreadPoolExecutor)
  noop-aio          bench/noop_server.py --kind aio         (grpc.aio.server)
  collector         .venv/bin/rmsfleet-collector serve on a fresh database

The load generator is the same for every target: --client-procs spawned processes, each with one
grpc.aio channel and its share of --concurrency workers. A worker owns a fixed set of hosts and
sends their reports one call at a time (as an agent would: never two reports of one host in
flight), so per-host sequence numbers arrive in order. Requests are built and serialised before
the clock starts; the timed window runs from "go" to the last answer of the slowest process.

For the collector, "persisted" counts only acknowledged reports that the database confirms
afterwards: a host's acknowledged reports count when its stored last_sequence equals the highest
sequence acknowledged for it; hosts, sum(last_sequence), max(last_sequence) and history rows are
compared with what was acknowledged.

Also printed: per-call latency, CPU per report of the server process (all threads, user + system,
from /proc), of the load generator and of PostgreSQL's processes (machine-wide, approximate), the
server's peak RSS (VmHWM at the end of the load), and the collector's own batch and evaluation
counters from /metrics. --rounds N repeats every target (fresh database each time) and reports
the median round, which helps on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from bench.scratch_db import create_postgres, drop_postgres
from bench.synthetic_fleet import evolve, initial_fleet
from rmsfleet.collector.store.models import HostHistoryRow, HostRow
from rmsfleet.contract.wire import report_request
from rmsfleet.v1 import inventory_pb2

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REPORT_METHOD = "/rmsfleet.v1.InventoryService/Report"
ENROLL_METHOD = "/rmsfleet.v1.InventoryService/Enroll"
DEFAULT_PG = os.environ.get("RMSFLEET_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
AGENT_VERSION = "0.1.0-bench"
NOOP_KINDS = {"noop-threadpool": "threadpool", "noop-aio": "aio"}


class Planned(NamedTuple):
    host: int  # index into the fleet
    sequence: int
    appends_history: bool  # a first report or a change of facts
    payload: bytes  # the serialised ReportRequest


# --- the workload ---------------------------------------------------------------------------------


@dataclass
class Workload:
    host_ids: list[str]
    per_worker: list[list[Planned]]
    first: int
    heartbeats: int
    changes: int

    @property
    def total(self) -> int:
        return self.first + self.heartbeats + self.changes


def build_workload(
    hosts: int, reports: int, workers: int, change_share: float, seed: int, sequence_base: int = 0
) -> Workload:
    """`reports` reports over `hosts` hosts: each host's first report, then heartbeats (same facts)
    and fact changes, sequence 1, 2, ... per host (plus `sequence_base`, for hosts already
    stored with sequences up to it). Worker w owns hosts h with h % workers == w and
    sends them round by round (every owned host's n-th report, shuffled, before any n+1-th)."""
    rng = random.Random(seed)
    fleet = initial_fleet(hosts, seed)
    counts = [reports // hosts] * hosts
    for index in rng.sample(range(hosts), reports % hosts):
        counts[index] += 1
    started = datetime(2026, 1, 1, tzinfo=UTC)
    rounds: list[list[Planned]] = [[] for _ in range(max(counts, default=0))]
    first = heartbeats = changes = 0
    for index, facts in enumerate(fleet):
        current = facts
        for sequence in range(1, counts[index] + 1):
            appends = sequence == 1
            if sequence == 1:
                first += 1
            elif rng.random() < change_share:
                current = evolve(current, rng)
                appends = True
                changes += 1
            else:
                heartbeats += 1
            observed = started + timedelta(minutes=5 * sequence, seconds=index % 300)
            sent = sequence + sequence_base
            payload = report_request(current, observed, sent, AGENT_VERSION).SerializeToString()
            rounds[sequence - 1].append(Planned(index, sent, appends, payload))
    per_worker: list[list[Planned]] = [[] for _ in range(workers)]
    for round_ in rounds:
        rng.shuffle(round_)
        for planned in round_:
            per_worker[planned.host % workers].append(planned)
    return Workload([f.host_id for f in fleet], per_worker, first, heartbeats, changes)


# --- the load generator (runs in its own processes) ------------------------------------------------


@dataclass
class ClientResult:
    acked: list[tuple[int, int, bool, bool]] = field(default_factory=list)  # host, sequence, appends, applied
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    cpu_seconds: float = 0.0


def _cpu_self() -> float:
    times = os.times()
    return times.user + times.system


async def _drive(address: str, workers: list[list[Planned]], deadline: float, conn: Connection) -> ClientResult:
    result = ClientResult()
    async with aio.insecure_channel(address) as channel:
        # Bytes in, bytes out: the requests are serialised before the clock starts.
        report: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(REPORT_METHOD)
        enroll: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ENROLL_METHOD)
        await asyncio.wait_for(channel.channel_ready(), 15)
        for _ in range(16):  # warm the connection and the server's call path, without touching the store
            # The collector refuses it (no enrollment secret is sent): a full round trip, nothing stored.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await enroll(inventory_pb2.EnrollRequest(host_id="warm-up").SerializeToString(), timeout=deadline)
        conn.send("ready")
        conn.recv()  # "go"

        async def worker(items: list[Planned]) -> None:
            for item in items:
                sent = time.perf_counter()
                try:
                    answer: bytes = await report(item.payload, timeout=deadline)
                except grpc.aio.AioRpcError as exc:
                    result.errors[exc.code().name] += 1
                    continue
                finally:
                    result.latencies.append(time.perf_counter() - sent)
                response = inventory_pb2.ReportResponse.FromString(answer)
                result.acked.append((item.host, item.sequence, item.appends_history, response.applied))

        cpu = _cpu_self()
        result.started = time.monotonic()
        await asyncio.gather(*(worker(items) for items in workers))
        result.finished = time.monotonic()
        result.cpu_seconds = _cpu_self() - cpu
    return result


def client_main(address: str, workers: list[list[Planned]], deadline: float, conn: Connection) -> None:
    try:
        conn.send(asyncio.run(_drive(address, workers, deadline, conn)))
    except Exception as exc:
        conn.send(f"client failed: {exc!r}")
        raise


# --- targets ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU of every process named postgres (server and backends): approximate, the machine is shared."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += proc_cpu_seconds(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return total


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: str
    metrics_url: str | None = None
    log: Path | None = None


def start_noop(kind: str, workers: int) -> Server:
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "noop_server.py"), "--kind", kind, "--workers", str(workers)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "READY":
        process.kill()
        raise RuntimeError(f"noop server ({kind}) did not start: {line!r}")
    return Server(process, f"127.0.0.1:{line[1]}")


def start_collector(db_url: str, workdir: Path, extra: Sequence[str], timeout: float = 60.0) -> Server:
    port, metrics_port = free_port(), free_port()
    log = workdir / "collector.log"
    command = [
        str(BIN / "rmsfleet-collector"),
        "serve",
        "--db",
        db_url,
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        # The whole load comes from one address: the per-address limit on calls in flight
        # (docs/limits.md) would refuse most of it, and the HTTP/2 stream limit it sets too.
        "--max-calls-per-peer",
        "100000",
        *extra,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", log)
    wait_serving(server, timeout)
    return server


def wait_serving(server: Server, timeout: float) -> None:
    from grpc_health.v1 import health_pb2

    limit = time.monotonic() + timeout
    with grpc.insecure_channel(server.address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while time.monotonic() < limit:
            if server.process.poll() is not None:
                break
            try:
                answer = check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    tail = server.log.read_text()[-2000:] if server.log else ""
    stop(server)
    raise RuntimeError(f"the collector did not become SERVING within {timeout:.0f}s:\n{tail}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# --- one measured run -------------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    seconds: float
    sent: int
    acked: int
    applied: int
    errors: Counter[str]
    latencies: list[float]
    server_cpu: float
    client_cpu: float
    database_cpu: float | None
    peak_rss_mib: float
    acked_items: list[tuple[int, int, bool, bool]]
    persisted: int | None = None
    verification: list[str] = field(default_factory=list)
    internals: dict[str, float] = field(default_factory=dict)

    @property
    def accepted_per_second(self) -> float:
        return self.acked / self.seconds

    @property
    def persisted_per_second(self) -> float | None:
        return None if self.persisted is None else self.persisted / self.seconds

    @property
    def score(self) -> float:
        """What the ratio compares: persisted reports/s for the collector, answered calls/s otherwise."""
        persisted = self.persisted_per_second
        return self.accepted_per_second if persisted is None else persisted


def measure(target: str, server: Server, workload: Workload, client_procs: int, deadline: float, db: bool) -> Run:
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    processes = []
    for index in range(client_procs):
        mine = workload.per_worker[index::client_procs]
        parent, child = context.Pipe()
        process = context.Process(target=client_main, args=(server.address, mine, deadline, child), daemon=True)
        process.start()
        child.close()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        message = pipe.recv()
        if message != "ready":
            raise RuntimeError(str(message))
    before = scrape_internals(server.metrics_url) if server.metrics_url else {}
    server_cpu = proc_cpu_seconds(server.process.pid)
    database_cpu = postgres_cpu_seconds() if db else None
    for pipe in pipes:
        pipe.send("go")
    results: list[ClientResult] = []
    for pipe in pipes:
        message = pipe.recv()
        if not isinstance(message, ClientResult):
            raise RuntimeError(str(message))
        results.append(message)
    server_cpu = proc_cpu_seconds(server.process.pid) - server_cpu
    if database_cpu is not None:
        database_cpu = postgres_cpu_seconds() - database_cpu
    after = scrape_internals(server.metrics_url) if server.metrics_url else {}
    for process in processes:
        process.join(10)
    acked_items = [item for r in results for item in r.acked]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return Run(
        target=target,
        seconds=max(r.finished for r in results) - min(r.started for r in results),
        sent=sum(len(items) for items in workload.per_worker),
        acked=len(acked_items),
        applied=sum(1 for item in acked_items if item[3]),
        errors=errors,
        latencies=sorted(latency for r in results for latency in r.latencies),
        server_cpu=server_cpu,
        client_cpu=sum(r.cpu_seconds for r in results),
        database_cpu=database_cpu,
        peak_rss_mib=peak_rss_mib(server.process.pid),
        acked_items=acked_items,
        internals={name: value - before.get(name, 0.0) for name, value in after.items()},
    )


# --- verification through the database -------------------------------------------------------------


def verify(run: Run, db_url: str, host_ids: list[str]) -> None:
    """Count as persisted only what the database confirms; note every mismatch."""
    highest: dict[str, int] = {}
    per_host: defaultdict[str, int] = defaultdict(int)
    expected_history = 0
    for host, sequence, appends, _applied in run.acked_items:
        host_id = host_ids[host]
        highest[host_id] = max(highest.get(host_id, 0), sequence)
        per_host[host_id] += 1
        expected_history += appends
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            stored = {row[0]: row[1] for row in connection.execute(select(HostRow.host_id, HostRow.last_sequence))}
            history = connection.execute(select(func.count()).select_from(HostHistoryRow)).scalar_one()
    finally:
        engine.dispose()
    run.persisted = sum(n for host_id, n in per_host.items() if stored.get(host_id) == highest[host_id])
    checks = [
        ("hosts", len(stored), len(highest)),
        ("sum(last_sequence)", sum(stored.values()), sum(highest.values())),
        ("max(last_sequence)", max(stored.values(), default=0), max(highest.values(), default=0)),
        ("history rows", history, expected_history),
        ("acknowledged reports confirmed", run.persisted, run.acked),
    ]
    for name, got, want in checks:
        run.verification.append(f"{name}: database {got}, acknowledged {want}: {'ok' if got == want else 'MISMATCH'}")


INTERNALS = (
    "rmsfleet_ingest_batch_size_count",
    "rmsfleet_ingest_batch_size_sum",
    "rmsfleet_ingest_commit_duration_seconds_sum",
    "rmsfleet_evaluation_duration_seconds_count",
    "rmsfleet_evaluation_duration_seconds_sum",
)


def scrape_internals(metrics_url: str) -> dict[str, float]:
    """The collector's own counters of batches and evaluation passes (by kind), from /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        exposition = answer.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in INTERNALS:
                kind = sample.labels.get("kind")
                name = sample.name if kind is None else f"{sample.name}:{kind}"
                values[name] = values.get(name, 0.0) + sample.value
    return values


# --- running the targets ----------------------------------------------------------------------------


def run_noop(target: str, args: argparse.Namespace, workload: Workload) -> Run:
    server = start_noop(NOOP_KINDS[target], args.noop_workers)
    try:
        return measure(target, server, workload, args.client_procs, args.deadline, db=False)
    finally:
        stop(server)


def run_collector(args: argparse.Namespace, workload: Workload, workdir: Path, round_: int) -> Run:
    name = f"rmsfleet_bench_{os.getpid()}_{round_}"
    if args.db == "postgres":
        db_url = create_postgres(args.postgres, name)
    else:
        db_url = f"sqlite:///{workdir / f'bench-{round_}.db'}"
    try:
        server = start_collector(db_url, workdir, args.collector_arg)
        try:
            run = measure("collector", server, workload, args.client_procs, args.deadline, db=args.db == "postgres")
        finally:
            stop(server)
        verify(run, db_url, workload.host_ids)
    finally:
        if args.db == "postgres":
            if args.keep_db:
                print(f"kept {db_url}")
            else:
                drop_postgres(args.postgres, name)
    return run


# --- the report -------------------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def _per_report_us(seconds: float | None, run: Run) -> str:
    return "-" if seconds is None else f"{seconds / max(run.acked, 1) * 1e6:.0f}"


def cpu_per_report(run: Run) -> float:
    return (run.server_cpu + run.client_cpu + (run.database_cpu or 0.0)) / max(run.acked, 1) * 1e6


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.score)
    return ordered[(len(ordered) - 1) // 2]


def print_report(by_target: dict[str, list[Run]], workload: Workload, args: argparse.Namespace) -> None:
    chosen = {target: median_run(runs) for target, runs in by_target.items()}
    noops = [run for target, run in chosen.items() if target in NOOP_KINDS]
    best = max(noops, key=lambda r: r.score) if noops else None
    print()
    print(
        f"workload: {len(workload.host_ids)} hosts, {workload.total} reports ({workload.first} first, "
        f"{workload.heartbeats} heartbeats, {workload.changes} fact changes); {args.concurrency} calls in flight "
        f"from {args.client_procs} client process(es), the same for every target; db {args.db}"
        + (f"; median of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    header = (
        f"{'target':<16} {'reports/s':>9} {'persisted/s':>11} {'ratio':>5} {'p50 ms':>6} {'p99 ms':>6} "
        f"{'server CPU':>10} {'client CPU':>10} {'db CPU':>6} {'peak RSS':>8} {'errors':>6}"
    )
    print(header)
    print(
        f"{'':<16} {'':>9} {'':>11} {'':>5} {'':>6} {'':>6} {'us/report':>10} {'us/report':>10} {'us/rep':>6} {'MiB':>8}"
    )
    print("-" * len(header))
    for target, run in chosen.items():
        ratio = f"{run.score / best.score:.2f}" if best is not None else "-"
        persisted = run.persisted_per_second
        print(
            f"{target:<16} {run.accepted_per_second:>9.0f} {'-' if persisted is None else f'{persisted:.0f}':>11} "
            f"{ratio:>5} {_percentile(run.latencies, 0.5) * 1000:>6.1f} {_percentile(run.latencies, 0.99) * 1000:>6.1f} "
            f"{_per_report_us(run.server_cpu, run):>10} {_per_report_us(run.client_cpu, run):>10} "
            f"{_per_report_us(run.database_cpu, run):>6} {run.peak_rss_mib:>8.1f} {sum(run.errors.values()):>6}"
        )
    print()
    if best is not None:
        print(f"fastest do-nothing server: {best.target} ({best.score:.0f} reports/s); ratio = reports/s / that")
        print("(the collector's ratio uses persisted reports/s: acknowledged and confirmed in the database)")
    # Where the cores went during the timed window. One Python process cannot use much more than
    # one core (the GIL): a server near 1.0 is bound by its own interpreter, not by the machine.
    for target, run in chosen.items():
        database = "" if run.database_cpu is None else f", database {run.database_cpu / run.seconds:.2f}"
        print(
            f"  {target}: cores busy: server {run.server_cpu / run.seconds:.2f}, "
            f"client {run.client_cpu / run.seconds:.2f}{database}; "
            f"CPU per report (all three) {cpu_per_report(run):.0f} us"
        )
    if args.rounds > 1:
        for target, runs in by_target.items():
            print(f"  {target} rounds: {', '.join(f'{r.score:.0f}' for r in runs)} reports/s")
    for target, run in chosen.items():
        if run.errors:
            print(f"{target} errors: {dict(run.errors)}")
    collector = chosen.get("collector")
    if collector is not None:
        print_collector(collector)


def print_collector(run: Run) -> None:
    print(f"collector: {run.acked} of {run.sent} reports acknowledged in {run.seconds:.2f}s, {run.applied} applied")
    for line in run.verification:
        print(f"  verify {line}")
    i = run.internals
    batches = i.get("rmsfleet_ingest_batch_size_count", 0.0)
    if batches:
        committing = i["rmsfleet_ingest_commit_duration_seconds_sum"]
        print(
            f"  writer: {batches:.0f} batches, mean {i['rmsfleet_ingest_batch_size_sum'] / batches:.1f} reports, "
            f"{committing / batches * 1000:.1f} ms each, {committing:.2f}s in all "
            f"({committing / run.seconds:.0%} of the timed window)"
        )
    for kind in ("incremental", "full"):
        passes = i.get(f"rmsfleet_evaluation_duration_seconds_count:{kind}", 0.0)
        if passes:
            spent = i[f"rmsfleet_evaluation_duration_seconds_sum:{kind}"]
            print(
                f"  evaluator: {passes:.0f} {kind} passes, {spent:.2f}s in them ({spent / run.seconds:.0%} of the window)"
            )


# --- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (one per worker)")
    parser.add_argument("--client-procs", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--change-share", type=float, default=0.1, help="share of later reports that change facts")
    parser.add_argument("--deadline", type=float, default=30.0, help="per-call deadline, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every target; report the median (default 1)")
    parser.add_argument(
        "--targets",
        default="noop-threadpool,noop-aio,collector",
        help="comma-separated, run in this order each round (default: noop-threadpool,noop-aio,collector)",
    )
    parser.add_argument("--noop-workers", type=int, default=16, help="thread-pool size of noop-threadpool")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL; a scratch database is created and dropped")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database (prints its URL)")
    parser.add_argument(
        "--collector-arg", action="append", default=[], help="extra flag for `serve`, e.g. --collector-arg=--workers=16"
    )
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - {*NOOP_KINDS, "collector"}
    if unknown:
        parser.error(f"unknown targets: {sorted(unknown)}")
    if min(args.hosts, args.reports, args.concurrency, args.client_procs, args.rounds) <= 0:
        parser.error("--hosts, --reports, --concurrency, --client-procs and --rounds must be > 0")

    built = time.perf_counter()
    workload = build_workload(args.hosts, args.reports, args.concurrency, args.change_share, args.seed)
    print(f"built {workload.total} requests in {time.perf_counter() - built:.1f}s", flush=True)

    by_target: dict[str, list[Run]] = {target: [] for target in targets}
    with tempfile.TemporaryDirectory(prefix="rmsfleet-bench-") as scratch:
        for round_ in range(args.rounds):
            for target in targets:
                if target in NOOP_KINDS:
                    run = run_noop(target, args, workload)
                else:
                    run = run_collector(args, workload, Path(scratch), round_)
                by_target[target].append(run)
                print(f"round {round_ + 1} {target}: {run.score:.0f} reports/s", flush=True)
    print_report(by_target, workload, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
