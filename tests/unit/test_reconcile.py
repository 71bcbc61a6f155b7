"""The evaluator's bookkeeping, pure: which findings open, escalate or resolve violations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rmsfleet.collector.domain.model import Finding, PolicyConfig, Severity, SubjectKind
from rmsfleet.collector.domain.policies import PolicyContext
from rmsfleet.collector.evaluator import reconcile
from rmsfleet.collector.store.evaluation_sql import OpenViolation

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CTX = PolicyContext(now=T0 + timedelta(days=1), config=PolicyConfig(mixed_cluster_grace=timedelta(days=7)))


def mixed(cluster: str) -> Finding:
    return Finding("mixed-version-cluster", SubjectKind.CLUSTER, cluster, Severity.WARNING, f"{cluster} is mixed")


def stored(vid: int, finding: Finding, since: datetime, severity: str = "warning") -> OpenViolation:
    return OpenViolation(
        vid, finding.policy, finding.subject_kind.value, finding.subject, severity, finding.detail, since
    )


def test_a_new_finding_opens_and_a_vanished_one_resolves() -> None:
    result = reconcile([stored(1, mixed("old"), T0)], [mixed("new")], CTX)
    assert [f.subject for f in result.opened] == ["new"]
    assert result.resolved == [1]
    assert result.updated == []


def test_a_finding_that_still_holds_keeps_its_row() -> None:
    result = reconcile([stored(1, mixed("c"), T0)], [mixed("c")], CTX)
    assert (result.opened, result.updated, result.resolved) == ([], [], [])


def test_d5_a_cluster_mixed_past_the_grace_period_escalates_to_critical() -> None:
    late = PolicyContext(now=T0 + timedelta(days=8), config=CTX.config)
    result = reconcile([stored(1, mixed("c"), T0)], [mixed("c")], late)
    assert [(vid, f.severity) for vid, f in result.updated] == [(1, Severity.CRITICAL)]


def test_duplicate_findings_for_one_subject_open_one_violation() -> None:
    result = reconcile([], [mixed("c"), mixed("c")], CTX)
    assert len(result.opened) == 1
