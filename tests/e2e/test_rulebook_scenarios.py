"""One scenario per policy (docs/policies.md), driven by real agent processes against a real
collector, checked through the violations JSON: opened, escalated where the policy escalates,
and resolved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from processes import Collector, make_token, report_facts, start_collector, wait_for, write_facts

pytestmark = pytest.mark.e2e

ROOT = "https://rms.corp.example"
LIC = "https://lic.corp.example"


def host(
    host_id: str,
    server: str | None = None,
    client: str | None = None,
    cluster: str = ROOT,
    root: str | None = None,
    forest: str = "corp.example",
    activation: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {"host_id": host_id, "hostname": f"{host_id}.{forest}", "forest": forest}
    if server:
        document["server"] = {
            "version": server,
            "cluster": cluster,
            "cluster_kind": "licensing" if root else "root-certification",
            "root_cluster": root,
            "enrollment": "online" if server == "RTM" else "offline",
        }
    if client:
        document["client"] = {
            "version": client,
            "activation": activation or ("internet" if client == "RTM" else "self"),
            "cluster": cluster,
        }
    return document


class Fleet:
    """Facts files in a folder; `report` runs one real agent per changed host.

    Every violations query waits until evaluation has covered the reports committed before it,
    so after `report` the first answer is current. wait_open and wait_resolved poll only for what
    no report causes: the clock (grace period, stale window) and exemptions written to the
    database."""

    def __init__(self, collector: Collector, folder: Path) -> None:
        self.collector = collector
        self.folder = folder

    def report(self, *documents: dict[str, Any]) -> None:
        files = [write_facts(self.folder / f"{d['host_id']}.json", **d) for d in documents]
        report_facts(self.collector, *files)

    def open(self, policy: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.collector.cli_json(
            "violations", "--policy", policy, "--wait-for-evaluation"
        )
        return result

    def wait_open(self, policy: str, subject: str, severity: str | None = None) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for v in self.open(policy):
                if v["subject"] == subject and (severity is None or v["severity"] == severity):
                    return v
            return None

        result: dict[str, Any] = wait_for(found, what=f"{policy} open for {subject} ({severity or 'any severity'})")
        return result

    def wait_resolved(self, policy: str, subject: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            resolved = self.collector.cli_json(
                "violations", "--policy", policy, "--state", "resolved", "--wait-for-evaluation"
            )
            return next((v for v in resolved if v["subject"] == subject), None)

        result: dict[str, Any] = wait_for(found, what=f"{policy} resolved for {subject}")
        assert all(v["subject"] != subject for v in self.open(policy))
        return result


@pytest.fixture
def fleet(tmp_path: Path, sqlite_url: str) -> Any:
    # A stale window far longer than any test: on a busy machine a short one would open stale-agent
    # findings the other scenarios do not expect. The stale-agent scenario has its own collector.
    collector = start_collector(tmp_path, sqlite_url, extra=["--mixed-cluster-grace", "2", "--stale-after", "600"])
    try:
        yield Fleet(collector, tmp_path)
    finally:
        collector.stop()


def test_mixed_version_cluster_warns_escalates_after_grace_and_resolves(fleet: Fleet) -> None:
    """D5, D8: a mixed cluster is a warning during the rolling upgrade, critical once it stays mixed."""
    fleet.report(host("s1", server="SP1"), host("s2", server="SP2"))
    warning = fleet.wait_open("mixed-version-cluster", ROOT, "warning")
    critical = fleet.wait_open("mixed-version-cluster", ROOT, "critical")
    assert critical["since"] == warning["since"]
    fleet.report(host("s1", server="SP2"))
    assert fleet.wait_resolved("mixed-version-cluster", ROOT)["since"] == warning["since"]


def test_client_not_self_activating(fleet: Fleet) -> None:
    """D10: an RTM client activates over the internet; D2: it may go straight to SP2."""
    fleet.report(host("ws1", client="RTM"), host("ws2", client="SP1"))
    opened = fleet.wait_open("client-not-self-activating", "ws1")
    assert "D10" in opened["detail"]
    assert [v["subject"] for v in fleet.open("client-not-self-activating")] == ["ws1"]
    fleet.report(host("ws1", client="SP2"))
    fleet.wait_resolved("client-not-self-activating", "ws1")


def test_client_not_self_activating_is_critical_for_an_rtm_client_that_never_can_be(fleet: Fleet) -> None:
    """D18: the RTM activation service is gone, so an RTM client that is not activated never will be."""
    fleet.report(host("ws1", client="RTM", activation="none"))
    opened = fleet.wait_open("client-not-self-activating", "ws1", "critical")
    assert "can never be" in opened["detail"] and "D18" in opened["detail"]
    fleet.report(host("ws1", client="RTM", activation="internet"))
    downgraded = fleet.wait_open("client-not-self-activating", "ws1", "warning")
    assert downgraded["since"] == opened["since"]


def test_server_no_offline_enrollment(fleet: Fleet) -> None:
    """D9: an RTM server must enroll over the internet; D16: only a root certification cluster's."""
    fleet.report(host("s1", server="RTM"), host("l1", server="RTM", cluster=LIC, root=ROOT))
    assert "D9" in fleet.wait_open("server-no-offline-enrollment", "s1")["detail"]
    assert [v["subject"] for v in fleet.open("server-no-offline-enrollment")] == ["s1"]
    fleet.report(host("s1", server="SP1"))
    fleet.wait_resolved("server-no-offline-enrollment", "s1")


