"""The agent's command line: `check-config`, `--once` with and without a state directory,
fail-over between collector addresses, the state directory rules, signals, and the loopback
rule for plaintext."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from processes import command, free_port, run_agent, start_collector, wait_for, write_facts

from rmsfleet.agent.config import TlsConfig
from rmsfleet.contract.address import is_loopback_address

pytestmark = pytest.mark.e2e


def facts_file(tmp: Path, host_id: str, hostname: str | None = None) -> Path:
    return write_facts(
        tmp / f"{host_id}.json",
        host_id=host_id,
        hostname=hostname or f"{host_id}.corp.example",
        forest="corp.example",
        client={"version": "SP2", "activation": "self", "cluster": None},
    )


def agent(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("rmsfleet-agent"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def last_sequence(db: Path, host_id: str) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT last_sequence FROM hosts WHERE host_id = ?", (host_id,)).fetchone()[0])


def test_check_config_prints_the_effective_configuration_without_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "agent.secret"
    secret.write_text("do-not-print-me\n")
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\ncollectors = ["collector.corp.example:50051"]\n[sender]\ninitial_backoff = 2\n')
    done = agent(
        "check-config",
        "--config",
        str(config),
        "--facts",
        str(facts_file(tmp_path, "cc")),
        "--enroll-secret-file",
        str(secret),
        env={"RMSFLEET_JITTER": "0.2"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'collectors = ["collector.corp.example:50051"]' in out and "agent.toml:2" in out
    assert "initial_backoff = 2.0  # " in out
    assert "jitter = 0.2  # env RMSFLEET_JITTER" in out
    assert f'secret_file = "{secret}"  # flag --enroll-secret-file' in out
    assert "do-not-print-me" not in out + done.stderr


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("[sender]\ninitial_backof = 1\n", [], "agent.toml:2: [sender] initial_backof: unknown key"),
        ("", [], "no collector address"),
        ("", ["--collector", "c:1", "--enroll-secret-file", "/no/such/secret"], "enroll secret_file /no/such/secret"),
        ("", ["--collector", "c:1", "--tls-ca", "/no/such/ca.pem"], "tls ca_file /no/such/ca.pem: cannot read"),
    ],
)
def test_check_config_refuses_a_bad_configuration_with_one_line(
    tmp_path: Path, toml: str, args: list[str], message: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    done = agent("check-config", "--config", str(config), "--facts", str(facts_file(tmp_path, "x")), *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert done.stdout == ""


def test_once_without_a_state_directory_leaves_nothing_behind_and_sequences_still_grow(
    tmp_path: Path, sqlite_url: str
) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    try:
        facts = facts_file(tmp_path, "once-01")
        db = Path(sqlite_url.removeprefix("sqlite:///"))
        sequences = []
        for _ in range(2):
            done = agent(
                "--collector", collector.address, "--facts", str(facts), "--once", env={"TMPDIR": str(scratch)}
            )
            assert done.returncode == 0, done.stderr
            sequences.append(last_sequence(db, "once-01"))
        assert sequences[1] > sequences[0]
        assert list(scratch.iterdir()) == [], "the temporary outbox is removed at exit"
    finally:
        collector.stop()


def test_once_with_a_state_directory_sends_what_an_earlier_run_left(tmp_path: Path, sqlite_url: str) -> None:
    facts = facts_file(tmp_path, "left-01", "left-01-v1.corp.example")
    state = tmp_path / "state"
    port = free_port()
    down = agent("--collector", f"127.0.0.1:{port}", "--facts", str(facts), "--once", "--state-dir", str(state))
    assert down.returncode == 3 and "cannot reach the collector" in down.stderr
    facts_file(tmp_path, "left-01", "left-01-v2.corp.example")
    collector = start_collector(tmp_path, sqlite_url, ["--listen", f"127.0.0.1:{port}"])
    try:
        done = agent("--collector", collector.address, "--facts", str(facts), "--once", "--state-dir", str(state))
        assert done.returncode == 0, done.stderr
        show = collector.cli_json("hosts", "show", "left-01")
        assert [h["hostname"] for h in show["history"]] == ["left-01-v1.corp.example", "left-01-v2.corp.example"]
    finally:
        collector.stop()


def test_reports_fail_over_to_the_next_collector_address(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        dead = f"127.0.0.1:{free_port()}"
        facts = facts_file(tmp_path, "fo-01")
        done = run_agent(
            "--collector", f"{dead},{collector.address}", "--facts", str(facts), "--once", "--deadline", "3"
        )
        assert done.returncode == 0, done.stderr
        assert f"cannot reach the collector at {dead}" in done.stderr
        assert f"trying {collector.address}" in done.stderr
        assert f"to {collector.address}: applied" in done.stderr
        # Every address down: the last failure is the one-line error.
        other = f"127.0.0.1:{free_port()}"
        done = run_agent("--collector", f"{dead},{other}", "--facts", str(facts), "--once", "--deadline", "3")
        assert done.returncode == 3
        assert done.stderr.strip().splitlines()[-1].startswith(f"rmsfleet-agent: cannot reach the collector at {other}")
    finally:
        collector.stop()


def test_an_unusable_explicit_state_directory_is_an_error(tmp_path: Path, sqlite_url: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = agent(
        "--collector", "127.0.0.1:9", "--facts", str(facts_file(tmp_path, "sd")), "--state-dir", str(blocker / "state")
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create the state directory" in lines[0], done.stderr


def test_the_service_falls_back_to_a_temporary_outbox_when_the_default_is_unusable(
    tmp_path: Path, sqlite_url: str
) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [command("rmsfleet-agent"), "--collector", collector.address, "--facts", str(facts_file(tmp_path, "fb"))],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            # The default state directory comes from systemd's STATE_DIRECTORY: make it unusable.
            env={**os.environ, "STATE_DIRECTORY": str(blocker / "state")},
        )
    try:
        wait_for(lambda: "reported fb" in log_path.read_text(), what="a report through the temporary outbox")
        assert "using a temporary outbox" in log_path.read_text()
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        collector.stop()


def test_plaintext_only_to_loopback_unless_insecure() -> None:
    for address in ("127.0.0.1:50051", "127.8.9.10:1", "localhost:50051", "[::1]:50051"):
        assert is_loopback_address(address), address
        assert TlsConfig().plaintext_to(address)
        assert not TlsConfig(ca_file=Path("ca.pem")).plaintext_to(address)
    for address in ("10.0.0.5:50051", "collector.corp.example:50051", "[2001:db8::1]:50051", "0.0.0.0:1"):
        assert not is_loopback_address(address), address
        assert not TlsConfig().plaintext_to(address)
        assert TlsConfig(insecure=True).plaintext_to(address)


def test_the_agent_cli_module_runs_under_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rmsfleet.agent.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "rmsfleet-agent" in done.stdout
