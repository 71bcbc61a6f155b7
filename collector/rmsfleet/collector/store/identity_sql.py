"""Node keys in the database: enroll (store a key's hash), check a batch of reports' keys with one
query, revoke. The caller owns the transaction."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rmsfleet.collector.enrollment import KeyProblem, same_hash
from rmsfleet.collector.store.models import NodeKeyRow, ReenrollAllowanceRow
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


# --- enrolling with the host identity rule (docs/security.md, "Host identity") ------------------


class EnrollOutcome(enum.Enum):
    """What an enrollment found on record, and so whether it was admitted."""

    NEW = "new"  # no key on record: the first enrollment of this host id
    AFTER_REVOCATION = "after-revocation"  # the host's key was revoked
    ALLOWED = "allowed"  # the host held a valid key; an operator's allowance admitted this once
    REPLACED = "replaced"  # the host held a valid key; the collector replaces keys on enrollment
    REFUSED = "refused"  # the host holds a valid key and nothing admits another enrollment
    RACED = "raced"  # another enrollment of this host committed between our read and our write

    @property
    def admitted(self) -> bool:
        return self not in (EnrollOutcome.REFUSED, EnrollOutcome.RACED)


@dataclass(frozen=True, slots=True)
class EnrollResult:
    outcome: EnrollOutcome
    # The key on record before this enrollment (None for a new host).
    previous: NodeKeyView | None


def enroll_host(
    session: Session, host_id: str, key_hash: str, now: datetime, *, replace_valid_keys: bool
) -> EnrollResult:
    """Store `key_hash` as the host's node key if the identity rule admits it: no key on record,
    a revoked key, an unexpired allowance (used up here), or `replace_valid_keys`. Otherwise
    nothing is written (REFUSED).

    Two enrollments of one host at once (two replicas) cannot both win: a new host is inserted
    with ON CONFLICT DO NOTHING, a key is replaced only where it is still the key we read (compare
    and set). The loser gets RACED and writes nothing. The caller owns the transaction; every
    admitted enrollment removes the host's allowance, so one allowance admits one enrollment."""
    row = session.execute(
        select(NodeKeyRow.key_hash, NodeKeyRow.created_at, NodeKeyRow.revoked_at).where(NodeKeyRow.host_id == host_id)
    ).first()
    if row is None:
        if _insert_if_absent(session, host_id, key_hash, now) == 0:
            return EnrollResult(EnrollOutcome.RACED, None)
        _drop_allowance(session, host_id)
        return EnrollResult(EnrollOutcome.NEW, None)
    previous = NodeKeyView(host_id, utc(row.created_at), None if row.revoked_at is None else utc(row.revoked_at))
    if previous.revoked_at is not None:
        outcome = EnrollOutcome.AFTER_REVOCATION
    elif allowance_until(session, host_id, now) is not None:
        outcome = EnrollOutcome.ALLOWED
    elif replace_valid_keys:
        outcome = EnrollOutcome.REPLACED
    else:
        return EnrollResult(EnrollOutcome.REFUSED, previous)
    swapped: CursorResult[Any] = session.execute(  # type: ignore[assignment]  # DML returns a CursorResult
        update(NodeKeyRow)
        .where(NodeKeyRow.host_id == host_id, NodeKeyRow.key_hash == row.key_hash)
        .values(key_hash=key_hash, created_at=now, revoked_at=None)
        .execution_options(synchronize_session=False)
    )
    if swapped.rowcount != 1:
        return EnrollResult(EnrollOutcome.RACED, previous)
    _drop_allowance(session, host_id)
    return EnrollResult(outcome, previous)


def _insert_if_absent(session: Session, host_id: str, key_hash: str, now: datetime) -> int:
    values = {"host_id": host_id, "key_hash": key_hash, "created_at": now, "revoked_at": None}
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(NodeKeyRow).values(values).on_conflict_do_nothing(index_elements=["host_id"])
    else:
        statement = sqlite.insert(NodeKeyRow).values(values).on_conflict_do_nothing(index_elements=["host_id"])
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount)


def _drop_allowance(session: Session, host_id: str) -> None:
    session.execute(delete(ReenrollAllowanceRow).where(ReenrollAllowanceRow.host_id == host_id))


def allowance_until(session: Session, host_id: str, now: datetime) -> datetime | None:
    """When the host's unexpired re-enrollment allowance ends, or None."""
    expires = session.execute(
        select(ReenrollAllowanceRow.expires_at).where(
            ReenrollAllowanceRow.host_id == host_id, ReenrollAllowanceRow.expires_at > now
        )
    ).scalar()
    return None if expires is None else utc(expires)


def allow_reenroll(session: Session, host_id: str, now: datetime, until: datetime) -> None:
    """Admit one more enrollment of `host_id` until `until` (replacing an earlier allowance), and
    drop allowances that expired (the table holds only what can still be used)."""
    session.execute(delete(ReenrollAllowanceRow).where(ReenrollAllowanceRow.expires_at <= now))
    # An upsert: two operators (or two replicas) allowing the same host at once must not fail on
    # the primary key (found by the fuzzer through the admin API on PostgreSQL: UNAVAILABLE).
    values = {"host_id": host_id, "created_at": now, "expires_at": until}
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        pg = postgresql.insert(ReenrollAllowanceRow).values(values)
        statement = pg.on_conflict_do_update(
            index_elements=[ReenrollAllowanceRow.host_id],
            set_={"created_at": pg.excluded.created_at, "expires_at": pg.excluded.expires_at},
        )
    else:
        lite = sqlite.insert(ReenrollAllowanceRow).values(values)
        statement = lite.on_conflict_do_update(
            index_elements=[ReenrollAllowanceRow.host_id],
            set_={"created_at": lite.excluded.created_at, "expires_at": lite.excluded.expires_at},
        )
    session.execute(statement)
