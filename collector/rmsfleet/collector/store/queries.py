"""Reads for the query service. Every list is keyset-paged, so a page costs the same at the
first host and at the millionth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.orm import Session

from rmsfleet.collector.domain.model import FactChange
from rmsfleet.collector.store.models import ExemptionRow, HostHistoryRow, HostRow, ViolationRow
from rmsfleet.collector.store.rows import facts_from_columns, utc
from rmsfleet.contract.facts import HostFacts


@dataclass(frozen=True, slots=True)
class HostView:
    facts: HostFacts
    first_seen: datetime
    last_seen: datetime
    observed_at: datetime
    last_sequence: int
    agent_version: str
    stale: bool


@dataclass(frozen=True, slots=True)
class HostFilter:
    role: str | None = None
    version: str | None = None
    cluster: str | None = None
    forest: str | None = None
    stale_only: bool = False


def _host_view(row: HostRow, stale_before: datetime) -> HostView:
    last_seen = utc(row.last_seen)
    return HostView(
        facts=facts_from_columns(row.host_id, row),
        first_seen=utc(row.first_seen),
        last_seen=last_seen,
        observed_at=utc(row.observed_at),
        last_sequence=row.last_sequence,
        agent_version=row.agent_version,
        stale=last_seen < stale_before,
    )


def list_hosts(
    session: Session, flt: HostFilter, after: str | None, limit: int, now: datetime, stale_after: timedelta
) -> list[HostView]:
    stale_before = now - stale_after
    statement = select(HostRow).order_by(HostRow.host_id).limit(limit)
    if after is not None:
        statement = statement.where(HostRow.host_id > after)
    if flt.role == "server":
        statement = statement.where(HostRow.server_version.is_not(None))
    elif flt.role == "client":
        statement = statement.where(HostRow.client_version.is_not(None))
    if flt.version is not None:
        if flt.role == "server":
            statement = statement.where(HostRow.server_version == flt.version)
        elif flt.role == "client":
            statement = statement.where(HostRow.client_version == flt.version)
        else:
            statement = statement.where(
                or_(HostRow.server_version == flt.version, HostRow.client_version == flt.version)
            )
    if flt.cluster is not None:
        statement = statement.where(or_(HostRow.server_cluster == flt.cluster, HostRow.client_cluster == flt.cluster))
    if flt.forest is not None:
        statement = statement.where(HostRow.forest == flt.forest)
    if flt.stale_only:
        statement = statement.where(HostRow.last_seen < stale_before)
    return [_host_view(row, stale_before) for row in session.scalars(statement)]


def get_host(
    session: Session, host_id: str, now: datetime, stale_after: timedelta
) -> tuple[HostView, list[FactChange]] | None:
    row = session.get(HostRow, host_id)
    if row is None:
        return None
    history = [
        FactChange(host_id=h.host_id, changed_at=utc(h.changed_at), facts=facts_from_columns(h.host_id, h))
        for h in session.scalars(
            select(HostHistoryRow)
            .where(HostHistoryRow.host_id == host_id)
            .order_by(HostHistoryRow.changed_at, HostHistoryRow.sequence)
        )
    ]
    return _host_view(row, now - stale_after), history


@dataclass(frozen=True, slots=True)
class ViolationView:
    id: int
    policy: str
    subject_kind: str
    subject: str
    severity: str
    since: datetime
    resolved_at: datetime | None
    detail: str


@dataclass(frozen=True, slots=True)
class ViolationFilter:
    policy: str | None = None
    severity: str | None = None
    state: str = "open"
    since: datetime | None = None


def list_violations(session: Session, flt: ViolationFilter, after: int | None, limit: int) -> list[ViolationView]:
    statement = select(ViolationRow).order_by(ViolationRow.id).limit(limit)
    if after is not None:
        statement = statement.where(ViolationRow.id > after)
    if flt.state == "open":
        statement = statement.where(ViolationRow.resolved_at.is_(None))
    elif flt.state == "resolved":
        statement = statement.where(ViolationRow.resolved_at.is_not(None))
    if flt.policy is not None:
        statement = statement.where(ViolationRow.policy == flt.policy)
    if flt.severity is not None:
        statement = statement.where(ViolationRow.severity == flt.severity)
    if flt.since is not None:
        statement = statement.where(ViolationRow.since >= flt.since)
    return [
        ViolationView(
            id=r.id,
            policy=r.policy,
            subject_kind=r.subject_kind,
            subject=r.subject,
            severity=r.severity,
            since=utc(r.since),
            resolved_at=None if r.resolved_at is None else utc(r.resolved_at),
            detail=r.detail,
        )
        for r in session.scalars(statement)
    ]


@dataclass(frozen=True, slots=True)
class ExemptionView:
    id: int
    policy: str
    subject_kind: str
    subject: str
    reason: str
    created_at: datetime
    expires_at: datetime | None


def list_exemptions(session: Session, after: int | None, limit: int) -> list[ExemptionView]:
    statement = select(ExemptionRow).order_by(ExemptionRow.id).limit(limit)
    if after is not None:
        statement = statement.where(ExemptionRow.id > after)
    return [
        ExemptionView(
            r.id,
            r.policy,
            r.subject_kind,
            r.subject,
            r.reason,
            utc(r.created_at),
            None if r.expires_at is None else utc(r.expires_at),
        )
        for r in session.scalars(statement)
    ]


def add_exemption(
    session: Session,
    policy: str,
    subject_kind: str,
    subject: str,
    reason: str,
    now: datetime,
    expires_at: datetime | None,
) -> int:
    """Store an exemption; its id."""
    result = session.execute(
        insert(ExemptionRow).values(
            policy=policy,
            subject_kind=subject_kind,
            subject=subject,
            reason=reason,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]  # an INSERT's CursorResult


def remove_exemption(session: Session, exemption_id: int) -> bool:
    result = session.execute(delete(ExemptionRow).where(ExemptionRow.id == exemption_id))
    return bool(getattr(result, "rowcount", 0))
