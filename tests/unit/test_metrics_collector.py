"""The fleet-state collector (collector/metrics.py) from given aggregates: the exposition has a
fixed set of series whatever the fleet size (no per-host series), counts come from the
aggregates only, and ages come from the injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rmsfleet.collector.metrics import AggregatesHolder, FleetStateCollector
from rmsfleet.collector.store.aggregates_sql import ClusterClientCount, ClusterServerCount, FleetAggregates
from rmsfleet.contract.facts import Activation, Version

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICIES = ["mixed-version-cluster", "stale-agent"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def aggregates(hosts: int, clients_sp2: int = 0) -> FleetAggregates:
    return FleetAggregates(
        computed_at=NOW,
        total_hosts=hosts,
        stale_hosts=1,
        hosts_by_role_version={("server", "SP1"): 2, ("server", "SP2"): 1, ("client", "SP2"): clients_sp2},
        clients_by_version_activation={("SP2", "self"): clients_sp2, ("BUILTIN", "unknown"): 4},
        cluster_servers=[
            ClusterServerCount("https://rms", "root-certification", None, "corp", "SP1", 2),
            ClusterServerCount("https://rms", "root-certification", None, "corp", "SP2", 1),
        ],
        cluster_clients=[ClusterClientCount("https://rms", "SP2", clients_sp2)],
        violations_by_policy_severity={("mixed-version-cluster", "warning"): 1, ("retired-policy", "critical"): 2},
        oldest_violation_by_policy={"mixed-version-cluster": NOW - timedelta(hours=2)},
        violations_by_policy_severity_forest={("mixed-version-cluster", "warning", "corp"): 1},
    )


def scrape(snapshot: FleetAggregates | None) -> Samples:
    holder = AggregatesHolder()
    if snapshot is not None:
        holder.publish(snapshot)
    registry = CollectorRegistry()
    registry.register(FleetStateCollector(holder, lambda: POLICIES, lambda: NOW))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_counts_come_from_the_aggregates() -> None:
    samples = scrape(aggregates(hosts=1000, clients_sp2=997))
    assert value(samples, "rmsfleet_fleet_hosts") == 1000
    assert value(samples, "rmsfleet_stale_agents") == 1
    assert value(samples, "rmsfleet_hosts", role="server", version="SP1") == 2
    assert value(samples, "rmsfleet_hosts", role="client", version="RTM") == 0
    assert value(samples, "rmsfleet_clients", version="BUILTIN", activation="unknown") == 4
    assert value(samples, "rmsfleet_clusters", kind="root-certification", state="mixed") == 1
    assert value(samples, "rmsfleet_clusters", kind="licensing", state="uniform") == 0
    assert (
        value(
            samples,
            "rmsfleet_cluster_servers",
            cluster="https://rms",
            kind="root-certification",
            forest="corp",
            version="SP2",
        )
        == 1
    )


def test_every_version_and_activation_of_the_contract_is_a_series() -> None:
    samples = scrape(aggregates(hosts=3))
    for version in Version:
        assert ("rmsfleet_hosts", (("role", "client"), ("version", version.value))) in samples
        # D15: the built-in client is a client only; no server series is exported for it.
        has_server = ("rmsfleet_hosts", (("role", "server"), ("version", version.value))) in samples
        assert has_server is (version is not Version.BUILTIN)
        for activation in Activation:
            assert value(samples, "rmsfleet_clients", version=version.value, activation=activation.value) >= 0


def test_the_series_do_not_grow_with_the_fleet() -> None:
    assert set(scrape(aggregates(hosts=10))) == set(scrape(aggregates(hosts=100_000, clients_sp2=99_000)))


def test_violations_every_known_policy_always_and_ages_from_the_clock() -> None:
    samples = scrape(aggregates(hosts=3))
    assert value(samples, "rmsfleet_policy_violations", policy="mixed-version-cluster") == 1
    assert value(samples, "rmsfleet_policy_violations", policy="stale-agent") == 0
    assert value(samples, "rmsfleet_policy_violations_by_severity", policy="stale-agent", severity="critical") == 0
    # A policy that still has open rows but is no longer known is shown, not hidden.
    assert value(samples, "rmsfleet_policy_violations", policy="retired-policy") == 2
    assert value(samples, "rmsfleet_policy_violation_oldest_age_seconds", policy="mixed-version-cluster") == 7200
    assert value(samples, "rmsfleet_policy_violation_oldest_age_seconds", policy="stale-agent") == 0
    # Per forest only where violations are open: a forest is known from its subjects.
    by_forest = {labels: n for (name, labels), n in samples.items() if name == "rmsfleet_policy_violations_by_forest"}
    assert by_forest == {(("forest", "corp"), ("policy", "mixed-version-cluster"), ("severity", "warning")): 1}


def test_before_the_first_evaluation_there_is_no_fleet_state_rather_than_zeros() -> None:
    assert scrape(None) == {}
