"""The systemd units of deploy/systemd/."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from .catalogue import DEPLOY, REPO
from .conftest import run

UNITS = DEPLOY / "systemd"
COLLECTOR = UNITS / "rmsfleet-collector.service"
MIGRATE = UNITS / "rmsfleet-collector-migrate.service"
AGENT = UNITS / "rmsfleet-agent.service"
SPOOL = UNITS / "rmsfleet-spool.service"


def directives(path: Path) -> dict[str, list[str]]:
    """`Key` -> its values in [Service] (a key may repeat)."""
    section = ""
    found: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(path: Path, key: str) -> str:
    values = directives(path).get(key, [])
    assert len(values) == 1, f"{path.name}: expected one {key}=, found {values}"
    return values[0]


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])


@pytest.mark.parametrize(
    ("unit", "arguments"),
    [
        (COLLECTOR, ["serve"]),
        (MIGRATE, ["migrate"]),
        (AGENT, ["--config", "/etc/rmsfleet/agent.toml"]),
        (SPOOL, ["spool", "--config", "/etc/rmsfleet/spool.toml"]),
    ],
)
def test_units_start_the_console_scripts(unit: Path, arguments: list[str]) -> None:
    command = shlex.split(one(unit, "ExecStart"))
    assert Path(command[0]).is_absolute()
    assert Path(command[0]).name in console_scripts()
    assert command[1:] == arguments


@pytest.mark.parametrize(
    ("unit", "env_file", "state"),
    [
        (COLLECTOR, "/etc/rmsfleet/collector.env", "rmsfleet-collector"),
        (MIGRATE, "/etc/rmsfleet/collector.env", "rmsfleet-collector"),
        (AGENT, "/etc/rmsfleet/agent.env", "rmsfleet-agent"),
        (SPOOL, "/etc/rmsfleet/spool.env", "rmsfleet-spool"),
    ],
)
def test_units_run_unprivileged_with_their_state_directory(unit: Path, env_file: str, state: str) -> None:
    # "-": the file is optional, every setting has a default
    assert one(unit, "EnvironmentFile") == f"-{env_file}"
    assert one(unit, "StateDirectory") == state
    assert one(unit, "WorkingDirectory") == f"/var/lib/{state}"
    assert one(unit, "DynamicUser") == "yes"
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "ProtectSystem") == "strict"


@pytest.mark.parametrize("unit", [COLLECTOR, AGENT, SPOOL])
def test_long_running_units_restart_on_failure(unit: Path) -> None:
    assert one(unit, "Restart") == "on-failure"
    assert "[Install]" in unit.read_text(encoding="utf-8")


def test_migration_reads_the_database_the_collector_serves() -> None:
    """Same settings file and state directory: otherwise `migrate` would create the schema in
    another database (the default SQLite file lives in the state directory)."""
    for key in ("EnvironmentFile", "StateDirectory", "WorkingDirectory", "DynamicUser"):
        assert one(MIGRATE, key) == one(COLLECTOR, key), key
    assert one(MIGRATE, "Type") == "oneshot"


def test_example_environment_names_the_collector_settings() -> None:
    text = (UNITS / "collector.env.example").read_text(encoding="utf-8")
    for variable in ("RMSFLEET_DB", "RMSFLEET_LISTEN", "RMSFLEET_METRICS_LISTEN"):
        assert re.search(rf"^#?{variable}=", text, re.MULTILINE), variable


def test_systemd_accepts_the_units(systemd_analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` prints a line for every unknown or malformed directive. The
    commands are pointed at an executable that exists here, and the commented TLS lines are
    switched on, so that they are checked too."""
    fake = tmp_path / "bin" / "fake"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    fake.chmod(0o755)
    copies = []
    for unit in (COLLECTOR, MIGRATE, AGENT, SPOOL):
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={fake}", unit.read_text(encoding="utf-8"), flags=re.MULTILINE)
        text = re.sub(r"^#(LoadCredential|Environment)=", r"\1=", text, flags=re.MULTILINE)
        copy = tmp_path / unit.name
        copy.write_text(text, encoding="utf-8")
        copies.append(str(copy))
    result = run(systemd_analyze, "verify", *copies, cwd=tmp_path)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"{result.stdout}\n{result.stderr}"
    )


@pytest.mark.parametrize("unit", [COLLECTOR, MIGRATE, AGENT, SPOOL])
def test_units_are_hardened(systemd_analyze: str, unit: Path) -> None:
    """systemd's own exposure score stays low (0 best, 10 worst; these units score about 1.4)."""
    result = run(systemd_analyze, "security", "--offline=true", "--no-pager", str(unit))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score is not None, f"{result.stdout}\n{result.stderr}"
    assert float(score.group(1)) <= 2.0, result.stdout


def test_the_spool_may_write_only_its_folder() -> None:
    # ProtectSystem=strict makes everything else read-only; the folder's group is how the
    # writers (a Samba share, a copy job) and the spool share it.
    assert one(SPOOL, "ReadWritePaths") == "/srv/rmsfleet-spool"
    assert one(SPOOL, "SupplementaryGroups") == "rmsfleet-spool"
    assert one(SPOOL, "ProtectSystem") == "strict"
