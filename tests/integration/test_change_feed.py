"""The evaluation change feed on SQLite and PostgreSQL, with the real group-commit writer and
evaluators: each batch writes the hosts it changed in one statement, a pass consumes the rows
(every writer's) in bounded takes, a pass that never committed leaves them for the next one and
evaluating them again changes nothing, and a replica that does not evaluate sees its watermark
move once the evaluating one has consumed its rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy
from prometheus_client import CollectorRegistry
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.domain.model import PolicyConfig
from rmsfleet.collector.evaluator import Evaluator
from rmsfleet.collector.ingest import GroupCommitWriter
from rmsfleet.collector.leadership import EvaluationLeadership
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.change_feed_sql import consume_changes, feed_backlog
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.models import ChangeFeedRow, ViolationRow
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = "client-not-self-activating"


def client(host_id: str, version: Version) -> HostFacts:
    activation = Activation.INTERNET if version is Version.RTM else Activation.SELF
    return HostFacts(host_id, host_id, "corp.example", None, ClientFacts(version, activation, None))


class Replica:
    """One collector's writer and evaluator (its loop not started: the test runs the passes)."""

    def __init__(
        self, sessions: sessionmaker[Session], feed_batch: int = 5000, leadership: EvaluationLeadership | None = None
    ) -> None:
        self.sessions = sessions
        self.sequence = 0
        metrics = CollectorMetrics(CollectorRegistry(), "test")
        self.evaluator = Evaluator(
            sessions,
            PolicyConfig(),
            lambda: T0,
            metrics,
            AggregatesHolder(),
            feed_batch=feed_batch,
            leadership=leadership,
        )
        self.writer = GroupCommitWriter(
            sessions, metrics, self.evaluator.on_committed, record_changes=self.evaluator.record_changes
        )
        self.writer.start()

    def close(self) -> None:
        self.writer.stop()

    def report(self, *facts: HostFacts) -> list[AppliedReport]:
        self.sequence += 1
        futures = [self.writer.submit(IncomingReport(f, T0, self.sequence, "test", T0)) for f in facts]
        return [f.result(timeout=30) for f in futures]


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def feed_hosts(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(ChangeFeedRow.host_id).order_by(ChangeFeedRow.id)))


