"""The PromQL reader the contract checks rely on: if it found nothing, they would pass on
anything."""

from __future__ import annotations

from .catalogue import expression_problems, load_catalogue
from .promql import Matcher, metric_names, selectors

# The reader is checked against a policy table of its own: what domain.md says is checked elsewhere.
POLICIES: dict[str, tuple[str, ...]] = {"mixed-version-cluster": ("D5", "D8"), "stale-agent": ()}


def test_finds_metrics_but_not_functions_labels_or_durations() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le) (rate(rmsfleet_ingest_commit_duration_seconds_bucket[5m])))"
        ' / on (instance) group_left max(up{job="rmsfleet-collector"} offset 30m) > bool 1e3'
    )
    assert metric_names(expr) == {"rmsfleet_ingest_commit_duration_seconds_bucket", "up"}


def test_finds_metrics_after_grouping_and_in_binary_operations() -> None:
    expr = (
        "count by (cluster, forest) (max by (cluster, forest, version) (rmsfleet_cluster_servers) > 0) > 1"
        ' and on () rmsfleet:policy_violations:open{policy="mixed-version-cluster"} or vector(0)'
    )
    assert metric_names(expr) == {"rmsfleet_cluster_servers", "rmsfleet:policy_violations:open"}


def test_reads_label_matchers() -> None:
    found = selectors('rmsfleet_reports_total{outcome="error", instance=~"10\\\\..*"} + rmsfleet_fleet_hosts')
    assert len(found) == 1
    assert found[0].metric == "rmsfleet_reports_total"
    assert found[0].matchers == (Matcher("outcome", "=", "error"), Matcher("instance", "=~", "10\\\\..*"))


def test_flags_what_the_catalogue_does_not_have() -> None:
    problems = expression_problems(
        'sum(rmsfleet_report_total{outcome="error"}) + rmsfleet_reports_total{outcome="errors"}'
        ' + rmsfleet_hosts{os="windows"} + rmsfleet:hosts:by_role_version{role="desktop"}'
        ' + rmsfleet_policy_violations{policy="no-such-policy"} + up{job="node"}',
        load_catalogue(),
        {"rmsfleet:hosts:by_role_version"},
        POLICIES,
    )
    assert len(problems) == 6, problems
    assert any("rmsfleet_report_total is neither" in problem for problem in problems)
    assert any('outcome="errors"' in problem for problem in problems)
    assert any('os="windows"' in problem for problem in problems)
    assert any('role="desktop"' in problem for problem in problems)
    assert any('policy="no-such-policy"' in problem for problem in problems)
    assert any('job="node"' in problem for problem in problems)


def test_accepts_histogram_series_and_target_labels() -> None:
    problems = expression_problems(
        'sum(rate(rmsfleet_evaluation_duration_seconds_count{kind="full", instance="a:9464"}[5m]))'
        ' + rmsfleet_ingest_batch_size_bucket{le="+Inf"}',
        load_catalogue(),
        set(),
        POLICIES,
    )
    assert problems == []
