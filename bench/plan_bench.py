"""GetPlan benchmark: one plan, then storms of parallel plan calls, against a real collector.

    .venv/bin/python bench/plan_bench.py                   # 100000 hosts on PostgreSQL
    .venv/bin/python bench/plan_bench.py --hosts 1000000
    .venv/bin/python bench/plan_bench.py --hosts 20000 --db sqlite

A fresh database gets N synthetic hosts (bench/full_pass_bench.py's rows, COPY on PostgreSQL),
then `rmsfleet-collector serve` runs on it as its own process (the per-address limit raised, so
the load of one address reaches GetPlan). Once its first evaluation pass is done, the bench
measures, each from 127.0.0.1 over gRPC:

  cold plan       the first GetPlan page (the plan is computed), then the rest of the walk
  warm plan       the same walk again (the plan is kept while the facts stand)
  storm same      --parallel calls of the same question right after a fact change (one report):
                  they share one computation
  storm distinct  --parallel calls of as many different questions (shares): the bound holds,
                  callers beyond it are refused with RESOURCE_EXHAUSTED

For each storm: latency p50/p99 of the answered calls, the status codes, ListHosts calls made
during the storm (each must answer), and the collector's peak RSS (sampled every 20 ms from
/proc) against its RSS before the storm.

`--baseline-source DIR` first runs the same measurements, on the same database, against the
collector of another source tree (`git archive COMMIT | tar -x -C DIR`, e.g. the commit before
the plan bound), so the two compare within one run. A collector that does not page answers the
whole plan to the first request.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.full_pass_bench import DEFAULT_PG, bulk_insert, fleet_rows, make_safe, migrate, scratch_database
from rmsfleet.collector.query_client import QueryClient
from rmsfleet.collector.store.database import create_db_engine
from rmsfleet.collector.store.models import HostHistoryRow, HostRow
from rmsfleet.v1 import facts_pb2, inventory_pb2, inventory_pb2_grpc, query_pb2, query_pb2_grpc

BIN = Path(sys.executable).parent
PAGE = 5000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The highest VmRSS of a process while running (every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


@dataclass
class Storm:
    name: str
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    listed: list[float] = field(default_factory=list)
    listed_failed: Counter[str] = field(default_factory=Counter)
    rss_before: int = 0
    rss_peak: int = 0
    wall: float = 0.0


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start_collector(
    db_url: str, args: argparse.Namespace, log: Path, source: Path | None
) -> tuple[subprocess.Popen[bytes], str]:
    """This tree's collector, or (`source`) the one of another source tree, run from its files."""
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    environment = dict(os.environ)
    if source is None:
        program = [str(BIN / "rmsfleet-collector")]
    else:
        # rmsfleet is a namespace package: these directories come before the editable install.
        paths = [str(source / part) for part in ("collector", "proto", "agent")]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        program = [sys.executable, "-m", "rmsfleet.collector.cli"]
    command = [
        *program,
        "serve",
        "--db",
        db_url,
        "--listen",
        address,
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--max-calls-per-peer",
        "10000",
        *([] if source is not None else ["--max-concurrent-plans", str(args.max_concurrent_plans)]),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    channel = grpc.insecure_channel(address)
    health: Any = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the collector exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if (
                health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                == health_pb2.HealthCheckResponse.SERVING
            ):
                break
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    query = query_pb2_grpc.QueryServiceStub(channel)
    # The first evaluation pass reads the whole fleet too: let it finish before measuring.
    while not query.ListHosts(query_pb2.ListHostsRequest(page_size=1), timeout=30).evaluation.HasField("evaluated_at"):
        time.sleep(0.5)
    channel.close()
    return process, address


def change_facts(address: str, n: int) -> None:
    """One report of a new host: the facts generation moves, so the next plan is computed."""
    observed = Timestamp()
    observed.FromDatetime(datetime.now(UTC))
    facts = facts_pb2.HostFacts(
        host_id=f"bench-newcomer-{n}",
        hostname=f"bench-newcomer-{n}.corp.example",
        forest="corp.example",
        client=facts_pb2.ClientFacts(version=facts_pb2.VERSION_RTM, activation=facts_pb2.ACTIVATION_SELF),
    )
    with grpc.insecure_channel(address) as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).Report(
            inventory_pb2.ReportRequest(
                facts=facts, agent_version="bench", observed_at=observed, sequence=int(time.time() * 1e6)
            ),
            timeout=30,
        )


def storm(name: str, address: str, pid: int, requests: list[query_pb2.GetPlanRequest]) -> Storm:
    result = Storm(name)
    over = threading.Event()
    channel = grpc.insecure_channel(address)
    stub = query_pb2_grpc.QueryServiceStub(channel)

    def one(request: query_pb2.GetPlanRequest) -> tuple[float, str, str]:
        started = time.perf_counter()
        try:
            stub.GetPlan(request, timeout=120)
            return time.perf_counter() - started, "OK", ""
        except grpc.RpcError as exc:
            return time.perf_counter() - started, exc.code().name, (exc.details() or "")[:90]

    def list_hosts() -> None:
        while not over.is_set():
            started = time.perf_counter()
            try:
                stub.ListHosts(query_pb2.ListHostsRequest(page_size=100), timeout=60)
                result.listed.append(time.perf_counter() - started)
            except grpc.RpcError as exc:
                result.listed_failed[exc.code().name] += 1
            time.sleep(0.05)

    result.rss_before = rss_kib(pid)
    with RssSampler(pid) as sampler, ThreadPoolExecutor(len(requests) + 1) as pool:
        lister = pool.submit(list_hosts)
        started = time.perf_counter()
        for latency, code, message in pool.map(one, requests):
            result.codes[code] += 1
            if code == "OK":
                result.latencies.append(latency)
            else:
                result.messages[f"{code}: {message}"] += 1
        result.wall = time.perf_counter() - started
        over.set()
        lister.result()
    result.rss_peak = sampler.peak
    channel.close()
    return result


