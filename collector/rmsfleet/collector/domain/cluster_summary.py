"""Cluster capabilities from per-version counts (what the store's GROUP BY returns), so the
collector keeps the cluster view current at any fleet size. The rules themselves (D9-D12) live
in capabilities.capabilities_of; this module only folds count rows into its inputs."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Protocol

from rmsfleet.collector.domain.capabilities import ClusterCapabilities, VersionCounts, capabilities_of
from rmsfleet.collector.domain.model import ClusterKind


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


def _counts(versions: Counter[str]) -> VersionCounts:
    return VersionCounts.from_names(versions)


def _majority(counts: Counter[str], prefer: str | None = None) -> str:
    # Same tie-breaking as capabilities.group_by_cluster: `prefer` wins a tie, then the smallest.
    return min(counts, key=lambda v: (-counts[v], v != prefer, v))


def summarize_clusters(servers: Iterable[ServerCount], clients: Iterable[ClientCount]) -> list[ClusterCapabilities]:
    """One entry per cluster that has servers, sorted by URL. Kind, root and forest are what most
    of its servers report; clients count toward the cluster they name."""
    server_versions: dict[str, Counter[str]] = defaultdict(Counter)
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    roots: dict[str, Counter[str]] = defaultdict(Counter)
    forests: dict[str, Counter[str]] = defaultdict(Counter)
    for row in servers:
        server_versions[row.cluster][row.version] += row.count
        kinds[row.cluster][row.kind] += row.count
        forests[row.cluster][row.forest] += row.count
        if row.kind == ClusterKind.LICENSING.value and row.root_cluster:
            roots[row.cluster][row.root_cluster] += row.count
    client_versions: dict[str, Counter[str]] = defaultdict(Counter)
    for client_row in clients:
        client_versions[client_row.cluster][client_row.version] += client_row.count
    summaries = []
    for url in sorted(server_versions):
        kind = ClusterKind(_majority(kinds[url], prefer=ClusterKind.LICENSING.value))
        summaries.append(
            capabilities_of(
                url,
                kind,
                _majority(roots[url]) if kind is ClusterKind.LICENSING and roots[url] else None,
                _majority(forests[url]),
                _counts(server_versions[url]),
                _counts(client_versions.get(url, Counter())),
            )
        )
    return summaries
