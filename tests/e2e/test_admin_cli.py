"""The admin commands as an operator runs them (real `rmsfleet-collector` processes): a command
that writes (`exemptions add|remove`, `hosts revoke`) goes to the collector by default, and with
`--db` (break-glass, which it says in one line on stderr) never creates or migrates a database;
every refusal is one line and a non-zero exit, and an option a command would ignore is refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command as alembic
from processes import command, free_port

from rmsfleet.collector.store.database import alembic_config, create_db_engine, current_revision, head_revision

pytestmark = pytest.mark.e2e

ADD = [
    "exemptions",
    "add",
    "--policy",
    "stale-agent",
    "--subject-kind",
    "host",
    "--subject",
    "ws1",
    "--reason",
    "kiosk",
]


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`rmsfleet-collector ARGS` with no RMSFLEET_* variable but those in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RMSFLEET_")}
    return subprocess.run(
        [command("rmsfleet-collector"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**clean, **(env or {})},
    )


BREAK_GLASS = "break-glass: writing to the database directly, bypassing the collector"


def refused(done: subprocess.CompletedProcess[str], code: int, *expected: str, break_glass: bool = False) -> str:
    """The one line of a refusal, checked: exit code, one line, no traceback, the words expected.
    A break-glass write (`--db`) first says so in a line of its own."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    if break_glass:
        assert lines and BREAK_GLASS in lines[0], done.stderr
        lines = lines[1:]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rmsfleet-collector"), lines[0]
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


def tables(url: str) -> list[str]:
    engine = create_db_engine(url)
    with engine.connect() as connection:
        names = sorted(sqlalchemy.inspect(connection).get_table_names())
    engine.dispose()
    return names


def revision(url: str) -> str | None:
    engine = create_db_engine(url)
    with engine.connect() as connection:
        current = current_revision(connection)
    engine.dispose()
    return current


def migrate_to(url: str, target: str) -> None:
    engine = create_db_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        alembic.upgrade(config, target)
    engine.dispose()


@pytest.mark.parametrize(
    "args",
    [ADD, ["exemptions", "remove", "--id", "1"], ["hosts", "revoke", "ws1"]],
    ids=["exemptions-add", "exemptions-remove", "hosts-revoke"],
)
def test_a_write_without_a_database_creates_none(tmp_path: Path, args: list[str]) -> None:
    """Before: `exemptions add` in an empty folder created ./rmsfleet.db, migrated it, and said
    it had exempted the host. Now a write goes to the collector (none listens here: exit 3), and a
    break-glass write to a missing database file creates nothing."""
    address = f"127.0.0.1:{free_port()}"
    refused(cli(*args, "--collector", address, cwd=tmp_path), 3, f"cannot reach the collector at {address}")
    here = tmp_path / "rmsfleet.db"
    refused(
        cli(*args, "--db", f"sqlite:///{here}", cwd=tmp_path),
        1,
        "no database file",
        str(here),
        "nothing was created",
        break_glass=True,
    )
    elsewhere = tmp_path / "not" / "there.db"
    refused(
        cli(*args, "--db", f"sqlite:///{elsewhere}", cwd=tmp_path), 1, f"no database file {elsewhere}", break_glass=True
    )
    assert list(tmp_path.iterdir()) == [], "no file and no folder"


