"""What the ingest path carries: a validated report and what became of it. Pure data."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from rmsfleet.contract.facts import HostFacts


@dataclass(frozen=True, slots=True)
class IncomingReport:
    facts: HostFacts
    observed_at: datetime
    sequence: int
    agent_version: str
    received_at: datetime


class Outcome(enum.Enum):
    # The values are the `outcome` label of rmsfleet_reports_total.
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    REFUSED = "refused"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class AppliedReport:
    """The store's answer for one report of a batch."""

    host_id: str
    sequence: int
    outcome: Outcome
    facts_changed: bool
    # The change can matter to the cluster and forest rules (the host is or was a server or an
    # RTM client, D14).
    touches_servers: bool = False
    # When the host reported before this report (None: its first report), so the evaluator can
    # tell a host coming back from being stale.
    previous_last_seen: datetime | None = None
