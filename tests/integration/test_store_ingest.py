"""The group-commit store path on SQLite and PostgreSQL: history only on change, retries
applied once, in-batch ordering, and the evaluator's violation bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.domain.model import PolicyConfig
from rmsfleet.collector.evaluator import Evaluator
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics
from rmsfleet.collector.reports import IncomingReport, Outcome
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.ingest_writes import apply_reports
from rmsfleet.collector.store.models import HostHistoryRow, HostRow
from rmsfleet.contract.facts import Activation, ClientFacts, ClusterKind, Enrollment, HostFacts, ServerFacts, Version

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CLUSTER = "https://rms.corp.example"


def server(host_id: str, version: Version, cluster: str = CLUSTER) -> HostFacts:
    return HostFacts(
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        server=ServerFacts(version, cluster, ClusterKind.ROOT_CERTIFICATION, None, Enrollment.OFFLINE),
        client=ClientFacts(Version.SP2, Activation.SELF, cluster),
    )


def report(facts: HostFacts, sequence: int, at: datetime = T0) -> IncomingReport:
    return IncomingReport(facts, observed_at=at, sequence=sequence, agent_version="test", received_at=at)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def count(session: Session, model: type[HostRow] | type[HostHistoryRow]) -> int:
    return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_history_grows_only_when_facts_change(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        apply_reports(session, [report(server("a", Version.SP1), 1)])
    with sessions.begin() as session:
        results = apply_reports(session, [report(server("a", Version.SP1), 2, T0 + timedelta(minutes=1))])
    assert results[0].outcome is Outcome.APPLIED and not results[0].facts_changed
    with sessions.begin() as session:
        apply_reports(session, [report(server("a", Version.SP2), 3, T0 + timedelta(minutes=2))])
    with sessions() as session:
        assert count(session, HostHistoryRow) == 2
        host = session.get(HostRow, "a")
        assert host is not None and host.server_version == "SP2" and host.last_sequence == 3
        view, history = queries.get_host(session, "a", T0, timedelta(minutes=15)) or (None, [])
        assert [c.facts.server.version for c in history if c.facts.server] == [Version.SP1, Version.SP2]
        assert view is not None and view.first_seen == T0


def test_a_retried_report_is_applied_once(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first = apply_reports(session, [report(server("a", Version.SP1), 5)])
    with sessions.begin() as session:
        retry = apply_reports(session, [report(server("a", Version.SP2), 5)])
        older = apply_reports(session, [report(server("a", Version.RTM), 4)])
    assert first[0].outcome is Outcome.APPLIED
    assert retry[0].outcome is Outcome.DUPLICATE and older[0].outcome is Outcome.DUPLICATE
    with sessions() as session:
        host = session.get(HostRow, "a")
        assert host is not None and host.server_version == "SP1"
        assert count(session, HostHistoryRow) == 1


def test_one_batch_applies_a_hosts_reports_in_sequence_order(sessions: sessionmaker[Session]) -> None:
    batch = [
        report(server("a", Version.SP2), 3, T0 + timedelta(minutes=2)),
        report(server("a", Version.RTM), 1, T0),
        report(server("b", Version.SP1), 1),
        report(server("a", Version.SP1), 2, T0 + timedelta(minutes=1)),
        report(server("a", Version.SP1), 2, T0 + timedelta(minutes=1)),
    ]
    with sessions.begin() as session:
        results = apply_reports(session, batch)
    assert [r.outcome for r in results] == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    ]
    with sessions() as session:
        assert count(session, HostRow) == 2
        host = session.get(HostRow, "a")
        assert host is not None and host.server_version == "SP2"
        assert count(session, HostHistoryRow) == 4  # a: RTM, SP1, SP2; b: SP1


def test_evaluator_opens_keeps_and_resolves_violations(sessions: sessionmaker[Session]) -> None:
    now = [T0]
    evaluator = Evaluator(
        sessions,
        PolicyConfig(mixed_cluster_grace=timedelta(hours=1), stale_after=timedelta(days=365)),
        lambda: now[0],
        CollectorMetrics(CollectorRegistry(), "test"),
        AggregatesHolder(),
    )
    with sessions.begin() as session:
        apply_reports(session, [report(server("a", Version.SP1), 1), report(server("b", Version.SP2), 1)])
    evaluator.evaluate_once()
    with sessions() as session:
        opened = queries.list_violations(session, queries.ViolationFilter(policy="mixed-version-cluster"), None, 10)
    assert [(v.subject, v.severity, v.since) for v in opened] == [(CLUSTER, "warning", T0)]

    # D5: still mixed past the grace period -> critical, same row, same since.
    now[0] = T0 + timedelta(hours=2)
    evaluator.evaluate_once()
    with sessions() as session:
        escalated = queries.list_violations(session, queries.ViolationFilter(policy="mixed-version-cluster"), None, 10)
    assert [(v.id, v.severity, v.since) for v in escalated] == [(opened[0].id, "critical", T0)]

    with sessions.begin() as session:
        apply_reports(session, [report(server("a", Version.SP2), 2, now[0])])
    now[0] = T0 + timedelta(hours=3)
    evaluator.evaluate_once()
    with sessions() as session:
        still_open = queries.list_violations(session, queries.ViolationFilter(policy="mixed-version-cluster"), None, 10)
        resolved = queries.list_violations(
            session, queries.ViolationFilter(policy="mixed-version-cluster", state="resolved"), None, 10
        )
    assert still_open == []
    assert [(v.id, v.since, v.resolved_at) for v in resolved] == [(opened[0].id, T0, now[0])]


def test_host_listing_pages_and_filters(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        apply_reports(
            session, [report(server(f"h{i:03d}", Version.SP1 if i % 2 else Version.SP2), 1) for i in range(25)]
        )
    seen: list[str] = []
    after = None
    with sessions() as session:
        while True:
            page = queries.list_hosts(session, queries.HostFilter(), after, 10, T0, timedelta(minutes=15))
            seen.extend(h.facts.host_id for h in page)
            if len(page) < 10:
                break
            after = page[-1].facts.host_id
        sp1 = queries.list_hosts(
            session, queries.HostFilter(role="server", version="SP1"), None, 100, T0, timedelta(minutes=15)
        )
        stale = queries.list_hosts(
            session, queries.HostFilter(stale_only=True), None, 100, T0 + timedelta(hours=1), timedelta(minutes=15)
        )
    assert seen == sorted(f"h{i:03d}" for i in range(25))
    assert len(sp1) == 12 and all(h.facts.server and h.facts.server.version is Version.SP1 for h in sp1)
    assert len(stale) == 25 and all(h.stale for h in stale)


def client(host_id: str, version: Version) -> HostFacts:
    return HostFacts(host_id, host_id, "corp.example", None, ClientFacts(version, Activation.SELF, CLUSTER))


def test_incremental_pass_sees_changed_hosts_and_leaves_the_others_alone(sessions: sessionmaker[Session]) -> None:
    """Evaluating only what a batch changed: host rules for the changed hosts, cluster rules over
    all servers; open violations of untouched hosts stay as they are."""
    evaluator = Evaluator(
        sessions,
        PolicyConfig(stale_after=timedelta(days=365)),
        lambda: T0,
        CollectorMetrics(CollectorRegistry(), "test"),
        AggregatesHolder(),
    )
    with sessions.begin() as session:
        apply_reports(session, [report(client("ws1", Version.RTM), 1), report(client("ws2", Version.RTM), 1)])
    evaluator.evaluate_once()
    with sessions.begin() as session:
        apply_reports(
            session,
            [
                report(client("ws1", Version.SP2), 2),
                report(server("s1", Version.SP1), 1),
                report(server("s2", Version.SP2), 1),
            ],
        )
    changes = evaluator.evaluate_changes({"ws1", "s1", "s2"})
    assert changes is not None
    with sessions() as session:
        open_now = {
            (v.policy, v.subject) for v in queries.list_violations(session, queries.ViolationFilter(), None, 100)
        }
    assert open_now == {
        ("client-not-self-activating", "ws2"),  # untouched: still open
        ("client-cannot-publish-online", "ws2"),  # D14: its cluster now has SP1+ servers
        ("mixed-version-cluster", CLUSTER),  # found from all servers
        ("mixed-versions-in-forest", "corp.example"),
    }


def test_an_rtm_client_joining_an_upgraded_cluster_is_seen_by_the_cluster_rules(
    sessions: sessionmaker[Session],
) -> None:
    """D14 looks at servers and RTM clients: a batch with only a client in it must still run it,
    and the client's later upgrade must resolve it, without a full pass."""
    evaluator = Evaluator(
        sessions,
        PolicyConfig(stale_after=timedelta(days=365)),
        lambda: T0,
        CollectorMetrics(CollectorRegistry(), "test"),
        AggregatesHolder(),
    )
    with sessions.begin() as session:
        apply_reports(session, [report(server("s1", Version.SP2), 1)])
    evaluator.evaluate_once()

    def open_d14() -> set[str]:
        with sessions() as session:
            found = queries.list_violations(
                session, queries.ViolationFilter(policy="client-cannot-publish-online"), None, 100
            )
        return {v.subject for v in found}

    with sessions.begin() as session:
        results = apply_reports(session, [report(client("ws9", Version.RTM), 1)])
    assert [r.touches_servers for r in results] == [True]
    evaluator.evaluate_changes({"ws9"}, servers_touched=any(r.touches_servers for r in results))
    assert open_d14() == {"ws9"}

    with sessions.begin() as session:
        results = apply_reports(session, [report(client("ws9", Version.SP2), 2)])
    assert [r.touches_servers for r in results] == [True]  # it was an RTM client
    evaluator.evaluate_changes({"ws9"}, servers_touched=any(r.touches_servers for r in results))
    assert open_d14() == set()

    with sessions.begin() as session:
        results = apply_reports(session, [report(client("ws8", Version.SP1), 1)])
    assert [r.touches_servers for r in results] == [False]  # an SP1 client changes no cluster rule
