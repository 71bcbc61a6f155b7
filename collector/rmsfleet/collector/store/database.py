"""Engines and schema state: opening a database, running migrations, refusing a stale schema."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry


class SchemaOutOfDate(RuntimeError):
    """The database is at an older migration than this collector needs."""


def create_db_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for `url`. SQLite gets WAL (readers never block the writer) and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
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
    """Bring an empty database to head; refuse one at an older revision (that needs `migrate`,
    which an operator runs deliberately, with a backup). Returns what was done, for the log."""
    with engine.connect() as connection:
        current = current_revision(connection)
        has_tables = bool(connection.dialect.get_table_names(connection))
    head = head_revision()
    if current == head:
        return f"schema at head ({head})"
    if current is None and not has_tables:
        upgrade_to_head(engine)
        return f"created the schema through the migrations (head {head})"
    if current is None:
        raise SchemaOutOfDate(
            "the database has tables but no alembic revision; it is not an rmsfleet database or was "
            "created outside the migrations"
        )
    raise SchemaOutOfDate(
        f"the database schema is at revision {current}, this collector needs {head}: "
        "run `rmsfleet-collector migrate --db URL` first"
    )
