"""Applying a batch of reports in one transaction: a fixed number of statements per batch,
never a round trip per report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from rmsfleet.collector.reports import AppliedReport, IncomingReport, Outcome
from rmsfleet.collector.store.models import HostHistoryRow, HostRow
from rmsfleet.collector.store.rows import FACT_COLUMNS, facts_to_columns, utc

# Well under SQLite's bound-parameter limit for the IN list.
_SELECT_CHUNK = 900

# Core statements, built once. Core executemany sends each list in one statement; the ORM bulk
# paths split a batch by which columns are NULL and cost more Python per row (bench/ measured
# about 10% of ingest throughput).
_HOSTS = cast(Table, HostRow.__table__)
_HISTORY = cast(Table, HostHistoryRow.__table__)
_HEARTBEAT_COLUMNS = ("last_seen", "observed_at", "last_sequence", "agent_version")
_INSERT_HOST = _HOSTS.insert()
_INSERT_HISTORY = _HISTORY.insert()
# A heartbeat (facts unchanged) touches only these columns; a change rewrites the facts too.
_UPDATE_HEARTBEAT = (
    _HOSTS.update()
    .where(_HOSTS.c.host_id == bindparam("b_host_id"))
    .values({c: bindparam(c) for c in _HEARTBEAT_COLUMNS})
)
_UPDATE_FACTS = (
    _HOSTS.update()
    .where(_HOSTS.c.host_id == bindparam("b_host_id"))
    .values({c: bindparam(c) for c in (*_HEARTBEAT_COLUMNS, *FACT_COLUMNS)})
)


# How far beyond a host's last applied sequence (or, for a host new to this collector or one
# whose agent started a new outbox, beyond the collector's clock in microseconds) a report's
# sequence may jump. The agent's sequences start at its clock in microseconds when an outbox is
# created and then advance by one per report (agent/outbox.py), so an honest agent stays below
# max(last, now in microseconds) plus the reports it made; 2^40 microseconds (12.7 days) leaves
# room for an agent clock that far ahead. Without a ceiling one report at 2^63-1 would make
# every later report of the host a "duplicate" for good (docs/limits.md).
MAX_SEQUENCE_STEP = 2**40


@dataclass(frozen=True, slots=True)
class SequenceRefused(AppliedReport):
    """A report whose sequence is beyond the host's ceiling: refused (outcome REFUSED), nothing
    of it written."""

    ceiling: int = 0

    @property
    def message(self) -> str:
        return (
            f"sequence: expected at most {self.ceiling} for this host (its last applied sequence, or the "
            f"collector's clock in microseconds, plus 2^40), got {self.sequence}"
        )


def sequence_ceiling(last_sequence: int | None, received_at: datetime) -> int:
    """The largest sequence a report may carry (see MAX_SEQUENCE_STEP)."""
    clock_micros = int(received_at.timestamp() * 1_000_000)
    return max(last_sequence or 0, clock_micros) + MAX_SEQUENCE_STEP


def restart_sequence(session: Session, host_id: str) -> None:
    """Forget the host's last applied sequence, so its next report applies whatever its sequence
    (still under the ceiling). Called when a host enrolls again: its old node key stops working
    at once, so no report of the old sequence can arrive after this."""
    session.execute(update(_HOSTS).where(_HOSTS.c.host_id == host_id).values(last_sequence=0))


def apply_reports(session: Session, reports: Sequence[IncomingReport]) -> list[AppliedReport]:
    """Upsert hosts, append history only where facts changed, skip reports already applied
    (same host, sequence not newer), refuse a sequence beyond the host's ceiling. The caller owns
    the transaction. Results are in input order."""
    host_ids = sorted({report.facts.host_id for report in reports})
    current: dict[str, dict[str, Any]] = {}
    for start in range(0, len(host_ids), _SELECT_CHUNK):
        chunk = host_ids[start : start + _SELECT_CHUNK]
        # FOR UPDATE (ignored by SQLite, which has one writer) serialises replicas that write the
        # same hosts, so the sequence check below cannot race; ordered to avoid deadlocks.
        statement = (
            select(
                HostRow.host_id,
                HostRow.last_sequence,
                HostRow.last_seen,
                *[getattr(HostRow, c) for c in FACT_COLUMNS],
            )
            .where(HostRow.host_id.in_(chunk))
            .order_by(HostRow.host_id)
            .with_for_update()
        )
        for row in session.execute(statement):
            current[row.host_id] = dict(row._mapping)

    inserts: dict[str, dict[str, Any]] = {}
    updates: dict[str, dict[str, Any]] = {}
    facts_changed: set[str] = set()
    history: list[dict[str, Any]] = []
    # Within a batch a host's reports are applied in sequence order, whatever order they arrived in.
    ordered = sorted(enumerate(reports), key=lambda item: (item[1].facts.host_id, item[1].sequence))
    by_index: dict[int, AppliedReport] = {}
    for index, report in ordered:
        host_id = report.facts.host_id
        known = current.get(host_id)
        if known is not None and report.sequence <= known["last_sequence"]:
            by_index[index] = AppliedReport(host_id, report.sequence, Outcome.DUPLICATE, facts_changed=False)
            continue
        ceiling = sequence_ceiling(None if known is None else known["last_sequence"], report.received_at)
        if report.sequence > ceiling:
            by_index[index] = SequenceRefused(host_id, report.sequence, Outcome.REFUSED, False, ceiling=ceiling)
            continue
        columns = facts_to_columns(report.facts)
        changed = known is None or any(known[c] != columns[c] for c in FACT_COLUMNS)
        # Cluster and forest rules look only at servers and RTM clients (D14): tell the evaluator
        # whether this report can have changed what they see (such a part now, or one before).
        touches_servers = _seen_by_cluster_rules(columns) or (known is not None and _seen_by_cluster_rules(known))
        state = {
            **columns,
            "host_id": host_id,
            "last_seen": report.received_at,
            "observed_at": report.observed_at,
            "last_sequence": report.sequence,
            "agent_version": report.agent_version,
        }
        if known is None:
            inserts[host_id] = {**state, "first_seen": report.received_at}
        elif host_id in inserts:
            inserts[host_id].update(state)
        else:
            updates[host_id] = state
            if changed:
                facts_changed.add(host_id)
        if changed:
            history.append(
                {**columns, "host_id": host_id, "changed_at": report.observed_at, "sequence": report.sequence}
            )
        current[host_id] = {**columns, "last_sequence": report.sequence, "last_seen": report.received_at}
        by_index[index] = AppliedReport(
            host_id,
            report.sequence,
            Outcome.APPLIED,
            facts_changed=changed,
            touches_servers=changed and touches_servers,
            previous_last_seen=None if known is None else utc(known["last_seen"]),
        )

    if inserts:
        session.execute(_INSERT_HOST, list(inserts.values()))
    heartbeats = [
        {"b_host_id": h, **{c: u[c] for c in _HEARTBEAT_COLUMNS}} for h, u in updates.items() if h not in facts_changed
    ]
    if heartbeats:
        session.execute(_UPDATE_HEARTBEAT, heartbeats)
    changes = [
        {"b_host_id": h, **{k: v for k, v in u.items() if k != "host_id"}}
        for h, u in updates.items()
        if h in facts_changed
    ]
    if changes:
        session.execute(_UPDATE_FACTS, changes)
    if history:
        session.execute(_INSERT_HISTORY, history)
    return [by_index[index] for index in range(len(reports))]


def _seen_by_cluster_rules(columns: Mapping[str, Any]) -> bool:
    return columns["server_version"] is not None or columns["client_version"] == "RTM"
