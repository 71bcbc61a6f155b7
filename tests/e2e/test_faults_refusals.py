"""(e) Refusals with real processes: a wrong node key, a wrong CA, a missing (or foreign) client
certificate and a bad enrollment secret are each refused, nothing is stored, and both sides say
why: the agent on stderr (one line naming the cause), the collector in its log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from certs import make_pki, start_tls_collector
from processes import run_agent, start_collector, write_facts

pytestmark = pytest.mark.e2e

SECRET = "fleet-enrollment-secret-1"


def facts_file(tmp: Path, host_id: str, version: int = 1) -> Path:
    return write_facts(
        tmp / f"{host_id}.json",
        host_id=host_id,
        hostname=f"{host_id}-v{version}.corp.example",
        forest="corp.example",
        client={"version": "SP2", "activation": "self", "cluster": None},
    )


def secret_files(tmp: Path) -> tuple[Path, Path]:
    collector_side = tmp / "collector.secrets"
    collector_side.write_text(f"# enrollment secrets, one per line\n{SECRET}\n")
    collector_side.chmod(0o600)
    agent_side = tmp / "agent.secret"
    agent_side.write_text(SECRET + "\n")
    agent_side.chmod(0o600)
    return collector_side, agent_side


def hostnames(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT host_id, hostname FROM hosts").fetchall())


def agent_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rmsfleet-agent:")]


def test_a_report_with_another_hosts_node_key_is_refused_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    collector_secrets, agent_secret = secret_files(tmp_path)
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(collector_secrets)])
    try:
        common = ("--collector", collector.address, "--enroll-secret-file", str(agent_secret), "--once")
        for host in ("key-a", "key-b"):
            done = run_agent(*common, "--facts", str(facts_file(tmp_path, host)), "--state-dir", str(tmp_path / host))
            assert done.returncode == 0, done.stderr
        # Host b's agent now holds host a's key (a stolen or mixed-up key).
        with sqlite3.connect(tmp_path / "key-a" / "outbox.sqlite3") as outbox:
            key_a = outbox.execute("SELECT value FROM meta WHERE key = 'node_key'").fetchone()[0]
        with sqlite3.connect(tmp_path / "key-b" / "outbox.sqlite3") as outbox:
            outbox.execute("UPDATE meta SET value = ? WHERE key = 'node_key'", (key_a,))
        done = run_agent(
            *common, "--facts", str(facts_file(tmp_path, "key-b", 2)), "--state-dir", str(tmp_path / "key-b")
        )
        assert done.returncode == 6, done.stderr
        (line,) = agent_errors(done.stderr)
        # The agent tries to enroll (host b holds a valid key, so that is refused too) and says so.
        assert "refused to enroll this machine as host key-b: host key-b already holds a valid node key" in line
        assert "PERMISSION_DENIED: node key does not belong to host key-b" in collector.log()
        # Never a silent overwrite: b keeps its first facts; the report is kept for a retry, never
        # set aside (every later report of the host would go the same way).
        assert hostnames(db) == {"key-a": "key-a-v1.corp.example", "key-b": "key-b-v1.corp.example"}
        with sqlite3.connect(tmp_path / "key-b" / "outbox.sqlite3") as outbox:
            assert outbox.execute("SELECT count(*) FROM pending").fetchone()[0] == 1
            assert outbox.execute("SELECT count(*) FROM refused").fetchone()[0] == 0
    finally:
        assert collector.stop() == 0, collector.log()


def test_a_bad_enrollment_secret_is_refused_on_both_sides(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    collector_secrets, _agent_secret = secret_files(tmp_path)
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret\n")
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(collector_secrets)])
    try:
        facts = facts_file(tmp_path, "bad-secret")
        done = run_agent(
            "--collector", collector.address, "--facts", str(facts), "--once", "--enroll-secret-file", str(wrong)
        )
        assert done.returncode == 5, done.stderr
        (line,) = agent_errors(done.stderr)
        assert f"the collector at {collector.address} refused the enrollment secret from {wrong}" in line
        assert "not-the-secret" not in done.stderr  # the secret itself is never printed
        log = collector.log()
        assert "refused the enrollment of host bad-secret" in log
        assert f"the enrollment secret is not one of those in {collector_secrets}" in log
        assert "not-the-secret" not in log
        assert hostnames(db) == {}
    finally:
        assert collector.stop() == 0, collector.log()


def test_an_agent_that_does_not_trust_the_collectors_ca_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, f"sqlite:///{db}", pki)
    try:
        facts = facts_file(tmp_path, "wrong-ca")
        done = run_agent(
            "--collector",
            collector.address,
            "--facts",
            str(facts),
            "--once",
            "--deadline",
            "5",
            "--tls-ca",
            str(pki.other_ca.cert),
        )
        assert done.returncode == 3, done.stderr
        (line,) = agent_errors(done.stderr)
        assert "the collector's TLS certificate is not trusted" in line
        assert f"not signed by a CA in {pki.other_ca.cert}" in line
        # Under TLS 1.3 the client rejects the server's certificate after the server finished its
        # side of the handshake: gRPC tells the collector nothing. Its log names the CA agents
        # must trust, to compare with the agent's message.
        assert "issued by CN=rmsfleet fleet test CA" in collector.log()
        assert hostnames(db) == {}
    finally:
        assert collector.stop() == 0, collector.log()


@pytest.mark.parametrize("client", ["none", "foreign"])
def test_mutual_tls_refuses_an_agent_without_a_certificate_from_the_client_ca(tmp_path: Path, client: str) -> None:
    db = tmp_path / "rmsfleet.db"
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, f"sqlite:///{db}", pki, mutual=True)
    try:
        facts = facts_file(tmp_path, "no-cert")
        certificate = (
            [] if client == "none" else ["--tls-cert", str(pki.stranger.cert), "--tls-key", str(pki.stranger.key)]
        )
        done = run_agent(
            "--collector",
            collector.address,
            "--facts",
            str(facts),
            "--once",
            "--deadline",
            "5",
            "--tls-ca",
            str(pki.ca.cert),
            *certificate,
        )
        assert done.returncode == 3, done.stderr
        (line,) = agent_errors(done.stderr)
        assert "the collector closed the connection" in line
        if client == "none":
            assert "if the collector requires client certificates (mutual TLS), give one with --tls-cert" in line
            expected = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
        else:
            assert "it may not trust the CA that signed --tls-cert" in line
            expected = "CERTIFICATE_VERIFY_FAILED"
        # gRPC's own log line in the collector's log (at gRPC's default verbosity).
        log = collector.log()
        assert "Handshake failed" in log and expected in log, log
        assert hostnames(db) == {}
    finally:
        assert collector.stop() == 0, collector.log()
