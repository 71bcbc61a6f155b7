"""The commands that write to the collector's database directly: `migrate`, and the admin
commands given `--db URL` (break-glass: they bypass the collector and its credentials, and still
write their audit row, actor `break-glass`; without `--db` they go through the AdminService).

Only `migrate` changes the schema. The others change rows of a database the collector already
serves: a missing SQLite file, a database without the rmsfleet schema or one at another
migration is refused with one line, and nothing is created (a mistyped --db must not leave an
empty database behind that reports success). Every refusal is an AdminError whose message is the
line the operator sees."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from rmsfleet.collector import admin_actions as act
from rmsfleet.collector.query_convert import BadRequest
from rmsfleet.collector.store.audit_sql import REFUSED, AuditEntry, record
from rmsfleet.collector.store.database import (
    DatabaseMissing,
    SchemaOutOfDate,
    create_db_engine,
    current_revision,
    require_schema_at_head,
    upgrade_to_head,
)

T = TypeVar("T")
U = TypeVar("U")
LOCAL_PEER = "local"


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


def _write(what: str, url: str, change: Callable[[Session], U]) -> U:
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


# The wire field a check names, as the command line spells it.
FLAGS = {
    "policy": "--policy",
    "subject_kind": "--subject-kind",
    "subject": "--subject",
    "reason": "--reason",
    "expires_at": "--expires",
    "id": "--id",
    "host_id": "HOST_ID",
    "duration": "--for",
    "name": "NAME",
    "role": "--role",
    "expires_in": "--expires-in",
}


def break_glass(
    what: str,
    action: str,
    target: str,
    url: str,
    valid: Callable[[], T],
    change: Callable[[Session, T, datetime], act.Done],
) -> act.Done:
    """An admin action written straight to the database (`--db`, break-glass), with its audit row
    (actor `break-glass`, peer `local`) in the same transaction; a refusal is audited too."""
    now = datetime.now(UTC)
    try:
        wanted = valid()
    except BadRequest as exc:
        _audit_refusal(
            what,
            url,
            AuditEntry(act.BREAK_GLASS, action, target, LOCAL_PEER, REFUSED, "INVALID_ARGUMENT", str(exc)),
            now,
        )
        raise AdminError(
            f"{what}: {FLAGS.get(exc.field, exc.field)}: {str(exc).split(': ', 1)[1]}", bad_input=True
        ) from None

    def run(session: Session) -> act.Done:
        done = change(session, wanted, now)
        act.audit_ok(session, act.BREAK_GLASS, action, done, LOCAL_PEER, now)
        return done

    try:
        return _write(what, url, run)
    except (act.NotFound, act.AlreadyExists) as exc:
        code = "NOT_FOUND" if isinstance(exc, act.NotFound) else "ALREADY_EXISTS"
        entry = AuditEntry(act.BREAK_GLASS, action, target, LOCAL_PEER, REFUSED, code, str(exc))
        _write(what, url, lambda session: record(session, entry, now))
        raise AdminError(f"{what}: {exc}") from None


def _audit_refusal(what: str, url: str, entry: AuditEntry, now: datetime) -> None:
    """Record a refused break-glass command where the database can take it: a database that is
    missing or at another schema gets no row (and is not created), the operator sees the refusal."""
    with contextlib.suppress(AdminError):
        _write(what, url, lambda session: record(session, entry, now))