def test_client_cannot_publish_online(fleet: Fleet) -> None:
    """D14: an RTM client cannot publish online against an SP1 or later server of its cluster."""
    fleet.report(host("s1", server="RTM"), host("ws1", client="RTM"))
    fleet.wait_open("server-no-offline-enrollment", "s1")  # the pass over this report ran
    assert fleet.open("client-cannot-publish-online") == []
    fleet.report(host("s1", server="SP1"))
    opened = fleet.wait_open("client-cannot-publish-online", "ws1")
    assert "D14" in opened["detail"] and "SP1" in opened["detail"]
    fleet.report(host("ws1", client="SP2"))
    fleet.wait_resolved("client-cannot-publish-online", "ws1")


def test_mixed_versions_in_forest_only_within_one_forest(fleet: Fleet) -> None:
    """D8: different versions coexist only in different forests."""
    fleet.report(
        host("a1", server="SP1", cluster="https://rms.a.example", forest="a.example"),
        host("b1", server="SP2", cluster="https://rms.b.example", forest="b.example"),
    )
    assert fleet.open("mixed-versions-in-forest") == []
    fleet.report(
        host("a2", server="SP2", cluster="https://lic.a.example", root="https://rms.a.example", forest="a.example")
    )
    fleet.wait_open("mixed-versions-in-forest", "a.example")
    assert all(v["subject"] != "b.example" for v in fleet.open("mixed-versions-in-forest"))
    fleet.report(host("a1", server="SP2", cluster="https://rms.a.example", forest="a.example"))
    fleet.wait_resolved("mixed-versions-in-forest", "a.example")


def test_licensing_ahead_of_root(fleet: Fleet) -> None:
    """D6: a licensing cluster must never run a newer server version than its root."""
    fleet.report(host("root1", server="SP1"), host("lic1", server="SP2", cluster=LIC, root=ROOT))
    opened = fleet.wait_open("licensing-ahead-of-root", LIC)
    assert opened["severity"] == "critical" and opened["subject_kind"] == "cluster"
    fleet.report(host("root1", server="SP2"))
    fleet.wait_resolved("licensing-ahead-of-root", LIC)


def test_unsupported_upgrade_path(fleet: Fleet) -> None:
    """D1: a server seen at RTM and then at SP2 skipped SP1; D2: a client may do that."""
    fleet.report(host("s1", server="RTM", client="RTM"))
    fleet.wait_open("server-no-offline-enrollment", "s1")
    fleet.report(host("s1", server="SP2", client="SP2"))
    opened = fleet.wait_open("unsupported-upgrade-path", "s1")
    assert "D1" in opened["detail"]
    history = fleet.collector.cli_json("hosts", "show", "s1")["history"]
    assert [h["server"]["version"] for h in history] == ["RTM", "SP2"]
    # D13: uninstalling SP2 takes the server back; the violation closes.
    fleet.report(host("s1", server="SP1", client="SP2"))
    fleet.wait_resolved("unsupported-upgrade-path", "s1")


def test_stale_agent_opens_when_a_host_goes_silent_and_resolves_when_it_returns(
    tmp_path: Path, sqlite_url: str
) -> None:
    collector = start_collector(tmp_path, sqlite_url, extra=["--stale-after", "3"])
    try:
        fleet = Fleet(collector, tmp_path)
        fleet.report(host("ws1", client="SP2"))
        fleet.wait_open("stale-agent", "ws1")
        stale = fleet.collector.cli_json("hosts", "--stale")
        assert [h["host_id"] for h in stale] == ["ws1"]
        fleet.report(host("ws1", client="SP2"))

        # The host's return resolves the finding (it may go stale again 3 s later, so this looks
        # at the resolved entry, not at the open list).
        def resolved() -> dict[str, Any] | None:
            found = fleet.collector.cli_json("violations", "--policy", "stale-agent", "--state", "resolved")
            return next((v for v in found if v["subject"] == "ws1"), None)

        assert wait_for(resolved, what="stale-agent resolved for ws1")["resolved_at"]
    finally:
        collector.stop()


