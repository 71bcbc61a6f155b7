"""Metric labels only from bounded sets: reports naming 20,000 invented cluster URLs (and forests)
used to grow the scrape to about 100,000 series. The `cluster` label is capped
(--metrics-max-clusters): the clusters with the most servers keep it, the rest are summed under
`_overflow_`, and the whole exposition stays under the shipped scrape config's sample_limit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rmsfleet.collector.domain.policies import POLICIES
from rmsfleet.collector.metrics import (
    DEFAULT_MAX_CLUSTERS,
    OVERFLOW,
    AggregatesHolder,
    CollectorMetrics,
    FleetStateCollector,
)
from rmsfleet.collector.store.aggregates_sql import ClusterServerCount, FleetAggregates

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SCRAPE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"
REAL = ["https://rms.corp.example", "https://rms.fabrikam.example", "https://lic.corp.example"]


def scrape(
    servers: list[ClusterServerCount], cap: int = DEFAULT_MAX_CLUSTERS
) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    CollectorMetrics(registry, "test")
    holder = AggregatesHolder()
    holder.publish(FleetAggregates(NOW, len(servers), 0, {}, {}, servers, [], {}, {}, {}))
    registry.register(FleetStateCollector(holder, lambda: [p.id for p in POLICIES], lambda: NOW, cap))
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode("utf-8")):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def fleet(invented: int) -> list[ClusterServerCount]:
    real = [
        ClusterServerCount(url, "root-certification", None, url.split(".")[1] + ".example", version, 3)
        for url in REAL
        for version in ("SP1", "SP2")
    ]
    forged = [
        ClusterServerCount(f"https://x{i}.invalid", "root-certification", None, f"forest-{i}.invalid", "RTM", 1)
        for i in range(invented)
    ]
    return real + forged


def test_20000_invented_clusters_stay_under_the_cap_and_the_scrape_limit() -> None:
    samples = scrape(fleet(20_000))
    clusters = {labels["cluster"] for labels, _ in samples["rmsfleet_cluster_servers"]}
    forests = {labels["forest"] for labels, _ in samples["rmsfleet_cluster_servers"]}
    assert len(clusters) == DEFAULT_MAX_CLUSTERS + 1 and OVERFLOW in clusters
    assert len(forests) <= DEFAULT_MAX_CLUSTERS + 1
    assert set(REAL) <= clusters, "the clusters with the most servers keep their own label"
    overflow = {
        labels["version"]: value
        for labels, value in samples["rmsfleet_cluster_servers"]
        if labels["cluster"] == OVERFLOW
    }
    assert overflow == {"RTM": 20_000 - (DEFAULT_MAX_CLUSTERS - len(REAL))}
    assert samples["rmsfleet_cluster_label_overflow"] == [({}, 20_000 - (DEFAULT_MAX_CLUSTERS - len(REAL)))]
    # Kinds and states still count every cluster.
    assert sum(v for _, v in samples["rmsfleet_clusters"]) == 20_000 + len(REAL)
    total = sum(len(series) for series in samples.values())
    limit = scrape_sample_limit()
    assert total < limit, f"{total} samples would fail the scrape (sample_limit {limit})"


def test_a_fleet_under_the_cap_has_no_overflow_series() -> None:
    samples = scrape(fleet(10))
    clusters = {labels["cluster"] for labels, _ in samples["rmsfleet_cluster_servers"]}
    assert len(clusters) == 13 and OVERFLOW not in clusters
    assert samples["rmsfleet_cluster_label_overflow"] == [({}, 0.0)]


def scrape_sample_limit() -> int:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "rmsfleet-collector"]
    limit = job.get("sample_limit")
    assert isinstance(limit, int) and limit > 0, "the shipped scrape job sets sample_limit"
    return limit
