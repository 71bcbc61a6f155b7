"""The collector's metrics (docs/metrics.md), registered on an injected registry.

Fleet-state gauges come from FleetStateCollector, which only reads the aggregates snapshot the
evaluator last published: a scrape does no per-host work and no database query."""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rmsfleet.collector.clock import Clock
from rmsfleet.collector.domain.capabilities import ClusterCapabilities, SelfActivation
from rmsfleet.collector.domain.cluster_summary import summarize_clusters
from rmsfleet.collector.store.aggregates_sql import FleetAggregates
from rmsfleet.collector.store.change_feed_sql import FeedBacklog
from rmsfleet.collector.watermark import EvaluationWatermark
from rmsfleet.contract.facts import Activation, Version

# Every label value comes from the contract's enums, so a new version or activation state is
# exported (at 0) without a second list to keep in step. BUILTIN is a client only (D15).
CLIENT_VERSIONS = tuple(v.value for v in Version)
VERSIONS_BY_ROLE = {"server": tuple(v.value for v in Version if v is not Version.BUILTIN), "client": CLIENT_VERSIONS}
ACTIVATIONS = tuple(a.value for a in Activation)
SEVERITIES = ("warning", "critical")
# The long-running loops (liveness.LoopProgress names).
LOOPS = ("writer", "evaluator")
# What an Enroll call became (identity.py): admitted as new, after a revocation, under an
# operator's allowance or by --enroll-replaces-keys; refused for the identity, the secret or the
# client certificate.
ENROLL_OUTCOMES = (
    "new",
    "after-revocation",
    "allowed",
    "replaced",
    "refused-identity",
    "refused-secret",
    "refused-certificate",
)
# The AdminService methods (admin_servicer.py): the `action` label of rmsfleet_admin_actions_total.
ADMIN_ACTIONS = (
    "AddExemption",
    "RemoveExemption",
    "RevokeHost",
    "AllowReenroll",
    "CreateToken",
    "RevokeToken",
    "ListTokens",
    "ListAudit",
)


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.rpcs = Counter(
            "rmsfleet_rpcs", "gRPC calls handled, by method and status code", ["method", "code"], registry=registry
        )
        self.reports = Counter("rmsfleet_reports", "Reports by what became of them", ["outcome"], registry=registry)
        self.ingest_queue_depth = Gauge(
            "rmsfleet_ingest_queue_depth", "Reports waiting for the group-commit writer", registry=registry
        )
        self.ingest_batch_size = Histogram(
            "rmsfleet_ingest_batch_size",
            "Reports per committed batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=registry,
        )
        self.ingest_commit_duration = Histogram(
            "rmsfleet_ingest_commit_duration_seconds",
            "Time to write and commit one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.database_errors = Counter(
            "rmsfleet_database_errors", "Database errors by operation", ["operation"], registry=registry
        )
        self.evaluation_last_success = Gauge(
            "rmsfleet_evaluation_last_success_timestamp_seconds",
            "Unix time the last evaluation pass finished",
            registry=registry,
        )
        self.evaluation_duration = Histogram(
            "rmsfleet_evaluation_duration_seconds",
            "Time of one evaluation pass",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.evaluation_lag = Gauge(
            "rmsfleet_evaluation_lag_seconds",
            "Seconds since the oldest report this collector committed that evaluation has not covered; 0 when caught up",
            registry=registry,
        )
        self.evaluation_pending = Gauge(
            "rmsfleet_evaluation_pending_reports",
            "Reports this collector committed that evaluation has not covered yet",
            registry=registry,
        )
        # The change feed (docs/metrics.md): the same on every replica (one database), like the
        # fleet gauges; which replica evaluates is 1 on that replica only.
        self.evaluation_feed_backlog = Gauge(
            "rmsfleet_evaluation_feed_backlog",
            "Changed hosts written to the change feed by any replica that no evaluation pass has covered yet",
            registry=registry,
        )
        self.evaluation_feed_lag = Gauge(
            "rmsfleet_evaluation_feed_lag_seconds",
            "Age of the oldest change feed row no evaluation pass has covered; 0 when the feed is empty",
            registry=registry,
        )
        self.evaluation_leader = Gauge(
            "rmsfleet_evaluation_leader",
            "1 on the replica that evaluates (holds the evaluation leadership lock), 0 on the others",
            registry=registry,
        )
        self.loop_errors = Counter(
            "rmsfleet_loop_errors",
            "Unexpected errors a long-running loop caught, logged and survived",
            ["loop"],
            registry=registry,
        )
        self.loop_healthy = Gauge(
            "rmsfleet_loop_healthy",
            "1 while the loop makes progress (or has no work), 0 when it is stalled or has ended",
            ["loop"],
            registry=registry,
        )
        self.evaluation_unreadable_hosts = Gauge(
            "rmsfleet_evaluation_unreadable_hosts",
            "Hosts the last full evaluation pass left out because their stored row cannot be read",
            registry=registry,
        )
        # Limits and host identity (limits.py, identity.py): fixed label sets.
        self.limited_calls = Counter(
            "rmsfleet_limited_calls",
            "Calls refused with RESOURCE_EXHAUSTED by a per-address limit",
            ["limit"],
            registry=registry,
        )
        self.enrollments = Counter(
            "rmsfleet_enrollments", "Enrollments by what became of them", ["outcome"], registry=registry
        )
        # Admin actions (audit.py): action from ADMIN_ACTIONS, outcome `ok` or a status code name.
        self.admin_actions = Counter(
            "rmsfleet_admin_actions",
            "Admin API calls by method and outcome (ok, or the refusal's status code in lower case)",
            ["action", "outcome"],
            registry=registry,
        )
        for limit in ("in-flight", "enroll-rate"):
            self.limited_calls.labels(limit=limit)
        for outcome in ENROLL_OUTCOMES:
            self.enrollments.labels(outcome=outcome)
        build = Gauge("rmsfleet_build_info", "The running build", ["version", "python"], registry=registry)
        build.labels(version=version, python=platform.python_version()).set(1)
        for outcome in ("applied", "duplicate", "invalid", "refused", "error"):
            self.reports.labels(outcome=outcome)
        for operation in ("ingest", "evaluate", "aggregate", "query", "enroll", "admin", "audit", "authorize"):
            self.database_errors.labels(operation=operation)
        for loop in LOOPS:
            self.loop_errors.labels(loop=loop)

    def track_evaluation(self, watermark: EvaluationWatermark, clock: Clock) -> None:
        """Read the evaluation lag from the watermark at scrape time (constant work)."""
        self.evaluation_lag.set_function(lambda: watermark.snapshot().lag_seconds(clock()))
        self.evaluation_pending.set_function(lambda: float(watermark.snapshot().pending))

    def track_feed(self, source: FeedSource, clock: Clock) -> None:
        """Read the feed backlog the last aggregates refresh found, and whether this replica
        leads, at scrape time (constant work, no query)."""

        def lag() -> float:
            oldest = source.backlog.oldest_at
            return 0.0 if oldest is None else max(0.0, (clock() - oldest).total_seconds())

        self.evaluation_feed_backlog.set_function(lambda: float(source.backlog.rows))
        self.evaluation_feed_lag.set_function(lag)
        self.evaluation_leader.set_function(lambda: float(source.leads()))


class FeedSource(Protocol):
    """What the feed gauges read (the evaluator)."""

    @property
    def backlog(self) -> FeedBacklog: ...

    def leads(self) -> bool: ...


class AggregatesHolder:
    """The latest fleet aggregates, swapped atomically by the evaluator, read by scrapes and queries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[FleetAggregates, list[ClusterCapabilities]] | None = None

    def publish(self, aggregates: FleetAggregates) -> None:
        summary = summarize_clusters(aggregates.cluster_servers, aggregates.cluster_clients)
        with self._lock:
            self._current = (aggregates, summary)

    def current(self) -> tuple[FleetAggregates, list[ClusterCapabilities]] | None:
        with self._lock:
            return self._current


# The `cluster` (and its `forest`) label value of the series that sums the clusters beyond the cap.
OVERFLOW = "_overflow_"
DEFAULT_MAX_CLUSTERS = 500


class FleetStateCollector(Collector):
    def __init__(
        self,
        holder: AggregatesHolder,
        policy_ids: Callable[[], Sequence[str]],
        clock: Clock,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
    ) -> None:
        self._holder = holder
        self._policy_ids = policy_ids
        self._clock = clock
        self._max_clusters = max_clusters

    def describe(self) -> Iterable[Metric]:
        # Describing nothing keeps registration from calling collect() before the first evaluation.
        return []

    def collect(self) -> Iterable[Metric]:
        snapshot = self._holder.current()
        if snapshot is None:
            return
        aggregates, clusters = snapshot
        hosts = GaugeMetricFamily("rmsfleet_hosts", "Hosts reporting a role at a version", labels=["role", "version"])
        for role, versions in VERSIONS_BY_ROLE.items():
            for version in versions:
                hosts.add_metric([role, version], aggregates.hosts_by_role_version.get((role, version), 0))
        yield hosts
        clients = GaugeMetricFamily(
            "rmsfleet_clients", "Clients by version and activation (D10)", labels=["version", "activation"]
        )
        for version in CLIENT_VERSIONS:
            for activation in ACTIVATIONS:
                clients.add_metric(
                    [version, activation], aggregates.clients_by_version_activation.get((version, activation), 0)
                )
        yield clients
        yield GaugeMetricFamily("rmsfleet_fleet_hosts", "Hosts known to the collector", value=aggregates.total_hosts)
        yield GaugeMetricFamily(
            "rmsfleet_stale_agents",
            "Hosts that have not reported within the stale window",
            value=aggregates.stale_hosts,
        )
        yield from _cluster_families(clusters, self._max_clusters)
        yield from _violation_families(aggregates, self._policy_ids(), self._clock)


def _labelled(
    clusters: Sequence[ClusterCapabilities], cap: int
) -> tuple[list[ClusterCapabilities], list[ClusterCapabilities]]:
    """(clusters exported with their own `cluster` label, the rest). Cluster URLs and forests come
    from agents' reports, so the label set is capped: the clusters with the most servers keep their
    label (ties by URL, so the choice is stable from scrape to scrape), the rest are summed."""
    if len(clusters) <= cap:
        return list(clusters), []
    ranked = sorted(clusters, key=lambda c: (-sum(c.server_versions.as_dict().values()), c.url))
    return ranked[:cap], ranked[cap:]


def _cluster_families(clusters: Sequence[ClusterCapabilities], cap: int = DEFAULT_MAX_CLUSTERS) -> Iterable[Metric]:
    by_state = GaugeMetricFamily("rmsfleet_clusters", "Clusters by kind and state (D5)", labels=["kind", "state"])
    counts: dict[tuple[str, str], int] = {
        (kind, state): 0 for kind in ("root-certification", "licensing") for state in ("uniform", "mixed")
    }
    servers = GaugeMetricFamily(
        "rmsfleet_cluster_servers", "Servers per cluster and version", labels=["cluster", "kind", "forest", "version"]
    )
    capability = GaugeMetricFamily(
        "rmsfleet_cluster_capability", "Cluster capabilities (D9-D12)", labels=["cluster", "capability"]
    )
    labelled, overflow = _labelled(clusters, cap)
    for cluster in clusters:
        present = {v: n for v, n in cluster.server_versions.as_dict().items() if n > 0}
        state = "mixed" if len(present) > 1 else "uniform"
        counts[cluster.kind.value, state] = counts.get((cluster.kind.value, state), 0) + 1
    for cluster in labelled:
        present = {v: n for v, n in cluster.server_versions.as_dict().items() if n > 0}
        for version, count in sorted(present.items()):
            servers.add_metric([cluster.url, cluster.kind.value, cluster.forest, version], count)
        for name, value in _capabilities(cluster):
            capability.add_metric([cluster.url, name], value)
    if overflow:
        # One series per kind and version (the forest label is capped with the cluster's), and
        # per capability the number of overflowed clusters that have it.
        summed: dict[tuple[str, str], int] = {}
        having: dict[str, float] = {}
        for cluster in overflow:
            for version, count in cluster.server_versions.as_dict().items():
                if count > 0:
                    summed[cluster.kind.value, version] = summed.get((cluster.kind.value, version), 0) + count
            for name, value in _capabilities(cluster):
                having[name] = having.get(name, 0.0) + value
        for (kind, version), count in sorted(summed.items()):
            servers.add_metric([OVERFLOW, kind, OVERFLOW, version], count)
        for name, value in sorted(having.items()):
            capability.add_metric([OVERFLOW, name], value)
    for (kind, state), count in sorted(counts.items()):
        by_state.add_metric([kind, state], count)
    yield by_state
    yield servers
    yield capability
    yield GaugeMetricFamily(
        "rmsfleet_cluster_label_overflow",
        f"Clusters beyond --metrics-max-clusters, summed under cluster={OVERFLOW!r} instead of their own label",
        value=len(overflow),
    )


def _capabilities(cluster: ClusterCapabilities) -> list[tuple[str, float]]:
    return [
        ("offline_enrollment", float(cluster.offline_enrollment)),
        ("self_activating_clients_all", float(cluster.self_activating_clients is SelfActivation.ALL)),
        ("server_lockbox", float(cluster.server_lockbox)),
        ("sql_server_2005_by_default", float(cluster.sql_server_2005_by_default)),
    ]


def _violation_families(aggregates: FleetAggregates, policy_ids: Sequence[str], clock: Clock) -> Iterable[Metric]:
    total = GaugeMetricFamily("rmsfleet_policy_violations", "Open violations per policy", labels=["policy"])
    by_severity = GaugeMetricFamily(
        "rmsfleet_policy_violations_by_severity",
        "Open violations per policy and severity",
        labels=["policy", "severity"],
    )
    oldest = GaugeMetricFamily(
        "rmsfleet_policy_violation_oldest_age_seconds",
        "Age of the oldest open violation of the policy",
        labels=["policy"],
    )
    now = clock()
    known = list(policy_ids) + sorted({p for p, _ in aggregates.violations_by_policy_severity} - set(policy_ids))
    for policy in known:
        counts = [aggregates.violations_by_policy_severity.get((policy, s), 0) for s in SEVERITIES]
        total.add_metric([policy], sum(counts))
        for severity, count in zip(SEVERITIES, counts, strict=True):
            by_severity.add_metric([policy, severity], count)
        first = aggregates.oldest_violation_by_policy.get(policy)
        oldest.add_metric([policy], 0.0 if first is None else max(0.0, (now - first).total_seconds()))
    # Only combinations with open violations: forests are known from the subjects, and a series
    # that disappears resolves its alert.
    by_forest = GaugeMetricFamily(
        "rmsfleet_policy_violations_by_forest",
        "Open violations per policy, severity and AD forest of the subject",
        labels=["policy", "severity", "forest"],
    )
    for (policy, severity, forest), count in sorted(aggregates.violations_by_policy_severity_forest.items()):
        by_forest.add_metric([policy, severity, forest], count)
    yield total
    yield by_severity
    yield oldest
    yield by_forest
