"""The upgrade planner (D1, D2, D4, D5, D6, D7): worked examples, then properties over random
fleets checked by replaying the plan wave by wave."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from rmsfleet.collector.domain.planner import D4_CHECKLIST, Plan, Step, Unplanned, batch_size, plan_upgrade

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RTM, SP1, SP2, UNKNOWN = Version.RTM, Version.SP1, Version.SP2, Version.UNKNOWN
ROOT, LICENSING = ClusterKind.ROOT_CERTIFICATION, ClusterKind.LICENSING


def server(
    host_id: str,
    version: Version,
    cluster: str,
    *,
    forest: str = "corp.example",
    kind: ClusterKind = ROOT,
    root: str | None = None,
    client: Version | None = None,
    client_cluster: str | None = None,
) -> HostRecord:
    return HostRecord(
        facts=HostFacts(
            host_id=host_id,
            hostname=f"{host_id}.{forest}",
            forest=forest,
            server=ServerFacts(version, cluster, kind, root, Enrollment.ONLINE),
            client=None if client is None else ClientFacts(client, Activation.NONE, client_cluster),
        ),
        first_seen=T0,
        last_seen=T0,
    )


def client(host_id: str, version: Version, cluster: str | None, *, forest: str = "corp.example") -> HostRecord:
    return HostRecord(
        facts=HostFacts(host_id, f"{host_id}.{forest}", forest, None, ClientFacts(version, Activation.NONE, cluster)),
        first_seen=T0,
        last_seen=T0,
    )


def steps_of(plan: Plan) -> list[list[tuple[str | None, str, tuple[str, ...], str, str]]]:
    """Each wave's steps as (cluster, role, hosts, from, to), for readable expectations."""
    return [
        [(s.cluster, s.role, s.hosts, s.from_version.value, s.to_version.value) for s in wave.steps]
        for wave in plan.waves
    ]


# --- worked examples ---------------------------------------------------------------------------


def test_d1_an_rtm_server_goes_to_sp1_in_one_wave_and_to_sp2_in_the_next() -> None:
    plan = plan_upgrade([server("s1", RTM, "https://rms")])

    assert steps_of(plan) == [
        [("https://rms", "server", ("s1",), "RTM", "SP1")],
        [("https://rms", "server", ("s1",), "SP1", "SP2")],
    ]


def test_d2_clients_go_straight_to_sp2_after_their_clusters_servers() -> None:
    plan = plan_upgrade(
        [
            server("s1", SP1, "https://rms"),
            client("c1", RTM, "https://rms"),
            client("c2", SP1, "https://rms"),
            client("c3", SP2, "https://rms"),
        ]
    )

    assert steps_of(plan) == [
        # c1 is RTM: it leads (D14, see below); the cluster already has an SP1 server, so its
        # server step does not wait for it.
        [("https://rms", "server", ("s1",), "SP1", "SP2"), ("https://rms", "client", ("c1",), "RTM", "SP2")],
        [("https://rms", "client", ("c2",), "SP1", "SP2")],
    ]


def test_d14_rtm_clients_reach_sp2_before_the_first_server_of_their_cluster_leaves_rtm() -> None:
    plan = plan_upgrade(
        [
            server("s1", RTM, "https://rms", client=RTM, client_cluster="https://rms"),
            server("s2", RTM, "https://rms"),
            client("c1", RTM, "https://rms"),
            client("c2", SP1, "https://rms"),
        ]
    )

    assert steps_of(plan) == [
        # Online publishing keeps working for every client: no server is past RTM yet.
        [("https://rms", "client", ("c1", "s1"), "RTM", "SP2")],
        [("https://rms", "server", ("s1",), "RTM", "SP1")],
        [("https://rms", "server", ("s2",), "RTM", "SP1")],
        [("https://rms", "server", ("s1",), "SP1", "SP2")],
        [("https://rms", "server", ("s2",), "SP1", "SP2")],
        [("https://rms", "client", ("c2",), "SP1", "SP2")],
    ]
    assert [item.cluster for item in plan.waves[1].checklist] == ["https://rms"] * len(D4_CHECKLIST)


