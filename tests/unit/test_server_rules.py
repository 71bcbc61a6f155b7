"""The cluster and forest rules over version counts (domain/server_rules.py) must find exactly
what the specification (policies.evaluate_all) finds: for any fleet, and for an incremental pass
over any change set, the stored findings with the pass's subjects replaced by its findings must
be evaluate_all's findings of the changed fleet."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rmsfleet.collector.domain.model import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    Finding,
    Fleet,
    HostFacts,
    HostRecord,
    PolicyConfig,
    ServerFacts,
    SubjectKind,
    Version,
)
from rmsfleet.collector.domain.policies import PolicyContext, Scope, evaluate_all
from rmsfleet.collector.domain.server_rules import (
    RtmClient,
    ServerCount,
    Touched,
    client_findings,
    cluster_findings,
    evaluate_servers,
    forest_findings,
    newer_versions,
    rtm_clients,
    server_counts,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
# Few names, so that random hosts share clusters, roots and forests often.
CLUSTERS = ["https://root-a", "https://lic-a", "https://root-b"]
FORESTS = ["a.example", "b.example"]
SERVER_SCOPE = frozenset({Scope.SERVERS})
CLUSTER_POLICIES = {"mixed-version-cluster", "licensing-ahead-of-root"}

servers = st.builds(
    ServerFacts,
    st.sampled_from([Version.RTM, Version.SP1, Version.SP2, Version.UNKNOWN]),
    st.sampled_from(CLUSTERS),
    st.sampled_from(list(ClusterKind)),
    st.one_of(st.none(), st.sampled_from(CLUSTERS)),
    st.just(Enrollment.OFFLINE),
)
clients = st.builds(
    ClientFacts,
    st.sampled_from(list(Version)),
    st.just(Activation.SELF),
    st.one_of(st.none(), st.sampled_from(CLUSTERS)),
)
# A host's facts without its id: a forest and its parts (possibly neither).
parts = st.tuples(st.sampled_from(FORESTS), st.one_of(st.none(), servers), st.one_of(st.none(), clients))


def host(i: int, forest: str, server: ServerFacts | None, client: ClientFacts | None) -> HostRecord:
    return HostRecord(HostFacts(f"h{i:03d}", f"h{i}", forest, server, client), T0, T0)


def ctx_of(disabled: frozenset[str] = frozenset()) -> PolicyContext:
    return PolicyContext(now=T0, config=replace(PolicyConfig(), disabled=disabled))


def key(f: Finding) -> tuple[str, str, str, str, str]:
    return (f.policy, f.subject_kind.value, f.subject, f.severity.value, f.detail)


class FleetSource:
    """The ServerSource over an in-memory fleet: what the store's queries return."""

    def __init__(self, hosts: list[HostRecord]) -> None:
        self.hosts = hosts

    def counts(self, clusters: Collection[str], forests: Collection[str]) -> list[ServerCount]:
        return server_counts(
            h
            for h in self.hosts
            if h.facts.server is not None and (h.facts.server.cluster in clusters or h.facts.forest in forests)
        )

    def dependents(self, roots: Collection[str]) -> set[str]:
        return {
            h.facts.server.cluster
            for h in self.hosts
            if h.facts.server is not None and h.facts.server.root_cluster in roots
        }

    def rtm_clients(self, clusters: Collection[str], hosts: Collection[str]) -> list[RtmClient]:
        return [c for c in rtm_clients(self.hosts) if c.cluster in clusters or c.host_id in hosts]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(parts, max_size=25),
    st.sets(
        st.sampled_from(
            [
                "mixed-version-cluster",
                "licensing-ahead-of-root",
                "mixed-versions-in-forest",
                "client-cannot-publish-online",
            ]
        )
    ),
)
def test_summaries_find_what_evaluate_all_finds(
    specs: list[tuple[str, ServerFacts | None, ClientFacts | None]], disabled: set[str]
) -> None:
    hosts = [host(i, *spec) for i, spec in enumerate(specs)]
    ctx = ctx_of(frozenset(disabled))
    counts = server_counts(hosts)
    every_cluster = {h.facts.server.cluster for h in hosts if h.facts.server is not None}
    found = [
        *cluster_findings(counts, every_cluster | {"https://nobody"}, ctx),
        *forest_findings(counts, FORESTS, ctx),
        *client_findings(rtm_clients(hosts), newer_versions(counts), ctx),
    ]
    assert sorted(map(key, found)) == sorted(map(key, evaluate_all(Fleet(hosts=hosts), ctx, SERVER_SCOPE)))


