"""How fast the spool turns a folder of facts files into acknowledged reports.

    .venv/bin/python bench/spool_bench.py --files 2000
    .venv/bin/python bench/spool_bench.py --files 2000 --batch-size 50 --concurrency 4

Writes --files facts files (one host each) into a fresh folder, starts a real collector (SQLite
in a temporary folder) and runs the real `rmsfleet-agent spool --once` on the folder with
`settle_seconds` 0.1, then checks that the collector holds every host. Prints the agent's wall
time (minus the settle wait), files per second, its CPU time per file, its peak RSS, and how long a second run takes on
an empty folder (the cost of looking when there is nothing to do). Every report costs one fsync
in its host's outbox and one round trip to the collector; the disk's fsync latency bounds the
taking side, the collector's group commit the sending side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest_bench import BIN, start_collector, stop

SETTLE = 0.1


def write_files(folder: Path, count: int) -> None:
    for number in range(count):
        host_id = f"bench-{number:06d}"
        document = {
            "host_id": host_id,
            "hostname": f"{host_id}.corp.example",
            "forest": "corp.example",
            "server": None,
            "client": {"version": "SP2", "activation": "self", "cluster": None, "activated_users": 1},
        }
        temporary = folder / f"{host_id}.tmp"
        temporary.write_text(json.dumps(document))
        temporary.replace(folder / f"{host_id}.json")


def run_spool(work: Path, address: str, folder: Path, batch_size: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the agent process)."""
    config = work / "agent.toml"
    config.write_text(
        f"""
[agent]
collectors = ["{address}"]
state_dir = "{work / "state"}"

[spool]
dir = "{folder}"
settle_seconds = {SETTLE}
batch_size = {batch_size}
concurrency = {concurrency}
"""
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "rmsfleet-agent"), "spool", "--config", str(config), "--once", "--log-level", "WARNING"],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"rmsfleet-agent spool exited {done.returncode}: {done.stderr[-2000:]}")
    # Only the agent was waited for in between (the collector is still running).
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spool-bench-") as scratch:
        work = Path(scratch)
        folder = work / "spool"
        folder.mkdir()
        write_files(folder, args.files)
        db = work / "rmsfleet.db"
        collector = start_collector(f"sqlite:///{db}", work, [])
        try:
            first, cpu = run_spool(work, collector.address, folder, args.batch_size, args.concurrency)
            peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            idle, _idle_cpu = run_spool(work, collector.address, folder, args.batch_size, args.concurrency)
        finally:
            stop(collector)
        with sqlite3.connect(db) as connection:
            stored = connection.execute("SELECT COUNT(*) FROM hosts").fetchone()[0]
        left = len(list(folder.glob("*.json")))
    if stored != args.files or left:
        print(f"FAILED: the collector holds {stored} of {args.files} hosts, {left} files left", file=sys.stderr)
        return 1
    working = first - SETTLE
    print(f"files: {args.files}, batch size {args.batch_size}, concurrency {args.concurrency}, cpus {os.cpu_count()}")
    print(
        f"spool --once: {first:.1f} s wall ({working:.1f} s after the settle wait), {args.files / working:.0f} files/s"
    )
    print(f"agent CPU: {cpu:.1f} s ({cpu / args.files * 1000:.1f} ms per file); load average {os.getloadavg()[0]:.1f}")
    print(f"spool --once on the empty folder afterwards: {idle:.2f} s (start-up, one look, one drain)")
    print(f"peak RSS of the agent process: {peak_rss_mib:.0f} MiB")
    print(f"collector holds {stored} hosts; folder empty")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
