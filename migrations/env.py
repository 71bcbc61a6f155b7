"""alembic environment: target_metadata is the collector's models, so autogenerate compares
against them. A caller may hand in a connection (config.attributes["connection"])."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from rmsfleet.collector.store.models import Base

target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        run_with(given)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as connection:
        run_with(connection)


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `rmsfleet-collector migrate`")
run_migrations_online()
