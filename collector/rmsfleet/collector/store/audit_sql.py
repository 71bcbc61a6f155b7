"""The audit trail (`audit_log`, migration 0006): append one row, list newest first. The caller
owns the transaction, so an admin action and its row commit together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from rmsfleet.collector.store.models import AuditRow
from rmsfleet.collector.store.rows import utc

OK = "ok"
REFUSED = "refused"
# Column bounds: what does not fit is cut (an audit row must never fail on a long target).
_ACTOR, _ACTION, _PEER, _STATUS, _TEXT = 255, 64, 255, 32, 4000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    peer: str
    outcome: str
    status: str = "OK"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    entry: AuditEntry


def record(session: Session, entry: AuditEntry, now: datetime) -> None:
    session.execute(
        insert(AuditRow).values(
            at=now,
            actor=entry.actor[:_ACTOR],
            action=entry.action[:_ACTION],
            target=entry.target[:_TEXT],
            peer=entry.peer[:_PEER],
            outcome=entry.outcome[:16],
            status=entry.status[:_STATUS],
            reason=entry.reason[:_TEXT],
        )
    )


def list_audit(session: Session, before: int | None, limit: int) -> list[AuditRecord]:
    """Newest first; `before`: the id of the last row of the page before."""
    statement = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if before is not None:
        statement = statement.where(AuditRow.id < before)
    return [
        AuditRecord(
            row.id,
            utc(row.at),
            AuditEntry(row.actor, row.action, row.target, row.peer, row.outcome, row.status, row.reason),
        )
        for row in session.scalars(statement)
    ]
