"""Domain types the policies, the planner and the evaluator share (frozen dataclasses, no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    ServerFacts,
    Version,
)

__all__ = [
    "Activation",
    "ClientFacts",
    "ClusterKind",
    "Enrollment",
    "FactChange",
    "Finding",
    "Fleet",
    "HostFacts",
    "HostRecord",
    "PolicyConfig",
    "ServerFacts",
    "Severity",
    "SubjectKind",
    "Version",
]


class Severity(enum.Enum):
    WARNING = "warning"
    CRITICAL = "critical"


class SubjectKind(enum.Enum):
    CLUSTER = "cluster"
    HOST = "host"
    FOREST = "forest"


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A host as the collector knows it now."""

    facts: HostFacts
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class FactChange:
    """One entry of a host's history: the facts it reported from `changed_at` on."""

    host_id: str
    changed_at: datetime
    facts: HostFacts


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the policies look at. `history` holds each host's fact changes, oldest first; a
    policy that needs no history (most) ignores it, so callers may pass only what they have."""

    hosts: Sequence[HostRecord]
    history: Mapping[str, Sequence[FactChange]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    """A policy's verdict on one subject at one moment. The evaluator turns findings into stored
    violations (keeping `since` across evaluations) and closes violations with no finding."""

    policy: str
    subject_kind: SubjectKind
    subject: str
    severity: Severity
    detail: str


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Tunables of the rulebook. Defaults are documented in docs/policies.md."""

    # D5: a cluster mixed for longer than this is no longer a rolling upgrade in progress.
    mixed_cluster_grace: timedelta = timedelta(days=7)
    # A host silent for longer than this is a stale agent.
    stale_after: timedelta = timedelta(minutes=15)
    disabled: frozenset[str] = frozenset()
