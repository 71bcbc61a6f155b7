"""A full pass reads only the hosts that can break a host rule (policies.may_break_a_host_rule,
and its SQL in store/evaluation_sql.py); the others' open host violations resolve. That is
right only if no finding about a host ever comes from a host the condition leaves out: proven
here over random fleets, histories and times against the specification, evaluate_all."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rmsfleet.collector.domain.model import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    FactChange,
    Fleet,
    HostFacts,
    HostRecord,
    PolicyConfig,
    ServerFacts,
    SubjectKind,
    Version,
)
from rmsfleet.collector.domain.policies import PolicyContext, evaluate_all, may_break_a_host_rule

NOW = datetime(2026, 11, 1, tzinfo=UTC)
CLUSTERS = ["https://root-a", "https://lic-a"]

servers = st.builds(
    ServerFacts,
    st.sampled_from(list(Version)),
    st.sampled_from(CLUSTERS),
    st.sampled_from(list(ClusterKind)),
    st.one_of(st.none(), st.sampled_from(CLUSTERS)),
    st.sampled_from(list(Enrollment)),
)
clients = st.builds(
    ClientFacts,
    st.sampled_from(list(Version)),
    st.sampled_from(list(Activation)),
    st.one_of(st.none(), st.sampled_from(CLUSTERS)),
)
hosts = st.tuples(
    st.one_of(st.none(), servers),
    st.one_of(st.none(), clients),
    st.integers(0, 3 * 3600),  # seconds since the last report
    st.lists(st.one_of(st.none(), servers), max_size=3),  # earlier server parts, oldest first
)


@settings(max_examples=500, deadline=None)
@given(st.lists(hosts, max_size=20), st.sets(st.sampled_from(["stale-agent", "client-cannot-publish-online"])))
def test_no_host_finding_comes_from_a_host_the_full_pass_does_not_read(
    specs: list[tuple[ServerFacts | None, ClientFacts | None, int, list[ServerFacts | None]]], disabled: set[str]
) -> None:
    ctx = PolicyContext(now=NOW, config=replace(PolicyConfig(), disabled=frozenset(disabled)))
    records: list[HostRecord] = []
    history: dict[str, list[FactChange]] = {}
    for i, (server, client, silent, earlier) in enumerate(specs):
        facts = HostFacts(f"h{i:02d}", f"h{i}", "a.example", server, client)
        records.append(HostRecord(facts, NOW - timedelta(days=30), NOW - timedelta(seconds=silent)))
        history[facts.host_id] = [
            FactChange(facts.host_id, NOW - timedelta(days=20 - n), replace(facts, server=part))
            for n, part in enumerate(earlier)
        ]
    fleet = Fleet(hosts=records, history=history)
    readable = {h.facts.host_id for h in records if may_break_a_host_rule(h, ctx)}
    about_hosts = {f.subject for f in evaluate_all(fleet, ctx) if f.subject_kind is SubjectKind.HOST}
    assert about_hosts <= readable
