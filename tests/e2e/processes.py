"""Real processes for end-to-end tests: a collector (`rmsfleet-collector serve`) on loopback
ports and agents (`rmsfleet-agent`), started from the installed console scripts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from live_collector import SETTLE_TIMEOUT

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleet"
READY = re.compile(r"gRPC on \S+ \(port (\d+)\), metrics on (https?)://([\d.]+):(\d+)/metrics")


def command(name: str) -> str:
    return str(BIN / name)


def free_port() -> int:
    """A loopback port nothing listens on (for a moment: for an address that must refuse, or a
    server that takes its port as an argument)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Collector:
    process: subprocess.Popen[str]
    address: str
    metrics_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [command("rmsfleet-collector"), *args, "--collector", self.address],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"rmsfleet-collector {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode("utf-8"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def make_token(tmp: Path, db_url: str, name: str = "e2e-admin", role: str = "admin") -> Path:
    """A token file made the break-glass way (`tokens create NAME --role ROLE --db URL`), as on a
    fresh install; the database must exist (a started collector made it)."""
    done = subprocess.run(
        [command("rmsfleet-collector"), "tokens", "create", name, "--role", role, "--db", db_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"tokens create {name} failed ({done.returncode}): {done.stderr}")
    path = tmp / f"{name}.token"
    path.write_text(done.stdout)
    path.chmod(0o600)
    return path


def start_collector(
    tmp: Path,
    db_url: str,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "collector",
    *,
    credentials: grpc.ChannelCredentials | None = None,
    unset_env: Sequence[str] = (),
) -> Collector:
    """`rmsfleet-collector serve` on ephemeral loopback ports, returned once its health service
    answers SERVING (over TLS when `credentials` are given)."""
    log_path = tmp / f"{name}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            command("rmsfleet-collector"),
            "serve",
            "--db",
            db_url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--refresh-interval",
            "0.5",
            "--full-pass-interval",
            "1",
            *extra,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset_env},
    )
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        match = READY.search(log_path.read_text())
        if match:
            collector = Collector(
                process,
                f"127.0.0.1:{match.group(1)}",
                f"{match.group(2)}://{match.group(3)}:{match.group(4)}/metrics",
                log_path,
            )
            wait_serving(collector.address, credentials=credentials)
            return collector
        if process.poll() is not None:
            raise AssertionError(f"collector exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"collector did not start:\n{log_path.read_text()}")


def wait_serving(
    address: str, timeout: float = SETTLE_TIMEOUT, credentials: grpc.ChannelCredentials | None = None
) -> None:
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        # types-grpcio-health-checking leaves the generated Check method out of HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"collector at {address} never reported SERVING")


def run_agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("rmsfleet-agent"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def report_facts(collector: Collector, *files: Path) -> None:
    """One real agent process per file, several at a time; every one must be acknowledged.

    At most REPORTING_AT_ONCE run together: they all come from 127.0.0.1, and the collector allows
    a bounded number of calls in flight per client address (docs/limits.md); real agents each
    come from their own address."""
    for start in range(0, len(files), REPORTING_AT_ONCE):
        running = [
            (
                f,
                subprocess.Popen(
                    [command("rmsfleet-agent"), "--collector", collector.address, "--facts", str(f), "--once"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for f in files[start : start + REPORTING_AT_ONCE]
        ]
        for facts, process in running:
            _out, err = process.communicate(timeout=60)
            assert process.returncode == 0, f"agent for {facts.name} exited {process.returncode}: {err}"


# Well below the collector's default of 16 calls in flight per client address.
REPORTING_AT_ONCE = 8


def write_facts(path: Path, **document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def wait_for(predicate: Any, timeout: float = SETTLE_TIMEOUT, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text exposition, or None when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()) and set(found) == set(labels):
            return float(value)
    return None
