"""API tokens in the database (`api_tokens`, migration 0006): create, find by lookup id (one
indexed read), list, revoke. Only hashes are stored. The caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rmsfleet.collector.store.models import ApiTokenRow
from rmsfleet.collector.store.rows import utc


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as stored: everything but the secret (secret_hash is its sha256)."""

    id: int
    name: str
    lookup_id: str
    secret_hash: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str


class TokenNameTaken(Exception):
    pass


def _record(row: ApiTokenRow) -> TokenRecord:
    return TokenRecord(
        row.id,
        row.name,
        row.lookup_id,
        row.secret_hash,
        row.role,
        utc(row.created_at),
        None if row.expires_at is None else utc(row.expires_at),
        None if row.revoked_at is None else utc(row.revoked_at),
        row.created_by,
    )


def create_token(
    session: Session,
    name: str,
    lookup_id: str,
    secret_hash: str,
    role: str,
    now: datetime,
    expires_at: datetime | None,
    created_by: str,
) -> None:
    """Store a new token; TokenNameTaken when a token of that name exists (revoked ones too: a
    name in the audit trail means one token)."""
    if session.execute(select(ApiTokenRow.id).where(ApiTokenRow.name == name)).first() is not None:
        raise TokenNameTaken(name)
    session.add(
        ApiTokenRow(
            name=name,
            lookup_id=lookup_id,
            secret_hash=secret_hash,
            role=role,
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
            created_by=created_by,
        )
    )
    session.flush()


def find_token(session: Session, lookup_id: str) -> TokenRecord | None:
    row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.lookup_id == lookup_id)).first()
    return None if row is None else _record(row)


def list_tokens(session: Session, after: int | None, limit: int) -> list[TokenRecord]:
    statement = select(ApiTokenRow).order_by(ApiTokenRow.id).limit(limit)
    if after is not None:
        statement = statement.where(ApiTokenRow.id > after)
    return [_record(row) for row in session.scalars(statement)]


def revoke_token(session: Session, name: str, now: datetime) -> TokenRecord | None:
    """Mark the token revoked (kept: its name stays in the audit trail). Revoking a revoked token
    keeps its first revocation time. None when no token has that name."""
    session.execute(
        update(ApiTokenRow)
        .where(ApiTokenRow.name == name, ApiTokenRow.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.name == name)).first()
    return None if row is None else _record(row)
