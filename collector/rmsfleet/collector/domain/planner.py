"""The upgrade plan: which hosts to upgrade in which wave, and what to do before (D1-D7).

Pure: hosts in, a plan out. The planner simulates the fleet wave by wave, so every rule below
holds after each wave, not only at the end:

- D6: a licensing cluster starts only in a wave after its root certification cluster's last
  server step, when the root is entirely at SP2; so a licensing server never runs a newer
  version than any server of its root. Root clusters that are licensing clusters themselves
  (a chain) are handled the same way.
- D7: forests carry no dependencies between them, so their clusters share waves and are
  upgraded in parallel. (A licensing cluster whose root is in another forest still waits.)
- D1: an RTM server goes to SP1 in one wave and to SP2 in a later one. A cluster first brings
  all its RTM servers to SP1, then all to SP2, so it never runs three versions at once (D8).
- D5: each wave takes at most `batch_size(n, max_unavailable)` of a cluster's n servers,
  counting every step a server host is in (its client upgrade too), and never all of a cluster
  of two or more, so the cluster keeps serving.
- D2: clients go straight to SP2, in the wave after their cluster's last server step, so
  servers lead and every client upgrade lands on an upgraded cluster. Clients of no reported
  cluster, or of a cluster with no server step, go in the first wave they can.
- D14: except RTM clients. An RTM client cannot publish online against an SP1 or later server,
  so a plan that led with the servers would break online publishing for every RTM client of the
  cluster until its last server step. RTM clients go to SP2 (D2 allows it from any version) in
  the first wave they can, and a cluster whose servers are all still at RTM starts its server
  steps only in a wave after its last RTM client step. (A cluster that already has a server at
  SP1 or later gains nothing from waiting: its RTM clients just go first.)
- D4: the checklist for a cluster is attached to the wave holding its first server step.
  Clusters whose servers need no step get no checklist: D4 protects the cluster's databases
  and key, which client upgrades do not touch.
- Hosts already at SP2 need no step. UNKNOWN versions are never guessed: such hosts are listed
  in `Plan.unplanned`, and so are the servers of a licensing cluster whose root cannot be
  checked (the root does not report, or has UNKNOWN servers).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rmsfleet.collector.domain.capabilities import ClusterMembers, group_by_cluster
from rmsfleet.collector.domain.model import ClusterKind, HostRecord, Version

__all__ = [
    "D4_CHECKLIST",
    "ChecklistItem",
    "Plan",
    "Role",
    "Step",
    "Unplanned",
    "Wave",
    "batch_size",
    "plan_upgrade",
]

Role = Literal["server", "client"]

# D4, in the order a person does it.
D4_CHECKLIST: tuple[str, ...] = (
    "Back up the configuration database.",
    "Back up the server's private key; have the password of a software-based private key at hand.",
    "Back up the logging database to keep past statistics.",
    "Install the latest critical and security updates.",
)


@dataclass(frozen=True, slots=True)
class Step:
    """Upgrade `hosts` (host ids, sorted) of one role from one version to the next.

    `cluster` is the server cluster for server steps; for client steps the cluster the clients
    name, or None when they name none. `forest` is the cluster's forest for server steps and the
    clients' own forest for client steps."""

    forest: str
    cluster: str | None
    role: Role
    hosts: tuple[str, ...]
    from_version: Version
    to_version: Version


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    """One D4 action to finish for `cluster` before the steps of the wave it is attached to."""

    forest: str
    cluster: str
    action: str


@dataclass(frozen=True, slots=True)
class Wave:
    """Steps that may run at the same time; a wave starts when the previous one is done."""

    number: int
    steps: tuple[Step, ...]
    checklist: tuple[ChecklistItem, ...]


@dataclass(frozen=True, slots=True)
class Unplanned:
    """A host role the plan leaves at `version` until a person acts on `reason`."""

    host_id: str
    role: Role
    version: Version
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """`waves` numbered from 1, none empty; empty when every plannable host is at SP2."""

    waves: tuple[Wave, ...]
    unplanned: tuple[Unplanned, ...]


def batch_size(n_servers: int, max_unavailable: float) -> int:
    """How many of a cluster's `n_servers` one wave may take (D5): never more than the share,
    floor(max_unavailable * n), but at least 1 so the upgrade moves, and at most n - 1 when
    n >= 2 so one server always keeps serving."""
    # The tolerance keeps float noise (0.7 * 10 == 6.999999999999999) from dropping a server.
    size = max(1, math.floor(max_unavailable * n_servers + 1e-9))
    return min(size, n_servers - 1) if n_servers >= 2 else 1