def test_d5_a_cluster_is_upgraded_in_rolling_batches_and_all_rtm_servers_reach_sp1_first() -> None:
    hosts = [server(f"s{i}", RTM, "https://rms") for i in range(1, 5)]

    plan = plan_upgrade(hosts, max_unavailable=0.5)

    assert steps_of(plan) == [
        [("https://rms", "server", ("s1", "s2"), "RTM", "SP1")],
        [("https://rms", "server", ("s3", "s4"), "RTM", "SP1")],
        [("https://rms", "server", ("s1", "s2"), "SP1", "SP2")],
        [("https://rms", "server", ("s3", "s4"), "SP1", "SP2")],
    ]


def test_d8_a_mixed_cluster_brings_its_rtm_servers_to_sp1_before_any_server_goes_on_to_sp2() -> None:
    plan = plan_upgrade([server("s1", RTM, "https://rms"), server("s2", SP1, "https://rms")])

    assert steps_of(plan) == [
        [("https://rms", "server", ("s1",), "RTM", "SP1")],
        [("https://rms", "server", ("s1",), "SP1", "SP2")],
        [("https://rms", "server", ("s2",), "SP1", "SP2")],
    ]


@pytest.mark.parametrize(
    ("n_servers", "share", "expected"),
    [
        (1, 0.34, 1),  # a single server has to go down: there is no other way
        (2, 0.34, 1),
        (3, 0.34, 1),  # floor(1.02): never more than the share
        (3, 0.67, 2),
        (4, 0.5, 2),
        (3, 1.0, 2),  # never the whole cluster (D5)
        (10, 0.7, 7),  # not 6 from float noise
        (10, 0.01, 1),
    ],
)
def test_d5_batch_size(n_servers: int, share: float, expected: int) -> None:
    assert batch_size(n_servers, share) == expected


def test_d5_a_servers_own_client_upgrade_counts_against_its_cluster_share() -> None:
    hosts = [server(f"s{i}", SP2, "https://rms", client=RTM, client_cluster="https://rms") for i in (1, 2, 3)]

    plan = plan_upgrade(hosts, max_unavailable=0.67)

    assert steps_of(plan) == [
        [("https://rms", "client", ("s1", "s2"), "RTM", "SP2")],
        [("https://rms", "client", ("s3",), "RTM", "SP2")],
    ]


def test_d6_the_root_cluster_finishes_before_the_licensing_cluster_under_it_starts() -> None:
    hosts = [
        server("r1", RTM, "https://root"),
        server("l1", RTM, "https://lic", kind=LICENSING, root="https://root"),
    ]

    plan = plan_upgrade(hosts)

    assert steps_of(plan) == [
        [("https://root", "server", ("r1",), "RTM", "SP1")],
        [("https://root", "server", ("r1",), "SP1", "SP2")],
        [("https://lic", "server", ("l1",), "RTM", "SP1")],
        [("https://lic", "server", ("l1",), "SP1", "SP2")],
    ]


def test_d7_clusters_in_different_forests_are_upgraded_in_parallel_waves() -> None:
    hosts = [
        server("a1", SP1, "https://rms.a", forest="a.example"),
        server("b1", SP1, "https://rms.b", forest="b.example"),
    ]

    plan = plan_upgrade(hosts)

    assert [[(s.forest, s.cluster) for s in wave.steps] for wave in plan.waves] == [
        [("a.example", "https://rms.a"), ("b.example", "https://rms.b")]
    ]


