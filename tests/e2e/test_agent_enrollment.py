"""Enrollment end to end: an agent enrolls once and keeps its node key; a revoked key makes it
enroll again; secrets rotate without a collector restart; a collector without enrollment takes
reports without keys; an agent without a secret is told what to configure."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from processes import command, make_token, run_agent, start_collector, wait_for, write_facts

pytestmark = pytest.mark.e2e


def facts_file(tmp: Path, host_id: str) -> Path:
    return write_facts(
        tmp / f"{host_id}.json",
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        client={"version": "SP2", "activation": "self", "cluster": None},
    )


def node_key(state: Path) -> str | None:
    with sqlite3.connect(state / "outbox.sqlite3") as outbox:
        row = outbox.execute("SELECT value FROM meta WHERE key = 'node_key'").fetchone()
    return None if row is None else str(row[0])


def last_sequence(db: Path, host_id: str) -> int:
    with sqlite3.connect(db) as connection:
        row = connection.execute("SELECT last_sequence FROM hosts WHERE host_id = ?", (host_id,)).fetchone()
    return 0 if row is None else int(row[0])


def revoke(db: Path, host_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("rmsfleet-collector"), "hosts", "revoke", host_id, "--db", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_agent_enrolls_once_keeps_its_key_and_enrolls_again_after_revocation(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    secrets = tmp_path / "collector.secrets"
    secrets.write_text("first-secret\n")
    secrets.chmod(0o600)
    agent_secret = tmp_path / "agent.secret"
    agent_secret.write_text("first-secret\n")
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(secrets)])
    state = tmp_path / "state"
    log_path = tmp_path / "agent.log"
    agent: subprocess.Popen[str] | None = None
    try:
        assert "enrollment is on: secrets from" in collector.log()
        facts = facts_file(tmp_path, "enr-01")
        config = tmp_path / "agent.toml"
        config.write_text(
            f"""
[agent]
collectors = ["{collector.address}"]
interval_seconds = 0.2
jitter = 0
state_dir = "state"
facts_file = "{facts.name}"

[sender]
initial_backoff = 0.1
max_backoff = 0.5

[enroll]
secret_file = "agent.secret"
"""
        )
        with log_path.open("w") as log:
            agent = subprocess.Popen(
                [command("rmsfleet-agent"), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, text=True
            )
        wait_for(lambda: last_sequence(db, "enr-01") > 0, what="the first report")
        first_key = node_key(state)
        assert first_key
        wait_for(lambda: log_path.read_text().count("reported enr-01") >= 3, what="a few reports")
        assert log_path.read_text().count("enrolled host enr-01") == 1, "one enrollment, then the stored key"

        # Rotate the collector's secret (no restart), then revoke: the agent cannot enroll again
        # with the old secret, keeps its reports, and says why.
        secrets.write_text("# rotated\nsecond-secret\n")
        done = revoke(db, "enr-01")
        assert done.returncode == 0, done.stderr
        assert "revoked the node key of host enr-01" in done.stdout
        wait_for(lambda: "refused the enrollment secret" in log_path.read_text(), what="the refused re-enrollment")
        assert "key revoked" in collector.log()
        stuck = last_sequence(db, "enr-01")

        # The agent's secret file is read again at each attempt: fixing it is enough.
        agent_secret.write_text("second-secret\n")
        wait_for(lambda: last_sequence(db, "enr-01") > stuck, timeout=30, what="reports after re-enrolling")
        assert node_key(state) not in (None, first_key)
        assert log_path.read_text().count("enrolled host enr-01") == 2
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
        agent = None
        assert "Traceback" not in log_path.read_text()
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        assert collector.stop() == 0, collector.log()


def test_revoking_a_host_that_never_enrolled_is_an_error(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}")
    try:
        token = str(make_token(tmp_path, f"sqlite:///{db}"))
        done = collector.cli("hosts", "revoke", "nobody", "--token-file", token, check=False)
        assert done.returncode == 1
        assert done.stderr.strip() == (
            f"rmsfleet-collector: the collector at {collector.address} answered NOT_FOUND: host nobody has no node "
            "key (it never enrolled)"
        )
    finally:
        collector.stop()
    # Break-glass, straight to the database: the same refusal, after the line saying it bypasses.
    done = revoke(db, "nobody")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "rmsfleet-collector: hosts revoke: host nobody has no node key (it never enrolled)"
    )


def test_an_agent_without_a_secret_is_told_to_configure_one(tmp_path: Path, sqlite_url: str) -> None:
    secrets = tmp_path / "collector.secrets"
    secrets.write_text("s\n")
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secrets)])
    try:
        done = run_agent("--collector", collector.address, "--facts", str(facts_file(tmp_path, "nosec")), "--once")
        assert done.returncode == 5, done.stderr
        assert "requires enrollment" in done.stderr and "--enroll-secret-file" in done.stderr
        assert "UNAUTHENTICATED: no node key in the report: enroll first" in collector.log()
    finally:
        collector.stop()


def test_a_collector_without_enrollment_takes_reports_from_an_agent_with_a_secret(
    tmp_path: Path, sqlite_url: str
) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        assert "enrollment is off (no --enroll-secret-file)" in collector.log()
        secret = tmp_path / "agent.secret"
        secret.write_text("anything\n")
        facts = facts_file(tmp_path, "noenr")
        done = run_agent(
            "--collector", collector.address, "--facts", str(facts), "--once", "--enroll-secret-file", str(secret)
        )
        assert done.returncode == 0, done.stderr
        assert "runs without enrollment" in done.stderr
        assert [h["host_id"] for h in collector.cli_json("hosts")] == ["noenr"]
    finally:
        collector.stop()
