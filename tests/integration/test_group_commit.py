"""The group-commit writer on SQLite and PostgreSQL: queued reports share one transaction, each
is acknowledged only once its batch committed, a full queue pushes back, and a stopping writer
commits what it accepted and refuses the rest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.ingest import GroupCommitWriter, IngestOverloaded, IngestStopped
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport, Outcome
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.models import HostRow
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def report(i: int) -> IncomingReport:
    facts = HostFacts(f"ws{i:03d}", f"ws{i:03d}", "corp.example", None, ClientFacts(Version.SP2, Activation.SELF, None))
    return IncomingReport(facts, observed_at=T0, sequence=1, agent_version="test", received_at=T0)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def test_queued_reports_commit_in_one_transaction_and_are_acked_after_it(sessions: sessionmaker[Session]) -> None:
    batches: list[Sequence[AppliedReport]] = []
    metrics = CollectorMetrics(CollectorRegistry(), "test")
    writer = GroupCommitWriter(sessions, metrics, lambda r, _f: batches.append(r), max_batch=1000)
    futures = [writer.submit(report(i)) for i in range(50)]  # queued before the writer runs
    assert not any(f.done() for f in futures)
    writer.start()
    results = [f.result(timeout=30) for f in futures]
    writer.stop()
    assert [len(b) for b in batches] == [50]
    assert all(r.outcome is Outcome.APPLIED for r in results)
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(HostRow)).scalar_one() == 50


def test_a_full_queue_pushes_back_and_a_stopping_writer_refuses_new_reports(sessions: sessionmaker[Session]) -> None:
    metrics = CollectorMetrics(CollectorRegistry(), "test")
    writer = GroupCommitWriter(sessions, metrics, lambda _r, _f: None, max_queue=3)
    accepted = [writer.submit(report(i)) for i in range(3)]
    with pytest.raises(IngestOverloaded):
        writer.submit(report(3))
    writer.start()
    writer.stop()  # drains what it accepted
    assert all(f.result(timeout=30).outcome is Outcome.APPLIED for f in accepted)
    with pytest.raises(IngestStopped):
        writer.submit(report(4))