def plan_upgrade(hosts: Sequence[HostRecord], max_unavailable: float = 0.34) -> Plan:
    """Waves that bring every plannable server and client to SP2 (see the module docstring).

    `max_unavailable` is the largest share of a cluster's servers one wave may take, in (0, 1].
    Raises ValueError outside that range."""
    if not 0 < max_unavailable <= 1:
        raise ValueError(f"max_unavailable must be in (0, 1], got {max_unavailable}")
    return _Planner(hosts, max_unavailable).plan()


_NEXT_SERVER_VERSION = {Version.RTM: Version.SP1, Version.SP1: Version.SP2}


@dataclass
class _PendingClient:
    host_id: str
    forest: str
    cluster: str | None
    version: Version
    server_cluster: str | None


class _Planner:
    def __init__(self, hosts: Sequence[HostRecord], max_unavailable: float) -> None:
        self.clusters = {members.url: members for members in group_by_cluster(hosts)}
        self.max_unavailable = max_unavailable
        self.unplanned: list[Unplanned] = []
        blocked = self._blocked_clusters()
        # Per cluster, the servers that still need a step, by their current (simulated) version.
        self.pending: dict[str, dict[Version, list[str]]] = {}
        for url, members in self.clusters.items():
            by_version: dict[Version, list[str]] = defaultdict(list)
            for host in members.servers:
                version = _server_version(host)
                if version is Version.UNKNOWN:
                    self._skip(host, "server", version, f"its server version is UNKNOWN; identify it to plan {url}")
                elif version is Version.SP2:
                    continue
                elif url in blocked:
                    self._skip(host, "server", version, blocked[url])
                else:
                    by_version[version].append(host.facts.host_id)
            if by_version:
                self.pending[url] = by_version
        self.clients: list[_PendingClient] = []
        for host in sorted(hosts, key=lambda h: h.facts.host_id):
            client = host.facts.client
            # The client built into Windows Vista and later (D15) is not an RMS 1.0 client: there
            # is no SP2 to install on it, and it self-activates already.
            if client is None or client.version in (Version.SP2, Version.BUILTIN):
                continue
            if client.version is Version.UNKNOWN:
                self._skip(host, "client", client.version, "its client version is UNKNOWN; identify it to plan it")
                continue
            server = host.facts.server
            self.clients.append(
                _PendingClient(
                    host_id=host.facts.host_id,
                    forest=host.facts.forest,
                    cluster=client.cluster,
                    version=client.version,
                    server_cluster=None if server is None else server.cluster,
                )
            )
        self.server_host_pending = {
            host for versions in self.pending.values() for ids in versions.values() for host in ids
        }
        self.started: set[str] = set()
        # Clusters with no server known past RTM (simulated; UNKNOWN is not known past it): their
        # RTM clients go first (D14).
        self.all_rtm = {
            url
            for url, members in self.clusters.items()
            if all(_server_version(h) in (Version.RTM, Version.UNKNOWN) for h in members.servers)
        }

    def _skip(self, host: HostRecord, role: Role, version: Version, reason: str) -> None:
        self.unplanned.append(Unplanned(host.facts.host_id, role, version, reason))

    def _blocked_clusters(self) -> dict[str, str]:
        """Licensing clusters whose root cannot be shown to be ahead of them, with the reason."""
        blocked: dict[str, str] = {}

        def reason(url: str, chain: tuple[str, ...]) -> str | None:
            members = self.clusters[url]
            if members.kind is not ClusterKind.LICENSING:
                return None
            if url in blocked:
                return blocked[url]
            root = members.root_cluster
            path = (*chain, url)
            if root is None:
                why: str | None = "it is a licensing cluster whose servers name no root certification cluster (D6)"
            elif root in path:
                why = f"its root cluster chain loops back through {root} (D6)"
            elif root not in self.clusters:
                why = f"its root certification cluster {root} has no reporting servers; D6 upgrades the root first"
            elif any(_server_version(h) is Version.UNKNOWN for h in self.clusters[root].servers):
                why = f"its root cluster {root} has servers of UNKNOWN version, so D6 cannot be checked"
            elif reason(root, path) is not None:
                why = f"its root cluster {root} cannot be planned (D6)"
            else:
                why = None
            if why is not None:
                blocked[url] = why
            return why

        for url in self.clusters:
            reason(url, ())
        return blocked

    def plan(self) -> Plan:
        waves: list[Wave] = []
        while self.pending or self.clients:
            wave = self._next_wave(len(waves) + 1)
            if not wave.steps:
                # Every remaining step waits only on earlier steps of the same plan, so a wave
                # always has one; reaching here is a planner bug, not a fleet problem.
                raise AssertionError("upgrade planner made no progress")
            waves.append(wave)
        return Plan(
            waves=tuple(waves),
            unplanned=tuple(sorted(self.unplanned, key=lambda u: (u.host_id, u.role))),
        )

    def _next_wave(self, number: int) -> Wave:
        # Decisions read the state at the start of the wave; updates apply after it.
        done_clusters = {url for url in self.clusters if url not in self.pending}
        servers_still_pending = set(self.server_host_pending)
        budget = {url: batch_size(len(m.servers), self.max_unavailable) for url, m in self.clusters.items()}
        steps: list[Step] = []
        checklist: list[ChecklistItem] = []

        # D14: clusters that must wait for their RTM clients before a server leaves RTM.
        awaiting_clients = {c.cluster for c in self.clients if c.version is Version.RTM} & self.all_rtm
        for url in sorted(self.pending):
            members = self.clusters[url]
            if members.kind is ClusterKind.LICENSING and members.root_cluster not in done_clusters:
                continue
            if url in awaiting_clients:
                continue
            self.all_rtm.discard(url)
            if url not in self.started:
                self.started.add(url)
                checklist.extend(ChecklistItem(members.forest, url, action) for action in D4_CHECKLIST)
            steps.append(self._server_step(members, budget[url]))
            budget[url] -= len(steps[-1].hosts)

        in_server_steps = {host for step in steps for host in step.hosts}
        chosen: dict[tuple[str, str | None, Version], list[str]] = defaultdict(list)
        waiting: list[_PendingClient] = []
        for client in self.clients:
            # D14: RTM clients lead their cluster's servers; the others follow them (D2).
            leads = client.version is Version.RTM
            if not leads and client.cluster in self.clusters and client.cluster not in done_clusters:
                waiting.append(client)
                continue
            if client.server_cluster is not None:
                # The host is one of its server cluster's servers, and the client upgrade takes it
                # out of service like any step (D5). A following client waits for the host's own
                # server steps; a leading one only for a wave in which the host is not upgraded.
                busy = client.host_id in in_server_steps if leads else client.host_id in servers_still_pending
                if busy or budget[client.server_cluster] == 0:
                    waiting.append(client)
                    continue
                budget[client.server_cluster] -= 1
            chosen[(client.forest, client.cluster, client.version)].append(client.host_id)
        self.clients = waiting
        for (forest, cluster, version), ids in chosen.items():
            steps.append(Step(forest, cluster, "client", tuple(sorted(ids)), version, Version.SP2))

        steps.sort(key=_step_order)
        checklist.sort(key=lambda item: (item.forest, item.cluster))
        return Wave(number=number, steps=tuple(steps), checklist=tuple(checklist))

    def _server_step(self, members: ClusterMembers, room: int) -> Step:
        by_version = self.pending[members.url]
        # All RTM servers reach SP1 before any goes on to SP2 (D1, D8).
        version = Version.RTM if by_version.get(Version.RTM) else Version.SP1
        batch = sorted(by_version[version])[:room]
        remaining = [host for host in by_version[version] if host not in batch]
        target = _NEXT_SERVER_VERSION[version]
        if remaining:
            by_version[version] = remaining
        else:
            del by_version[version]
        if target is Version.SP2:
            self.server_host_pending.difference_update(batch)
        else:
            by_version[target] = [*by_version.get(target, []), *batch]
        if not by_version:
            del self.pending[members.url]
        return Step(members.forest, members.url, "server", tuple(batch), version, target)


def _step_order(step: Step) -> tuple[str, str, int, int, tuple[str, ...]]:
    return (step.forest, step.cluster or "", 0 if step.role == "server" else 1, step.from_version.rank or 0, step.hosts)


def _server_version(host: HostRecord) -> Version:
    server = host.facts.server
    assert server is not None  # only called on a cluster's servers
    return server.version
