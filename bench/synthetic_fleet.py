"""A synthetic RMS fleet for the benchmarks: deterministic (seeded), several forests, each with a
root certification cluster and licensing clusters under it, a few servers per cluster and many
clients, with a realistic spread of versions (mostly SP2, some SP1, a tail of RTM and UNKNOWN).

Pure code over the shared domain types (rmsfleet.contract.facts): the ingest benchmark turns these
facts into ReportRequests with the agent's own wire code, the full-pass benchmark into rows with
the store's own column mapping, so neither invents a second encoding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    ServerFacts,
    Version,
    validate,
)

# (forest, site prefix used in host ids)
FORESTS: tuple[tuple[str, str], ...] = (
    ("corp.example", "ams"),
    ("emea.corp.example", "fra"),
    ("amer.corp.example", "nyc"),
    ("apac.corp.example", "sin"),
    ("lab.example", "lab"),
    ("partner.example", "ptn"),
)
LICENSING_PER_FOREST = 2

# Shares of hosts by role; the rest are clients only.
SERVER_ONLY_SHARE = 0.04
SERVER_AND_CLIENT_SHARE = 0.01

SERVER_VERSIONS = ((Version.SP2, 0.60), (Version.SP1, 0.28), (Version.RTM, 0.10), (Version.UNKNOWN, 0.02))
CLIENT_VERSIONS = ((Version.SP2, 0.70), (Version.SP1, 0.20), (Version.RTM, 0.08), (Version.UNKNOWN, 0.02))


@dataclass(frozen=True, slots=True)
class Cluster:
    url: str
    kind: ClusterKind
    root: str | None
    forest: str


def clusters_of(forest: str) -> list[Cluster]:
    root = f"https://rms.{forest}"
    licensing = [
        Cluster(f"https://lic{n}.rms.{forest}", ClusterKind.LICENSING, root, forest)
        for n in range(1, LICENSING_PER_FOREST + 1)
    ]
    return [Cluster(root, ClusterKind.ROOT_CERTIFICATION, None, forest), *licensing]


CLUSTERS: dict[str, list[Cluster]] = {forest: clusters_of(forest) for forest, _site in FORESTS}


def _pick(rng: random.Random, weighted: tuple[tuple[Version, float], ...]) -> Version:
    return rng.choices([v for v, _w in weighted], weights=[w for _v, w in weighted])[0]


def _server(rng: random.Random, forest: str) -> ServerFacts:
    cluster = rng.choice(CLUSTERS[forest])
    version = _pick(rng, SERVER_VERSIONS)
    # D9: an RTM server cannot enroll offline.
    enrollment = Enrollment.ONLINE if version is Version.RTM or rng.random() < 0.2 else Enrollment.OFFLINE
    return ServerFacts(version, cluster.url, cluster.kind, cluster.root, enrollment)


def _client(rng: random.Random, forest: str) -> ClientFacts:
    version = _pick(rng, CLIENT_VERSIONS)
    if version is Version.RTM:
        activation = Activation.INTERNET  # D10: an RTM client cannot self-activate
    else:
        activation = rng.choices([Activation.SELF, Activation.INTERNET, Activation.NONE], weights=[0.9, 0.07, 0.03])[0]
    cluster = rng.choice(CLUSTERS[forest]).url if rng.random() < 0.8 else None
    return ClientFacts(version, activation, cluster)


def initial_fleet(hosts: int, seed: int) -> list[HostFacts]:
    """`hosts` distinct hosts spread evenly over the forests; host ids are unique and stable for a seed."""
    rng = random.Random(seed)
    fleet: list[HostFacts] = []
    for index in range(hosts):
        forest, site = FORESTS[index % len(FORESTS)]
        draw = rng.random()
        server = _server(rng, forest) if draw < SERVER_ONLY_SHARE + SERVER_AND_CLIENT_SHARE else None
        client = _client(rng, forest) if server is None or draw >= SERVER_ONLY_SHARE else None
        host_id = f"{site}-{'rms' if server else 'wks'}-{index:07d}"
        facts = HostFacts(host_id, f"{host_id}.{forest}", forest, server, client)
        validate(facts)
        fleet.append(facts)
    return fleet


_NEXT = {Version.RTM: Version.SP1, Version.SP1: Version.SP2}


def evolve(facts: HostFacts, rng: random.Random) -> HostFacts:
    """A plausible change of one host's facts: an upgrade step where one is left, otherwise a
    change of client activation or cluster, or of server enrollment. Always differs from `facts`."""
    server, client = facts.server, facts.client
    if server is not None and server.version in _NEXT:
        # Now and then an RTM server jumps straight to SP2 (what D1's upgrade-path rule flags).
        target = Version.SP2 if server.version is Version.RTM and rng.random() < 0.1 else _NEXT[server.version]
        return replace(facts, server=replace(server, version=target))
    if client is not None and client.version in _NEXT:
        # D2: clients go straight to SP2, and then self-activate.
        return replace(facts, client=replace(client, version=Version.SP2, activation=Activation.SELF))
    if client is not None:
        if rng.random() < 0.5:
            flipped = Activation.INTERNET if client.activation is Activation.SELF else Activation.SELF
            return replace(facts, client=replace(client, activation=flipped))
        others = [c.url for c in CLUSTERS[facts.forest] if c.url != client.cluster]
        return replace(facts, client=replace(client, cluster=rng.choice(others)))
    assert server is not None
    flipped_enrollment = Enrollment.ONLINE if server.enrollment is Enrollment.OFFLINE else Enrollment.OFFLINE
    return replace(facts, server=replace(server, enrollment=flipped_enrollment))
