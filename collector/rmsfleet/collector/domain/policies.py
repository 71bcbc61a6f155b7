"""The rulebook: each policy is a pure function from the fleet (and the time) to findings.

Every policy cites the domain facts (domain.md) it enforces. Time is passed in; nothing here
reads a clock, a database or the network.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from rmsfleet.collector.domain.model import (
    Finding,
    Fleet,
    PolicyConfig,
    Severity,
    SubjectKind,
    Version,
)

PolicyFunction = Callable[[Fleet, "PolicyContext"], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class PolicyContext:
    now: datetime
    config: PolicyConfig


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    facts: tuple[str, ...]
    severity: str
    description: str
    evaluate: PolicyFunction


def _versions_text(versions: Iterable[Version]) -> str:
    return ", ".join(sorted(v.value for v in versions))


def mixed_version_cluster(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D5, D8: the servers of one cluster should run one version. A mixed cluster is expected
    during a rolling upgrade (D5), so it starts as a warning; the evaluator raises it to critical
    once it has been open longer than `mixed_cluster_grace` (see `escalate`)."""
    versions: dict[str, set[Version]] = defaultdict(set)
    for host in fleet.hosts:
        server = host.facts.server
        if server is not None:
            versions[server.cluster].add(server.version)
    return [
        Finding(
            policy="mixed-version-cluster",
            subject_kind=SubjectKind.CLUSTER,
            subject=cluster,
            severity=Severity.WARNING,
            detail=(
                f"Cluster {cluster} runs server versions {_versions_text(found)}; finish the rolling "
                "upgrade so every server runs the same version (D5, D8)."
            ),
        )
        for cluster, found in sorted(versions.items())
        if len(found) > 1
    ]


def client_not_self_activating(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D10: only clients at SP1 or later self-activate; an RTM client must activate over the
    internet. UNKNOWN is not flagged: we never guess a version."""
    return [
        Finding(
            policy="client-not-self-activating",
            subject_kind=SubjectKind.HOST,
            subject=host.facts.host_id,
            severity=Severity.WARNING,
            detail=(
                f"Host {host.facts.host_id} runs the RMS {host.facts.client.version.value} client, which must "
                "activate over the internet; upgrade the client straight to SP2 (D10, D2)."
            ),
        )
        for host in fleet.hosts
        if host.facts.client is not None and host.facts.client.version is Version.RTM
    ]


POLICIES: Sequence[Policy] = (
    Policy(
        id="mixed-version-cluster",
        facts=("D5", "D8"),
        severity="warning, critical after the grace period",
        description="servers of one cluster report different server versions",
        evaluate=mixed_version_cluster,
    ),
    Policy(
        id="client-not-self-activating",
        facts=("D10",),
        severity="warning",
        description="a client below SP1 must activate over the internet",
        evaluate=client_not_self_activating,
    ),
)


def escalate(finding: Finding, since: datetime, ctx: PolicyContext) -> Finding:
    """Raise a finding's severity by how long it has held (D5: a cluster that stays mixed)."""
    if finding.policy == "mixed-version-cluster" and ctx.now - since > ctx.config.mixed_cluster_grace:
        return Finding(finding.policy, finding.subject_kind, finding.subject, Severity.CRITICAL, finding.detail)
    return finding


def evaluate_all(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """Every enabled policy's findings, in policy order."""
    findings: list[Finding] = []
    for policy in POLICIES:
        if policy.id not in ctx.config.disabled:
            findings.extend(policy.evaluate(fleet, ctx))
    return findings
