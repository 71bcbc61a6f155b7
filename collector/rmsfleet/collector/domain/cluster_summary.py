"""What each cluster can do, from per-version counts (domain.md's compatibility table, D9-D12).

Works on counts rather than hosts so the collector can keep it current from a GROUP BY at any
fleet size. Versions the agent could not map (UNKNOWN) never grant a capability."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class ServerCount(Protocol):
    @property
    def cluster(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def root_cluster(self) -> str | None: ...
    @property
    def forest(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def count(self) -> int: ...


class ClientCount(Protocol):
    @property
    def cluster(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    url: str
    kind: str
    root_cluster: str | None
    forest: str
    server_versions: Mapping[str, int]
    client_versions: Mapping[str, int] = field(default_factory=dict)

    @property
    def servers(self) -> int:
        return sum(self.server_versions.values())

    @property
    def clients(self) -> int:
        return sum(self.client_versions.values())

    @property
    def offline_enrollment(self) -> bool:
        """D9: only servers at SP1 or later enroll offline; one RTM server forces internet enrollment."""
        return self.servers > 0 and _all_in(self.server_versions, {"SP1", "SP2"})

    @property
    def self_activating_clients(self) -> str:
        """D10: clients at SP1 or later self-activate. "all", "some", "none", or "no-clients"."""
        if self.clients == 0:
            return "no-clients"
        capable = sum(n for v, n in self.client_versions.items() if v in {"SP1", "SP2"})
        if capable == self.clients:
            return "all"
        return "some" if capable else "none"

    @property
    def server_lockbox(self) -> bool:
        """D11: the server lockbox needs SP2 servers and SP2 clients."""
        return self.sql_server_2005_by_default and self.clients > 0 and _all_in(self.client_versions, {"SP2"})

    @property
    def sql_server_2005_by_default(self) -> bool:
        """D12: SQL Server 2005 is supported by default only with SP2 servers."""
        return self.servers > 0 and _all_in(self.server_versions, {"SP2"})


def _all_in(counts: Mapping[str, int], allowed: set[str]) -> bool:
    return all(version in allowed for version, count in counts.items() if count > 0)


def summarize_clusters(servers: Iterable[ServerCount], clients: Iterable[ClientCount]) -> list[ClusterSummary]:
    """One summary per cluster that has servers, sorted by URL. Clients count toward the cluster
    they name; clients of a cluster with no reporting servers are left out (nothing to say)."""
    server_versions: dict[str, dict[str, int]] = defaultdict(dict)
    identity: dict[str, tuple[str, str | None, str]] = {}
    for row in servers:
        versions = server_versions[row.cluster]
        versions[row.version] = versions.get(row.version, 0) + row.count
        # A cluster is identified by its URL; if its servers disagree on kind or forest the first
        # one seen wins here and the disagreement shows up in the hosts list.
        identity.setdefault(row.cluster, (row.kind, row.root_cluster, row.forest))
    client_versions: dict[str, dict[str, int]] = defaultdict(dict)
    for client_row in clients:
        versions = client_versions[client_row.cluster]
        versions[client_row.version] = versions.get(client_row.version, 0) + client_row.count
    return [
        ClusterSummary(
            url=url,
            kind=identity[url][0],
            root_cluster=identity[url][1],
            forest=identity[url][2],
            server_versions=dict(server_versions[url]),
            client_versions=dict(client_versions.get(url, {})),
        )
        for url in sorted(server_versions)
    ]
