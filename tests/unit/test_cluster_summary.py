"""The collector's count-based cluster view must say exactly what the host-based one says
(capabilities.cluster_capabilities): same clusters, same counts, same D9-D12 answers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from rmsfleet.collector.domain.capabilities import cluster_capabilities
from rmsfleet.collector.domain.cluster_summary import summarize_clusters
from rmsfleet.collector.domain.model import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    HostRecord,
    ServerFacts,
    Version,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CLUSTERS = {
    "https://root-a": (ClusterKind.ROOT_CERTIFICATION, None, "a.example"),
    "https://lic-a": (ClusterKind.LICENSING, "https://root-a", "a.example"),
    "https://root-b": (ClusterKind.ROOT_CERTIFICATION, None, "b.example"),
}


@dataclass(frozen=True)
class ServerRow:
    cluster: str
    kind: str
    root_cluster: str | None
    forest: str
    version: str
    count: int


@dataclass(frozen=True)
class ClientRow:
    cluster: str
    version: str
    count: int


host_strategy = st.tuples(
    st.sampled_from(sorted(CLUSTERS)),
    st.one_of(st.none(), st.sampled_from(list(Version))),
    st.one_of(st.none(), st.sampled_from(list(Version))),
)


def records(specs: list[tuple[str, Version | None, Version | None]]) -> list[HostRecord]:
    hosts = []
    for i, (cluster, server, client) in enumerate(specs):
        kind, root, forest = CLUSTERS[cluster]
        if server is None and client is None:
            continue
        facts = HostFacts(
            host_id=f"h{i}",
            hostname=f"h{i}",
            forest=forest,
            server=None if server is None else ServerFacts(server, cluster, kind, root, Enrollment.OFFLINE),
            client=None if client is None else ClientFacts(client, Activation.SELF, cluster),
        )
        hosts.append(HostRecord(facts, T0, T0))
    return hosts


def group_counts(hosts: list[HostRecord]) -> tuple[list[ServerRow], list[ClientRow]]:
    """What the store's GROUP BY returns."""
    servers: Counter[tuple[str, str, str | None, str, str]] = Counter()
    clients: Counter[tuple[str, str]] = Counter()
    for h in hosts:
        if h.facts.server:
            s = h.facts.server
            servers[s.cluster, s.cluster_kind.value, s.root_cluster, h.facts.forest, s.version.value] += 1
        if h.facts.client and h.facts.client.cluster:
            clients[h.facts.client.cluster, h.facts.client.version.value] += 1
    return [ServerRow(*k, n) for k, n in servers.items()], [ClientRow(*k, n) for k, n in clients.items()]


@settings(max_examples=200, deadline=None)
@given(st.lists(host_strategy, max_size=25))
def test_count_based_summary_matches_host_based_capabilities(
    specs: list[tuple[str, Version | None, Version | None]],
) -> None:
    hosts = records(specs)
    assert summarize_clusters(*group_counts(hosts)) == cluster_capabilities(hosts)


def test_d11_lockbox_needs_sp2_servers_and_sp2_clients() -> None:
    hosts = records([("https://root-b", Version.SP2, Version.SP2), ("https://root-b", None, Version.SP2)])
    (summary,) = summarize_clusters(*group_counts(hosts))
    assert summary.server_lockbox and summary.sql_server_2005_by_default and summary.offline_enrollment
    hosts += records([("https://root-b", None, Version.SP1)])
    (summary,) = summarize_clusters(*group_counts(hosts))
    assert not summary.server_lockbox and summary.sql_server_2005_by_default
