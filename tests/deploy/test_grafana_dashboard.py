"""The Grafana dashboard and provisioning of deploy/grafana/."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from .catalogue import DEPLOY, expression_problems, load_catalogue, recording_rule_names
from .conftest import assert_ok, run
from .dashboard import OVERVIEW, data_panels, load_dashboard, panel_expressions

PROVISIONING = DEPLOY / "grafana" / "provisioning"


def provisioned_datasource_uids() -> set[str]:
    uids: set[str] = set()
    for path in (PROVISIONING / "datasources").glob("*.yml"):
        uids.update(source["uid"] for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"])
    return uids


def test_dashboard_panels_have_a_datasource_and_a_query() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "rmsfleet-overview"
    panels = data_panels(dashboard)
    assert panels
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel.get('id')} has no title"
        assert panel.get("datasource", {}).get("uid"), f"{title}: no datasource"
        assert panel.get("targets"), f"{title}: no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{title}: a target without an expression"
            assert target.get("refId"), f"{title}: a target without a refId"


def test_panel_ids_are_unique() -> None:
    ids = Counter(panel["id"] for panel in data_panels(load_dashboard()))
    assert [panel_id for panel_id, count in ids.items() if count > 1] == []


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uids = provisioned_datasource_uids()
    assert uids == {"prometheus"}
    for panel in data_panels(load_dashboard()):
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] in uids, panel["title"]


def test_dashboard_provider_loads_the_dashboards_folder() -> None:
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "rmsfleet.yml").read_text(encoding="utf-8"))["providers"]
    assert [provider["type"] for provider in providers] == ["file"]
    assert Path(providers[0]["options"]["path"]).is_absolute()


def test_dashboard_shows_what_operators_look_for() -> None:
    """Rollout, versions, activation, violations, clusters, collector health and evaluation
    across replicas (which one evaluates, the change feed) each have a panel built on their
    metrics."""
    expressions = " ".join(expr for _, expr in panel_expressions())
    for needed in (
        "rmsfleet:sp2_rollout:ratio",
        "rmsfleet:hosts:by_role_version",
        "rmsfleet:clients:by_version_activation",
        "rmsfleet:policy_violations:open",
        "rmsfleet_cluster_servers",
        "rmsfleet_cluster_capability",
        "rmsfleet:rpcs:rate5m",
        "rmsfleet_ingest_queue_depth",
        "rmsfleet:ingest_commit_duration_seconds:p95_5m",
        "rmsfleet:evaluation:age_seconds",
        "rmsfleet_evaluation_leader",
        "rmsfleet_evaluation_feed_backlog",
        "rmsfleet_evaluation_feed_lag_seconds",
    ):
        assert needed in expressions, f"no panel shows {needed}"


def test_panel_expressions_use_only_catalogue_metrics_and_recording_rules(
    domain_policies: dict[str, tuple[str, ...]],
) -> None:
    catalogue = load_catalogue()
    recorded = recording_rule_names()
    policies = domain_policies
    expressions = panel_expressions()
    assert len(expressions) >= 15
    problems = [
        f"{title}: {problem}"
        for title, expr in expressions
        for problem in expression_problems(expr, catalogue, recorded, policies)
    ]
    assert not problems, "\n".join(problems)
    # Grafana variables ($__rate_interval, $job, ...) would not run against Prometheus as is.
    assert [title for title, expr in expressions if "$" in expr] == []


@pytest.mark.promtool
def test_panel_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses every expression (as a recording rule) without a running Prometheus."""
    rules: list[dict[str, Any]] = [
        {"record": f"dashboard:panel_{index}:check", "expr": expr}
        for index, (_, expr) in enumerate(panel_expressions())
    ]
    path = tmp_path / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    assert_ok(run(promtool, "check", "rules", str(path)))


def test_panel_expressions_reads_titles_and_queries(tmp_path: Path) -> None:
    dashboard = {
        "panels": [
            {"type": "stat", "title": "A", "targets": [{"refId": "A", "expr": "up"}, {"refId": "B", "expr": "x"}]},
            {"type": "row", "title": "R", "collapsed": True, "panels": [{"title": "B", "targets": [{"expr": "y"}]}]},
            {"type": "text", "title": "notes"},
        ]
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dashboard), encoding="utf-8")
    assert panel_expressions(path) == [("A", "up"), ("A", "x"), ("B", "y")]
    assert panel_expressions() == panel_expressions(OVERVIEW)
