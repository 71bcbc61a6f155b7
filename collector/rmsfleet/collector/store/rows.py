"""Mapping between the host facts contract and the flattened fact columns."""

from __future__ import annotations

from collections.abc import Mapping
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
from rmsfleet.contract.wire import quote

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


class UnreadableRow(ValueError):
    """Stored fact columns that make no facts: a name this collector does not know (written by
    hand, by a newer release, or damaged) or a value missing where the contract requires one."""

    def __init__(self, host_id: str, column: str, value: object) -> None:
        shown = "NULL" if value is None else quote(str(value))
        super().__init__(
            f"host {quote(host_id)}: column {column} holds {shown}, which is not a fact this collector reads"
        )
        self.host_id = host_id
        self.column = column


# The columns whose value must be a known name whenever their part (server, client) is present.
_KNOWN_NAMES: dict[str, Mapping[str, object]] = {
    "server_version": _VERSIONS,
    "server_cluster_kind": _KINDS,
    "server_enrollment": _ENROLLMENTS,
    "client_version": _VERSIONS,
    "client_activation": _ACTIVATIONS,
}


def facts_from_columns(host_id: str, row: Any) -> HostFacts:
    """Rebuild facts from an ORM row or a Core row with the fact columns. Raises UnreadableRow
    naming the first column that makes no fact."""
    try:
        return _facts_from_columns(host_id, row)
    except KeyError:
        raise _unreadable(host_id, row) from None


def _unreadable(host_id: str, row: Any) -> UnreadableRow:
    for column, names in _KNOWN_NAMES.items():
        part_present = getattr(row, column.split("_", 1)[0] + "_version") is not None
        value = getattr(row, column)
        if part_present and value not in names:
            return UnreadableRow(host_id, column, value)
    return UnreadableRow(host_id, "(unknown)", None)


def _facts_from_columns(host_id: str, row: Any) -> HostFacts:
    server = None
    if row.server_version is not None:
        if row.server_cluster is None:
            # Every policy over clusters keys on it: a server without one is a damaged row.
            raise UnreadableRow(host_id, "server_cluster", None)
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
