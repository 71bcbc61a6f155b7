"""Node keys in the store and the group-commit writer, on SQLite and PostgreSQL: enroll, check a
batch with one query, revoke, re-enroll; a report never writes a host whose key it lacks."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.enrollment import KeyProblem, NodeKeyRejected, hash_node_key, new_node_key
from rmsfleet.collector.ingest import GroupCommitWriter
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport, Outcome
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.identity_sql import check_node_keys, node_key_record, revoke_node_key, save_node_key
from rmsfleet.collector.store.models import HostRow, NodeKeyRow
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def client(host_id: str, version: Version = Version.SP2) -> HostFacts:
    return HostFacts(
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        server=None,
        client=ClientFacts(version, Activation.SELF, None),
    )


def report(facts: HostFacts, sequence: int) -> IncomingReport:
    return IncomingReport(facts, observed_at=T0, sequence=sequence, agent_version="test", received_at=T0)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def enroll(sessions: sessionmaker[Session], host_id: str, at: datetime = T0) -> str:
    key = new_node_key()
    with sessions.begin() as session:
        save_node_key(session, host_id, hash_node_key(key), at)
    return key


def test_a_node_key_is_random_url_safe_and_only_its_hash_is_stored(sessions: sessionmaker[Session]) -> None:
    key = enroll(sessions, "a")
    assert len(key) == 43 and key.replace("-", "").replace("_", "").isalnum()
    assert new_node_key() != key
    with sessions() as session:
        row = session.get(NodeKeyRow, "a")
        assert row is not None
        assert row.key_hash == hash_node_key(key) and key not in row.key_hash
        assert row.key_hash.startswith("sha256:") and row.revoked_at is None


def test_each_key_fits_only_its_own_host(sessions: sessionmaker[Session]) -> None:
    key_a, key_b = enroll(sessions, "a"), enroll(sessions, "b")
    with sessions() as session:
        problems = check_node_keys(
            session,
            [
                ("a", hash_node_key(key_a)),
                ("b", hash_node_key(key_b)),
                ("b", hash_node_key(key_a)),  # a's key claiming b
                ("c", hash_node_key(key_a)),  # a host that never enrolled
                ("a", None),
            ],
        )
    assert problems == {2: KeyProblem.WRONG_HOST, 3: KeyProblem.NOT_ENROLLED, 4: KeyProblem.MISSING}


def test_revocation_refuses_the_old_key_and_enrolling_again_replaces_it(sessions: sessionmaker[Session]) -> None:
    old = enroll(sessions, "a")
    with sessions.begin() as session:
        record = revoke_node_key(session, "a", T0 + timedelta(hours=1))
    assert record is not None and record.revoked_at == T0 + timedelta(hours=1)
    with sessions.begin() as session:
        # Revoking again keeps the first revocation time.
        again = revoke_node_key(session, "a", T0 + timedelta(hours=2))
        assert again is not None and again.revoked_at == T0 + timedelta(hours=1)
        assert revoke_node_key(session, "never-enrolled", T0) is None
    with sessions() as session:
        assert check_node_keys(session, [("a", hash_node_key(old))]) == {0: KeyProblem.REVOKED}
        assert check_node_keys(session, [("a", hash_node_key(new_node_key()))]) == {0: KeyProblem.WRONG_HOST}
    new = enroll(sessions, "a", T0 + timedelta(hours=3))
    with sessions() as session:
        assert check_node_keys(session, [("a", hash_node_key(new))]) == {}
        assert check_node_keys(session, [("a", hash_node_key(old))]) == {0: KeyProblem.WRONG_HOST}
        record = node_key_record(session, "a")
        assert record is not None and record.revoked_at is None and record.created_at == T0 + timedelta(hours=3)


def test_a_batch_is_checked_with_one_query(sessions: sessionmaker[Session]) -> None:
    keys = {f"h{i:03}": enroll(sessions, f"h{i:03}") for i in range(200)}
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    with sessions() as session:
        bind = session.get_bind()
        event.listen(bind, "before_cursor_execute", record)
        try:
            problems = check_node_keys(session, [(h, hash_node_key(k)) for h, k in keys.items()])
        finally:
            event.remove(bind, "before_cursor_execute", record)
    assert problems == {}
    assert len([s for s in statements if "node_keys" in s]) == 1


def collect(future: Future[AppliedReport]) -> AppliedReport | NodeKeyRejected:
    try:
        return future.result(timeout=30)
    except NodeKeyRejected as exc:
        return exc


def test_the_writer_applies_only_reports_whose_key_fits_their_host(sessions: sessionmaker[Session]) -> None:
    key_a, key_b = enroll(sessions, "a"), enroll(sessions, "b")
    committed: list[AppliedReport] = []
    writer = GroupCommitWriter(
        sessions,
        CollectorMetrics(CollectorRegistry(), "test"),
        lambda r, _f: committed.extend(r),
        require_node_keys=True,
    )
    # Queued before the writer starts: one batch, one transaction.
    futures = [
        writer.submit(report(client("a"), 1), hash_node_key(key_a)),
        writer.submit(report(client("b", Version.RTM), 1), hash_node_key(key_a)),  # a's key for b
        writer.submit(report(client("c"), 1), hash_node_key(key_a)),  # c never enrolled
        writer.submit(report(client("b"), 2), None),
    ]
    writer.start()
    try:
        results = [collect(f) for f in futures]
    finally:
        writer.stop()
    assert isinstance(results[0], AppliedReport) and results[0].outcome is Outcome.APPLIED
    assert [r.problem for r in results[1:] if isinstance(r, NodeKeyRejected)] == [
        KeyProblem.WRONG_HOST,
        KeyProblem.NOT_ENROLLED,
        KeyProblem.MISSING,
    ]
    assert str(results[1]).startswith("node key does not belong to host b: another machine enrolled as b")
    assert [r.host_id for r in committed] == ["a"]
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(HostRow)).scalar_one() == 1
        assert session.get(HostRow, "b") is None
    # b with its own key is accepted.
    writer = GroupCommitWriter(sessions, CollectorMetrics(CollectorRegistry(), "test"), lambda _r, _f: None)
    writer.require_node_keys = True
    writer.start()
    try:
        result = collect(writer.submit(report(client("b"), 3), hash_node_key(key_b)))
    finally:
        writer.stop()
    assert isinstance(result, AppliedReport) and result.outcome is Outcome.APPLIED


def test_without_enrollment_the_writer_ignores_keys(sessions: sessionmaker[Session]) -> None:
    writer = GroupCommitWriter(sessions, CollectorMetrics(CollectorRegistry(), "test"), lambda _r, _f: None)
    writer.start()
    try:
        result = collect(writer.submit(report(client("z"), 1), None))
    finally:
        writer.stop()
    assert isinstance(result, AppliedReport) and result.outcome is Outcome.APPLIED
