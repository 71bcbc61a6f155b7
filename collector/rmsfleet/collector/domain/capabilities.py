"""What each RMS cluster can do, from the versions its servers and clients report.

Follows domain.md's compatibility table (D9-D12 applied). Pure: no I/O, no clock.

A version the agent could not map (UNKNOWN) never grants a capability: a capability is reported
only when every host it depends on is known to have it. The counts show the UNKNOWN hosts, so a
person can see why a capability is missing.

`group_by_cluster` is also the one place that decides a cluster's kind, root and forest from its
servers' reports, so the policies and the planner see the same clusters.
"""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rmsfleet.collector.domain.model import ClusterKind, HostRecord, ServerFacts, Version

__all__ = [
    "ClusterCapabilities",
    "ClusterMembers",
    "SelfActivation",
    "VersionCounts",
    "capabilities_of",
    "cluster_capabilities",
    "group_by_cluster",
]


@dataclass(frozen=True, slots=True)
class VersionCounts:
    """How many hosts of one role report each version."""

    rtm: int = 0
    sp1: int = 0
    sp2: int = 0
    unknown: int = 0
    # Clients only: the RMS client built into Windows Vista and later (D15).
    builtin: int = 0

    @classmethod
    def of(cls, versions: Iterable[Version]) -> VersionCounts:
        counts = Counter(versions)
        return cls(
            rtm=counts[Version.RTM],
            sp1=counts[Version.SP1],
            sp2=counts[Version.SP2],
            unknown=counts[Version.UNKNOWN],
            builtin=counts[Version.BUILTIN],
        )

    @classmethod
    def from_names(cls, counts: Mapping[str, int]) -> VersionCounts:
        """From counts keyed by the contract's version names (a GROUP BY's rows)."""
        return cls(**{version.name.lower(): counts.get(version.value, 0) for version in Version})

    @property
    def total(self) -> int:
        return self.rtm + self.sp1 + self.sp2 + self.unknown + self.builtin

    def count(self, version: Version) -> int:
        return {
            Version.RTM: self.rtm,
            Version.SP1: self.sp1,
            Version.SP2: self.sp2,
            Version.UNKNOWN: self.unknown,
            Version.BUILTIN: self.builtin,
        }[version]

    def as_dict(self) -> dict[str, int]:
        """Keyed by the contract's version names (`RTM`, `SP1`, `SP2`, `UNKNOWN`, `BUILTIN`), for JSON."""
        return {version.value: self.count(version) for version in Version}


class SelfActivation(enum.Enum):
    """D10 for a cluster's clients. UNKNOWN clients never count as self-activating; the client
    built into Windows Vista and later does (D15)."""

    ALL = "all"  # every client is known to be at SP1 or later, or built into Windows
    SOME = "some"  # at least one is, at least one is not (or is UNKNOWN)
    NONE = "none"  # no client is known to be at SP1 or later
    NO_CLIENTS = "no-clients"  # no client names this cluster: nothing to activate


@dataclass(frozen=True, slots=True)
class ClusterMembers:
    """A cluster and the hosts that report belonging to it, each tuple sorted by host id.

    `kind`, `root_cluster` and `forest` are what most of the cluster's servers report. Servers
    of one cluster should agree; when they tie on the kind, LICENSING wins, because treating a
    cluster as licensing only adds the D6 wait for its root and never skips it."""

    url: str
    kind: ClusterKind
    root_cluster: str | None
    forest: str
    servers: tuple[HostRecord, ...]
    clients: tuple[HostRecord, ...]


@dataclass(frozen=True, slots=True)
class ClusterCapabilities:
    url: str
    kind: ClusterKind
    root_cluster: str | None
    forest: str
    server_versions: VersionCounts
    client_versions: VersionCounts
    # D9: every server is known to be at SP1 or later.
    offline_enrollment: bool
    # D10: see SelfActivation.
    self_activating_clients: SelfActivation
    # D11: every server and every client known to be at SP2, and at least one client.
    server_lockbox: bool
    # D12: every server is known to be at SP2 (clients do not matter).
    sql_server_2005_by_default: bool


