"""What the upgrade planner reads: the current facts of the hosts (of one forest), and a number
that changes whenever those facts may have (the plan cache keys on it).

Measured at 100,000 hosts on PostgreSQL (docs/benchmarks.md): the evaluator's load_fleet spends
most of its time building rows and datetimes the planner never reads; this reads the fact
columns only, filters the forest in SQL (ix_hosts_forest_server_version), and streams the rows
in chunks so the driver's result buffer and the built facts are never both whole in memory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.domain.model import ClientFacts, HostFacts, HostRecord, ServerFacts
from rmsfleet.collector.store.models import HostHistoryRow, HostRow
from rmsfleet.collector.store.rows import FACT_COLUMNS, UnreadableRow, facts_from_columns

# Rows fetched per round (a server-side cursor on PostgreSQL): 20 rounds at 1M hosts; smaller
# chunks measured slower at 100,000 hosts, one chunk holds the whole result in the driver.
_CHUNK = 50_000
# host_id, hostname and forest come first (FACT_COLUMNS starts with hostname and forest); the
# server and client columns follow.
_PART_COLUMNS = 3
assert FACT_COLUMNS[:2] == ("hostname", "forest")
# The planner reads facts only (planner.py); the times of a HostRecord are not part of a plan.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def load_plan_hosts(session: Session, forest: str | None) -> list[HostRecord]:
    """The hosts whose facts the planner reads, of `forest` only when given. A row that makes no
    facts (rows.UnreadableRow) is left out, as evaluation leaves it out; the evaluator logs it.

    The server and client parts of a fleet take a few hundred distinct values (versions,
    clusters, activation), so each distinct part is built once and shared by every host that
    has it (they are frozen): about a third less time and memory than one per host, measured."""
    statement = select(HostRow.host_id, *[getattr(HostRow, c) for c in FACT_COLUMNS])
    if forest is not None:
        statement = statement.where(HostRow.forest == forest)
    parts: dict[tuple[object, ...], tuple[ServerFacts | None, ClientFacts | None] | None] = {}
    hosts: list[HostRecord] = []
    for row in session.execute(statement, execution_options={"yield_per": _CHUNK}):
        key = tuple(row[_PART_COLUMNS:])
        if key in parts:
            part = parts[key]
        else:
            try:
                facts = facts_from_columns(row.host_id, row)
                part = parts[key] = (facts.server, facts.client)
            except UnreadableRow:
                part = parts[key] = None
        if part is None:
            continue
        facts = HostFacts(host_id=row.host_id, hostname=row.hostname, forest=row.forest, server=part[0], client=part[1])
        hosts.append(HostRecord(facts=facts, first_seen=_NO_TIME, last_seen=_NO_TIME))
    return hosts


def facts_generation(session: Session) -> int:
    """A number that grows whenever a host's facts change: every fact change, a host's first
    report included, inserts a host_history row (ingest_writes.py), and rows are never deleted
    but with their host. One indexed read (the primary key's maximum), whatever the fleet's size."""
    return int(session.execute(select(func.coalesce(func.max(HostHistoryRow.id), 0))).scalar_one())


def plan_reads(sessions: sessionmaker[Session]) -> tuple[Callable[[], int], Callable[[str | None], list[HostRecord]]]:
    """The two reads of plan_cache.PlanCache, each in its own short session (a pooled
    connection is held for the read only, never while a caller waits)."""

    def generation() -> int:
        with sessions() as session:
            return facts_generation(session)

    def hosts(forest: str | None) -> list[HostRecord]:
        with sessions() as session:
            return load_plan_hosts(session, forest)

    return generation, hosts
