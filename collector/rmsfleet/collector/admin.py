"""The commands that write to the collector's database directly: `migrate`, `exemptions add`,
`exemptions remove` and `hosts revoke`.

Only `migrate` changes the schema. The others change rows of a database the collector already
serves: a missing SQLite file, a database without the rmsfleet schema or one at another
migration is refused with one line, and nothing is created (a mistyped --db must not leave an
empty database behind that reports success). Every refusal is an AdminError whose message is the
line the operator sees."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from rmsfleet.collector.domain.policies import POLICIES
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.database import (
    DatabaseMissing,
    SchemaOutOfDate,
    create_db_engine,
    current_revision,
    require_schema_at_head,
    upgrade_to_head,
)
from rmsfleet.collector.store.identity_sql import allow_reenroll as write_allowance
from rmsfleet.collector.store.identity_sql import node_key_record, revoke_node_key
from rmsfleet.contract.facts import MAX_ID_LENGTH, MAX_URL_LENGTH

T = TypeVar("T")
SUBJECT_KINDS = ("cluster", "host", "forest")
MAX_REASON_LENGTH = 1000


class AdminError(Exception):
    """A refused admin command; the message is one line. `bad_input`: the command line itself
    is wrong (a usage error), not the database."""

    def __init__(self, message: str, *, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def migrate(url: str) -> str:
    """Bring the schema to the newest migration (creating it on an empty database)."""
    try:
        engine = create_db_engine(url)
        with engine.connect() as connection:
            before = current_revision(connection)
        upgrade_to_head(engine)
        with engine.connect() as connection:
            after = current_revision(connection)
    except SQLAlchemyError as exc:
        raise AdminError(f"migrate: {_first_line(exc)}") from None
    return f"database {engine.url.render_as_string(hide_password=True)}: {before or 'empty'} -> {after}"


def _write(what: str, url: str, change: Callable[[Session], T]) -> T:
    """Run `change` in one transaction on an existing database at the current schema."""
    try:
        engine: Engine = create_db_engine(url, must_exist=True)
        require_schema_at_head(engine)
        with Session(engine) as session, session.begin():
            return change(session)
    except (DatabaseMissing, SchemaOutOfDate) as exc:
        raise AdminError(f"{what}: {exc}") from None
    except SQLAlchemyError as exc:
        raise AdminError(f"{what}: {_first_line(exc)}") from None


def _text(flag: str, value: str, max_length: int) -> str:
    if not value.strip():
        raise AdminError(f"exemptions add: {flag}: expected a non-empty value", bad_input=True)
    if len(value) > max_length:
        raise AdminError(
            f"exemptions add: {flag}: expected at most {max_length} characters, got {len(value)}", bad_input=True
        )
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise AdminError(f"exemptions add: {flag}: expected no control characters", bad_input=True)
    return value


def add_exemption(
    url: str, policy: str, subject_kind: str, subject: str, reason: str, now: datetime, expires: datetime | None
) -> str:
    if policy not in {p.id for p in POLICIES}:
        raise AdminError(
            f"exemptions add: --policy: no policy {policy[:80]!r}; known: {', '.join(p.id for p in POLICIES)}",
            bad_input=True,
        )
    if subject_kind not in SUBJECT_KINDS:
        raise AdminError(f"exemptions add: --subject-kind: expected one of {', '.join(SUBJECT_KINDS)}", bad_input=True)
    subject = _text("--subject", subject, MAX_URL_LENGTH)
    reason = _text("--reason", reason, MAX_REASON_LENGTH)
    if expires is not None and expires <= now:
        raise AdminError(
            f"exemptions add: --expires: expected a time in the future, got {expires.isoformat()}", bad_input=True
        )
    _write(
        "exemptions add",
        url,
        lambda session: queries.add_exemption(session, policy, subject_kind, subject, reason, now, expires),
    )
    return f"exempted {subject_kind} {subject} from {policy} until {expires.isoformat() if expires else 'removed'}"


def remove_exemption(url: str, exemption_id: int) -> str:
    if not _write("exemptions remove", url, lambda session: queries.remove_exemption(session, exemption_id)):
        raise AdminError(f"exemptions remove: no exemption with id {exemption_id}")
    return f"removed exemption {exemption_id}"


def revoke_host(url: str, host_id: str, now: datetime) -> str:
    """Mark the host's node key revoked. Every collector replica checks keys in each batch's own
    transaction, so the next report with that key is refused (UNAUTHENTICATED) on all of them;
    the agent enrolls again if its enrollment secret is still accepted (rotate the secret first
    to keep a host out)."""
    record = _write("hosts revoke", url, lambda session: revoke_node_key(session, host_id, now))
    if record is None:
        raise AdminError(f"hosts revoke: host {host_id[:255]} has no node key (it never enrolled)")
    revoked = record.revoked_at.isoformat() if record.revoked_at is not None else "now"
    return (
        f"revoked the node key of host {host_id} (enrolled {record.created_at.isoformat()}, revoked "
        f"{revoked}): its reports are refused until it enrolls again"
    )


def allow_reenroll(url: str, host_id: str, for_: str | None, now: datetime) -> str:
    """Let a host that holds a valid node key enroll once more (a reinstalled machine, a lost
    state directory) until the allowance expires (docs/security.md, host identity)."""
    from rmsfleet.collector.identity_admin import DEFAULT_ALLOWANCE, DurationError, parse_duration

    host_id = _text("HOST_ID", host_id, MAX_ID_LENGTH)
    try:
        duration = parse_duration(for_) if for_ else DEFAULT_ALLOWANCE
    except DurationError as exc:
        raise AdminError(f"hosts allow-reenroll: --for: {exc}", bad_input=True) from None
    until = now + duration

    def change(session: Session) -> object:
        record = node_key_record(session, host_id)
        write_allowance(session, host_id, now, until)
        return record

    record = _write("hosts allow-reenroll", url, change)
    stamp = until.isoformat(timespec="seconds").replace("+00:00", "Z")
    if record is None:
        state = "it has never enrolled, so it needs no allowance for its first enrollment"
    elif getattr(record, "revoked_at", None) is not None:
        state = "its key is revoked, so it may enroll again anyway"
    else:
        state = "its current key stays valid until the new enrollment replaces it"
    return f"host {host_id} may enroll once more until {stamp} ({state})"
