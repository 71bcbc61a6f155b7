"""The stalled-stream attack (issue: 64 Report streams whose message never comes held all 64 worker
threads): a client on 127.0.0.2 opens 64 calls over four HTTP/2 connections and never sends a
message. Against a collector whose per-address limit is out of the way the attack works (health
from anyone else times out), which shows the test can fail; with the default limit one address
holds at most 16 workers, the rest of its calls are refused with RESOURCE_EXHAUSTED, and a real
agent's report, a query and a health check from 127.0.0.1 all answer within their deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import Collector, metric_value, run_agent, start_collector, wait_for, write_facts
from stalled_streams import StalledStreams

pytestmark = pytest.mark.e2e

CONNECTIONS, STREAMS_EACH = 4, 16  # 64 stalled calls, within each connection's stream limit


def health(collector: Collector, timeout: float) -> grpc.StatusCode:
    with grpc.insecure_channel(collector.address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return grpc.StatusCode.OK


def test_without_the_per_address_limit_64_stalled_streams_hold_every_worker(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url, ["--max-calls-per-peer", "1000"])
    try:
        with StalledStreams(collector.address, connections=CONNECTIONS, streams_each=STREAMS_EACH):
            # Every one of the 64 workers waits for a message that never comes.
            wait_for(lambda: health(collector, timeout=2) == grpc.StatusCode.DEADLINE_EXCEEDED, what="the attack")
    finally:
        assert collector.stop() == 0, collector.log()


def test_with_the_default_limit_everyone_else_is_answered_within_the_deadline(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        with StalledStreams(collector.address, connections=CONNECTIONS, streams_each=STREAMS_EACH):
            # 16 calls of 127.0.0.2 hold a worker each; its other 48 were refused at once.
            wait_for(
                lambda: (
                    (metric_value(collector.metrics(), "rmsfleet_limited_calls_total", limit="in-flight") or 0)
                    >= CONNECTIONS * STREAMS_EACH - 16
                ),
                what="the attacker's calls beyond its 16 to be refused",
            )
            assert health(collector, timeout=5) == grpc.StatusCode.OK
            facts = write_facts(
                tmp_path / "ws.json",
                host_id="ws-1.corp.example",
                hostname="ws-1.corp.example",
                forest="corp.example",
                client={"version": "SP2", "activation": "self", "cluster": None},
            )
            done = run_agent("--collector", collector.address, "--facts", str(facts), "--once", "--deadline", "5")
            assert done.returncode == 0, done.stderr
            listed = collector.cli("hosts", "--json", "--timeout", "5")
            assert '"host_id": "ws-1.corp.example"' in listed.stdout
        log = collector.log()
        assert "refused Report from ipv4:127.0.0.2:" in log
        assert "too many calls in flight from ipv4:127.0.0.2: at most 16 at once" in log
        assert log.count("too many calls in flight from ipv4:127.0.0.2") == 1, "logged once a minute per address"
    finally:
        assert collector.stop() == 0, collector.log()
