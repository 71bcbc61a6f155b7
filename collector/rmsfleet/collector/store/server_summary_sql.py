"""What an incremental pass reads for the cluster and forest rules (domain/server_rules.py):
per-cluster version counts from GROUP BY queries over indexed columns, only for the clusters
and forests the changed hosts are or were in, instead of every server row (migration 0007 adds
the indexes these queries use)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, false, func, or_, select
from sqlalchemy.orm import Session

from rmsfleet.collector.domain.model import ClusterKind, Version
from rmsfleet.collector.domain.server_rules import RtmClient, ServerCount, Touched
from rmsfleet.collector.store.models import HostHistoryRow, HostRow

# Values per IN list: well inside SQLite's bound-parameter limit.
_CHUNK = 500
T = TypeVar("T")


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    ordered = sorted(set(values))  # type: ignore[type-var]
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def touched_by(session: Session, host_ids: Collection[str]) -> Touched:
    """The server clusters and forests `host_ids` are servers in now or were in any stored fact
    change (the history holds every fact change, so also the state before this pass's)."""
    clusters: set[str] = set()
    forests: set[str] = set()
    for chunk in _chunks(host_ids):
        for table in (HostRow, HostHistoryRow):
            statement = (
                select(table.server_cluster, table.forest)
                .where(table.host_id.in_(chunk), table.server_version.is_not(None))
                .distinct()
            )
            for cluster, forest in session.execute(statement):
                if cluster is not None:
                    clusters.add(cluster)
                forests.add(forest)
    return Touched(frozenset(clusters), frozenset(forests), frozenset(host_ids))


def _in(column: Any, values: Collection[str]) -> Iterator[ColumnElement[bool]]:
    for chunk in _chunks(values):
        yield column.in_(chunk)


class SqlServerSource:
    """domain.server_rules.ServerSource over the hosts table, in the pass's session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def counts(self, clusters: Collection[str], forests: Collection[str]) -> list[ServerCount]:
        conditions = [*_in(HostRow.server_cluster, clusters), *_in(HostRow.forest, forests)]
        if not conditions:
            return []
        return self._grouped(or_(false(), *conditions))

    def every_count(self) -> list[ServerCount]:
        """The ServerCount rows of every server: a few per cluster, for a full pass."""
        return self._grouped(None)

    def _grouped(self, condition: ColumnElement[bool] | None) -> list[ServerCount]:
        group = (
            HostRow.server_cluster,
            HostRow.server_cluster_kind,
            HostRow.server_root_cluster,
            HostRow.forest,
            HostRow.server_version,
        )
        statement = select(*group, func.count()).where(HostRow.server_version.is_not(None)).group_by(*group)
        if condition is not None:
            statement = statement.where(condition)
        rows: list[ServerCount] = []
        for cluster, kind, root, forest, version, count in self._session.execute(statement):
            if cluster is None:
                continue  # a server without a cluster makes no facts (rows.UnreadableRow)
            try:
                rows.append(ServerCount(cluster, ClusterKind(kind), root, forest, Version(version), int(count)))
            except ValueError:
                # A name this collector does not read: load_fleet leaves such a host out of every
                # rule (rows.UnreadableRow), and so do the counts.
                continue
        return rows

    def dependents(self, roots: Collection[str]) -> set[str]:
        found: set[str] = set()
        for condition in _in(HostRow.server_root_cluster, roots):
            statement = select(HostRow.server_cluster).where(condition, HostRow.server_version.is_not(None)).distinct()
            found.update(cluster for cluster in self._session.scalars(statement) if cluster is not None)
        return found

    def rtm_clients(self, clusters: Collection[str], hosts: Collection[str]) -> list[RtmClient]:
        found: dict[str, RtmClient] = {}
        for condition in [*_in(HostRow.client_cluster, clusters), *_in(HostRow.host_id, hosts)]:
            statement = select(HostRow.host_id, HostRow.client_cluster).where(
                condition, HostRow.client_version == Version.RTM.value, HostRow.client_cluster.is_not(None)
            )
            for host_id, cluster in self._session.execute(statement):
                if cluster is not None:  # excluded by the query: for the type checker
                    found[host_id] = RtmClient(host_id, cluster)
        return list(found.values())
