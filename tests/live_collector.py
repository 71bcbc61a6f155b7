"""A real collector in this process (server.start: the group-commit writer, the evaluator, gRPC on
a loopback port, /metrics over HTTP) and what the poison tests do with it: send reports over real
gRPC, read health and metrics, hold a database lock so the writer waits."""

from __future__ import annotations

import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import sqlalchemy
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from rmsfleet.collector.config import ServeConfig
from rmsfleet.collector.server import RunningCollector, start
from rmsfleet.v1 import facts_pb2, inventory_pb2, inventory_pb2_grpc, query_pb2_grpc

INVENTORY = "rmsfleet.v1.InventoryService"
QUERY = "rmsfleet.v1.QueryService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Live:
    running: RunningCollector
    channel: grpc.Channel
    db_url: str

    @property
    def inventory(self) -> inventory_pb2_grpc.InventoryServiceStub:
        return inventory_pb2_grpc.InventoryServiceStub(self.channel)

    @property
    def query(self) -> query_pb2_grpc.QueryServiceStub:
        return query_pb2_grpc.QueryServiceStub(self.channel)

    def raw(self, method: str) -> Callable[..., bytes]:
        """A caller that sends bytes as they are: how a broken client sends what protobuf refuses."""
        return self.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    def health(self, service: str = "") -> int:
        # types-grpcio-health-checking leaves the generated Check method out of HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(self.channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return status

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics, fetched over HTTP; 0 when absent."""
        url = f"http://127.0.0.1:{self.running.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stored_hosts(self) -> dict[str, tuple[str, int]]:
        """host_id -> (hostname, last_sequence), read straight from the database."""
        engine = sqlalchemy.create_engine(self.db_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(sqlalchemy.text("SELECT host_id, hostname, last_sequence FROM hosts"))
                return {row.host_id: (row.hostname, row.last_sequence) for row in rows}
        finally:
            engine.dispose()

    def sql(self, *statements: str) -> None:
        engine = sqlalchemy.create_engine(self.db_url)
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.execute(sqlalchemy.text(statement))
        finally:
            engine.dispose()


@contextmanager
def live_collector(
    db_url: str,
    *,
    stall_after: float = 60.0,
    full_pass_interval: float = 0.5,
    enroll_secret_file: Any = None,
    **settings: Any,
) -> Iterator[Live]:
    """`settings`: more ServeConfig fields (max_calls_per_peer=..., ...)."""
    config = ServeConfig(
        db_url=db_url,
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        refresh_interval=0.2,
        full_pass_interval=full_pass_interval,
        grace_seconds=1.0,
        enroll_secret_file=enroll_secret_file,
        **settings,
    )
    running = start(config, stall_after=stall_after, health_interval=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    try:
        yield Live(running, channel, db_url)
    finally:
        channel.close()
        running.stop(1.0)


def now_micros() -> int:
    """What a fresh agent outbox starts its sequence at (agent/outbox.py)."""
    return int(time.time() * 1_000_000)


def facts(
    host_id: str, hostname: str | None = None, client_version: facts_pb2.Version.ValueType = facts_pb2.VERSION_SP2
) -> facts_pb2.HostFacts:
    return facts_pb2.HostFacts(
        host_id=host_id,
        hostname=hostname or f"{host_id}.corp.example",
        forest="corp.example",
        client=facts_pb2.ClientFacts(version=client_version, activation=facts_pb2.ACTIVATION_SELF),
    )


def report(
    host_id: str,
    sequence: int,
    hostname: str | None = None,
    client_version: facts_pb2.Version.ValueType = facts_pb2.VERSION_SP2,
) -> inventory_pb2.ReportRequest:
    observed = Timestamp()
    observed.FromDatetime(datetime.now(UTC))
    return inventory_pb2.ReportRequest(
        facts=facts(host_id, hostname, client_version), agent_version="test", observed_at=observed, sequence=sequence
    )


# How long a test waits for something that is bound to happen (here and in tests/e2e). Generous
# on purpose: on a shared 2-core CI machine under load, starting a Python process alone has taken
# over 20 s, and a passing test never waits it out (every wait returns once its condition holds).
SETTLE_TIMEOUT = 90.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = SETTLE_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@contextmanager
def database_lock(db_url: str, postgres_lock: str = "LOCK TABLE hosts IN EXCLUSIVE MODE") -> Iterator[None]:
    """Hold a lock that makes the group-commit writer wait, released on exit. PostgreSQL: the
    statement given (by default one that blocks the writer's SELECT ... FOR UPDATE and leaves
    plain reads alone); SQLite: the database's write lock (the writer waits in its busy timeout)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        lite = sqlite3.connect(url.database, isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
        return
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(sqlalchemy.text(postgres_lock))
            try:
                yield
            finally:
                transaction.rollback()
    finally:
        engine.dispose()


def is_postgres(db_url: str) -> bool:
    return make_url(db_url).get_backend_name() == "postgresql"