def print_storm(s: Storm) -> None:
    mib = 1024
    print(f"\n{s.name}: {sum(s.codes.values())} calls in {s.wall:.2f} s")
    print(
        f"  answered {s.codes['OK']}: p50 {percentile(s.latencies, 0.5):.3f} s, p99 {percentile(s.latencies, 0.99):.3f} s"
    )
    for code, n in sorted(s.codes.items()):
        print(f"  {code:20} {n}")
    for message, n in s.messages.most_common(3):
        print(f"    {n} x {message}")
    print(
        f"  ListHosts during the storm: {len(s.listed)} answered (max {max(s.listed, default=float('nan')):.3f} s), "
        f"failed {dict(s.listed_failed) or 0}"
    )
    print(
        f"  collector RSS: {s.rss_before / mib:.0f} MiB before, peak {s.rss_peak / mib:.0f} MiB "
        f"(x{s.rss_peak / max(s.rss_before, 1):.2f})"
    )


def walk(client: QueryClient) -> tuple[float, float, int]:
    """(first page latency, whole walk, pages) of the default question."""
    pages = 0
    first = 0.0
    started = time.perf_counter()
    request = query_pb2.GetPlanRequest(page_size=PAGE)
    while True:
        response = client.stub.GetPlan(request, timeout=300)
        pages += 1
        if pages == 1:
            first = time.perf_counter() - started
        if not response.next_page_token:
            return first, time.perf_counter() - started, pages
        request.page_token = response.next_page_token


def run(args: argparse.Namespace, db_url: str) -> None:
    started = time.perf_counter()
    migrate(db_url)
    hosts, history = fleet_rows(args.hosts, args.seed, datetime.now(UTC), 0.02, 0.1)
    engine = create_db_engine(db_url)
    bulk_insert(engine, HostRow.__table__, hosts)
    bulk_insert(engine, HostHistoryRow.__table__, history)
    engine.dispose()
    del hosts, history
    print(f"{args.hosts} hosts on {make_safe(db_url)}: built in {time.perf_counter() - started:.1f} s")
    targets: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.baseline_source is not None:
        targets.insert(0, (f"baseline {args.baseline_source}", args.baseline_source))
    for name, source in targets:
        print(f"\n=== collector: {name} ===")
        with tempfile.TemporaryDirectory(prefix="rmsfleet-planbench-") as scratch:
            log = Path(scratch) / "collector.log"
            process, address = start_collector(db_url, args, log, source)
            try:
                measure(args, address, process.pid, n=len(targets) if source is None else 0)
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def measure(args: argparse.Namespace, address: str, pid: int, n: int) -> None:
    """`n` tells the runs apart: each storm's fact change is a new host of its own."""
    channel = grpc.insecure_channel(address)
    client = QueryClient(channel, timeout=300)
    rss_idle = rss_kib(pid)
    with RssSampler(pid) as sampler:
        first, whole, pages = walk(client)
    print(f"\ncollector RSS after its first evaluation pass: {rss_idle / 1024:.0f} MiB")
    print(
        f"cold plan: first page {first:.3f} s, whole walk {whole:.3f} s ({pages} pages of {PAGE}); "
        f"peak RSS {sampler.peak / 1024:.0f} MiB"
    )
    first, whole, pages = walk(client)
    print(f"warm plan: first page {first:.3f} s, whole walk {whole:.3f} s ({pages} pages)")
    channel.close()

    change_facts(address, n)
    same = [query_pb2.GetPlanRequest(page_size=PAGE) for _ in range(args.parallel)]
    print_storm(storm(f"storm same: {args.parallel} x the same question, facts just changed", address, pid, same))
    distinct = [
        query_pb2.GetPlanRequest(max_unavailable=0.2 + 0.7 * n / args.parallel, page_size=PAGE)
        for n in range(args.parallel)
    ]
    print_storm(storm(f"storm distinct: {args.parallel} different questions", address, pid, distinct))
    print(f"\ncollector peak RSS over the run (VmHWM): {rss_kib(pid, 'VmHWM') / 1024:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=64, help="calls in each storm")
    parser.add_argument("--max-concurrent-plans", type=int, default=2, help="the collector's bound")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="admin URL; a scratch database is created and dropped")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--baseline-source", type=Path, help="also measure the collector of this source tree, first")
    args = parser.parse_args(argv)
    if args.hosts <= 0 or args.parallel <= 0:
        parser.error("--hosts and --parallel must be > 0")
    with scratch_database(args) as db_url:
        run(args, db_url)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
