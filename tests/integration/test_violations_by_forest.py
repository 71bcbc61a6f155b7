"""rmsfleet_policy_violations_by_forest on SQLite and PostgreSQL: every open violation counts in
the AD forest of its subject (host, cluster or forest), so Alertmanager can group and inhibit by
forest while no series names a host."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.domain.model import PolicyConfig
from rmsfleet.collector.evaluator import Evaluator
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics, FleetStateCollector
from rmsfleet.collector.reports import IncomingReport
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.ingest_writes import apply_reports
from rmsfleet.contract.facts import Activation, ClientFacts, ClusterKind, Enrollment, HostFacts, ServerFacts, Version

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def server(host_id: str, forest: str, version: Version, cluster: str) -> HostFacts:
    return HostFacts(
        host_id=host_id,
        hostname=f"{host_id}.{forest}",
        forest=forest,
        server=ServerFacts(version, cluster, ClusterKind.ROOT_CERTIFICATION, None, Enrollment.OFFLINE),
        client=None,
    )


def client(host_id: str, forest: str, version: Version) -> HostFacts:
    activation = Activation.INTERNET if version is Version.RTM else Activation.SELF
    return HostFacts(host_id, f"{host_id}.{forest}", forest, None, ClientFacts(version, activation, None))


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def by_forest_lines(registry: CollectorRegistry) -> set[str]:
    return {
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("rmsfleet_policy_violations_by_forest{")
    }


def test_violations_count_in_the_forest_of_their_subject(sessions: sessionmaker[Session]) -> None:
    fleet = [
        # corp: a cluster mixed SP1/SP2 (D5, D8) -> a cluster and a forest violation, both in corp
        server("corp-a", "corp.example", Version.SP1, "https://rms.corp.example"),
        server("corp-b", "corp.example", Version.SP2, "https://rms.corp.example"),
        # corp: two RTM clients (D10); partner: one RTM client and an RTM server (D9)
        client("corp-ws1", "corp.example", Version.RTM),
        client("corp-ws2", "corp.example", Version.RTM),
        client("partner-ws1", "partner.example", Version.RTM),
        client("partner-ws2", "partner.example", Version.SP2),
        server("partner-rms", "partner.example", Version.RTM, "https://rms.partner.example"),
    ]
    with sessions.begin() as session:
        apply_reports(
            session,
            [IncomingReport(f, observed_at=T0, sequence=1, agent_version="test", received_at=T0) for f in fleet],
        )
    registry = CollectorRegistry()
    holder = AggregatesHolder()
    registry.register(FleetStateCollector(holder, lambda: [], lambda: T0))
    evaluator = Evaluator(
        sessions,
        PolicyConfig(stale_after=timedelta(days=365)),
        lambda: T0,
        CollectorMetrics(CollectorRegistry(), "test"),
        holder,
    )
    evaluator.evaluate_once()

    assert by_forest_lines(registry) == {
        'rmsfleet_policy_violations_by_forest{forest="corp.example",policy="mixed-version-cluster",severity="warning"} 1.0',
        'rmsfleet_policy_violations_by_forest{forest="corp.example",policy="mixed-versions-in-forest",severity="warning"} 1.0',
        'rmsfleet_policy_violations_by_forest{forest="corp.example",policy="client-not-self-activating",severity="warning"} 2.0',
        'rmsfleet_policy_violations_by_forest{forest="partner.example",policy="client-not-self-activating",severity="warning"} 1.0',
        'rmsfleet_policy_violations_by_forest{forest="partner.example",policy="server-no-offline-enrollment",severity="warning"} 1.0',
    }
    # No series names a host: the label values are policies, severities and forests only.
    assert not [line for line in by_forest_lines(registry) if any(f'"{h.host_id}"' in line for h in fleet)]

    # The cluster made uniform: its violations resolve and their series go (the alert resolves).
    with sessions.begin() as session:
        apply_reports(
            session,
            [
                IncomingReport(
                    server("corp-a", "corp.example", Version.SP2, "https://rms.corp.example"),
                    observed_at=T0,
                    sequence=2,
                    agent_version="test",
                    received_at=T0,
                )
            ],
        )
    evaluator.evaluate_once()
    assert not [line for line in by_forest_lines(registry) if "mixed-version" in line]
    assert len(by_forest_lines(registry)) == 3