def test_d4_checklist_is_attached_to_the_wave_where_each_cluster_starts() -> None:
    hosts = [
        server("r1", SP1, "https://root"),
        server("l1", SP1, "https://lic", kind=LICENSING, root="https://root"),
    ]

    plan = plan_upgrade(hosts)

    assert [[(item.cluster, item.action) for item in wave.checklist] for wave in plan.waves] == [
        [("https://root", action) for action in D4_CHECKLIST],
        [("https://lic", action) for action in D4_CHECKLIST],
    ]
    assert any("configuration database" in action for action in D4_CHECKLIST)
    assert any("password" in action for action in D4_CHECKLIST)
    assert any("logging database" in action for action in D4_CHECKLIST)
    assert any("security updates" in action for action in D4_CHECKLIST)


def test_d4_a_cluster_whose_servers_need_no_step_gets_no_checklist() -> None:
    plan = plan_upgrade([server("s1", SP2, "https://rms"), client("c1", RTM, "https://rms")])

    assert steps_of(plan) == [[("https://rms", "client", ("c1",), "RTM", "SP2")]]
    assert plan.waves[0].checklist == ()


def test_a_fleet_already_at_sp2_needs_no_wave() -> None:
    plan = plan_upgrade([server("s1", SP2, "https://rms", client=SP2), client("c1", SP2, None)])

    assert plan == Plan(waves=(), unplanned=())


def test_d15_clients_built_into_windows_are_never_planned() -> None:
    plan = plan_upgrade([server("s1", SP2, "https://rms"), client("vista", Version.BUILTIN, "https://rms")])

    assert plan == Plan(waves=(), unplanned=())


def test_unknown_versions_are_never_guessed_but_listed_as_unplanned() -> None:
    plan = plan_upgrade(
        [
            server("s1", UNKNOWN, "https://rms"),
            server("s2", SP1, "https://rms"),
            client("c1", UNKNOWN, "https://rms"),
        ]
    )

    assert steps_of(plan) == [[("https://rms", "server", ("s2",), "SP1", "SP2")]]
    assert [(u.host_id, u.role, u.version) for u in plan.unplanned] == [
        ("c1", "client", UNKNOWN),
        ("s1", "server", UNKNOWN),
    ]
    assert all("UNKNOWN" in u.reason for u in plan.unplanned)


def test_d6_a_licensing_cluster_whose_root_does_not_report_is_not_planned_but_its_clients_are() -> None:
    plan = plan_upgrade(
        [
            server("l1", RTM, "https://lic", kind=LICENSING, root="https://gone"),
            client("c1", RTM, "https://lic"),
        ]
    )

    assert steps_of(plan) == [[("https://lic", "client", ("c1",), "RTM", "SP2")]]
    [unplanned] = plan.unplanned
    assert (unplanned.host_id, unplanned.role) == ("l1", "server")
    assert "https://gone" in unplanned.reason
    assert "D6" in unplanned.reason


def test_d6_a_root_with_unknown_servers_holds_back_the_licensing_clusters_under_it() -> None:
    plan = plan_upgrade(
        [
            server("r1", UNKNOWN, "https://root"),
            server("l1", SP1, "https://lic", kind=LICENSING, root="https://root"),
            server("l2", SP1, "https://lic2", kind=LICENSING, root="https://lic"),
        ]
    )

    assert plan.waves == ()
    reasons = {u.host_id: u.reason for u in plan.unplanned}
    assert "UNKNOWN" in reasons["l1"]
    assert "https://lic" in reasons["l2"]


def test_max_unavailable_outside_zero_to_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_unavailable"):
        plan_upgrade([], max_unavailable=0)
    with pytest.raises(ValueError, match="max_unavailable"):
        plan_upgrade([], max_unavailable=1.5)


# --- properties over random fleets --------------------------------------------------------------

SERVER_VERSIONS = st.sampled_from([RTM, RTM, SP1, SP1, SP2, UNKNOWN])
CLIENT_VERSIONS = st.sampled_from([RTM, SP1, SP2, SP2, UNKNOWN])


@dataclass
class RandomFleet:
    hosts: list[HostRecord] = field(default_factory=list)
    root_of: dict[str, str] = field(default_factory=dict)  # licensing cluster -> its root
    missing_roots: bool = False