def in_scope(f: Finding, clusters: frozenset[str], forests: frozenset[str], hosts: frozenset[str]) -> bool:
    if f.policy in CLUSTER_POLICIES:
        return f.subject_kind is SubjectKind.CLUSTER and f.subject in clusters
    if f.subject_kind is SubjectKind.FOREST:
        return f.subject in forests
    return f.subject in hosts


def touched_by(before: list[HostRecord], after: list[HostRecord], changed: set[int]) -> Touched:
    """What the store reads for the changed hosts: their rows now and their fact history."""
    clusters: set[str] = set()
    forests: set[str] = set()
    for fleet in (before, after):
        for i in changed:
            server = fleet[i].facts.server
            if server is not None:
                clusters.add(server.cluster)
                forests.add(fleet[i].facts.forest)
    return Touched(frozenset(clusters), frozenset(forests), frozenset(after[i].facts.host_id for i in changed))


Spec = tuple[str, ServerFacts | None, ClientFacts | None]
RTM_ROOT_A = ServerFacts(Version.RTM, "https://root-a", ClusterKind.ROOT_CERTIFICATION, None, Enrollment.OFFLINE)
RTM_CLIENT_A = ClientFacts(Version.RTM, Activation.SELF, "https://root-a")


@settings(max_examples=1000, deadline=None)
@given(st.lists(parts, min_size=1, max_size=25), st.lists(st.tuples(st.integers(0, 24), parts)), st.booleans())
# The root's server goes to SP1: the untouched RTM client of that cluster gains a finding (D14).
@example(
    [("a.example", RTM_ROOT_A, None), ("a.example", None, RTM_CLIENT_A)],
    [(0, ("a.example", replace(RTM_ROOT_A, version=Version.SP1), None))],
    True,
)
# The root moves ahead of nothing: its licensing cluster, untouched, is no longer ahead (D6).
@example(
    [
        ("a.example", RTM_ROOT_A, None),
        (
            "a.example",
            ServerFacts(Version.SP1, "https://lic-a", ClusterKind.LICENSING, "https://root-a", Enrollment.OFFLINE),
            None,
        ),
    ],
    [(0, ("a.example", replace(RTM_ROOT_A, version=Version.SP2), None))],
    True,
)
def test_an_incremental_pass_leaves_what_a_full_pass_finds(
    specs: list[Spec], changes: list[tuple[int, Spec]], known_before: bool
) -> None:
    before = [host(i, *spec) for i, spec in enumerate(specs)]
    after = list(before)
    for index, spec in changes:
        after[index % len(before)] = host(index % len(before), *spec)
    changed = {index % len(before) for index, _spec in changes}
    ctx = ctx_of()
    stored = evaluate_all(Fleet(hosts=before), ctx, SERVER_SCOPE)
    # What the evaluator remembers of the last pass: each cluster's SP1+ versions, or nothing.
    remembered = newer_versions(server_counts(before))
    previous: Callable[[str], frozenset[Version] | None] = (
        (lambda c: remembered.get(c, frozenset())) if known_before else (lambda c: None)
    )

    result = evaluate_servers(touched_by(before, after, changed), FleetSource(after), previous, ctx)

    kept = [f for f in stored if not in_scope(f, result.clusters, result.forests, result.hosts)]
    assert all(in_scope(f, result.clusters, result.forests, result.hosts) for f in result.findings)
    assert sorted(map(key, kept + result.findings)) == sorted(
        map(key, evaluate_all(Fleet(hosts=after), ctx, SERVER_SCOPE))
    )
    assert result.newer == {c: newer_versions(server_counts(after)).get(c, frozenset()) for c in result.newer}
