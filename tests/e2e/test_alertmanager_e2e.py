"""An alert reaches a person: real agents report to a real collector, a real Prometheus with the
shipped configuration and rules scrapes it and sends its alerts to a real Alertmanager with the
shipped configuration, which posts to a webhook receiver inside the test. Only intervals and
targets differ from the shipped files (tests/e2e/monitoring.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from monitoring import alertmanager, prometheus, webhook_receiver
from processes import report_facts, start_collector, wait_for, write_facts

pytestmark = [pytest.mark.e2e, pytest.mark.promtool, pytest.mark.alertmanager]

CORP = "corp.example"
CORP_CLUSTER = "https://rms.corp.example"
PARTNER = "partner.example"
PARTNER_CLUSTER = "https://rms.partner.example"
# Alertmanager runs with 1 s group_wait and group_interval here: a notification it would send
# goes out within a few of them.
SETTLE_SECONDS = 5


def server(host_id: str, version: str, forest: str, cluster: str) -> dict[str, object]:
    return {
        "host_id": host_id,
        "hostname": f"{host_id}.{forest}",
        "forest": forest,
        "server": {
            "version": version,
            "cluster": cluster,
            "cluster_kind": "root-certification",
            "root_cluster": None,
            "enrollment": "online" if version == "RTM" else "offline",
        },
    }


@pytest.fixture
def binaries() -> tuple[str, str]:
    from conftest import require_tool

    return (
        require_tool("prometheus", "prometheus"),
        require_tool("prometheus-alertmanager", "prometheus-alertmanager"),
    )


def test_violations_reach_the_receivers_the_forest_alert_is_held_back_and_the_fix_resolves(
    tmp_path: Path, sqlite_url: str, binaries: tuple[str, str]
) -> None:
    prometheus_binary, alertmanager_binary = binaries
    collector = start_collector(tmp_path, sqlite_url)
    try:
        with (
            webhook_receiver() as receiver,
            alertmanager(alertmanager_binary, tmp_path, receiver.url) as manager,
            prometheus(
                prometheus_binary, tmp_path, collector.metrics_url, manager.url.removeprefix("http://")
            ) as server_,
        ):
            wait_for(lambda: server_.value('up{job="rmsfleet-collector"}') == 1, timeout=60, what="the scrape")
            # Before the first scrape "no collector is up" may fire; it would hold back every other alert.
            wait_for(lambda: not server_.firing("RmsfleetCollectorAbsent"), timeout=60, what="a collector up")

            # Real agents: a corp cluster with an SP1 and an SP2 server (D5, D8: mixed cluster and
            # mixed forest), and a partner server seen at RTM, then at SP2 (D1).
            a = write_facts(tmp_path / "a.json", **server("corp-rms-a", "SP1", CORP, CORP_CLUSTER))
            b = write_facts(tmp_path / "b.json", **server("corp-rms-b", "SP2", CORP, CORP_CLUSTER))
            p = write_facts(tmp_path / "p.json", **server("partner-rms", "RTM", PARTNER, PARTNER_CLUSTER))
            report_facts(collector, a, b, p)
            write_facts(p, **server("partner-rms", "SP2", PARTNER, PARTNER_CLUSTER))
            report_facts(collector, p)

            # The warning reaches the ticket queue with its policy, subject, severity, summary and runbook.
            ticket = wait_for(
                lambda: receiver.about("RmsfleetMixedVersionCluster", "firing"),
                timeout=120,
                what="the mixed cluster's ticket",
            )[0]
            assert ticket.path == "/rmsfleet/ticket"
            assert ticket.body["receiver"] == "rmsfleet-tickets"
            assert ticket.body["groupLabels"] == {"policy": "mixed-version-cluster", "forest": CORP}
            (alert,) = ticket.alerts("RmsfleetMixedVersionCluster")
            assert alert["labels"]["policy"] == "mixed-version-cluster"
            assert alert["labels"]["cluster"] == CORP_CLUSTER
            assert alert["labels"]["severity"] == "warning"
            assert alert["annotations"]["summary"] == f"RMS cluster {CORP_CLUSTER} runs 2 server versions"
            assert alert["annotations"]["runbook"] == "docs/deploy.md#rmsfleetmixedversioncluster"
            assert "rmsfleet-collector violations --policy mixed-version-cluster" in alert["annotations"]["description"]
            # the subject is the one the collector reports
            subjects = [v["subject"] for v in collector.cli_json("violations", "--policy", "mixed-version-cluster")]
            assert subjects == [alert["labels"]["cluster"]]

            # The critical D1 finding pages, named by its forest.
            page = wait_for(
                lambda: receiver.about("RmsfleetUnsupportedUpgradePath", "firing"),
                timeout=120,
                what="the page for RTM straight to SP2",
            )[0]
            assert page.path == "/rmsfleet/page"
            assert page.body["receiver"] == "rmsfleet-pager"
            (critical,) = page.alerts("RmsfleetUnsupportedUpgradePath")
            assert critical["labels"]["policy"] == "unsupported-upgrade-path"
            assert critical["labels"]["forest"] == PARTNER
            assert critical["labels"]["severity"] == "critical"
            assert critical["annotations"]["summary"] == (
                f"1 RMS server(s) in AD forest {PARTNER} went from RTM straight to SP2"
            )
            assert critical["annotations"]["runbook"] == "docs/deploy.md#rmsfleetunsupportedupgradepath"
            assert [v["subject"] for v in collector.cli_json("violations", "--policy", "unsupported-upgrade-path")] == [
                "partner-rms"
            ]

            # The forest alert fires in Prometheus, and Alertmanager holds it back (inhibited by the
            # mixed cluster of the same forest).
            wait_for(lambda: server_.firing("RmsfleetMixedVersionsInForest"), timeout=60, what="the forest alert")
            held = wait_for(
                lambda: [a for a in manager.alerts("RmsfleetMixedVersionsInForest") if a["status"]["inhibitedBy"]],
                timeout=60,
                what="Alertmanager to inhibit the forest alert",
            )
            assert held[0]["status"]["state"] == "suppressed"
            assert held[0]["labels"]["forest"] == CORP

            # Fixing the host (a new report at SP2) resolves the cluster: the same receiver is told.
            write_facts(a, **server("corp-rms-a", "SP2", CORP, CORP_CLUSTER))
            report_facts(collector, a)
            resolved = wait_for(
                lambda: receiver.about("RmsfleetMixedVersionCluster", "resolved"),
                timeout=120,
                what="the resolution",
            )[0]
            assert resolved.path == "/rmsfleet/ticket"
            assert resolved.body["status"] == "resolved"
            assert [a["labels"]["cluster"] for a in resolved.alerts("RmsfleetMixedVersionCluster")] == [CORP_CLUSTER]

            # The forest alert resolved with it and was never sent, not even once uninhibited.
            wait_for(lambda: not manager.alerts("RmsfleetMixedVersionsInForest"), timeout=60, what="the forest alert")
            time.sleep(SETTLE_SECONDS)  # room for a wrong notification to arrive
            sent = [
                (n.body["status"], n.body["groupLabels"])
                for n in receiver.received()
                if n.alerts("RmsfleetMixedVersionsInForest")
            ]
            assert sent == []
    finally:
        collector.stop()