@st.composite
def random_fleets(draw: st.DrawFn) -> RandomFleet:
    fleet = RandomFleet()
    clusters: list[str] = []
    next_id = iter(range(10_000))

    def add_cluster(url: str, forest: str, root: str | None) -> None:
        kind = ROOT if root is None else LICENSING
        for _ in range(draw(st.integers(1, 5))):
            own_client = draw(st.none() | CLIENT_VERSIONS)
            fleet.hosts.append(
                server(
                    f"s{next(next_id)}",
                    draw(SERVER_VERSIONS),
                    url,
                    forest=forest,
                    kind=kind,
                    root=root,
                    client=own_client,
                    client_cluster=draw(st.sampled_from([url, None])),
                )
            )
        for _ in range(draw(st.integers(0, 3))):
            cluster = draw(st.sampled_from([url, url, None]))
            fleet.hosts.append(client(f"c{next(next_id)}", draw(CLIENT_VERSIONS), cluster, forest=forest))
        clusters.append(url)
        if root is not None:
            fleet.root_of[url] = root

    for f in range(draw(st.integers(1, 3))):
        forest = f"f{f}.example"
        for r in range(draw(st.integers(1, 2))):
            add_cluster(f"https://root{r}.{forest}", forest, None)
        for lic in range(draw(st.integers(0, 3))):
            # Any earlier cluster can be the root: chains and roots in another forest happen too.
            root = draw(st.sampled_from(clusters))
            add_cluster(f"https://lic{lic}.{forest}", forest, root)
        if draw(st.integers(0, 4)) == 0:
            fleet.missing_roots = True
            add_cluster(f"https://orphan.{forest}", forest, f"https://missing.{forest}")
    return fleet


def _known_ranks(servers: dict[str, Version], host_ids: list[str]) -> list[int]:
    return [rank for rank in (servers[h].rank for h in host_ids) if rank is not None]


def _ahead(servers: dict[str, Version], members: dict[str, list[str]], lic: str, root: str) -> bool:
    lic_known = _known_ranks(servers, members[lic])
    root_known = _known_ranks(servers, members.get(root, []))
    return bool(lic_known and root_known) and max(lic_known) > min(root_known)


