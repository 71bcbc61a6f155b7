"""The cluster and forest rules (policies.py, scope SERVERS) over per-cluster version counts
instead of every server row, so an incremental pass reads what a GROUP BY over the clusters and
forests the changed hosts are or were in returns (a few rows per cluster), not the whole fleet.

policies.py stays the specification: tests/unit/test_server_rules.py proves over random fleets
that these functions find exactly what evaluate_all finds for the same subjects. The finding
texts are built by the same functions (policies.*_finding)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from rmsfleet.collector.domain.model import ClusterKind, Finding, HostRecord, Version
from rmsfleet.collector.domain.policies import (
    PolicyContext,
    forest_finding,
    licensing_finding,
    mixed_cluster_finding,
    publish_finding,
)

NEWER = (Version.SP1, Version.SP2)


@dataclass(frozen=True, slots=True)
class ServerCount:
    """How many servers of `cluster` in `forest` report this kind, root and version: one row of
    the store's GROUP BY (store/server_summary_sql.py)."""

    cluster: str
    kind: ClusterKind
    root_cluster: str | None
    forest: str
    version: Version
    count: int


@dataclass(frozen=True, slots=True)
class RtmClient:
    """A host whose client is RTM and names `cluster` (client-cannot-publish-online, D14)."""

    host_id: str
    cluster: str


def server_counts(hosts: Iterable[HostRecord]) -> list[ServerCount]:
    """The GROUP BY in pure form: what the store returns for these hosts' servers."""
    counts: Counter[tuple[str, ClusterKind, str | None, str, Version]] = Counter()
    for host in hosts:
        server = host.facts.server
        if server is not None:
            counts[(server.cluster, server.cluster_kind, server.root_cluster, host.facts.forest, server.version)] += 1
    return [ServerCount(*key, count=n) for key, n in counts.items()]


def rtm_clients(hosts: Iterable[HostRecord]) -> list[RtmClient]:
    return [
        RtmClient(h.facts.host_id, h.facts.client.cluster)
        for h in hosts
        if h.facts.client is not None and h.facts.client.version is Version.RTM and h.facts.client.cluster is not None
    ]


@dataclass(frozen=True, slots=True)
class _Cluster:
    kind: ClusterKind
    root: str | None
    versions: frozenset[Version]


def _clusters(counts: Iterable[ServerCount]) -> dict[str, _Cluster]:
    """Kind and root as capabilities.group_by_cluster decides them: what most servers report,
    LICENSING winning a tie of kinds, the smallest URL a tie of roots."""
    kinds: dict[str, Counter[ClusterKind]] = defaultdict(Counter)
    roots: dict[str, Counter[str]] = defaultdict(Counter)
    versions: dict[str, set[Version]] = defaultdict(set)
    for row in counts:
        kinds[row.cluster][row.kind] += row.count
        versions[row.cluster].add(row.version)
        if row.kind is ClusterKind.LICENSING and row.root_cluster:
            roots[row.cluster][row.root_cluster] += row.count
    clusters: dict[str, _Cluster] = {}
    for url, kind_counts in kinds.items():
        licensing = kind_counts[ClusterKind.LICENSING] >= kind_counts[ClusterKind.ROOT_CERTIFICATION]
        root_counts = roots[url]
        root = min(root_counts, key=lambda r: (-root_counts[r], r)) if licensing and root_counts else None
        kind = ClusterKind.LICENSING if licensing else ClusterKind.ROOT_CERTIFICATION
        clusters[url] = _Cluster(kind, root, frozenset(versions[url]))
    return clusters


def roots_of(counts: Iterable[ServerCount]) -> dict[str, str]:
    """The root certification cluster of each licensing cluster in `counts`: a pass loads the
    roots' counts too, since licensing-ahead-of-root compares with them."""
    return {url: c.root for url, c in _clusters(counts).items() if c.root is not None}


def newer_versions(counts: Iterable[ServerCount]) -> dict[str, frozenset[Version]]:
    """The SP1 or later versions each cluster's servers run (D14), clusters with none left out."""
    found: dict[str, set[Version]] = defaultdict(set)
    for row in counts:
        if row.version in NEWER:
            found[row.cluster].add(row.version)
    return {url: frozenset(v) for url, v in found.items()}


def cluster_findings(counts: Iterable[ServerCount], clusters: Collection[str], ctx: PolicyContext) -> list[Finding]:
    """mixed-version-cluster and licensing-ahead-of-root for `clusters`. `counts` must hold every
    server of those clusters and of their roots (roots_of)."""
    known = _clusters(counts)
    disabled = ctx.config.disabled
    findings: list[Finding] = []
    for url in sorted(set(clusters) & known.keys()):
        cluster = known[url]
        ranked = {v for v in cluster.versions if v.rank is not None}
        if "mixed-version-cluster" not in disabled and len(ranked) > 1:
            findings.append(mixed_cluster_finding(url, ranked))
        if "licensing-ahead-of-root" in disabled or cluster.kind is not ClusterKind.LICENSING:
            continue
        root = known.get(cluster.root) if cluster.root is not None else None
        if root is None or not ranked:
            continue
        root_ranked = [v for v in root.versions if v.rank is not None]
        if not root_ranked:
            continue
        newest = max(ranked, key=_rank)
        oldest_root = min(root_ranked, key=_rank)
        if _rank(newest) > _rank(oldest_root):
            assert cluster.root is not None
            findings.append(licensing_finding(url, newest, cluster.root, oldest_root))
    return findings


