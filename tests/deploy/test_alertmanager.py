"""The Alertmanager configuration of deploy/alertmanager/.

amtool checks the file (and its commented e-mail and chat examples) and answers, for the labels
of every alert rule in deploy/prometheus/rules/alerts.yml, which receiver it goes to: critical
pages, warning files a ticket. The other tests hold the inhibitions and the grouping to the
labels the alert rules really carry. tests/e2e/test_alertmanager_e2e.py runs it for real.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .catalogue import ALERT_RULES, DEPLOY, PROMETHEUS, load_rules
from .conftest import assert_ok, run

ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
RECEIVER_FOR_SEVERITY = {"critical": "rmsfleet-pager", "warning": "rmsfleet-tickets"}
# Values for the labels an alert takes from its series (a real alert has them; routing must not
# depend on them, so any value does).
SERIES_LABELS = {"forest": "corp.example", "cluster": "https://rms.corp.example", "kind": "root-certification"}

pytestmark = pytest.mark.alertmanager


@pytest.fixture(scope="module")
def amtool() -> str:
    from conftest import require_tool

    return require_tool("amtool", "prometheus-alertmanager")


def config() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    return document


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in load_rules(ALERT_RULES) if "alert" in rule]


def route_test(amtool: str, path: Path, labels: dict[str, str], expected: str) -> subprocess.CompletedProcess[str]:
    return run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={path}",
        f"--verify.receivers={expected}",
        *(f"{name}={value}" for name, value in sorted(labels.items())),
    )


def test_amtool_accepts_the_configuration(amtool: str) -> None:
    assert_ok(run(amtool, "check-config", str(ALERTMANAGER)))


def commented_examples() -> list[dict[str, Any]]:
    """The commented e-mail and chat receivers at the end of alertmanager.yml, uncommented."""
    text = ALERTMANAGER.read_text(encoding="utf-8")
    start = text.index("  # - name: rmsfleet-pager")
    block = "\n".join(re.sub(r"^(\s*)# ?", r"\1", line) for line in text[start:].splitlines())
    receivers = yaml.safe_load(block)
    assert isinstance(receivers, list), block
    return receivers


def test_commented_email_and_chat_receivers_are_a_valid_configuration(amtool: str, tmp_path: Path) -> None:
    """Uncommented in place of the webhooks, the examples are a configuration amtool accepts,
    with the same receiver names, so the routes need no change."""
    receivers = commented_examples()
    kinds = {key for receiver in receivers for key in receiver if key.endswith("_configs")}
    assert kinds == {"email_configs", "slack_configs"}
    assert {r["name"] for r in receivers} == {r["name"] for r in config()["receivers"]}
    document = config()
    document["receivers"] = receivers
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert_ok(run(amtool, "check-config", str(path)))


def test_every_alert_routes_by_its_severity(amtool: str) -> None:
    """amtool answers for each alert rule's labels: critical pages, warning files a ticket."""
    failures = []
    for rule in alert_rules():
        labels = {"alertname": rule["alert"], **rule["labels"]}
        if "policy" in labels:
            labels.update(SERIES_LABELS)
        expected = RECEIVER_FOR_SEVERITY[labels["severity"]]
        result = route_test(amtool, ALERTMANAGER, labels, expected)
        if result.returncode != 0 or result.stdout.split() != [expected]:
            failures.append(
                f"{rule['alert']} ({labels['severity']}): expected {expected}, amtool said {result.stdout!r}"
            )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"severity": "critical", "policy": "licensing-ahead-of-root", "forest": "corp.example"}, "rmsfleet-pager"),
        ({"severity": "warning", "policy": "client-not-self-activating", "forest": "corp.example"}, "rmsfleet-tickets"),
        # a label set the rules never produce still reaches someone: the ticket queue
        ({"alertname": "SomethingElse"}, "rmsfleet-tickets"),
        ({"severity": "info", "policy": "stale-agent"}, "rmsfleet-tickets"),
    ],
)
def test_route_cases(amtool: str, labels: dict[str, str], expected: str) -> None:
    result = route_test(amtool, ALERTMANAGER, labels, expected)
    assert_ok(result)
    assert result.stdout.split() == [expected]