def open_subjects(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        found = queries.list_violations(session, queries.ViolationFilter(policy=POLICY), None, 100)
    return sorted(v.subject for v in found)


def violation_rows(sessions: sessionmaker[Session]) -> list[tuple[str, datetime]]:
    with sessions() as session:
        rows = session.execute(select(ViolationRow.subject, ViolationRow.since).where(ViolationRow.policy == POLICY))
        return sorted((r.subject, r.since) for r in rows)


def test_a_batch_writes_the_hosts_it_changed_in_one_statement(sessions: sessionmaker[Session]) -> None:
    replica = Replica(sessions)
    inserts: list[int] = []

    def count_feed_inserts(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVALUATION_FEED"):
            inserts.append(1)

    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", count_feed_inserts)
    try:
        replica.report(*(client(f"ws{i}", Version.SP2) for i in range(50)))
        assert len(inserts) == 1  # fifty new hosts, one insert
        assert sorted(feed_hosts(sessions)) == sorted(f"ws{i}" for i in range(50))

        replica.evaluator.evaluate_feed()
        replica.report(client("ws1", Version.SP2), client("ws2", Version.RTM))  # a heartbeat and a change
        assert feed_hosts(sessions) == ["ws2"]
        assert len(inserts) == 2
        replica.report(client("ws1", Version.SP2))  # heartbeats alone write nothing
        assert len(inserts) == 2
    finally:
        event.remove(engine, "before_cursor_execute", count_feed_inserts)
        replica.close()


def test_passes_consume_the_feed_in_bounded_takes_and_the_watermark_follows(
    sessions: sessionmaker[Session],
) -> None:
    replica = Replica(sessions, feed_batch=2)
    try:
        replica.report(*(client(f"ws{i}", Version.RTM) for i in range(5)))
        assert replica.evaluator.watermark.snapshot().pending == 5
        replica.evaluator.evaluate_feed()
        # the two oldest rows are consumed and evaluated, the rest wait; so does the batch
        assert feed_hosts(sessions) == ["ws2", "ws3", "ws4"]
        assert open_subjects(sessions) == ["ws0", "ws1"]
        # A batch is covered only once all its rows are consumed. The writer may have committed
        # the five reports as one batch or several (a loaded machine splits them), so ws0 alone
        # may be covered already; the reports of ws2-ws4 are pending whatever the split.
        assert 3 <= replica.evaluator.watermark.snapshot().pending <= 5
        with sessions() as session:
            assert feed_backlog(session, 1000).rows == 3
            assert feed_backlog(session, 2).rows == 2  # counted up to the bound
        replica.evaluator.evaluate_feed()
        replica.evaluator.evaluate_feed()
        assert feed_hosts(sessions) == []
        assert open_subjects(sessions) == [f"ws{i}" for i in range(5)]
        mark = replica.evaluator.watermark.snapshot()
        assert mark.pending == 0 and mark.evaluated_at == T0
    finally:
        replica.close()


def test_rows_of_a_pass_that_never_committed_are_evaluated_by_the_next_and_replays_change_nothing(
    sessions: sessionmaker[Session],
) -> None:
    first, second = Replica(sessions), Replica(sessions)
    try:
        first.report(client("ws1", Version.RTM), client("ws2", Version.SP2))
        # A replica takes the rows and dies before its commit: its transaction rolls back.
        with sessions.begin() as session:
            assert consume_changes(session, 100).rows == 2
            session.rollback()
        assert sorted(feed_hosts(sessions)) == ["ws1", "ws2"]
        second.evaluator.evaluate_feed()
        assert feed_hosts(sessions) == []
        assert open_subjects(sessions) == ["ws1"]
        before = violation_rows(sessions)

        # The same changes once more (a pass that evaluated and died before consuming, replayed):
        # the stored violation stays as it was, with its `since`; none is opened twice.
        with sessions.begin() as session:
            session.execute(
                sqlalchemy.insert(ChangeFeedRow),
                [{"host_id": h, "touches_servers": False, "created_at": T0} for h in ("ws1", "ws2")],
            )
        first.evaluator.evaluate_feed()
        assert feed_hosts(sessions) == []
        assert violation_rows(sessions) == before
    finally:
        first.close()
        second.close()


def test_a_replica_that_does_not_evaluate_is_covered_once_another_consumed_its_rows(
    sessions: sessionmaker[Session],
) -> None:
    evaluating, other = Replica(sessions), Replica(sessions)
    try:
        other.report(client("ws1", Version.RTM))
        evaluating.report(client("ws2", Version.RTM))
        other.evaluator.follow_feed()
        assert other.evaluator.watermark.snapshot().pending == 1  # nobody consumed its row yet

        evaluating.evaluator.evaluate_feed()  # takes every replica's rows
        assert open_subjects(sessions) == ["ws1", "ws2"]
        assert evaluating.evaluator.watermark.snapshot().pending == 0
        assert other.evaluator.watermark.snapshot().pending == 1  # it has not looked yet
        other.evaluator.follow_feed()
        covered, mark = other.evaluator.watermark.wait_for_committed(timeout=0)
        assert covered and mark.reports_evaluated == 1 and mark.evaluated_at is not None
    finally:
        evaluating.close()
        other.close()


@pytest.mark.postgres
def test_a_row_that_commits_after_a_higher_one_was_consumed_is_not_skipped(postgres_url: str) -> None:
    """Ids come from a sequence and transactions commit in any order: consuming by deletion, not
    by a high-water mark, evaluates the late row in the next pass."""
    engine = create_db_engine(postgres_url)
    upgrade_to_head(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    replica = Replica(sessions)
    try:
        with sessions.begin() as slow:
            slow.execute(
                sqlalchemy.insert(ChangeFeedRow), [{"host_id": "late", "touches_servers": False, "created_at": T0}]
            )
            replica.report(client("ws1", Version.RTM))  # a higher id, committed first
            replica.evaluator.evaluate_feed()
            assert open_subjects(sessions) == ["ws1"]
            slow.execute(
                sqlalchemy.insert(sqlalchemy.table("hosts", *(sqlalchemy.column(c) for c in HOST_COLUMNS))),
                [late_host_row()],
            )
        with sessions() as session:
            assert session.execute(select(func.count()).select_from(ChangeFeedRow)).scalar_one() == 1
        replica.evaluator.evaluate_feed()
        assert open_subjects(sessions) == ["late", "ws1"]
    finally:
        replica.close()
        engine.dispose()


@pytest.mark.postgres
def test_only_the_leading_replica_evaluates_and_another_takes_over_when_it_lets_go(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    upgrade_to_head(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    first = Replica(sessions, leadership=EvaluationLeadership(engine, recheck=0))
    second = Replica(sessions, leadership=EvaluationLeadership(engine, recheck=0))
    try:
        assert first.evaluator.evaluate_once() is not None  # it takes the leadership
        assert second.evaluator.evaluate_once() is None  # it does not evaluate
        assert (first.evaluator.leads(), second.evaluator.leads()) == (True, False)

        first.evaluator.stop()  # a graceful stop lets the leadership go
        assert second.evaluator.evaluate_once() is not None
        assert second.evaluator.leads()
    finally:
        first.close()
        second.close()
        second.evaluator.stop()
        engine.dispose()


HOST_COLUMNS = (
    "host_id",
    "hostname",
    "forest",
    "client_version",
    "client_activation",
    "first_seen",
    "last_seen",
    "observed_at",
    "last_sequence",
    "agent_version",
)


def late_host_row() -> dict[str, object]:
    return {
        "host_id": "late",
        "hostname": "late",
        "forest": "corp.example",
        "client_version": "RTM",
        "client_activation": "internet",
        "first_seen": T0,
        "last_seen": T0,
        "observed_at": T0,
        "last_sequence": 1,
        "agent_version": "test",
    }
