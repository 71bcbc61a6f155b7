"""Shared fixtures: databases (SQLite and the local PostgreSQL) and outside tools.

A test that needs an outside part skips with the reason when the part is missing, except under
CI (CI=true), where a missing part fails the run: a green CI means those tests ran."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from domain_table import DOMAIN_MD, parse_policy_table
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def postgres_admin_url() -> str:
    return os.environ.get("RMSFLEET_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    url = postgres_admin_url()
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        skip_or_fail(f"PostgreSQL not reachable at {url} (set RMSFLEET_TEST_POSTGRES_URL): {str(exc).splitlines()[0]}")
    return url


def create_postgres_database(admin_url: str) -> str:
    """A fresh, empty database for one test; the caller drops it with drop_postgres_database."""
    name = f"rmsfleet_test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    url = create_postgres_database(postgres_server)
    yield url
    drop_postgres_database(postgres_server, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'rmsfleet.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rmsfleet.db'}"
        return
    admin = request.getfixturevalue("postgres_server")
    url = create_postgres_database(admin)
    yield url
    drop_postgres_database(admin, url)


def require_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        skip_or_fail(f"`{name}` not found on PATH (install Debian's `{package}` package)")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def domain_policies() -> dict[str, tuple[str, ...]]:
    """shared/domain.md's policy table (policy id -> cited fact ids), read from the file."""
    if not DOMAIN_MD.exists():
        skip_or_fail(f"{DOMAIN_MD} not found: the policy table is read from shared/domain.md beside the checkout")
    return parse_policy_table(DOMAIN_MD.read_text(encoding="utf-8"), str(DOMAIN_MD))
