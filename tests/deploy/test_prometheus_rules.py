"""The Prometheus configuration, recording rules and alerts of deploy/prometheus/.

promtool checks the configuration and rules and runs the rule unit tests in
deploy/prometheus/tests/; the other tests hold the rules to the contracts: every policy of
domain.md has an alert citing its facts, every alert has a runbook entry in docs/deploy.md and a
firing and a quiet unit test, and every expression uses only metrics and labels of the catalogue.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .catalogue import (
    ALERT_RULES,
    DEPLOY,
    DEPLOY_MD,
    PROMETHEUS,
    RECORDING_RULES,
    REPO,
    direct_aggregations,
    expression_problems,
    load_catalogue,
    load_rules,
    recording_rule_names,
    replica_aggregation,
)
from .conftest import assert_ok, run
from .dashboard import panel_expressions

CONFIG = PROMETHEUS / "prometheus.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules(ALERT_RULES) if "alert" in rule]


def rule_tests() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]]


# --- promtool -------------------------------------------------------------------------------


@pytest.mark.promtool
def test_promtool_accepts_the_configuration(promtool: str) -> None:
    # also loads the rule files the configuration names, relative to it
    assert_ok(run(promtool, "check", "config", str(CONFIG)))


@pytest.mark.promtool
def test_promtool_accepts_the_rules(promtool: str) -> None:
    assert_ok(run(promtool, "check", "rules", str(RECORDING_RULES), str(ALERT_RULES)))


@pytest.mark.promtool
def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool rule tests in deploy/prometheus/tests/"
    result = run(promtool, "test", "rules", *(str(path) for path in RULE_TESTS))
    assert_ok(result)
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def kubernetes_example() -> dict[str, Any]:
    """The commented kubernetes_sd job at the end of prometheus.yml, uncommented."""
    text = CONFIG.read_text(encoding="utf-8")
    start = text.index("  # - job_name: rmsfleet-collector")
    block = "\n".join(re.sub(r"^(\s*)# ?", r"\1", line) for line in text[start:].splitlines())
    example = yaml.safe_load(block)
    assert isinstance(example, list) and len(example) == 1, block
    job: dict[str, Any] = example[0]
    return job


@pytest.mark.promtool
def test_kubernetes_discovery_example_is_a_valid_configuration(promtool: str, tmp_path: Path) -> None:
    """The example job, in place of the static one, is a configuration Prometheus accepts.
    Debian's prometheus is built without Kubernetes discovery, so promtool checks the job with a
    static target in its place; the relabelling, the part easy to get wrong, is checked as is."""
    job = kubernetes_example()
    assert job["job_name"] == "rmsfleet-collector", "the alerts select this job name"
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["scrape_configs"] = [job]
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert_ok(run(promtool, "check", "config", str(tmp_path / "prometheus.yml")))


def test_kubernetes_discovery_example_keeps_the_collector_pods() -> None:
    """Its relabelling keeps exactly what deploy/kubernetes/deployment.yaml's pods declare."""
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]["metadata"]
    port = next(
        port["containerPort"]
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for port in container["ports"]
        if port["name"] == "metrics"
    )
    keep = {
        tuple(rule["source_labels"]): rule["regex"]
        for rule in kubernetes_example()["relabel_configs"]
        if rule.get("action") == "keep"
    }
    assert keep == {
        ("__meta_kubernetes_pod_label_app_kubernetes_io_name",): pod["labels"]["app.kubernetes.io/name"],
        ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",): pod["annotations"]["prometheus.io/scrape"],
    }
    address = next(
        rule for rule in kubernetes_example()["relabel_configs"] if rule.get("target_label") == "__address__"
    )
    # Prometheus anchors relabel regexes; the address and the port annotation are joined by ";"
    joined = f"10.1.2.3:50051;{pod['annotations']['prometheus.io/port']}"
    rewritten = re.fullmatch(address["regex"], joined)
    assert rewritten is not None
    assert rewritten.expand(address["replacement"].replace("$", "\\")) == f"10.1.2.3:{port}"


# --- the configuration ----------------------------------------------------------------------


