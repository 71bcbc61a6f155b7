"""Incremental passes over the change feed leave exactly the violations a full pass finds, on
SQLite and PostgreSQL, with the real group-commit writer: random fleets of servers and clients
in a few clusters and forests change round after round (upgrades, moves between clusters and
forests, clients appearing and leaving), and after the passes that consume the feed a full pass
has nothing left to open, change or resolve. The cluster and forest rules of those passes read
per-cluster counts (store/server_summary_sql.py), not every server."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.domain.model import Finding, PolicyConfig
from rmsfleet.collector.domain.policies import PolicyContext, evaluate_all
from rmsfleet.collector.evaluator import Evaluator, reconcile
from rmsfleet.collector.ingest import GroupCommitWriter
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics
from rmsfleet.collector.reports import IncomingReport
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.evaluation_sql import load_fleet
from rmsfleet.collector.store.evaluation_sql import open_violations as stored_violations
from rmsfleet.collector.store.models import ChangeFeedRow, HostRow, ViolationRow
from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    ServerFacts,
    Version,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ROOTS = ["https://rms.a.example", "https://rms.b.example"]
LICENSING = ["https://lic1.rms.a.example", "https://lic2.rms.a.example", "https://lic.rms.b.example"]
FORESTS = ["a.example", "b.example", "c.example"]
# The rules the passes under test split from the host rules (policies.Scope.SERVERS).
SERVER_POLICIES = {
    "mixed-version-cluster",
    "mixed-versions-in-forest",
    "licensing-ahead-of-root",
    "client-cannot-publish-online",
}


def random_facts(rng: random.Random, host_id: str) -> HostFacts:
    server = client = None
    role = rng.random()
    if role < 0.45:
        version = rng.choice([Version.RTM, Version.SP1, Version.SP2, Version.SP2, Version.UNKNOWN])
        enrollment = Enrollment.ONLINE if version is Version.RTM else Enrollment.OFFLINE
        if rng.random() < 0.5:
            server = ServerFacts(version, rng.choice(ROOTS), ClusterKind.ROOT_CERTIFICATION, None, enrollment)
        else:
            server = ServerFacts(version, rng.choice(LICENSING), ClusterKind.LICENSING, rng.choice(ROOTS), enrollment)
    if role >= 0.35:
        version = rng.choice([Version.RTM, Version.RTM, Version.SP1, Version.SP2])
        activation = Activation.INTERNET if version is Version.RTM else Activation.SELF
        client = ClientFacts(version, activation, rng.choice([None, *ROOTS, *LICENSING]))
    return HostFacts(host_id, host_id, rng.choice(FORESTS), server, client)


class Replica:
    """A collector's writer and evaluator (the loop not started: the test runs the passes)."""

    def __init__(self, sessions: sessionmaker[Session], feed_batch: int, full_pass_range: int = 5000) -> None:
        self.sequence = 0
        metrics = CollectorMetrics(CollectorRegistry(), "test")
        self.aggregates = AggregatesHolder()
        self.evaluator = Evaluator(
            sessions,
            PolicyConfig(),
            lambda: T0,
            metrics,
            self.aggregates,
            feed_batch=feed_batch,
            full_pass_range=full_pass_range,
        )
        self.writer = GroupCommitWriter(
            sessions, metrics, self.evaluator.on_committed, record_changes=self.evaluator.record_changes
        )
        self.writer.start()

    def report(self, facts: list[HostFacts]) -> None:
        self.sequence += 1
        futures = [self.writer.submit(IncomingReport(f, T0, self.sequence, "test", T0)) for f in facts]
        for future in futures:
            future.result(timeout=30)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def open_violations(sessions: sessionmaker[Session]) -> set[tuple[str, str, str, str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(
                ViolationRow.policy,
                ViolationRow.subject_kind,
                ViolationRow.subject,
                ViolationRow.severity,
                ViolationRow.detail,
            ).where(ViolationRow.resolved_at.is_(None))
        )
        return {tuple(row) for row in rows}  # type: ignore[misc]


def full_pass_plan(sessions: sessionmaker[Session]) -> tuple[list[Finding], list[int], list[int]]:
    ctx = PolicyContext(now=T0, config=PolicyConfig())
    with sessions() as session:
        plan = reconcile(stored_violations(session), evaluate_all(load_fleet(session), ctx), ctx)
    return plan.opened, [vid for vid, _finding in plan.updated], plan.resolved


def drain_feed(replica: Replica, sessions: sessionmaker[Session]) -> None:
    for _ in range(100):
        assert replica.evaluator.evaluate_feed() is not None
        with sessions() as session:
            if session.scalar(select(ChangeFeedRow.id).limit(1)) is None:
                return
    raise AssertionError("the feed never drained")


@pytest.mark.parametrize(("seed", "full_pass_first"), [(1, True), (2, True), (3, False)])
def test_incremental_passes_leave_what_a_full_pass_finds(
    sessions: sessionmaker[Session], seed: int, full_pass_first: bool
) -> None:
    rng = random.Random(seed)
    # Takes of 7 feed rows: a round's changes span several passes, as a backlog would.
    replica = Replica(sessions, feed_batch=7)
    try:
        fleet = {f"h{i:03d}": random_facts(rng, f"h{i:03d}") for i in range(60)}
        replica.report(list(fleet.values()))
        if full_pass_first:
            replica.evaluator.evaluate_once()
        drain_feed(replica, sessions)
        moved_server_rules = 0
        for _round in range(6):
            changed = rng.sample(sorted(fleet), rng.randint(1, 12))
            for host_id in changed:
                fleet[host_id] = random_facts(rng, host_id)
            before = open_violations(sessions)
            replica.report([fleet[h] for h in changed])
            drain_feed(replica, sessions)
            after = open_violations(sessions)
            moved_server_rules += len({v for v in before ^ after if v[0] in SERVER_POLICIES})

            # What a full pass would do now (read only, so the next round's passes start from
            # what the incremental passes left): nothing to open, change or resolve.
            assert full_pass_plan(sessions) == ([], [], [])
        # The rounds did move the cluster and forest rules' violations (the test can fail).
        assert moved_server_rules > 0
        full = replica.evaluator.evaluate_once()
        assert full is not None
        assert (full.opened, full.updated, full.resolved) == (0, 0, 0)
    finally:
        replica.writer.stop()


def test_a_full_pass_range_by_range_leaves_what_evaluate_all_finds(sessions: sessionmaker[Session]) -> None:
    """A full pass walks the fleet in ranges of host ids (7 here, 5000 by default), each in its
    own transaction: afterwards the stored violations are exactly evaluate_all's over the whole
    fleet, including for hosts deleted or gone stale since the last pass."""
    rng = random.Random(7)
    replica = Replica(sessions, feed_batch=7, full_pass_range=7)
    try:
        fleet = {f"h{i:03d}": random_facts(rng, f"h{i:03d}") for i in range(60)}
        replica.report(list(fleet.values()))
        first = replica.evaluator.evaluate_once()
        assert first is not None and first.opened > 0
        assert full_pass_plan(sessions) == ([], [], [])

        # Between passes: hosts change, some hosts leave the database, some go silent.
        changed = rng.sample(sorted(fleet), 15)
        for host_id in changed:
            fleet[host_id] = random_facts(rng, host_id)
        replica.report([fleet[h] for h in changed])
        with sessions.begin() as session:
            deleted = sorted(
                session.scalars(select(ViolationRow.subject).where(ViolationRow.subject_kind == "host").distinct())
            )[:3]
            session.execute(delete(HostRow).where(HostRow.host_id.in_(deleted)))
            silent = [h for h in ("h001", "h002", "h030", "h059") if h not in deleted][:3]
            session.execute(update(HostRow).where(HostRow.host_id.in_(silent)).values(last_seen=T0 - timedelta(days=3)))
        assert full_pass_plan(sessions) != ([], [], [])  # the test can fail

        second = replica.evaluator.evaluate_once()
        assert second is not None
        assert full_pass_plan(sessions) == ([], [], [])
        stale = {v[2] for v in open_violations(sessions) if v[0] == "stale-agent"}
        assert stale == set(silent)
        assert not {v[2] for v in open_violations(sessions)} & set(deleted)
    finally:
        replica.writer.stop()


def test_a_full_pass_evaluates_the_feed_between_its_ranges(sessions: sessionmaker[Session]) -> None:
    """Changes committed while a full pass runs do not wait for its end: between two ranges the
    pass evaluates what the feed holds, so the feed is empty when the pass ends."""
    rng = random.Random(11)
    replica = Replica(sessions, feed_batch=500, full_pass_range=7)
    try:
        fleet = {f"h{i:03d}": random_facts(rng, f"h{i:03d}") for i in range(40)}
        replica.report(list(fleet.values()))  # the writer wakes the loop: its rows wait in the feed
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(ChangeFeedRow)) == 40
        assert replica.evaluator.evaluate_once() is not None
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(ChangeFeedRow)) == 0
        assert full_pass_plan(sessions) == ([], [], [])
    finally:
        replica.writer.stop()