@settings(max_examples=200, deadline=None)
@given(random_fleets(), st.floats(min_value=0.01, max_value=1.0))
def test_replaying_any_plan_keeps_every_rule_and_ends_at_sp2(fleet: RandomFleet, share: float) -> None:
    plan = plan_upgrade(fleet.hosts, max_unavailable=share)

    servers = {h.facts.host_id: h.facts.server.version for h in fleet.hosts if h.facts.server is not None}
    clients = {h.facts.host_id: h.facts.client.version for h in fleet.hosts if h.facts.client is not None}
    cluster_of = {h.facts.host_id: h.facts.server.cluster for h in fleet.hosts if h.facts.server is not None}
    members: dict[str, list[str]] = defaultdict(list)
    for host_id, cluster in cluster_of.items():
        members[cluster].append(host_id)
    consistent_at_start = {lic for lic, root in fleet.root_of.items() if not _ahead(servers, members, lic, root)}
    client_cluster = {h.facts.host_id: h.facts.client.cluster for h in fleet.hosts if h.facts.client is not None}
    past_rtm_at_start = {c for c, ids in members.items() if any(servers[h] in (SP1, SP2) for h in ids)}
    checklist_wave: dict[str, int] = {}
    first_server_wave: dict[str, int] = {}
    last_server_wave: dict[str, int] = {}

    assert [wave.number for wave in plan.waves] == list(range(1, len(plan.waves) + 1))
    for wave in plan.waves:
        assert wave.steps, "waves are never empty"
        for item in wave.checklist:
            checklist_wave.setdefault(item.cluster, wave.number)
        servers_at_start = dict(servers)
        in_this_wave: set[str] = set()
        per_cluster: Counter[str] = Counter()
        for step in wave.steps:
            _replay(step, servers, clients, cluster_of)
            for host_id in step.hosts:
                assert host_id not in in_this_wave, "a host is in one step per wave"
                in_this_wave.add(host_id)
                if host_id in cluster_of:
                    per_cluster[cluster_of[host_id]] += 1
            if step.role == "server":
                assert step.cluster is not None
                if step.to_version is SP2:
                    # D1, D8: no server goes on to SP2 while its cluster still has an RTM server.
                    assert all(servers_at_start[h] is not RTM for h in members[step.cluster])
                first_server_wave.setdefault(step.cluster, wave.number)
                last_server_wave[step.cluster] = wave.number
                root = fleet.root_of.get(step.cluster)
                if root is not None:
                    # D6: a licensing server moves only once its whole root is at SP2.
                    assert all(servers_at_start[h] is SP2 for h in members[root])
            elif step.cluster in members and step.from_version is not RTM:
                # Clients follow the servers of the cluster they name (D2); RTM clients lead (D14).
                assert last_server_wave.get(step.cluster, 0) < wave.number
        # D14: the plan never leaves an RTM client naming a cluster that has a server past RTM,
        # unless that was so before the plan.
        for host_id, version in clients.items():
            named = client_cluster.get(host_id)
            if version is RTM and named in members and named not in past_rtm_at_start:
                assert all(servers[h] in (RTM, UNKNOWN) for h in members[named]), f"{host_id}: D14 after wave"
        for cluster, busy in per_cluster.items():
            n = len(members[cluster])
            # D5: never more than the allowed share of a cluster's servers in one wave.
            assert busy <= max(1, math.floor(share * n + 1e-9))
            if n >= 2:
                assert busy < n
        for lic in consistent_at_start:
            assert not _ahead(servers, members, lic, fleet.root_of[lic]), f"{lic} ahead of its root after wave"

    # D4: the checklist for every cluster comes no later than its first server step.
    assert set(checklist_wave) == set(first_server_wave)
    for cluster, wave_number in first_server_wave.items():
        assert checklist_wave[cluster] <= wave_number
    for wave in plan.waves:
        for cluster in {item.cluster for item in wave.checklist}:
            assert tuple(item.action for item in wave.checklist if item.cluster == cluster) == D4_CHECKLIST

    # Every plannable host ends at SP2; what is left is listed, with a reason, and untouched.
    unplanned: dict[tuple[str, str], Unplanned] = {(u.host_id, u.role): u for u in plan.unplanned}
    for role, state in (("server", servers), ("client", clients)):
        for host_id, version in state.items():
            if (host_id, role) in unplanned:
                assert version is unplanned[(host_id, role)].version
                assert version is not SP2
                assert unplanned[(host_id, role)].reason
            else:
                assert version is SP2, f"{role} {host_id} ends at {version}"
    for (host_id, role), entry in unplanned.items():
        if entry.version is not UNKNOWN:
            # Only servers of licensing clusters whose root cannot be checked are held back.
            assert role == "server"
            assert cluster_of[host_id] in fleet.root_of
    everything_known = all(v is not UNKNOWN for v in [*servers.values(), *clients.values()])
    if everything_known and not fleet.missing_roots:
        assert not unplanned


def _replay(step: Step, servers: dict[str, Version], clients: dict[str, Version], cluster_of: dict[str, str]) -> None:
    state = servers if step.role == "server" else clients
    from_rank, to_rank = step.from_version.rank, step.to_version.rank
    assert from_rank is not None
    assert to_rank is not None
    assert to_rank > from_rank
    if step.role == "server":
        # D1: never RTM straight to SP2.
        assert (step.from_version, step.to_version) != (RTM, SP2)
    else:
        # D2: clients go straight to SP2.
        assert step.to_version is SP2
    for host_id in step.hosts:
        assert state[host_id] is step.from_version
        if step.role == "server":
            assert cluster_of[host_id] == step.cluster
        state[host_id] = step.to_version
