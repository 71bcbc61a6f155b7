"""A small random fleet for the plan tests: servers of root and licensing clusters in two
forests, clients of them or of none, some of UNKNOWN version, so a plan has several waves, D4
checklists, and hosts it leaves out."""

from __future__ import annotations

import random

from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    ServerFacts,
    Version,
)

VERSIONS = (Version.RTM, Version.SP1, Version.SP2, Version.UNKNOWN)


def plan_fleet(hosts: int, seed: int) -> list[HostFacts]:
    rng = random.Random(seed)
    fleet = []
    for n in range(hosts):
        forest = rng.choice(("corp.example", "lab.example"))
        root = f"https://root{rng.randint(1, 2)}.{forest}"
        version = rng.choices(VERSIONS, (5, 5, 3, 1))[0]
        if rng.random() < 0.3:
            licensing = rng.random() < 0.4
            server = ServerFacts(
                version,
                f"https://lic.{forest}" if licensing else root,
                ClusterKind.LICENSING if licensing else ClusterKind.ROOT_CERTIFICATION,
                root if licensing else None,
                Enrollment.ONLINE,
            )
            fleet.append(HostFacts(f"h{n:04}", f"h{n}", forest, server, None))
        else:
            client = ClientFacts(version, Activation.SELF, rng.choice((root, None)), 1)
            fleet.append(HostFacts(f"h{n:04}", f"h{n}", forest, None, client))
    return fleet