def test_exemption_silences_a_subject_until_removed(tmp_path: Path, sqlite_url: str) -> None:

    collector = start_collector(tmp_path, sqlite_url)
    fleet = Fleet(collector, tmp_path)
    try:
        fleet.report(host("ws1", client="RTM"))
        fleet.wait_open("client-not-self-activating", "ws1")
        # Through the collector's admin API, with an admin token made the break-glass way.
        token = str(make_token(tmp_path, sqlite_url))
        exempt = ["exemptions", "add", "--subject-kind", "host", "--subject", "ws1", "--token-file", token]
        added = collector.cli(*exempt, "--policy", "client-not-self-activating", "--reason", "kiosk, replaced in Q1")
        assert added.stdout.startswith("exempted host ws1 from client-not-self-activating"), added.stdout
        fleet.wait_resolved("client-not-self-activating", "ws1")
        listed = collector.cli_json("exemptions")
        assert [(e["policy"], e["subject"], e["reason"], e["expires_at"]) for e in listed] == [
            ("client-not-self-activating", "ws1", "kiosk, replaced in Q1", None)
        ]
        bad = collector.cli(*exempt, "--policy", "no-such-policy", "--reason", "x", check=False)
        assert bad.returncode == 2 and "INVALID_ARGUMENT: policy: expected a known policy" in bad.stderr, bad.stderr
        collector.cli("exemptions", "remove", "--id", str(listed[0]["id"]), "--token-file", token)
        fleet.wait_open("client-not-self-activating", "ws1")
    finally:
        collector.stop()


def test_plan_and_clusters_for_the_sample_fleet(tmp_path: Path, sqlite_url: str) -> None:
    """The planner over a real inventory: roots before their licensing clusters (D6), RTM
    servers through SP1 (D1), clients straight to SP2 (D2), D4 checklist before each cluster."""
    from processes import FLEET

    collector = start_collector(tmp_path, sqlite_url)
    try:
        files = sorted(FLEET.glob("*.json"))
        report_facts(collector, *files)
        plan = collector.cli_json("plan")
        steps = [(w["wave"], s) for w in plan["waves"] for s in w["steps"]]
        first_wave = {
            s["cluster"]: min(n for n, t in steps if t["cluster"] == s["cluster"] and t["role"] == "server")
            for n, s in steps
            if s["role"] == "server"
        }
        # D6: lic-emea/lic-us wait for the corp root (which is still upgrading).
        assert first_wave["https://rms.corp.example"] < first_wave["https://lic-us.corp.example"]
        # D1: the RTM servers of lic-us go to SP1 before SP2.
        us = [
            (n, s["from"], s["to"])
            for n, s in steps
            if s["cluster"] == "https://lic-us.corp.example" and s["role"] == "server"
        ]
        assert ("RTM", "SP2") not in {(f, t) for _, f, t in us}
        assert {(f, t) for _, f, t in us} == {("RTM", "SP1"), ("SP1", "SP2")}
        # D2: clients never take an intermediate step.
        assert all(s["to"] == "SP2" for _, s in steps if s["role"] == "client")
        # D4: each cluster with a server step has its checklist in the wave of its first step.
        for cluster, wave in first_wave.items():
            checklist = next(w["checklist"] for w in plan["waves"] if w["wave"] == wave)
            assert len([c for c in checklist if c["cluster"] == cluster]) == 4
        table = collector.cli("plan").stdout
        assert "Before wave 1 (D4):" in table

        clusters = {c["url"]: c for c in collector.cli_json("clusters")}
        assert clusters["https://lic-us.corp.example"]["offline_enrollment"] is False  # D9
        assert clusters["https://lic.partner.example"]["server_lockbox"] is True  # D11
        assert clusters["https://rms.partner.example"]["sql_server_2005_by_default"] is True  # D12
        assert clusters["https://rms.corp.example"]["self_activating_clients"] == "some"  # D10
        expected = sum(
            1
            for f in files
            if (json.loads(f.read_text()).get("server") or {}).get("cluster") == "https://rms.corp.example"
        )
        assert sum(clusters["https://rms.corp.example"]["server_versions"].values()) == expected
    finally:
        collector.stop()


def test_violations_filters_by_since_and_severity(fleet: Fleet) -> None:
    fleet.report(host("ws1", client="RTM"))
    opened = fleet.wait_open("client-not-self-activating", "ws1")
    later = fleet.collector.cli_json("violations", "--since", "2999-01-01T00:00:00Z")
    assert later == []
    same = fleet.collector.cli_json("violations", "--since", opened["since"])
    assert [v["subject"] for v in same] == ["ws1"]
    assert fleet.collector.cli_json("violations", "--severity", "critical") == []
    bad = fleet.collector.cli("violations", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "--since: expected an ISO 8601 time" in bad.stderr
