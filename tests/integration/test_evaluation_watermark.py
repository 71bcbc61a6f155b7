"""The evaluation watermark with the real group-commit writer and evaluator on SQLite and
PostgreSQL: an acknowledged report is already counted, waiting for the reports committed before
a call gives an answer that reflects them, heartbeats need no pass, a host back from being stale
resolves in the next pass, and a pass that cannot run (the advisory lock held elsewhere) holds
the watermark back instead of skipping the reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.domain.model import PolicyConfig
from rmsfleet.collector.evaluator import Evaluator
from rmsfleet.collector.ingest import GroupCommitWriter
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.evaluation_sql import EVALUATION_LOCK_KEY
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def client(host_id: str, version: Version) -> HostFacts:
    activation = Activation.INTERNET if version is Version.RTM else Activation.SELF
    return HostFacts(host_id, host_id, "corp.example", None, ClientFacts(version, activation, None))


class Collector:
    """The writer and the evaluator thread as `serve` wires them, with a clock the test moves."""

    def __init__(self, sessions: sessionmaker[Session], stale_after: timedelta = timedelta(days=365)) -> None:
        self.clock = Clock()
        self.sequence = 0
        metrics = CollectorMetrics(CollectorRegistry(), "test")
        self.evaluator = Evaluator(
            sessions,
            PolicyConfig(stale_after=stale_after),
            self.clock,
            metrics,
            AggregatesHolder(),
            refresh_interval=0.2,
            full_pass_interval=3600,
            debounce=0.05,
        )
        self.writer = GroupCommitWriter(
            sessions, metrics, self.evaluator.on_committed, record_changes=self.evaluator.record_changes
        )
        self.sessions = sessions

    def __enter__(self) -> Collector:
        self.evaluator.evaluate_once()
        self.writer.start()
        self.evaluator.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.writer.stop()
        self.evaluator.stop()

    def report(self, *facts: HostFacts) -> list[AppliedReport]:
        """Submit and wait for the acknowledgements, as the gRPC servicer does."""
        self.sequence += 1
        futures = [
            self.writer.submit(IncomingReport(f, self.clock.now, self.sequence, "test", self.clock.now)) for f in facts
        ]
        return [f.result(timeout=30) for f in futures]

    def open_violations(self, policy: str) -> list[str]:
        with self.sessions() as session:
            found = queries.list_violations(session, queries.ViolationFilter(policy=policy), None, 100)
        return [v.subject for v in found]


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def test_the_listener_counts_a_batch_before_any_report_of_it_is_acknowledged(
    sessions: sessionmaker[Session],
) -> None:
    acknowledged_when_heard: list[bool] = []
    futures: list[Future[AppliedReport]] = []

    def listener(results: Sequence[AppliedReport], _feed_id: int | None) -> None:
        acknowledged_when_heard.append(any(f.done() for f in futures))

    writer = GroupCommitWriter(sessions, CollectorMetrics(CollectorRegistry(), "test"), listener)
    futures.extend(writer.submit(IncomingReport(client(f"ws{i}", Version.SP2), T0, 1, "t", T0)) for i in range(5))
    writer.start()
    for future in futures:
        future.result(timeout=30)
    writer.stop()
    assert acknowledged_when_heard == [False]


def test_an_answer_after_waiting_reflects_every_acknowledged_report(sessions: sessionmaker[Session]) -> None:
    with Collector(sessions) as collector:
        collector.report(client("ws1", Version.RTM), client("ws2", Version.SP2))
        collector.report(client("ws3", Version.RTM))
        covered, mark = collector.evaluator.watermark.wait_for_committed(timeout=30)
        assert covered and mark.reports_committed == mark.reports_evaluated == 3
        assert mark.evaluated_at is not None
        assert collector.open_violations("client-not-self-activating") == ["ws1", "ws3"]

        collector.report(client("ws1", Version.SP2))
        covered, _mark = collector.evaluator.watermark.wait_for_committed(timeout=30)
        assert covered
        assert collector.open_violations("client-not-self-activating") == ["ws3"]


def test_heartbeats_are_covered_without_a_pass(sessions: sessionmaker[Session]) -> None:
    with Collector(sessions) as collector:
        collector.report(client("ws1", Version.SP2))
        covered, first = collector.evaluator.watermark.wait_for_committed(timeout=30)
        assert covered
        collector.report(client("ws1", Version.SP2))  # same facts: a heartbeat
        mark = collector.evaluator.watermark.snapshot()
        # counted and covered by the time it is acknowledged, by the same pass as before
        assert mark.pending == 0 and mark.reports_committed == 2
        assert mark.evaluated_at == first.evaluated_at


def test_a_host_back_from_being_stale_resolves_in_the_next_pass(sessions: sessionmaker[Session]) -> None:
    with Collector(sessions, stale_after=timedelta(minutes=15)) as collector:
        collector.report(client("ws1", Version.SP2))
        collector.clock.now = T0 + timedelta(hours=1)
        collector.evaluator.evaluate_once()  # the periodic full pass finds it stale
        assert collector.open_violations("stale-agent") == ["ws1"]
        collector.report(client("ws1", Version.SP2))  # a heartbeat, facts unchanged
        covered, _mark = collector.evaluator.watermark.wait_for_committed(timeout=30)
        assert covered
        assert collector.open_violations("stale-agent") == []


@pytest.mark.postgres
def test_a_pass_that_cannot_take_the_lock_holds_the_watermark_back(postgres_url: str) -> None:
    """Another replica evaluating (here: the test holding the advisory lock) keeps this
    collector's reports pending, visibly, instead of counting them evaluated; they are evaluated
    once the lock is free."""
    engine = create_db_engine(postgres_url)
    upgrade_to_head(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    try:
        with Collector(sessions) as collector, engine.connect() as other:
            other.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": EVALUATION_LOCK_KEY})
            collector.report(client("ws1", Version.RTM))
            covered, mark = collector.evaluator.watermark.wait_for_committed(timeout=1.5)
            assert not covered and mark.pending == 1
            assert mark.lag_seconds(T0 + timedelta(seconds=10)) == 10.0
            assert collector.open_violations("client-not-self-activating") == []
            other.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": EVALUATION_LOCK_KEY})
            covered, mark = collector.evaluator.watermark.wait_for_committed(timeout=30)
            assert covered and mark.pending == 0
            assert collector.open_violations("client-not-self-activating") == ["ws1"]
    finally:
        engine.dispose()
