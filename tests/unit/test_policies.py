"""The rulebook (domain.md's policy table): each test names the fact it checks and asserts what
a person sees, the finding's subject, severity and detail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rmsfleet.collector.domain.model import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    FactChange,
    Finding,
    Fleet,
    HostFacts,
    HostRecord,
    PolicyConfig,
    ServerFacts,
    Severity,
    SubjectKind,
    Version,
)
from rmsfleet.collector.domain.policies import (
    POLICIES,
    Exemption,
    PolicyContext,
    apply_exemptions,
    client_cannot_publish_online,
    client_not_self_activating,
    escalate,
    evaluate_all,
    licensing_ahead_of_root,
    mixed_version_cluster,
    mixed_versions_in_forest,
    server_no_offline_enrollment,
    stale_agent,
    unknown_policy_ids,
    unsupported_upgrade_path,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CTX = PolicyContext(now=NOW, config=PolicyConfig())
RTM, SP1, SP2, UNKNOWN = Version.RTM, Version.SP1, Version.SP2, Version.UNKNOWN
ROOT, LICENSING = ClusterKind.ROOT_CERTIFICATION, ClusterKind.LICENSING


def facts(
    host_id: str,
    server: Version | None = None,
    cluster: str = "https://rms.corp.example",
    *,
    forest: str = "corp.example",
    kind: ClusterKind = ROOT,
    root: str | None = None,
    client: Version | None = None,
    activation: Activation = Activation.SELF,
    client_cluster: str | None = "",
) -> HostFacts:
    # client_cluster "" (the default) means the same cluster as the server part.
    return HostFacts(
        host_id=host_id,
        hostname=f"{host_id}.{forest}",
        forest=forest,
        server=None if server is None else ServerFacts(server, cluster, kind, root, Enrollment.OFFLINE),
        client=None
        if client is None
        else ClientFacts(client, activation, cluster if client_cluster == "" else client_cluster),
    )


def host(
    host_id: str,
    server: Version | None = None,
    cluster: str = "https://rms.corp.example",
    *,
    last_seen: datetime = NOW,
    forest: str = "corp.example",
    kind: ClusterKind = ROOT,
    root: str | None = None,
    client: Version | None = None,
    activation: Activation = Activation.SELF,
    client_cluster: str | None = "",
) -> HostRecord:
    return HostRecord(
        facts=facts(
            host_id,
            server,
            cluster,
            forest=forest,
            kind=kind,
            root=root,
            client=client,
            activation=activation,
            client_cluster=client_cluster,
        ),
        first_seen=NOW - timedelta(days=30),
        last_seen=last_seen,
    )


def subjects(findings: list[Finding]) -> list[tuple[SubjectKind, str, Severity]]:
    return [(f.subject_kind, f.subject, f.severity) for f in findings]


# --- mixed-version-cluster (D5, D8) ------------------------------------------------------------


def test_d5_d8_a_cluster_whose_servers_run_different_versions_is_flagged() -> None:
    fleet = Fleet(hosts=[host("a", SP1), host("b", SP2), host("c", SP2, "https://other")])

    findings = mixed_version_cluster(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.CLUSTER, "https://rms.corp.example", Severity.WARNING)]
    assert "SP1, SP2" in findings[0].detail
    assert "rolling upgrade" in findings[0].detail


def test_d5_d8_one_version_per_cluster_and_unknown_servers_are_not_a_mixed_cluster() -> None:
    fleet = Fleet(hosts=[host("a", SP1), host("b", UNKNOWN), host("c", SP2, "https://other")])

    assert mixed_version_cluster(fleet, CTX) == []


def test_d5_a_mixed_cluster_turns_critical_only_after_the_grace_period() -> None:
    [finding] = mixed_version_cluster(Fleet(hosts=[host("a", RTM), host("b", SP1)]), CTX)
    grace = CTX.config.mixed_cluster_grace

    assert escalate(finding, NOW - grace, CTX).severity is Severity.WARNING
    escalated = escalate(finding, NOW - grace - timedelta(seconds=1), CTX)
    assert escalated.severity is Severity.CRITICAL
    assert (escalated.subject, escalated.detail) == (finding.subject, finding.detail)


def test_escalation_leaves_other_policies_alone() -> None:
    [finding] = server_no_offline_enrollment(Fleet(hosts=[host("a", RTM)]), CTX)

    assert escalate(finding, NOW - timedelta(days=365), CTX) == finding


# --- mixed-versions-in-forest (D8) -------------------------------------------------------------


def test_d8_servers_of_different_versions_in_one_forest_are_flagged_with_their_clusters() -> None:
    fleet = Fleet(
        hosts=[
            host("r1", SP2, "https://root.corp.example"),
            host("l1", SP1, "https://lic.corp.example", kind=LICENSING, root="https://root.corp.example"),
        ]
    )

    findings = mixed_versions_in_forest(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.FOREST, "corp.example", Severity.WARNING)]
    assert "SP1 in https://lic.corp.example; SP2 in https://root.corp.example" in findings[0].detail
    assert "D8" in findings[0].detail


def test_d8_different_forests_with_different_versions_are_not_a_violation() -> None:
    fleet = Fleet(
        hosts=[
            host("a", RTM, "https://rms.a.example", forest="a.example"),
            host("b", SP1, "https://rms.b.example", forest="b.example"),
            host("c", SP2, "https://rms.c.example", forest="c.example"),
        ]
    )

    assert mixed_versions_in_forest(fleet, CTX) == []


def test_d8_unknown_server_versions_are_not_compared_within_a_forest() -> None:
    fleet = Fleet(hosts=[host("a", SP2), host("b", UNKNOWN, "https://other.corp.example")])

    assert mixed_versions_in_forest(fleet, CTX) == []


def test_d8_clients_of_other_versions_do_not_make_a_forest_mixed() -> None:
    fleet = Fleet(hosts=[host("a", SP2), host("b", client=RTM)])

    assert mixed_versions_in_forest(fleet, CTX) == []


# --- licensing-ahead-of-root (D6) --------------------------------------------------------------

ROOT_URL = "https://root.corp.example"
LIC_URL = "https://lic.corp.example"


def lic(host_id: str, version: Version, root: str = ROOT_URL) -> HostRecord:
    return host(host_id, version, LIC_URL, kind=LICENSING, root=root)


def test_d6_a_licensing_cluster_newer_than_its_root_is_critical() -> None:
    fleet = Fleet(hosts=[host("r1", SP1, ROOT_URL), lic("l1", SP2)])

    findings = licensing_ahead_of_root(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.CLUSTER, LIC_URL, Severity.CRITICAL)]
    assert f"runs server SP2 while its root certification cluster {ROOT_URL} still has a server at SP1" in (
        findings[0].detail
    )


def test_d6_a_licensing_server_may_not_pass_even_one_server_of_a_root_in_mid_upgrade() -> None:
    fleet = Fleet(hosts=[host("r1", SP2, ROOT_URL), host("r2", SP1, ROOT_URL), lic("l1", SP1), lic("l2", SP2)])

    assert [f.subject for f in licensing_ahead_of_root(fleet, CTX)] == [LIC_URL]


def test_d6_a_licensing_cluster_at_or_behind_its_root_is_fine() -> None:
    fleet = Fleet(hosts=[host("r1", SP2, ROOT_URL), host("r2", SP1, ROOT_URL), lic("l1", SP1), lic("l2", RTM)])

    assert licensing_ahead_of_root(fleet, CTX) == []


def test_d6_a_root_with_no_reporting_servers_is_not_compared() -> None:
    fleet = Fleet(hosts=[lic("l1", SP2, root="https://silent.corp.example")])

    assert licensing_ahead_of_root(fleet, CTX) == []


def test_d6_unknown_versions_are_not_compared() -> None:
    fleet = Fleet(
        hosts=[host("r1", UNKNOWN, ROOT_URL), lic("l1", SP2), host("r2", SP2, "https://r2"), lic("l2", UNKNOWN)]
    )

    assert licensing_ahead_of_root(fleet, CTX) == []


# --- unsupported-upgrade-path (D1, D2, D3, D13) -------------------------------------------------


def with_history(current: HostRecord, *versions: Version | None, client_only: bool = False) -> Fleet:
    """A fleet of one host whose server reported `versions` (None: no server part), a day apart."""
    changes = [
        FactChange(
            host_id=current.facts.host_id,
            changed_at=NOW - timedelta(days=len(versions) - i),
            facts=facts(current.facts.host_id, None, client=v)
            if client_only
            else facts(current.facts.host_id, v, client=None if v is not None else SP2),
        )
        for i, v in enumerate(versions)
    ]
    return Fleet(hosts=[current], history={current.facts.host_id: changes})


def test_d1_a_server_seen_at_rtm_and_then_at_sp2_is_critical() -> None:
    fleet = with_history(host("a", SP2), RTM, SP2)

    findings = unsupported_upgrade_path(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.HOST, "a", Severity.CRITICAL)]
    assert "from RMS server RTM to SP2 without SP1" in findings[0].detail
    assert (NOW - timedelta(days=1)).isoformat() in findings[0].detail
    assert "uninstall SP2" in findings[0].detail


def test_d1_the_current_facts_are_the_last_point_of_the_path() -> None:
    fleet = with_history(host("a", SP2), SP1, RTM)

    assert [f.subject for f in unsupported_upgrade_path(fleet, CTX)] == ["a"]


def test_d1_rtm_sp1_sp2_is_the_supported_path() -> None:
    assert unsupported_upgrade_path(with_history(host("a", SP2), RTM, SP1, SP2), CTX) == []


def test_d1_an_unknown_report_is_no_sp1_report() -> None:
    assert [f.subject for f in unsupported_upgrade_path(with_history(host("a", SP2), RTM, UNKNOWN, SP2), CTX)] == ["a"]


def test_d2_a_client_going_from_rtm_straight_to_sp2_is_fine() -> None:
    fleet = with_history(host("a", client=SP2), RTM, SP2, client_only=True)

    assert unsupported_upgrade_path(fleet, CTX) == []


def test_d3_a_server_removed_and_installed_fresh_at_sp2_is_fine() -> None:
    assert unsupported_upgrade_path(with_history(host("a", SP2), RTM, None, SP2), CTX) == []


def test_d13_the_finding_clears_once_the_server_leaves_sp2() -> None:
    assert unsupported_upgrade_path(with_history(host("a", RTM), RTM, SP2, RTM), CTX) == []


def test_d13_a_server_that_redoes_the_upgrade_through_sp1_is_clear() -> None:
    assert unsupported_upgrade_path(with_history(host("a", SP2), RTM, SP2, RTM, SP1, SP2), CTX) == []


def test_d13_a_server_that_goes_back_and_jumps_again_is_flagged_again() -> None:
    fleet = with_history(host("a", SP2), RTM, SP1, SP2, SP1, RTM, SP2)

    assert [f.subject for f in unsupported_upgrade_path(fleet, CTX)] == ["a"]


def test_d1_without_history_nothing_can_be_said() -> None:
    assert unsupported_upgrade_path(Fleet(hosts=[host("a", SP2)]), CTX) == []


# --- server-no-offline-enrollment (D9, D16) ----------------------------------------------------


def test_d9_an_rtm_server_cannot_enroll_offline() -> None:
    fleet = Fleet(hosts=[host("b", RTM), host("a", RTM, "https://two"), host("c", SP1), host("d", client=RTM)])

    findings = server_no_offline_enrollment(fleet, CTX)

    assert subjects(findings) == [
        (SubjectKind.HOST, "a", Severity.WARNING),
        (SubjectKind.HOST, "b", Severity.WARNING),
    ]
    assert "root certification cluster https://two" in findings[0].detail
    assert "must enroll over the internet" in findings[0].detail


def test_d16_rtm_servers_of_a_licensing_only_cluster_sub_enroll_and_are_not_flagged() -> None:
    fleet = Fleet(hosts=[host("root1", SP1, ROOT_URL), lic("lic1", RTM), host("root2", RTM, "https://two")])

    assert [f.subject for f in server_no_offline_enrollment(fleet, CTX)] == ["root2"]


def test_d9_sp1_sp2_and_unknown_servers_are_not_flagged() -> None:
    assert server_no_offline_enrollment(Fleet(hosts=[host("a", SP1), host("b", SP2), host("c", UNKNOWN)]), CTX) == []


# --- client-not-self-activating (D10, D18) -----------------------------------------------------


def test_d10_an_activated_rtm_client_must_activate_over_the_internet() -> None:
    fleet = Fleet(
        hosts=[
            host("a", client=RTM, activation=Activation.INTERNET),
            host("b", client=SP1),
            host("c", client=UNKNOWN, activation=Activation.NONE),
            host("d", RTM),
        ]
    )

    findings = client_not_self_activating(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.HOST, "a", Severity.WARNING)]
    assert "activates only over the internet" in findings[0].detail
    assert "no new user or reinstall can be activated" in findings[0].detail
    assert "straight to SP2" in findings[0].detail
    assert "D18" in findings[0].detail


def test_d18_an_rtm_client_that_is_not_activated_never_can_be_and_is_critical() -> None:
    fleet = Fleet(
        hosts=[
            host("never", client=RTM, activation=Activation.NONE),
            host("unsure", client=RTM, activation=Activation.UNKNOWN),
        ]
    )

    findings = client_not_self_activating(fleet, CTX)

    assert subjects(findings) == [
        (SubjectKind.HOST, "never", Severity.CRITICAL),
        (SubjectKind.HOST, "unsure", Severity.WARNING),
    ]
    assert "is not activated" in findings[0].detail and "can never be" in findings[0].detail
    assert "could not be read" in findings[1].detail


def test_d15_the_client_built_into_windows_self_activates_and_is_never_flagged() -> None:
    fleet = Fleet(hosts=[host("vista", SP1, client=Version.BUILTIN, activation=Activation.UNKNOWN)])

    assert client_not_self_activating(fleet, CTX) == []
    assert client_cannot_publish_online(fleet, CTX) == []


# --- client-cannot-publish-online (D14) ---------------------------------------------------------


def test_d14_an_rtm_client_of_a_cluster_with_an_sp1_or_later_server_cannot_publish_online() -> None:
    fleet = Fleet(
        hosts=[
            host("s1", RTM, ROOT_URL),
            host("s2", SP2, ROOT_URL),
            host("ws-rtm", client=RTM, client_cluster=ROOT_URL),
            host("ws-sp1", client=SP1, client_cluster=ROOT_URL),
        ]
    )

    findings = client_cannot_publish_online(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.HOST, "ws-rtm", Severity.WARNING)]
    assert f"against cluster {ROOT_URL}, which has servers at SP2" in findings[0].detail
    assert "cannot use online publishing" in findings[0].detail
    assert "D14" in findings[0].detail


@pytest.mark.parametrize(
    "hosts",
    [
        # every server of the cluster at RTM: online publishing works
        [host("s1", RTM, ROOT_URL), host("ws", client=RTM, client_cluster=ROOT_URL)],
        # the client names no cluster: nothing is known of its servers
        [host("s1", SP2, ROOT_URL), host("ws", client=RTM, client_cluster=None)],
        # no server reports the client's cluster
        [host("s1", SP2, ROOT_URL), host("ws", client=RTM, client_cluster="https://silent.example")],
        # an UNKNOWN server is never taken for SP1 or later
        [host("s1", UNKNOWN, ROOT_URL), host("ws", client=RTM, client_cluster=ROOT_URL)],
    ],
)
def test_d14_not_flagged_without_a_known_sp1_or_later_server_in_the_clients_cluster(hosts: list[HostRecord]) -> None:
    assert client_cannot_publish_online(Fleet(hosts=hosts), CTX) == []


# --- stale-agent --------------------------------------------------------------------------------


def test_a_host_silent_for_longer_than_stale_after_is_stale() -> None:
    fleet = Fleet(
        hosts=[
            host("late", SP2, last_seen=NOW - timedelta(hours=2, minutes=5)),
            host("edge", SP2, last_seen=NOW - CTX.config.stale_after),
            host("fresh", SP2),
        ]
    )

    findings = stale_agent(fleet, CTX)

    assert subjects(findings) == [(SubjectKind.HOST, "late", Severity.WARNING)]
    assert "(expected within 15m)" in findings[0].detail
    assert (NOW - timedelta(hours=2, minutes=5)).isoformat() in findings[0].detail
    # The text holds still while the host stays silent: a later pass has nothing to rewrite.
    later = stale_agent(fleet, PolicyContext(now=NOW + timedelta(hours=3), config=CTX.config))
    assert [f.detail for f in later if f.subject == "late"] == [findings[0].detail]


def test_stale_after_is_configurable() -> None:
    ctx = PolicyContext(now=NOW, config=PolicyConfig(stale_after=timedelta(days=1)))

    assert stale_agent(Fleet(hosts=[host("a", SP2, last_seen=NOW - timedelta(hours=23))]), ctx) == []


# --- the registry, disabling and exemptions ----------------------------------------------------


def test_every_policy_of_the_domain_table_is_registered_with_its_facts(
    domain_policies: dict[str, tuple[str, ...]],
) -> None:
    assert {p.id: p.facts for p in POLICIES} == domain_policies
    for policy in POLICIES:
        assert policy.evaluate.__doc__
        assert all(fact in policy.evaluate.__doc__ for fact in policy.facts)


def test_evaluate_all_skips_disabled_policies() -> None:
    fleet = Fleet(hosts=[host("a", RTM, client=RTM)])
    disabled = PolicyContext(now=NOW, config=PolicyConfig(disabled=frozenset({"server-no-offline-enrollment"})))

    assert [f.policy for f in evaluate_all(fleet, CTX)] == [
        "server-no-offline-enrollment",
        "client-not-self-activating",
    ]
    assert [f.policy for f in evaluate_all(fleet, disabled)] == ["client-not-self-activating"]


def test_unknown_policy_ids_catches_typos() -> None:
    assert unknown_policy_ids(["stale-agent", "stale-agnet", "mixed-version-cluster"]) == ["stale-agnet"]


def exemption(expires_at: datetime | None, subject: str = "a") -> Exemption:
    return Exemption("server-no-offline-enrollment", SubjectKind.HOST, subject, "enrolls online on purpose", expires_at)


@pytest.mark.parametrize(
    ("exemptions", "remaining"),
    [
        ([], ["a", "b"]),
        ([exemption(None)], ["b"]),
        ([exemption(NOW + timedelta(seconds=1))], ["b"]),
        ([exemption(NOW)], ["a", "b"]),  # expired at that moment: the finding is back
        ([exemption(None, subject="c")], ["a", "b"]),
        ([Exemption("stale-agent", SubjectKind.HOST, "a", "other policy", None)], ["a", "b"]),
        ([Exemption("server-no-offline-enrollment", SubjectKind.CLUSTER, "a", "other kind", None)], ["a", "b"]),
    ],
)
def test_apply_exemptions_drops_only_findings_with_a_matching_unexpired_exemption(
    exemptions: list[Exemption], remaining: list[str]
) -> None:
    findings = server_no_offline_enrollment(Fleet(hosts=[host("a", RTM), host("b", RTM)]), CTX)

    assert [f.subject for f in apply_exemptions(findings, exemptions, NOW)] == remaining