def test_a_write_to_an_empty_database_leaves_it_empty(tmp_path: Path, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()
    for args in (ADD, ["hosts", "revoke", "ws1"]):
        refused(
            cli(*args, "--db", db_url),
            1,
            "holds no rmsfleet schema",
            "nothing was created",
            "migrate --db URL",
            break_glass=True,
        )
    assert tables(db_url) == []


def test_a_write_to_an_older_schema_names_the_revision_and_migrates_nothing(tmp_path: Path, db_url: str) -> None:
    migrate_to(db_url, "0002")
    for args in (ADD, ["exemptions", "remove", "--id", "1"], ["hosts", "revoke", "ws1"]):
        refused(
            cli(*args, "--db", db_url),
            1,
            f"at revision 0002, this collector needs {head_revision()}",
            "run `rmsfleet-collector migrate --db URL` first",
            break_glass=True,
        )
    assert revision(db_url) == "0002"
    # `serve` refuses it too (its log comes first), with one line and no traceback.
    serve = cli("serve", "--db", db_url, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
    assert serve.returncode == 1 and "Traceback" not in serve.stderr
    assert (
        serve.stderr.strip()
        .splitlines()[-1]
        .startswith("rmsfleet-collector: serve: the database schema is at revision 0002")
    )
    # `migrate` is the one command that changes the schema; then the writes work.
    done = cli("migrate", "--db", db_url)
    assert done.returncode == 0 and done.stdout.strip().endswith(f"0002 -> {head_revision()}"), done.stderr
    added = cli(*ADD, "--db", db_url)
    assert added.returncode == 0 and added.stdout.startswith("exempted host ws1 from stale-agent"), added.stderr
    assert BREAK_GLASS in added.stderr
    refused(
        cli("hosts", "revoke", "ws1", "--db", db_url),
        1,
        "host ws1 has no node key (it never enrolled)",
        break_glass=True,
    )
    refused(cli("exemptions", "remove", "--id", "99", "--db", db_url), 1, "no exemption with id 99", break_glass=True)


def test_one_database_url_for_every_command(tmp_path: Path) -> None:
    """migrate: --db, else RMSFLEET_DB, else ./rmsfleet.db. A break-glass write takes only an
    explicit --db (a variable left in a shell must not turn a write into a bypass)."""
    from_env = tmp_path / "env.db"
    done = cli("migrate", env={"RMSFLEET_DB": f"sqlite:///{from_env}"}, cwd=tmp_path)
    assert done.returncode == 0 and from_env.is_file(), done.stderr
    added = cli(*ADD, "--db", f"sqlite:///{from_env}", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    # With the variable alone, the write goes to the collector (none listens there: exit 3).
    address = f"127.0.0.1:{free_port()}"
    refused(cli(*ADD, "--collector", address, env={"RMSFLEET_DB": f"sqlite:///{from_env}"}), 3, address)
    # --db names the database: this one does not exist, so nothing is written anywhere.
    other = tmp_path / "other.db"
    refused(
        cli(*ADD, "--db", f"sqlite:///{other}", env={"RMSFLEET_DB": f"sqlite:///{from_env}"}),
        1,
        str(other),
        break_glass=True,
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["env.db"]
    default = cli("migrate", cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "rmsfleet.db").is_file(), default.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["hosts", "revoke", "ws1", "--db", "sqlite:///x.db", "--collector", "10.0.0.1:50051"],
            "hosts revoke: --db writes to the database directly (break-glass); --collector does not apply with it",
        ),
        (
            ["tokens", "create", "ci", "--role", "reader", "--db", "sqlite:///x.db", "--token-file", "t"],
            "tokens create: --db writes to the database directly (break-glass); --token-file does not apply with it",
        ),
        (["violations", "--token", "secret"], "unrecognized arguments: --token secret"),
        (["tokens", "create", "ci", "--role", "owner"], "invalid choice: 'owner'"),
        (["tokens", "create", "ci"], "tokens create: --role required"),
        (["tokens", "create", "--role", "reader"], "tokens create: name the token"),
        (["tokens", "create", "ci", "--role", "reader", "--expires-in", "2y"], "--expires-in: expected a duration"),
        (["tokens", "list", "ci"], "tokens list: takes no NAME"),
        (["audit", "--limit", "0"], "audit: --limit: expected 1 to 100000"),
        (["audit", "--db", "sqlite:///x.db"], "unrecognized arguments: --db"),
        ([*ADD, "--db", "sqlite:///x.db", "--json"], "exemptions add: --json does not apply here"),
        (
            ["exemptions", "remove", "--id", "1", "--policy", "stale-agent"],
            "exemptions remove: --policy does not apply here; it takes --collector, --db, --id",
        ),
        (["hosts", "--db", "sqlite:///x.db"], "hosts list: --db does not apply here"),
        (["hosts", "show", "ws1", "--role", "server", "--stale"], "hosts show: --role, --stale do not apply here"),
        (["hosts", "list", "ws1"], "hosts list: takes no HOST_ID"),
        (["exemptions", "--reason", "x"], "exemptions list: --reason does not apply here"),
        (["violations", "--bogus"], "unrecognized arguments: --bogus"),
        (["hosts", "--version", "SP3"], "invalid choice: 'SP3'"),
        (["violations", "--timeout", "0"], "--timeout: expected seconds > 0"),
        (["clusters", "--wait-for-evaluation"], "unrecognized arguments: --wait-for-evaluation"),
        (
            ["hosts", "revoke", "ws1", "--db", "sqlite:///x.db", "--wait-for-evaluation"],
            "hosts revoke: --wait-for-evaluation does not apply here; it takes --collector, --db",
        ),
        (["violations", "--wait-timeout", "5"], "violations: --wait-timeout applies only with --wait-for-evaluation"),
        (["violations", "--wait-for-evaluation", "--wait-timeout", "0"], "--wait-timeout: expected seconds > 0"),
        (["violations", "--since", "yesterday"], "--since: expected an ISO 8601 time"),
        (["hosts", "--collector", "collector.example"], "--collector: expected HOST:PORT"),
        ([*ADD, "--db", "sqlite:///x.db", "--expires", "2001-01-01"], "--expires: expected a time in the future"),
        (
            ["exemptions", "add", "--policy", "stale-agent", "--db", "sqlite:///x.db"],
            "--subject-kind, --subject, --reason required",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    done = cli(*args, cwd=tmp_path)
    refused(done, 2, expected, break_glass=BREAK_GLASS in done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_database_that_cannot_be_reached_is_one_line(tmp_path: Path, postgres_server: str) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/rmsfleet_no_such_database"
    refused(cli(*ADD, "--db", url), 1, "exemptions add: ", "rmsfleet_no_such_database", break_glass=True)
    refused(cli("migrate", "--db", "nosuchdialect://x"), 1, "migrate: ")