def forest_findings(counts: Iterable[ServerCount], forests: Collection[str], ctx: PolicyContext) -> list[Finding]:
    """mixed-versions-in-forest for `forests`. `counts` must hold every server of those forests."""
    if "mixed-versions-in-forest" in ctx.config.disabled:
        return []
    wanted = set(forests)
    by_forest: dict[str, dict[Version, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in counts:
        if row.forest in wanted and row.version.rank is not None:
            by_forest[row.forest][row.version].add(row.cluster)
    return [
        forest_finding(forest, by_version) for forest, by_version in sorted(by_forest.items()) if len(by_version) > 1
    ]


def client_findings(
    clients: Iterable[RtmClient], newer: Mapping[str, frozenset[Version]], ctx: PolicyContext
) -> list[Finding]:
    """client-cannot-publish-online for `clients`. `newer` must hold the newer_versions of every
    cluster they name (a cluster missing has none)."""
    if "client-cannot-publish-online" in ctx.config.disabled:
        return []
    return [
        publish_finding(c.host_id, c.cluster, newer[c.cluster])
        for c in sorted(clients, key=lambda c: c.host_id)
        if newer.get(c.cluster)
    ]


def _rank(version: Version) -> int:
    rank = version.rank
    assert rank is not None  # callers pass only known versions
    return rank


# --- one incremental pass of the cluster and forest rules ---------------------------------------


@dataclass(frozen=True, slots=True)
class Touched:
    """What a pass's changed hosts are or were: the server clusters and forests they are or were
    servers in (now, or in any stored fact change), and the hosts themselves."""

    clusters: frozenset[str]
    forests: frozenset[str]
    hosts: frozenset[str]


class ServerSource(Protocol):
    """What the pass reads (store/server_summary_sql.py; an in-memory fleet in the tests)."""

    def counts(self, clusters: Collection[str], forests: Collection[str]) -> list[ServerCount]:
        """The ServerCount rows of every server in `clusters` or in `forests`."""
        ...

    def dependents(self, roots: Collection[str]) -> set[str]:
        """The clusters with a server that names one of `roots` as its root cluster."""
        ...

    def rtm_clients(self, clusters: Collection[str], hosts: Collection[str]) -> list[RtmClient]:
        """The RTM clients naming one of `clusters`, or among `hosts`."""
        ...


@dataclass(frozen=True, slots=True)
class ServerPass:
    """The findings of the cluster and forest rules for the subjects a pass evaluated: the
    stored open violations of exactly these subjects are what the findings replace."""

    findings: list[Finding]
    clusters: frozenset[str]  # mixed-version-cluster, licensing-ahead-of-root
    forests: frozenset[str]  # mixed-versions-in-forest
    hosts: frozenset[str]  # client-cannot-publish-online
    # newer_versions of each touched cluster, for the next pass to compare with.
    newer: dict[str, frozenset[Version]]


def evaluate_servers(
    touched: Touched,
    source: ServerSource,
    previous_newer: Callable[[str], frozenset[Version] | None],
    ctx: PolicyContext,
) -> ServerPass:
    """The cluster and forest rules for what `touched` can have changed:

    - mixed-version-cluster and licensing-ahead-of-root for the touched clusters and the
      licensing clusters whose root is one of them (D6 compares a licensing cluster with its root);
    - mixed-versions-in-forest for the touched forests;
    - client-cannot-publish-online (D14) for the touched hosts, and for every RTM client of a
      touched cluster whose SP1-or-later versions are not what `previous_newer` says the stored
      violations were evaluated with (None: not known, so they are evaluated again).

    Only a server's change alters a cluster's versions, and every changed host is touched, so
    the subjects left out keep findings that still hold (tests/unit/test_server_rules.py)."""
    clusters = touched.clusters | source.dependents(touched.clusters)
    loaded = source.counts(clusters, touched.forests)
    # A cluster is complete only when loaded by its URL: the rows of the forests hold just the
    # servers of a cluster that are in those forests.
    complete = set(clusters)
    by_cluster = [row for row in loaded if row.cluster in complete]
    touched_clients = source.rtm_clients((), touched.hosts)
    wanted = set(roots_of(row for row in by_cluster if row.cluster in clusters).values())
    wanted |= {c.cluster for c in touched_clients}
    missing = wanted - complete
    if missing:
        by_cluster += source.counts(missing, ())
    newer = newer_versions(by_cluster)
    stale = {c for c in touched.clusters if previous_newer(c) != newer.get(c, frozenset())}
    affected = source.rtm_clients(stale, ()) if stale else []
    clients = {c.host_id: c for c in [*touched_clients, *affected]}
    findings = [
        *cluster_findings(by_cluster, clusters, ctx),
        *forest_findings(loaded, touched.forests, ctx),
        *client_findings(clients.values(), newer, ctx),
    ]
    return ServerPass(
        findings=findings,
        clusters=frozenset(clusters),
        forests=touched.forests,
        hosts=frozenset(touched.hosts | clients.keys()),
        newer={c: newer.get(c, frozenset()) for c in touched.clusters},
    )