def test_configuration_scrapes_the_job_the_alerts_select() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "rmsfleet-collector" in jobs
    assert jobs["rmsfleet-collector"]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert config["global"]["scrape_interval"] == "30s"
    for rule_file in config["rule_files"]:
        assert not Path(rule_file).is_absolute(), rule_file
        assert (CONFIG.parent / rule_file).is_file(), f"{rule_file} does not exist next to prometheus.yml"
    assert {(CONFIG.parent / path).resolve() for path in config["rule_files"]} == {
        RECORDING_RULES.resolve(),
        ALERT_RULES.resolve(),
    }


# --- alerts against domain.md and docs ------------------------------------------------------


def test_every_policy_has_an_alert(domain_policies: dict[str, tuple[str, ...]]) -> None:
    policies = domain_policies
    alerted = {alert["labels"].get("policy") for alert in alerts()}
    missing = sorted(set(policies) - alerted)
    assert not missing, f"policies without an alert: {missing}"
    unknown = sorted(policy for policy in alerted - set(policies) if policy is not None)
    assert not unknown, f"alerts for policies domain.md does not have: {unknown}"


def test_policy_alerts_cite_the_facts_of_their_policy(domain_policies: dict[str, tuple[str, ...]]) -> None:
    policies = domain_policies
    for alert in alerts():
        policy = alert["labels"].get("policy")
        if policy is None:
            continue
        facts = policies[policy]
        name = alert["alert"]
        assert alert["labels"]["domain_fact"] == (",".join(facts) or "none"), name
        description = alert["annotations"]["description"]
        for fact in facts:
            assert re.search(rf"\b{fact}\b", description), f"{name}: the description does not cite {fact}"
        assert f"rmsfleet-collector violations --policy {policy}" in description, (
            f"{name}: tell the operator how to list the subjects"
        )


def test_mixed_cluster_alerts_warn_then_turn_critical() -> None:
    mixed = {a["alert"]: a for a in alerts() if a["labels"].get("policy") == "mixed-version-cluster"}
    assert {a["labels"]["severity"] for a in mixed.values()} == {"warning", "critical"}
    critical = next(a for a in mixed.values() if a["labels"]["severity"] == "critical")
    assert 'severity="critical"' in critical["expr"]
    warning = next(a for a in mixed.values() if a["labels"]["severity"] == "warning")
    assert "rmsfleet_cluster_servers" in warning["expr"], "the warning names the cluster"


