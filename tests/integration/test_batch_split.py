"""The group-commit writer on SQLite and PostgreSQL when a batch fails: a report whose values the
database refuses (here sent past the edge's bounds, as a bug or a new column type would let one
through) is refused alone and the rest of its batch commits; an error that is the database's (a
lock timeout) fails the batch for a retry, counted as a database error, and refuses nothing; the
writer outlives a failing listener."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy
from live_collector import database_lock, is_postgres
from prometheus_client import CollectorRegistry
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.ingest import GroupCommitWriter, IngestFailed, ReportRefused
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport, Outcome
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.models import HostRow
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

NOW = datetime.now(UTC)


def report(host_id: str, agent_version: str = "test", activated_users: int | None = None) -> IncomingReport:
    facts = HostFacts(
        host_id,
        f"{host_id}.corp.example",
        "corp.example",
        None,
        ClientFacts(Version.SP2, Activation.SELF, None, activated_users),
    )
    return IncomingReport(facts, observed_at=NOW, sequence=1, agent_version=agent_version, received_at=NOW)


@pytest.fixture
def engine(db_url: str) -> Iterator[sqlalchemy.Engine]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


def stored(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(HostRow.host_id)))


def run_batch(writer: GroupCommitWriter, reports: Sequence[IncomingReport]) -> list[Future[AppliedReport]]:
    """Queue the reports before the writer starts: they make up one batch."""
    futures = [writer.submit(r) for r in reports]
    writer.start()
    for future in futures:
        future.exception(timeout=60)
    return futures


def test_reports_the_database_refuses_are_refused_alone_and_the_batch_commits(
    engine: sqlalchemy.Engine, db_url: str
) -> None:
    sessions = sessionmaker(engine, expire_on_commit=False)
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, "test")
    committed: list[AppliedReport] = []
    writer = GroupCommitWriter(sessions, metrics, lambda r, _f: committed.extend(r))
    bad = {
        # SQLite cannot bind it (OverflowError, raised outside the driver); PostgreSQL: out of range.
        "bad-users": report("bad-users", activated_users=2**70),
    }
    if is_postgres(db_url):
        bad["bad-nul"] = report("bad-nul", agent_version="1.0\x00")  # NUL in text
        bad["bad-long"] = report("bad-long", agent_version="v" * 65)  # longer than the column
    honest = [report(f"ws-{i:02d}") for i in range(40)]
    batch = [*honest[:13], bad["bad-users"], *honest[13:27], *list(bad.values())[1:], *honest[27:]]
    futures = dict(zip((r.facts.host_id for r in batch), run_batch(writer, batch), strict=True))
    for host_id in bad:
        error = futures[host_id].exception()
        assert isinstance(error, ReportRefused), (host_id, error)
        assert error.reason.startswith("the database refused this report alone: ")
    assert all(futures[r.facts.host_id].result().outcome is Outcome.APPLIED for r in honest)
    assert stored(sessions) == {r.facts.host_id for r in honest}
    assert sorted(r.host_id for r in committed) == sorted(r.facts.host_id for r in honest)
    assert registry.get_sample_value("rmsfleet_database_errors_total", {"operation": "ingest"}) == 0
    # The writer goes on.
    assert writer.submit(report("after")).result(timeout=30).outcome is Outcome.APPLIED
    writer.stop()


def test_a_lock_timeout_fails_the_whole_batch_for_a_retry_and_refuses_nothing(db_url: str) -> None:
    # The writer's engine gives up on a lock after 200 ms (the default waits much longer).
    if is_postgres(db_url):
        engine = sqlalchemy.create_engine(db_url, connect_args={"options": "-c lock_timeout=200"})
    else:
        engine = sqlalchemy.create_engine(db_url, connect_args={"timeout": 0.2})

        @event.listens_for(engine, "connect")
        def wal(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    upgrade_to_head(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, "test")
    writer = GroupCommitWriter(sessions, metrics, lambda _r, _f: None)
    try:
        with database_lock(db_url):
            futures = run_batch(writer, [report(f"ws-{i}") for i in range(5)])
        for future in futures:
            assert isinstance(future.exception(), IngestFailed)
        assert registry.get_sample_value("rmsfleet_database_errors_total", {"operation": "ingest"}) == 1
        assert stored(sessions) == set()
        # The lock gone, the agents' retries are applied.
        assert writer.submit(report("ws-0")).result(timeout=30).outcome is Outcome.APPLIED
    finally:
        writer.stop()
        engine.dispose()


def test_a_failing_listener_is_counted_and_the_writer_goes_on(engine: sqlalchemy.Engine) -> None:
    sessions = sessionmaker(engine, expire_on_commit=False)
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, "test")

    def listener(results: Sequence[AppliedReport], _feed_id: int | None) -> None:
        raise RuntimeError("the listener broke " + "x" * 10_000)

    writer = GroupCommitWriter(sessions, metrics, listener)
    writer.start()
    try:
        for i in range(3):
            assert writer.submit(report(f"ws-{i}")).result(timeout=30).outcome is Outcome.APPLIED
        assert registry.get_sample_value("rmsfleet_loop_errors_total", {"loop": "writer"}) == 3
        assert writer.progress.healthy()
    finally:
        writer.stop()
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(HostRow)).scalar_one() == 3
