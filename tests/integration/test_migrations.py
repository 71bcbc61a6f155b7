"""Migrations are the only way the schema is made: they match the models at head, `serve`
creates an empty database through them, and a database at an older revision is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rmsfleet.collector.store.database import (
    DatabaseMissing,
    SchemaOutOfDate,
    alembic_config,
    create_db_engine,
    current_revision,
    head_revision,
    prepare_for_serving,
    require_schema_at_head,
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
    with engine.begin() as connection:
        config = alembic_config(db_url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    with pytest.raises(
        SchemaOutOfDate, match=r"at revision 0002, this collector needs .*run `rmsfleet-collector migrate"
    ):
        prepare_for_serving(engine)
    with pytest.raises(SchemaOutOfDate, match="at revision 0002"):
        require_schema_at_head(engine)
    engine.dispose()


def test_a_revision_this_release_does_not_know_is_refused_without_advice_to_migrate(sqlite_url: str) -> None:
    """A database a newer release migrated: `migrate` cannot help, so it is not suggested."""
    engine = create_db_engine(sqlite_url)
    upgrade_to_head(engine)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutOfDate, match="at revision 9999, newer than this collector knows") as refused:
        prepare_for_serving(engine)
    assert "rmsfleet-collector migrate" not in str(refused.value)
    engine.dispose()


def test_writers_need_an_existing_database_and_create_nothing(tmp_path: Path, db_url: str) -> None:
    missing = tmp_path / "absent" / "rmsfleet.db"
    with pytest.raises(DatabaseMissing, match=f"no database file {missing}"):
        create_db_engine(f"sqlite:///{missing}", must_exist=True)
    assert not missing.parent.exists()
    with pytest.raises(DatabaseMissing, match="in-memory"):
        create_db_engine("sqlite://", must_exist=True)
    # An empty database (a new SQLite file, a new PostgreSQL database) stays empty.
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()
    engine = create_db_engine(db_url, must_exist=True)
    with pytest.raises(SchemaOutOfDate, match="holds no rmsfleet schema"):
        require_schema_at_head(engine)
    with engine.connect() as connection:
        assert sqlalchemy.inspect(connection).get_table_names() == []
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
