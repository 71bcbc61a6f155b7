"""Cluster capabilities: domain.md's compatibility table, cell by cell (D9-D12), and how
clusters are formed from the hosts' reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rmsfleet.collector.domain.capabilities import (
    ClusterCapabilities,
    SelfActivation,
    VersionCounts,
    cluster_capabilities,
    group_by_cluster,
)
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

T0 = datetime(2024, 5, 1, tzinfo=UTC)
RTM, SP1, SP2, UNKNOWN = Version.RTM, Version.SP1, Version.SP2, Version.UNKNOWN
ROOT, LICENSING = ClusterKind.ROOT_CERTIFICATION, ClusterKind.LICENSING
URL = "https://rms.corp.example"


def record(facts: HostFacts) -> HostRecord:
    return HostRecord(facts=facts, first_seen=T0, last_seen=T0)


def server(
    host_id: str,
    version: Version,
    cluster: str = URL,
    *,
    forest: str = "corp.example",
    kind: ClusterKind = ROOT,
    root: str | None = None,
    client: Version | None = None,
    client_cluster: str | None = None,
) -> HostRecord:
    return record(
        HostFacts(
            host_id,
            host_id,
            forest,
            ServerFacts(version, cluster, kind, root, Enrollment.OFFLINE),
            None if client is None else ClientFacts(client, Activation.SELF, client_cluster),
        )
    )


def client(host_id: str, version: Version, cluster: str | None = URL) -> HostRecord:
    return record(HostFacts(host_id, host_id, "corp.example", None, ClientFacts(version, Activation.SELF, cluster)))


def only(hosts: list[HostRecord]) -> ClusterCapabilities:
    [capabilities] = cluster_capabilities(hosts)
    return capabilities


def clients_of(*versions: Version) -> list[HostRecord]:
    return [client(f"c{i}", v) for i, v in enumerate(versions)]


# The compatibility table: (server version, clients) -> (offline enrollment, self-activation,
# lockbox, SQL Server 2005 by default).
@pytest.mark.parametrize(
    ("server_version", "client_versions", "expected"),
    [
        (RTM, (RTM, RTM), (False, SelfActivation.NONE, False, False)),
        (RTM, (SP1, SP2), (False, SelfActivation.ALL, False, False)),
        (RTM, (RTM, SP2), (False, SelfActivation.SOME, False, False)),
        (SP1, (RTM,), (True, SelfActivation.NONE, False, False)),
        (SP1, (SP1, SP2), (True, SelfActivation.ALL, False, False)),
        (SP1, (RTM, SP1), (True, SelfActivation.SOME, False, False)),
        (SP2, (RTM,), (True, SelfActivation.NONE, False, True)),
        (SP2, (SP2, SP2), (True, SelfActivation.ALL, True, True)),
        (SP2, (SP1, SP2), (True, SelfActivation.ALL, False, True)),  # lockbox needs every client at SP2
        (SP2, (RTM, SP2), (True, SelfActivation.SOME, False, True)),
    ],
)
def test_d9_d10_d11_d12_the_compatibility_table(
    server_version: Version,
    client_versions: tuple[Version, ...],
    expected: tuple[bool, SelfActivation, bool, bool],
) -> None:
    capabilities = only([server("s1", server_version), *clients_of(*client_versions)])

    assert (
        capabilities.offline_enrollment,
        capabilities.self_activating_clients,
        capabilities.server_lockbox,
        capabilities.sql_server_2005_by_default,
    ) == expected


def test_d9_one_rtm_server_takes_offline_enrollment_from_the_whole_cluster() -> None:
    assert only([server("s1", SP2), server("s2", RTM)]).offline_enrollment is False


def test_d11_d12_one_sp1_server_takes_lockbox_and_sql_server_2005_from_the_cluster() -> None:
    capabilities = only([server("s1", SP2), server("s2", SP1), client("c1", SP2)])

    assert (capabilities.server_lockbox, capabilities.sql_server_2005_by_default) == (False, False)


def test_d11_lockbox_needs_at_least_one_client() -> None:
    capabilities = only([server("s1", SP2)])

    assert capabilities.self_activating_clients is SelfActivation.NO_CLIENTS
    assert capabilities.server_lockbox is False
    assert capabilities.sql_server_2005_by_default is True


def test_unknown_versions_never_grant_a_capability_and_are_counted() -> None:
    capabilities = only([server("s1", SP2), server("s2", UNKNOWN), client("c1", SP2), client("c2", UNKNOWN)])

    assert capabilities.offline_enrollment is False
    assert capabilities.sql_server_2005_by_default is False
    assert capabilities.server_lockbox is False
    assert capabilities.self_activating_clients is SelfActivation.SOME
    assert capabilities.server_versions == VersionCounts(sp2=1, unknown=1)
    assert capabilities.client_versions.as_dict() == {"RTM": 0, "SP1": 0, "SP2": 1, "UNKNOWN": 1, "BUILTIN": 0}


def test_d15_clients_built_into_windows_self_activate_but_grant_no_lockbox() -> None:
    capabilities = only([server("s1", SP2), client("c1", Version.BUILTIN), client("c2", SP1)])

    assert capabilities.self_activating_clients is SelfActivation.ALL
    # D11 names SP2 clients; nothing documents lockbox support for the built-in client.
    assert capabilities.server_lockbox is False
    assert capabilities.client_versions.builtin == 1


def test_d10_unknown_clients_alone_are_not_self_activating() -> None:
    assert only([server("s1", SP2), client("c1", UNKNOWN)]).self_activating_clients is SelfActivation.NONE


def test_clusters_come_from_servers_and_clients_attach_by_the_cluster_they_name() -> None:
    root, lic = "https://root.corp.example", "https://lic.corp.example"
    hosts = [
        server("r1", SP2, root, client=RTM, client_cluster=lic),
        server("r2", SP1, root),
        server("l1", SP1, lic, kind=LICENSING, root=root, client=SP2, client_cluster=None),
        client("c1", SP1, lic),
        client("c2", RTM, None),
        client("c3", RTM, "https://nobody.corp.example"),
    ]

    by_url = {c.url: c for c in cluster_capabilities(hosts)}

    assert list(by_url) == [lic, root]
    assert (by_url[root].kind, by_url[root].root_cluster, by_url[root].forest) == (ROOT, None, "corp.example")
    assert (by_url[lic].kind, by_url[lic].root_cluster) == (LICENSING, root)
    assert by_url[root].server_versions == VersionCounts(sp1=1, sp2=1)
    assert by_url[root].client_versions == VersionCounts()
    assert by_url[lic].client_versions == VersionCounts(rtm=1, sp1=1)


def test_a_cluster_takes_the_kind_root_and_forest_most_of_its_servers_report() -> None:
    hosts = [
        server("a", SP1, kind=LICENSING, root="https://root-a", forest="x.example"),
        server("b", SP1, kind=LICENSING, root="https://root-b", forest="y.example"),
        server("c", SP1, kind=LICENSING, root="https://root-b", forest="y.example"),
        server("d", SP1, kind=ROOT, forest="y.example"),
    ]

    [members] = group_by_cluster(hosts)

    assert (members.kind, members.root_cluster, members.forest) == (LICENSING, "https://root-b", "y.example")
    assert [h.facts.host_id for h in members.servers] == ["a", "b", "c", "d"]


def test_a_tie_on_the_kind_makes_the_cluster_licensing_so_d6_still_applies() -> None:
    [members] = group_by_cluster([server("a", SP1, kind=ROOT), server("b", SP1, kind=LICENSING, root="https://r")])

    assert (members.kind, members.root_cluster) == (LICENSING, "https://r")


def test_no_servers_no_clusters() -> None:
    assert cluster_capabilities([client("c1", SP2)]) == []
