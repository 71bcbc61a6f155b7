"""The rulebook: each policy is a pure function from the fleet (and the time) to findings.

Every policy cites the domain facts (domain.md) it enforces. Time is passed in; nothing here
reads a clock, a database or the network. A version the agent could not map (UNKNOWN) is never
compared with another: no policy guesses what it might be.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from rmsfleet.collector.domain.capabilities import group_by_cluster
from rmsfleet.collector.domain.model import (
    Activation,
    ClusterKind,
    Finding,
    Fleet,
    HostFacts,
    HostRecord,
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


class Scope(enum.Enum):
    HOST = "host"
    SERVERS = "servers"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    facts: tuple[str, ...]
    severity: str
    description: str
    evaluate: PolicyFunction
    # What an evaluation must load for this policy, so the collector can evaluate only what a
    # batch changed: HOST needs just the changed hosts (and their history), SERVERS needs every
    # server and every RTM client (few, even in a large fleet: SP1+ clients are the bulk), TIME
    # only changes with the clock and runs on the periodic full pass.
    scope: Scope


@dataclass(frozen=True, slots=True)
class Exemption:
    """A person's decision that one finding is accepted, with the reason, until `expires_at`
    (exclusive; None means until withdrawn)."""

    policy: str
    subject_kind: SubjectKind
    subject: str
    reason: str
    expires_at: datetime | None = None

    def covers(self, finding: Finding, now: datetime) -> bool:
        return (
            self.policy == finding.policy
            and self.subject_kind is finding.subject_kind
            and self.subject == finding.subject
            and (self.expires_at is None or now < self.expires_at)
        )


def _versions_text(versions: Iterable[Version]) -> str:
    return ", ".join(sorted(v.value for v in versions))


def _known(versions: Iterable[Version]) -> set[Version]:
    return {v for v in versions if v.rank is not None}


def _by_host_id(hosts: Iterable[HostRecord]) -> list[HostRecord]:
    return sorted(hosts, key=lambda h: h.facts.host_id)


def mixed_version_cluster(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D5, D8: the servers of one cluster should run one version. A mixed cluster is expected
    during a rolling upgrade (D5), so it starts as a warning; the evaluator raises it to critical
    once it has been open longer than `mixed_cluster_grace` (see `escalate`). UNKNOWN servers
    are left out of the comparison: we never guess a version."""
    versions: dict[str, set[Version]] = defaultdict(set)
    for host in fleet.hosts:
        server = host.facts.server
        if server is not None:
            versions[server.cluster].add(server.version)
    return [
        mixed_cluster_finding(cluster, _known(found))
        for cluster, found in sorted(versions.items())
        if len(_known(found)) > 1
    ]


def mixed_cluster_finding(cluster: str, known: Iterable[Version]) -> Finding:
    """mixed-version-cluster's finding for `cluster`, whose servers run the `known` versions."""
    return Finding(
        policy="mixed-version-cluster",
        subject_kind=SubjectKind.CLUSTER,
        subject=cluster,
        severity=Severity.WARNING,
        detail=(
            f"Cluster {cluster} runs server versions {_versions_text(known)}; finish the rolling "
            "upgrade so every server runs the same version (D5, D8)."
        ),
    )