def group_by_cluster(hosts: Sequence[HostRecord]) -> list[ClusterMembers]:
    """Every cluster that at least one server reports, sorted by URL.

    Clients attach by `client.cluster` only; a client naming a cluster that no server reports,
    or naming none, belongs to no cluster here. A host that runs both roles appears among the
    servers of its server cluster and among the clients of its client cluster."""
    servers: dict[str, list[HostRecord]] = defaultdict(list)
    clients: dict[str, list[HostRecord]] = defaultdict(list)
    for host in hosts:
        server = host.facts.server
        if server is not None:
            servers[server.cluster].append(host)
        client = host.facts.client
        if client is not None and client.cluster is not None:
            clients[client.cluster].append(host)
    groups: list[ClusterMembers] = []
    for url in sorted(servers):
        members = sorted(servers[url], key=_host_id)
        kinds = Counter(_server(h).cluster_kind for h in members)
        # max() keeps the first of equal counts, so LICENSING wins a tie (see ClusterMembers).
        kind = max(
            (ClusterKind.LICENSING, ClusterKind.ROOT_CERTIFICATION),
            key=lambda k: kinds[k],
        )
        roots = [
            _server(h).root_cluster
            for h in members
            if _server(h).cluster_kind is ClusterKind.LICENSING and _server(h).root_cluster
        ]
        groups.append(
            ClusterMembers(
                url=url,
                kind=kind,
                root_cluster=_most_common(roots) if kind is ClusterKind.LICENSING else None,
                forest=_most_common(h.facts.forest for h in members) or "",
                servers=tuple(members),
                clients=tuple(sorted(clients.get(url, ()), key=_host_id)),
            )
        )
    return groups


def cluster_capabilities(hosts: Sequence[HostRecord]) -> list[ClusterCapabilities]:
    """What each cluster can do (domain.md's compatibility table), sorted by cluster URL."""
    return [_capabilities(members) for members in group_by_cluster(hosts)]


def _capabilities(members: ClusterMembers) -> ClusterCapabilities:
    return capabilities_of(
        members.url,
        members.kind,
        members.root_cluster,
        members.forest,
        VersionCounts.of(_server(h).version for h in members.servers),
        VersionCounts.of(_client_version(h) for h in members.clients),
    )


def capabilities_of(
    url: str,
    kind: ClusterKind,
    root_cluster: str | None,
    forest: str,
    server_versions: VersionCounts,
    client_versions: VersionCounts,
) -> ClusterCapabilities:
    """The compatibility table applied to a cluster's version counts. The collector calls this
    with counts from a GROUP BY, so it stays cheap at any fleet size."""
    servers_sp2 = server_versions.total > 0 and server_versions.sp2 == server_versions.total
    clients_sp2 = client_versions.total > 0 and client_versions.sp2 == client_versions.total
    return ClusterCapabilities(
        url=url,
        kind=kind,
        root_cluster=root_cluster,
        forest=forest,
        server_versions=server_versions,
        client_versions=client_versions,
        offline_enrollment=server_versions.total > 0
        and server_versions.sp1 + server_versions.sp2 == server_versions.total,
        self_activating_clients=_self_activation(client_versions),
        server_lockbox=servers_sp2 and clients_sp2,
        sql_server_2005_by_default=servers_sp2,
    )


def _self_activation(clients: VersionCounts) -> SelfActivation:
    if clients.total == 0:
        return SelfActivation.NO_CLIENTS
    capable = clients.sp1 + clients.sp2 + clients.builtin
    if capable == clients.total:
        return SelfActivation.ALL
    return SelfActivation.SOME if capable else SelfActivation.NONE


def _most_common(values: Iterable[str | None]) -> str | None:
    # Ties go to the smallest value so the answer does not depend on report order.
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    return min(counts, key=lambda v: (-counts[v], v))


def _host_id(host: HostRecord) -> str:
    return host.facts.host_id


def _server(host: HostRecord) -> ServerFacts:
    server = host.facts.server
    assert server is not None  # only called on hosts grouped as servers
    return server


def _client_version(host: HostRecord) -> Version:
    client = host.facts.client
    assert client is not None  # only called on hosts grouped as clients
    return client.version
