"""Mapping between the host facts contract and the flattened fact columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    ServerFacts,
    Version,
)

FACT_COLUMNS = (
    "hostname",
    "forest",
    "server_version",
    "server_cluster",
    "server_cluster_kind",
    "server_root_cluster",
    "server_enrollment",
    "client_version",
    "client_activation",
    "client_cluster",
    "client_activated_users",
)


def facts_to_columns(facts: HostFacts) -> dict[str, Any]:
    server = facts.server
    client = facts.client
    return {
        "hostname": facts.hostname,
        "forest": facts.forest,
        "server_version": server.version.value if server else None,
        "server_cluster": server.cluster if server else None,
        "server_cluster_kind": server.cluster_kind.value if server else None,
        "server_root_cluster": server.root_cluster if server else None,
        "server_enrollment": server.enrollment.value if server else None,
        "client_version": client.version.value if client else None,
        "client_activation": client.activation.value if client else None,
        "client_cluster": client.cluster if client else None,
        "client_activated_users": client.activated_users if client else None,
    }


# Plain dict lookups: calling Enum(value) costs several times more, and a full pass rebuilds
# every host's facts (bench/full_pass_bench.py).
_VERSIONS = {v.value: v for v in Version}
_KINDS = {k.value: k for k in ClusterKind}
_ENROLLMENTS = {e.value: e for e in Enrollment}
_ACTIVATIONS = {a.value: a for a in Activation}


def facts_from_columns(host_id: str, row: Any) -> HostFacts:
    """Rebuild facts from an ORM row or a Core row with the fact columns."""
    server = None
    if row.server_version is not None:
        server = ServerFacts(
            version=_VERSIONS[row.server_version],
            cluster=row.server_cluster,
            cluster_kind=_KINDS[row.server_cluster_kind],
            root_cluster=row.server_root_cluster,
            enrollment=_ENROLLMENTS[row.server_enrollment],
        )
    client = None
    if row.client_version is not None:
        client = ClientFacts(
            version=_VERSIONS[row.client_version],
            activation=_ACTIVATIONS[row.client_activation],
            cluster=row.client_cluster,
            activated_users=row.client_activated_users,
        )
    return HostFacts(host_id=host_id, hostname=row.hostname, forest=row.forest, server=server, client=client)


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