def mixed_versions_in_forest(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D8: server RTM, SP1 and SP2 coexist and interoperate only in different AD forests, so the
    servers of one forest (the host's `forest`) should run one version. Hosts in different
    forests with different versions are fine. UNKNOWN servers are left out of the comparison.

    A forest is necessarily mixed while it is being upgraded (D5 rolling, D6 root first), so
    this is a warning; a cluster that is itself mixed also raises `mixed-version-cluster`."""
    clusters: dict[str, dict[Version, set[str]]] = defaultdict(lambda: defaultdict(set))
    for host in fleet.hosts:
        server = host.facts.server
        if server is not None and server.version.rank is not None:
            clusters[host.facts.forest][server.version].add(server.cluster)
    return [
        forest_finding(forest, by_version) for forest, by_version in sorted(clusters.items()) if len(by_version) > 1
    ]


def forest_finding(forest: str, by_version: Mapping[Version, Iterable[str]]) -> Finding:
    """mixed-versions-in-forest's finding for `forest`: the clusters running each known version."""
    parts = "; ".join(
        f"{version.value} in {', '.join(sorted(urls))}"
        for version, urls in sorted(by_version.items(), key=lambda item: item[0].rank or 0)
    )
    return Finding(
        policy="mixed-versions-in-forest",
        subject_kind=SubjectKind.FOREST,
        subject=forest,
        severity=Severity.WARNING,
        detail=(
            f"Forest {forest} runs RMS servers of different versions ({parts}), which interoperate only "
            "across forests; upgrade the remaining servers, root certification clusters first (D8, D6)."
        ),
    )


def licensing_ahead_of_root(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D6: a licensing cluster must never run a newer server version than its root certification
    cluster. Flagged when the licensing cluster's newest server is newer than the root's oldest
    server: while the root is part-way through its rolling upgrade, no licensing server may pass
    even the root's slowest server, because D6 upgrades the whole root first.

    Not flagged when the root cluster has no reporting servers (there is nothing to compare
    with), nor on UNKNOWN versions. A cluster's kind and root are what most of its servers
    report (capabilities.group_by_cluster)."""
    clusters = {members.url: members for members in group_by_cluster(fleet.hosts)}
    findings: list[Finding] = []
    for url, members in clusters.items():
        if members.kind is not ClusterKind.LICENSING or members.root_cluster is None:
            continue
        root = clusters.get(members.root_cluster)
        if root is None:
            continue
        newest = max(_known(_server_versions(members.servers)), key=_rank, default=None)
        oldest_root = min(_known(_server_versions(root.servers)), key=_rank, default=None)
        if newest is None or oldest_root is None or _rank(newest) <= _rank(oldest_root):
            continue
        findings.append(licensing_finding(url, newest, root.url, oldest_root))
    return findings


def licensing_finding(url: str, newest: Version, root: str, oldest_root: Version) -> Finding:
    """licensing-ahead-of-root's finding for licensing cluster `url` ahead of its `root`."""
    return Finding(
        policy="licensing-ahead-of-root",
        subject_kind=SubjectKind.CLUSTER,
        subject=url,
        severity=Severity.CRITICAL,
        detail=(
            f"Licensing cluster {url} runs server {newest.value} while its root certification cluster "
            f"{root} still has a server at {oldest_root.value}; upgrade every server of the root to "
            f"{newest.value} or later before this cluster goes further (D6)."
        ),
    )


def unsupported_upgrade_path(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D1: a server has no upgrade path from RTM straight to SP2. Flags a server that is at SP2
    now and reached this SP2 straight from an RTM report, with no SP1 report between, reading
    `fleet.history[host_id]` (oldest first) followed by the current facts. Clients may do this
    (D2) and are not looked at.

    The finding clears once the host is no longer at SP2, and stays clear if it comes back to
    SP2 through SP1: the remedy is to uninstall SP2 (D13: it returns the server to RTM), then
    install SP1 and SP2, and a finding that the remedy cannot close would only be exempted and
    forgotten. An UNKNOWN report is no SP1 report, so RTM, UNKNOWN, SP2 is flagged. A report
    without a server part ends the path: a server installed fresh at SP2 is supported (D3)."""
    findings: list[Finding] = []
    for host in _by_host_id(fleet.hosts):
        server = host.facts.server
        if server is None or server.version is not Version.SP2:
            continue
        points = [(change.changed_at, change.facts) for change in fleet.history.get(host.facts.host_id, ())]
        points.append((host.last_seen, host.facts))
        jumped_at = _rtm_to_sp2_jump(points)
        if jumped_at is None:
            continue
        findings.append(
            Finding(
                policy="unsupported-upgrade-path",
                subject_kind=SubjectKind.HOST,
                subject=host.facts.host_id,
                severity=Severity.CRITICAL,
                detail=(
                    f"Host {host.facts.host_id} went from RMS server RTM to SP2 without SP1 between "
                    f"(SP2 reported at {jumped_at.isoformat()}), which is no supported path; uninstall SP2 to "
                    "return to RTM, then install SP1 and then SP2 (D1, D13)."
                ),
            )
        )
    return findings


def _rtm_to_sp2_jump(points: Iterable[tuple[datetime, HostFacts]]) -> datetime | None:
    """When the server's current run at SP2 began straight after RTM, else None."""
    previous: Version | None = None
    jumped_at: datetime | None = None
    for at, facts in points:
        if facts.server is None:
            previous, jumped_at = None, None
            continue
        version = facts.server.version
        if version is Version.UNKNOWN:
            continue
        if version is Version.SP2:
            if previous is Version.RTM:
                jumped_at = at
            elif previous is not Version.SP2:
                jumped_at = None
        else:
            jumped_at = None
        previous = version
    return jumped_at


def server_no_offline_enrollment(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D9, D16: only servers at SP1 or later support offline enrollment; an RTM server must
    enroll over the internet. Only a root certification cluster enrolls with Microsoft (D16): the
    servers of a licensing-only cluster sub-enroll with their root, so they are not flagged.
    UNKNOWN is not flagged: we never guess a version."""
    return [
        Finding(
            policy="server-no-offline-enrollment",
            subject_kind=SubjectKind.HOST,
            subject=host.facts.host_id,
            severity=Severity.WARNING,
            detail=(
                f"Host {host.facts.host_id} runs RMS server RTM in root certification cluster "
                f"{host.facts.server.cluster}, which cannot enroll offline and must enroll over the internet; "
                "upgrade it to SP1, then SP2 (D9, D16, D1)."
            ),
        )
        for host in _by_host_id(fleet.hosts)
        if host.facts.server is not None
        and host.facts.server.version is Version.RTM
        and host.facts.server.cluster_kind is ClusterKind.ROOT_CERTIFICATION
    ]


def client_not_self_activating(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D10, D18: only clients at SP1 or later self-activate; an RTM client must activate over the
    internet, and Microsoft's activation service for RTM clients no longer exists (D18). So an
    RTM client that is not activated can never be: critical. One that is activated (or whose
    state cannot be told) still works, but no new user or reinstall can be activated: warning.
    UNKNOWN is not flagged (we never guess a version), nor the client built into Windows Vista
    and later, which self-activates (D15)."""
    findings: list[Finding] = []
    for host in _by_host_id(fleet.hosts):
        client = host.facts.client
        if client is None or client.version is not Version.RTM:
            continue
        host_id = host.facts.host_id
        if client.activation is Activation.NONE:
            severity = Severity.CRITICAL
            state = (
                "is not activated, and since Microsoft's activation service for RTM clients no longer exists it "
                "can never be"
            )
        elif client.activation is Activation.UNKNOWN:
            severity = Severity.WARNING
            state = (
                "may not be activated (its state could not be read); an RTM client must activate over the "
                "internet, through a service that no longer exists"
            )
        else:
            severity = Severity.WARNING
            state = (
                "is activated, but activates only over the internet through a service that no longer exists, so "
                "no new user or reinstall can be activated"
            )
        findings.append(
            Finding(
                policy="client-not-self-activating",
                subject_kind=SubjectKind.HOST,
                subject=host_id,
                severity=severity,
                detail=(
                    f"Host {host_id} runs the RMS RTM client, which {state}; upgrade the client straight to SP2, "
                    "which self-activates (D10, D18, D2)."
                ),
            )
        )
    return findings


def client_cannot_publish_online(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """D14: an RTM client cannot use online publishing against an SP1 or later server. Flags an
    RTM client whose cluster (`client.cluster`) has at least one reporting server at SP1 or
    later. A client that names no cluster, or a cluster no server reports, is not flagged:
    nothing is known of its servers. UNKNOWN servers are not counted: we never guess."""
    newer: dict[str, set[Version]] = defaultdict(set)
    for host in fleet.hosts:
        server = host.facts.server
        if server is not None and server.version in (Version.SP1, Version.SP2):
            newer[server.cluster].add(server.version)
    findings: list[Finding] = []
    for host in _by_host_id(fleet.hosts):
        client = host.facts.client
        if client is None or client.version is not Version.RTM or client.cluster is None:
            continue
        versions = newer.get(client.cluster)
        if not versions:
            continue
        findings.append(publish_finding(host.facts.host_id, client.cluster, versions))
    return findings


def publish_finding(host_id: str, cluster: str, versions: Iterable[Version]) -> Finding:
    """client-cannot-publish-online's finding for an RTM client of `cluster`, whose servers run
    the SP1 or later `versions`."""
    return Finding(
        policy="client-cannot-publish-online",
        subject_kind=SubjectKind.HOST,
        subject=host_id,
        severity=Severity.WARNING,
        detail=(
            f"Host {host_id} runs the RMS RTM client against cluster {cluster}, which has "
            f"servers at {_versions_text(versions)}; an RTM client cannot use online publishing against "
            "an SP1 or later server, so upgrade the client straight to SP2 (D14, D2)."
        ),
    )


def stale_agent(fleet: Fleet, ctx: PolicyContext) -> list[Finding]:
    """Monitoring itself (no domain fact): a host whose last report is older than `stale_after`.
    Its facts may no longer be true, so the other findings about it may be out of date."""
    limit = ctx.config.stale_after
    return [
        Finding(
            policy="stale-agent",
            subject_kind=SubjectKind.HOST,
            subject=host.facts.host_id,
            severity=Severity.WARNING,
            # No "so long ago" in the text: it would change with every pass, and every pass would
            # rewrite every stale host's open violation (20,000 rows a pass at 1M hosts, 2% stale).
            detail=(
                f"Host {host.facts.host_id} last reported at {host.last_seen.isoformat()} "
                f"(expected within {_duration_text(limit)}); "
                "check that its agent runs and can reach the collector."
            ),
        )
        for host in _by_host_id(fleet.hosts)
        if ctx.now - host.last_seen > limit
    ]


def _duration_text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    # Two units are precise enough for a person and keep the sentence short.
    return " ".join(parts[:2]) or "0s"


def _server_versions(hosts: Iterable[HostRecord]) -> list[Version]:
    return [host.facts.server.version for host in hosts if host.facts.server is not None]


def _rank(version: Version) -> int:
    rank = version.rank
    assert rank is not None  # callers pass only known versions
    return rank


POLICIES: Sequence[Policy] = (
    Policy(
        id="mixed-version-cluster",
        facts=("D5", "D8"),
        severity="warning, critical after the grace period",
        description="servers of one cluster report different server versions",
        evaluate=mixed_version_cluster,
        scope=Scope.SERVERS,
    ),
    Policy(
        id="mixed-versions-in-forest",
        facts=("D8",),
        severity="warning",
        description="servers of different versions in one AD forest",
        evaluate=mixed_versions_in_forest,
        scope=Scope.SERVERS,
    ),
    Policy(
        id="licensing-ahead-of-root",
        facts=("D6",),
        severity="critical",
        description="a licensing cluster runs a newer server version than its root certification cluster",
        evaluate=licensing_ahead_of_root,
        scope=Scope.SERVERS,
    ),
    Policy(
        id="unsupported-upgrade-path",
        facts=("D1",),
        severity="critical",
        description="a server went from RTM to SP2 without SP1 between",
        evaluate=unsupported_upgrade_path,
        scope=Scope.HOST,
    ),
    Policy(
        id="server-no-offline-enrollment",
        facts=("D9", "D16"),
        severity="warning",
        description="a server at RTM in a root certification cluster must enroll over the internet",
        evaluate=server_no_offline_enrollment,
        scope=Scope.HOST,
    ),
    Policy(
        id="client-not-self-activating",
        facts=("D10",),
        severity="warning; critical when not activated (D18: it never can be)",
        description="a client below SP1 must activate over the internet",
        evaluate=client_not_self_activating,
        scope=Scope.HOST,
    ),
    Policy(
        id="client-cannot-publish-online",
        facts=("D14",),
        severity="warning",
        description="an RTM client whose cluster has a server at SP1 or later",
        evaluate=client_cannot_publish_online,
        scope=Scope.SERVERS,
    ),
    Policy(
        id="stale-agent",
        facts=(),
        severity="warning",
        description="a host has not reported within stale_after",
        evaluate=stale_agent,
        scope=Scope.TIME,
    ),
)


def unknown_policy_ids(ids: Iterable[str]) -> list[str]:
    """The ids that name no policy, sorted: lets configuration reject a typo in `disabled` or an
    exemption instead of silently keeping the policy on."""
    known = {policy.id for policy in POLICIES}
    return sorted(set(ids) - known)


def escalate(finding: Finding, since: datetime, ctx: PolicyContext) -> Finding:
    """Raise a finding's severity by how long it has held (D5: a cluster that stays mixed)."""
    if finding.policy == "mixed-version-cluster" and ctx.now - since > ctx.config.mixed_cluster_grace:
        return replace(finding, severity=Severity.CRITICAL)
    return finding


def evaluate_all(fleet: Fleet, ctx: PolicyContext, scopes: frozenset[Scope] | None = None) -> list[Finding]:
    """Every enabled policy's findings (only those of `scopes` when given), in policy order."""
    findings: list[Finding] = []
    for policy in POLICIES:
        if policy.id not in ctx.config.disabled and (scopes is None or policy.scope in scopes):
            findings.extend(policy.evaluate(fleet, ctx))
    return findings


def may_break_a_host_rule(host: HostRecord, ctx: PolicyContext) -> bool:
    """What every finding about a host itself needs (the HOST and TIME rules and
    client-cannot-publish-online): a server at RTM (D9) or SP2 (D1's path), a client at RTM
    (D10, D14), or silence longer than stale_after. A full pass reads only the hosts that meet
    it (the same condition in SQL, store/evaluation_sql.py); the bulk of a fleet late in an SP2
    rollout, SP2 clients and SP1 servers that report, cannot break a host rule."""
    server, client = host.facts.server, host.facts.client
    return (
        (server is not None and server.version in (Version.RTM, Version.SP2))
        or (client is not None and client.version is Version.RTM)
        or ctx.now - host.last_seen > ctx.config.stale_after
    )


def policy_ids(scope: Scope) -> list[str]:
    return [p.id for p in POLICIES if p.scope is scope]


def apply_exemptions(findings: Iterable[Finding], exemptions: Iterable[Exemption], now: datetime) -> list[Finding]:
    """The findings no unexpired exemption covers, in their order. An expired exemption is
    ignored, so its finding comes back on its own."""
    candidates = list(exemptions)
    return [finding for finding in findings if not any(exemption.covers(finding, now) for exemption in candidates)]