def test_every_alert_is_labelled_and_explained() -> None:
    headings = {
        line.lstrip("#").strip() for line in DEPLOY_MD.read_text(encoding="utf-8").splitlines() if line.startswith("#")
    }
    names = [alert["alert"] for alert in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert "policy" in alert["labels"] or alert["labels"].get("component") == "collector", name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook"] == f"docs/deploy.md#{name.lower()}", name
        assert name in headings, f"docs/deploy.md has no heading `{name}` for the alert's runbook link"


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation other than
    `-` and `_` dropped, spaces to `-`, a repeated anchor suffixed -1, -2, ..."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def test_every_runbook_link_resolves_to_a_heading() -> None:
    """The `runbook` annotation (shown in every notification) is a path in the repository and
    an anchor that a heading of that file really has, so the link lands on its explanation."""
    for alert in alerts():
        path, _, anchor = alert["annotations"]["runbook"].partition("#")
        target = REPO / path
        assert target.is_file(), f"{alert['alert']}: {path} does not exist"
        assert anchor in github_anchors(target.read_text(encoding="utf-8")), (
            f"{alert['alert']}: {path} has no heading with the anchor #{anchor}"
        )


def test_anchor_reading_follows_github() -> None:
    anchors = github_anchors("# Deploying rmsfleet\n## Alertmanager\n```\n# not a heading\n```\n## Alertmanager\n")
    assert anchors == {"deploying-rmsfleet", "alertmanager", "alertmanager-1"}


def test_collector_health_alerts_exist() -> None:
    names = {alert["alert"] for alert in alerts()}
    expected = {
        "RmsfleetCollectorDown",
        "RmsfleetCollectorAbsent",
        "RmsfleetIngestErrors",
        "RmsfleetEvaluationNotRunning",
        "RmsfleetStaleAgentsRising",
    }
    assert expected <= names


# --- unit test coverage -----------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in rule_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
            for expected in case.get("exp_alerts") or []:
                assert expected.get("exp_labels") and expected.get("exp_annotations"), case["alertname"]
    names = {alert["alert"] for alert in alerts()}
    assert not names - firing, f"alerts never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"alerts never tested quiet: {sorted(names - quiet)}"


def test_every_recording_rule_has_a_unit_test() -> None:
    tested = " ".join(case["expr"] for test in rule_tests() for case in test.get("promql_expr_test", []))
    untested = sorted(name for name in recording_rule_names() if not re.search(rf"(?<![\w:]){name}(?![\w:])", tested))
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def test_unit_tests_evaluate_at_the_scrape_interval() -> None:
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["evaluation_interval"] == "30s", path.name
        assert all(test["interval"] == "30s" for test in document["tests"]), path.name


# --- the metric contract ----------------------------------------------------------------------


def test_rules_use_only_catalogue_metrics_and_labels(domain_policies: dict[str, tuple[str, ...]]) -> None:
    catalogue = load_catalogue()
    recorded = recording_rule_names()
    policies = domain_policies
    problems = [
        f"{rule.get('record') or rule.get('alert')}: {problem}"
        for path in (RECORDING_RULES, ALERT_RULES)
        for rule in load_rules(path)
        for problem in expression_problems(rule["expr"], catalogue, recorded, policies)
    ]
    assert not problems, "\n".join(problems)


def test_recording_rules_follow_the_naming_convention() -> None:
    for name in recording_rule_names():
        assert re.fullmatch(r"rmsfleet:[a-z0-9_]+:[a-z0-9_]+", name), name


def every_expression() -> list[tuple[str, str]]:
    """(where, PromQL) of every recording rule, alert and dashboard panel."""
    rules = [
        (f"rule {rule.get('record') or rule.get('alert')}", str(rule["expr"]))
        for path in (RECORDING_RULES, ALERT_RULES)
        for rule in load_rules(path)
    ]
    return rules + [(f"panel {title!r}", expr) for title, expr in panel_expressions()]


def test_the_replicas_table_says_how_to_aggregate_every_metric() -> None:
    """docs/deploy.md tells a dashboard author, for each metric of the catalogue, whether the
    replicas export the same value (max) or their own (sum); counters and histograms are per
    replica."""
    table = replica_aggregation()
    catalogue = load_catalogue()
    assert sorted(table) == sorted(catalogue)
    for name, spec in catalogue.items():
        if spec.type in ("counter", "histogram"):
            assert table[name].startswith("`sum` of `rate(...)`"), f"{name}: {table[name]}"


def test_fleet_gauges_are_aggregated_with_max() -> None:
    """Replicas export the same fleet values: a sum (or count) would count the fleet once per
    replica. The fleet gauges are those the Replicas table of docs/deploy.md aggregates with max."""
    same_everywhere = [name for name, how in replica_aggregation().items() if how.startswith("`max")]
    assert "rmsfleet_policy_violations" in same_everywhere and "rmsfleet_evaluation_feed_backlog" in same_everywhere
    problems = [
        f"{where} aggregates {metric} with {aggregation}"
        for where, expr in every_expression()
        for metric in same_everywhere
        for aggregation, _function in direct_aggregations(expr, metric)
        if aggregation in ("sum", "count")
    ]
    assert not problems, "\n".join(problems)


def test_per_replica_counters_are_summed() -> None:
    """Each replica counts what it handled: the rate of a counter or histogram over replicas is
    their sum; max, min or avg would hide all but one."""
    counted = [name for name, spec in load_catalogue().items() if spec.type in ("counter", "histogram")]
    problems = [
        f"{where} aggregates {function}({metric}) with {aggregation}"
        for where, expr in every_expression()
        for metric in counted
        for aggregation, function in direct_aggregations(expr, metric)
        if function is not None and aggregation != "sum"
    ]
    assert not problems, "\n".join(problems)


def test_the_aggregation_check_sees_through_by_clauses() -> None:
    """The two checks above would pass on anything if they missed the common forms."""
    assert direct_aggregations("sum by (policy) (rmsfleet_policy_violations)", "rmsfleet_policy_violations") == [
        ("sum", None)
    ]
    assert direct_aggregations('count(rmsfleet_hosts{role="server"})', "rmsfleet_hosts") == [("count", None)]
    assert direct_aggregations(
        "max by (le) (rate(rmsfleet_ingest_batch_size_bucket[5m]))", "rmsfleet_ingest_batch_size"
    ) == [("max", "rate")]
    assert direct_aggregations("max(rmsfleet_policy_violations_by_forest)", "rmsfleet_policy_violations") == []
