"""Engines and schema state: opening a database, running migrations, refusing a stale schema."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this collector needs; the message says what to do."""


class DatabaseMissing(RuntimeError):
    """A command that needs an existing rmsfleet database found none; nothing was created."""


def create_db_engine(url: str, pool_size: int = 10, *, must_exist: bool = False) -> Engine:
    """An engine for `url`. SQLite gets WAL (readers never block the writer) and a busy timeout.
    A SQLite file (and its folder) is created on first use, unless `must_exist`: then a missing
    file is DatabaseMissing and the file is opened read-write only, never created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = (
            Path(parsed.database).expanduser().resolve() if parsed.database and parsed.database != ":memory:" else None
        )
        connect_args: dict[str, Any] = {"timeout": 30, "check_same_thread": False}
        if must_exist:
            if file is None:
                raise DatabaseMissing(f"{url}: an in-memory database holds no fleet; name the database file")
            if not file.is_file():
                raise DatabaseMissing(
                    f"no database file {file}: give the collector's database with --db or RMSFLEET_DB "
                    "(nothing was created)"
                )
            # mode=rw: SQLite opens the file, and fails instead of creating one.
            url = f"sqlite:///{file.as_uri()}?mode=rw&uri=true"
        elif file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=connect_args)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: it costs a round trip per checkout, i.e. per ingest batch. A connection
    # the server dropped fails one statement, SQLAlchemy then invalidates the pool, and the
    # writer retries that batch once on a fresh connection (ingest.GroupCommitWriter._commit).
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable across application crashes; only a power loss can drop the
    # last transactions, an accepted trade for the embedded default.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrations_dir() -> Path:
    return Path(str(resources.files("rmsfleet.migrations")))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # alembic's config is an .ini parser: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> None:
    with engine.begin() as connection:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def prepare_for_serving(engine: Engine) -> str:
    """Bring an empty database to head; refuse one at another revision (that needs `migrate`,
    which an operator runs deliberately, with a backup). Returns what was done, for the log."""
    head = head_revision()
    if _schema_problem(engine, head) == "empty":
        upgrade_to_head(engine)
        return f"created the schema through the migrations (head {head})"
    return f"schema at head ({head})"


def require_schema_at_head(engine: Engine) -> None:
    """For the commands that write to a database the collector serves: the schema must be there
    and current. Creates and migrates nothing; raises SchemaOutOfDate with what to do."""
    if _schema_problem(engine, head_revision()) == "empty":
        raise SchemaOutOfDate(
            "the database holds no rmsfleet schema (nothing was created): point --db at the collector's "
            "database, or create the schema with `rmsfleet-collector migrate --db URL`"
        )


def _schema_problem(engine: Engine, head: str) -> str | None:
    """None at head, "empty" for a database without tables; raises SchemaOutOfDate otherwise."""
    with engine.connect() as connection:
        current = current_revision(connection)
        has_tables = bool(connection.dialect.get_table_names(connection))
    if current == head:
        return None
    if current is None and not has_tables:
        return "empty"
    if current is None:
        raise SchemaOutOfDate(
            "the database has tables but no alembic revision; it is not an rmsfleet database or was "
            "created outside the migrations"
        )
    if not _known_revision(current):
        raise SchemaOutOfDate(
            f"the database schema is at revision {current}, newer than this collector knows (head {head}): "
            "use the release that migrated it"
        )
    raise SchemaOutOfDate(
        f"the database schema is at revision {current}, this collector needs {head}: "
        "run `rmsfleet-collector migrate --db URL` first"
    )


def _known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision) is not None
    except (CommandError, ResolutionError):  # how alembic says "no such revision"
        return False