def test_a_feed_pass_refreshes_the_violation_counts_and_leaves_the_host_scan_to_its_timer(
    sessions: sessionmaker[Session],
) -> None:
    """After a feed pass the violation gauges are current (the watermark promises it), but the
    host counts, a scan of every host, wait for the timed refresh: at 1M hosts that scan after
    every pass kept committed reports waiting for evaluation for tens of seconds."""
    replica = Replica(sessions, feed_batch=500)
    try:
        replica.report([random_facts(random.Random(i), f"h{i:03d}") for i in range(10)])
        replica.evaluator.evaluate_once()
        before = replica.aggregates.current()
        assert before is not None and before[0].total_hosts == 10
        # RTM clients that activate over the internet: client-not-self-activating (D10), each.
        rtm = ClientFacts(Version.RTM, Activation.INTERNET, None)
        replica.report([HostFacts(f"n{i}", f"n{i}", "a.example", None, rtm) for i in range(5)])
        assert replica.evaluator.evaluate_feed() is not None

        after = replica.aggregates.current()
        assert after is not None
        counts = after[0].violations_by_policy_severity
        earlier = before[0].violations_by_policy_severity
        opened = sum(n for (policy, _sev), n in counts.items() if policy == "client-not-self-activating") - sum(
            n for (policy, _sev), n in earlier.items() if policy == "client-not-self-activating"
        )
        assert opened == 5
        assert after[0].total_hosts == 10  # the host scan waits for its timer

        replica.evaluator.refresh_aggregates(T0)
        refreshed = replica.aggregates.current()
        assert refreshed is not None and refreshed[0].total_hosts == 15
    finally:
        replica.writer.stop()
