"""Migrations are the only way the schema is made: they match the models at head, `serve`
creates an empty database through them, and a database at an older revision is refused."""

from __future__ import annotations

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rmsfleet.collector.store.database import (
    SchemaOutOfDate,
    alembic_config,
    create_db_engine,
    current_revision,
    head_revision,
    prepare_for_serving,
    upgrade_to_head,
)
from rmsfleet.collector.store.models import Base


def test_migrations_at_head_match_the_models(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_serve_creates_an_empty_database_through_the_migrations(db_url: str) -> None:
    engine = create_db_engine(db_url)
    message = prepare_for_serving(engine)
    assert "created the schema through the migrations" in message
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        assert {"hosts", "host_history", "violations", "exemptions"} <= set(
            sqlalchemy.inspect(connection).get_table_names()
        )
    assert "schema at head" in prepare_for_serving(engine)
    engine.dispose()


def test_serve_refuses_a_database_at_an_older_revision(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    # Pretend the database is one revision behind by stamping an older id.
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'older'"))
    with pytest.raises(SchemaOutOfDate, match="run `rmsfleet-collector migrate"):
        prepare_for_serving(engine)
    engine.dispose()


def test_serve_refuses_a_foreign_database(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE something_else (id INTEGER)"))
    with pytest.raises(SchemaOutOfDate, match="no alembic revision"):
        prepare_for_serving(engine)
    engine.dispose()


def test_downgrade_to_base_and_back(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    with engine.begin() as connection:
        config = alembic_config(db_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    with engine.connect() as connection:
        assert "hosts" not in sqlalchemy.inspect(connection).get_table_names()
    upgrade_to_head(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    engine.dispose()
