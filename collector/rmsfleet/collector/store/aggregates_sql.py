"""Fleet aggregates for metrics and the cluster view: a handful of GROUP BY queries whose cost
grows with the number of clusters and versions, not with what a scrape asks for."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rmsfleet.collector.store.models import HostRow, ViolationRow
from rmsfleet.collector.store.rows import utc


@dataclass(frozen=True, slots=True)
class ClusterServerCount:
    cluster: str
    kind: str
    root_cluster: str | None
    forest: str
    version: str
    count: int


@dataclass(frozen=True, slots=True)
class ClusterClientCount:
    cluster: str
    version: str
    count: int


@dataclass(frozen=True, slots=True)
class FleetAggregates:
    computed_at: datetime
    total_hosts: int
    stale_hosts: int
    hosts_by_role_version: dict[tuple[str, str], int]
    clients_by_version_activation: dict[tuple[str, str], int]
    cluster_servers: list[ClusterServerCount]
    cluster_clients: list[ClusterClientCount]
    violations_by_policy_severity: dict[tuple[str, str], int]
    oldest_violation_by_policy: dict[str, datetime]
    # (policy, severity, forest) -> open violations whose subject is in that AD forest.
    violations_by_policy_severity_forest: dict[tuple[str, str, str], int]


@dataclass(frozen=True, slots=True)
class ViolationCounts:
    """The part of the aggregates that a pass can move: GROUP BYs over the open violations."""

    by_policy_severity: dict[tuple[str, str], int]
    oldest_by_policy: dict[str, datetime]
    by_policy_severity_forest: dict[tuple[str, str, str], int]


def compute_aggregates(session: Session, now: datetime, stale_after: timedelta) -> FleetAggregates:
    """Every aggregate: the hosts' (a scan of the hosts table) and the violations'."""
    total = session.execute(select(func.count()).select_from(HostRow)).scalar_one()
    stale = session.execute(
        select(func.count()).select_from(HostRow).where(HostRow.last_seen < now - stale_after)
    ).scalar_one()
    by_role: dict[tuple[str, str], int] = {}
    for version, count in session.execute(
        select(HostRow.server_version, func.count())
        .where(HostRow.server_version.is_not(None))
        .group_by(HostRow.server_version)
    ):
        by_role["server", str(version)] = count
    clients: dict[tuple[str, str], int] = {}
    for version, activation, count in session.execute(
        select(HostRow.client_version, HostRow.client_activation, func.count())
        .where(HostRow.client_version.is_not(None))
        .group_by(HostRow.client_version, HostRow.client_activation)
    ):
        clients[str(version), str(activation)] = count
        by_role["client", str(version)] = by_role.get(("client", str(version)), 0) + count
    cluster_servers = [
        ClusterServerCount(str(cluster), str(kind), root, forest, str(version), count)
        for cluster, kind, root, forest, version, count in session.execute(
            select(
                HostRow.server_cluster,
                HostRow.server_cluster_kind,
                HostRow.server_root_cluster,
                HostRow.forest,
                HostRow.server_version,
                func.count(),
            )
            .where(HostRow.server_cluster.is_not(None))
            .group_by(
                HostRow.server_cluster,
                HostRow.server_cluster_kind,
                HostRow.server_root_cluster,
                HostRow.forest,
                HostRow.server_version,
            )
        )
    ]
    cluster_clients = [
        ClusterClientCount(str(cluster), str(version), count)
        for cluster, version, count in session.execute(
            select(HostRow.client_cluster, HostRow.client_version, func.count())
            .where(HostRow.client_cluster.is_not(None))
            .group_by(HostRow.client_cluster, HostRow.client_version)
        )
    ]
    counts = violation_counts(session)
    return FleetAggregates(
        computed_at=now,
        total_hosts=total,
        stale_hosts=stale,
        hosts_by_role_version=by_role,
        clients_by_version_activation=clients,
        cluster_servers=cluster_servers,
        cluster_clients=cluster_clients,
        violations_by_policy_severity=counts.by_policy_severity,
        oldest_violation_by_policy=counts.oldest_by_policy,
        violations_by_policy_severity_forest=counts.by_policy_severity_forest,
    )


def with_violations(aggregates: FleetAggregates, counts: ViolationCounts) -> FleetAggregates:
    """`aggregates` with its violation part replaced: what follows a pass that moved violations,
    without scanning every host again (at 1M hosts that scan is most of a refresh)."""
    return replace(
        aggregates,
        violations_by_policy_severity=counts.by_policy_severity,
        oldest_violation_by_policy=counts.oldest_by_policy,
        violations_by_policy_severity_forest=counts.by_policy_severity_forest,
    )


def violation_counts(session: Session) -> ViolationCounts:
    violations: dict[tuple[str, str], int] = {}
    oldest: dict[str, datetime] = {}
    for policy, severity, count, first in session.execute(
        select(ViolationRow.policy, ViolationRow.severity, func.count(), func.min(ViolationRow.since))
        .where(ViolationRow.resolved_at.is_(None))
        .group_by(ViolationRow.policy, ViolationRow.severity)
    ):
        violations[policy, severity] = count
        first_utc = utc(first)
        oldest[policy] = min(oldest.get(policy, first_utc), first_utc)
    return ViolationCounts(violations, oldest, violations_by_forest(session))


def violations_by_forest(session: Session) -> dict[tuple[str, str, str], int]:
    """Open violations per (policy, severity, forest of the subject): a host's forest, the forest
    of a cluster's servers (a cluster whose servers report two forests counts in both), a forest
    subject itself. The rows are few (policies x severities x forests), so alerts and
    Alertmanager can group and inhibit by forest without a per-host series."""
    open_ = ViolationRow.resolved_at.is_(None)
    cluster_forests = (
        select(HostRow.server_cluster.label("cluster"), HostRow.forest)
        .where(HostRow.server_cluster.is_not(None))
        .distinct()
        .subquery()
    )
    statements = [
        select(ViolationRow.policy, ViolationRow.severity, HostRow.forest, func.count())
        .join(HostRow, HostRow.host_id == ViolationRow.subject)
        .where(open_, ViolationRow.subject_kind == "host")
        .group_by(ViolationRow.policy, ViolationRow.severity, HostRow.forest),
        select(ViolationRow.policy, ViolationRow.severity, cluster_forests.c.forest, func.count())
        .join(cluster_forests, cluster_forests.c.cluster == ViolationRow.subject)
        .where(open_, ViolationRow.subject_kind == "cluster")
        .group_by(ViolationRow.policy, ViolationRow.severity, cluster_forests.c.forest),
        select(ViolationRow.policy, ViolationRow.severity, ViolationRow.subject, func.count())
        .where(open_, ViolationRow.subject_kind == "forest")
        .group_by(ViolationRow.policy, ViolationRow.severity, ViolationRow.subject),
    ]
    counts: dict[tuple[str, str, str], int] = {}
    for statement in statements:
        for policy, severity, forest, count in session.execute(statement):
            key = (str(policy), str(severity), str(forest))
            counts[key] = counts.get(key, 0) + int(count)
    return counts
