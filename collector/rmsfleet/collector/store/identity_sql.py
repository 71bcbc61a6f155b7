"""Node keys in the database: enroll (store a key's hash), check a batch of reports' keys with one
query, revoke. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rmsfleet.collector.enrollment import KeyProblem, same_hash
from rmsfleet.collector.store.models import NodeKeyRow
from rmsfleet.collector.store.rows import utc

# Well under SQLite's bound-parameter limit for the IN list (one statement per chunk; a batch
# of up to 1000 reports from distinct hosts takes two).
_SELECT_CHUNK = 900


@dataclass(frozen=True, slots=True)
class NodeKeyView:
    host_id: str
    created_at: datetime
    revoked_at: datetime | None


def save_node_key(session: Session, host_id: str, key_hash: str, now: datetime) -> None:
    """Store `key_hash` as the host's node key, replacing any earlier key (revoked or not): one
    upsert, so two replicas enrolling the same host at once cannot fail on the primary key."""
    values = {"host_id": host_id, "key_hash": key_hash, "created_at": now, "revoked_at": None}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg = postgresql.insert(NodeKeyRow).values(values)
        session.execute(
            pg.on_conflict_do_update(
                index_elements=[NodeKeyRow.host_id],
                set_={"key_hash": pg.excluded.key_hash, "created_at": pg.excluded.created_at, "revoked_at": None},
            )
        )
    elif dialect == "sqlite":
        lite = sqlite.insert(NodeKeyRow).values(values)
        session.execute(
            lite.on_conflict_do_update(
                index_elements=[NodeKeyRow.host_id],
                set_={"key_hash": lite.excluded.key_hash, "created_at": lite.excluded.created_at, "revoked_at": None},
            )
        )
    else:  # pragma: no cover - the collector supports SQLite and PostgreSQL
        session.merge(NodeKeyRow(**values))


def check_node_keys(session: Session, claims: Sequence[tuple[str, str | None]]) -> dict[int, KeyProblem]:
    """Check each claim (host id, hash of the presented key; None = no key presented) against the
    keys on record, with one SELECT for the whole batch (per chunk of 900 hosts). Returns the
    problem of every rejected claim by its index; an accepted claim is absent."""
    host_ids = sorted({host_id for host_id, _ in claims})
    on_record: dict[str, tuple[str, datetime | None]] = {}
    for start in range(0, len(host_ids), _SELECT_CHUNK):
        chunk = host_ids[start : start + _SELECT_CHUNK]
        rows = session.execute(
            select(NodeKeyRow.host_id, NodeKeyRow.key_hash, NodeKeyRow.revoked_at).where(NodeKeyRow.host_id.in_(chunk))
        )
        for row in rows:
            on_record[row.host_id] = (row.key_hash, row.revoked_at)
    problems: dict[int, KeyProblem] = {}
    for index, (host_id, presented) in enumerate(claims):
        if presented is None:
            problems[index] = KeyProblem.MISSING
            continue
        record = on_record.get(host_id)
        if record is None:
            problems[index] = KeyProblem.NOT_ENROLLED
        elif not same_hash(record[0], presented):
            # Checked before revocation: a revoked host's *old* key is "revoked", anyone else's
            # key is "not this host's" whatever the host's state.
            problems[index] = KeyProblem.WRONG_HOST
        elif record[1] is not None:
            problems[index] = KeyProblem.REVOKED
    return problems


def revoke_node_key(session: Session, host_id: str, now: datetime) -> NodeKeyView | None:
    """Mark the host's key revoked (kept, so a report with it is answered "revoked", not "not
    enrolled"). Returns the key's record, or None when the host never enrolled. Revoking a revoked
    key keeps its first revocation time."""
    session.execute(
        update(NodeKeyRow)
        .where(NodeKeyRow.host_id == host_id, NodeKeyRow.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return node_key_record(session, host_id)


def node_key_record(session: Session, host_id: str) -> NodeKeyView | None:
    row = session.execute(
        select(NodeKeyRow.host_id, NodeKeyRow.created_at, NodeKeyRow.revoked_at).where(NodeKeyRow.host_id == host_id)
    ).first()
    if row is None:
        return None
    # SQLite hands back naive datetimes; they were written in UTC.
    return NodeKeyView(row.host_id, utc(row.created_at), None if row.revoked_at is None else utc(row.revoked_at))