def test_a_fleet_wide_problem_is_one_notification_per_policy_and_forest() -> None:
    """Alerts group by policy and forest, on every route (no route groups by a label that would
    split them, such as alertname or cluster)."""
    route = config()["route"]
    assert route["group_by"] == ["policy", "forest"]
    for child in route["routes"]:
        assert "group_by" not in child, child
    # every policy alert carries both labels to group on (forest from its series)
    for rule in alert_rules():
        if "policy" in rule["labels"] and rule["alert"] != "RmsfleetStaleAgentsRising":
            assert "forest" in rule["expr"], f"{rule['alert']} has no forest label"


_MATCHER = re.compile(r'^(\w+)\s*(=~|!~|!=|=)\s*"(.*)"$')


def matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for text in matchers:
        found = _MATCHER.match(text)
        assert found is not None, f"cannot read matcher {text!r}"
        name, op, value = found.groups()
        actual = labels.get(name, "")
        ok = {
            "=": actual == value,
            "!=": actual != value,
            "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None,
        }[op]
        if not ok:
            return False
    return True


def rule_labels(rule: dict[str, Any]) -> dict[str, str]:
    return {"alertname": rule["alert"], **rule["labels"]}


def carries(rule: dict[str, Any], label: str) -> bool:
    """Whether the rule's alerts carry `label` (static, or kept by its expression's `by`/`on`)."""
    return label in rule["labels"] or re.search(rf"\b(by|on)\s*\([^)]*\b{label}\b", rule["expr"]) is not None


def test_inhibitions_name_real_alerts_and_labels_both_sides_carry() -> None:
    for inhibition in config()["inhibit_rules"]:
        sources = [r for r in alert_rules() if matches(inhibition["source_matchers"], rule_labels(r))]
        targets = [r for r in alert_rules() if matches(inhibition["target_matchers"], rule_labels(r))]
        assert sources and targets, inhibition
        assert not {r["alert"] for r in sources} & {r["alert"] for r in targets}, "an alert inhibits itself"
        for label in inhibition.get("equal", []):
            for rule in sources + targets:
                assert carries(rule, label), f"{rule['alert']} has no {label} label: the inhibition never applies"


def test_inhibited_alerts_come_before_the_alerts_that_inhibit_them() -> None:
    """Prometheus sends each rule's alerts as it evaluates the rule, in file order. When a fix
    resolves an inhibiting alert and its target together, the target's resolution must reach
    Alertmanager first, or Alertmanager may send the target as firing in between."""
    document = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    for inhibition in config()["inhibit_rules"]:
        for group in document["groups"]:
            rules = [r for r in group["rules"] if "alert" in r]
            sources = [i for i, r in enumerate(rules) if matches(inhibition["source_matchers"], rule_labels(r))]
            targets = [i for i, r in enumerate(rules) if matches(inhibition["target_matchers"], rule_labels(r))]
            if sources and targets:
                assert max(targets) < min(sources), (
                    f"group {group['name']}: {[rules[i]['alert'] for i in targets]} must come before "
                    f"{[rules[i]['alert'] for i in sources]}"
                )


def test_mixed_cluster_inhibits_the_forest_alert_of_its_own_forest_only() -> None:
    """D8: a mixed cluster makes its forest mixed; while the cluster alert fires in a forest,
    the forest alert of that forest (and no other) is held back."""
    (inhibition,) = [
        i for i in config()["inhibit_rules"] if matches(i["target_matchers"], {"policy": "mixed-versions-in-forest"})
    ]
    for rule in alert_rules():
        if rule["labels"].get("policy") == "mixed-version-cluster":
            assert matches(inhibition["source_matchers"], rule_labels(rule)), rule["alert"]
    assert inhibition["equal"] == ["forest"]


def test_prometheus_sends_alerts_to_the_documented_alertmanager() -> None:
    prometheus = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    (manager,) = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]
    assert "127.0.0.1:9093" in (DEPLOY.parent / "docs" / "deploy.md").read_text(encoding="utf-8")


def test_receivers_send_resolutions() -> None:
    for receiver in config()["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            assert webhook.get("send_resolved", True), receiver["name"]
    assert {r["name"] for r in config()["receivers"]} == set(RECEIVER_FOR_SEVERITY.values())
