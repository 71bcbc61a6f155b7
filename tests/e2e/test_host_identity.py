"""Host identity end to end (docs/security.md, "Host identity"): real collector and agent
processes. A second machine with the enrollment secret cannot take over a host id that holds a
valid node key; revocation and an operator's expiring, single-use allowance let a host enroll
again; with --bind-host-id-to-certificate the host id must be a name of the client certificate.
The agent says why in one line, keeps its reports and retries."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from certs import make_pki, start_tls_collector
from processes import Collector, command, make_token, run_agent, start_collector, wait_for, write_facts

pytestmark = pytest.mark.e2e

HOST = "ws-1.corp.example"


def facts(tmp: Path, name: str, host_id: str = HOST, hostname: str | None = None) -> Path:
    return write_facts(
        tmp / f"{name}.json",
        host_id=host_id,
        hostname=hostname or host_id,
        forest="corp.example",
        client={"version": "SP2", "activation": "self", "cluster": None},
    )


def stored_hostname(db: Path, host_id: str = HOST) -> str | None:
    with sqlite3.connect(db) as connection:
        row = connection.execute("SELECT hostname FROM hosts WHERE host_id = ?", (host_id,)).fetchone()
    return None if row is None else str(row[0])


def admin(collector: Collector, *args: str) -> subprocess.CompletedProcess[str]:
    """`rmsfleet-collector hosts ARGS` through the collector's admin API, with an admin token."""
    db = collector.log_path.parent / "rmsfleet.db"
    token = collector.log_path.parent / "e2e-admin.token"
    if not token.exists():
        make_token(collector.log_path.parent, f"sqlite:///{db}")
    return collector.cli("hosts", *args, "--token-file", str(token), check=False)


def once(collector: Collector, facts_path: Path, state: Path, secret: Path) -> subprocess.CompletedProcess[str]:
    return run_agent(
        "--collector",
        collector.address,
        "--facts",
        str(facts_path),
        "--once",
        "--state-dir",
        str(state),
        "--enroll-secret-file",
        str(secret),
    )


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "enroll.secret"
    path.write_text("fleet-secret\n")
    path.chmod(0o600)
    return path


def test_a_second_machine_with_the_secret_cannot_take_over_an_enrolled_host(tmp_path: Path, secret: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(secret)])
    try:
        assert "is not enrolled again unless its key was revoked or an operator allowed it" in collector.log()
        owner = once(collector, facts(tmp_path, "owner", hostname="owner.corp.example"), tmp_path / "a", secret)
        assert owner.returncode == 0, owner.stderr

        intruder = once(collector, facts(tmp_path, "intruder", hostname="forged.corp.example"), tmp_path / "b", secret)
        assert intruder.returncode == 6, intruder.stderr
        line = intruder.stderr.strip().splitlines()[-1]
        assert f"refused to enroll this machine as host {HOST}: host {HOST} already holds a valid node key" in line
        assert f"rmsfleet-collector hosts allow-reenroll {HOST}" in line
        assert stored_hostname(db) == "owner.corp.example", "the intruder's facts were never written"
        assert f"refused the enrollment of host {HOST} from ipv4:127.0.0.1:" in collector.log()

        # The owner's key still works: its next report is applied.
        again = once(collector, facts(tmp_path, "owner2", hostname="owner-2.corp.example"), tmp_path / "a", secret)
        assert again.returncode == 0, again.stderr
        assert stored_hostname(db) == "owner-2.corp.example"
        metrics = collector.metrics()
        assert 'rmsfleet_enrollments_total{outcome="refused-identity"} 1.0' in metrics
        assert 'rmsfleet_enrollments_total{outcome="new"} 1.0' in metrics
    finally:
        assert collector.stop() == 0, collector.log()


def test_after_revocation_the_host_enrolls_again_and_the_old_key_is_refused(tmp_path: Path, secret: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(secret)])
    try:
        old = once(collector, facts(tmp_path, "old", hostname="old.corp.example"), tmp_path / "old", secret)
        assert old.returncode == 0, old.stderr
        revoked = admin(collector, "revoke", HOST)
        assert revoked.returncode == 0, revoked.stderr

        # The reinstalled machine (a new state directory) enrolls: the key on record was revoked.
        new = once(collector, facts(tmp_path, "new", hostname="new.corp.example"), tmp_path / "new", secret)
        assert new.returncode == 0, new.stderr
        assert stored_hostname(db) == "new.corp.example"

        # The old machine still has its revoked key: it enrolls again (UNAUTHENTICATED, key
        # revoked), and that is refused now that the new machine holds a valid key.
        stale = once(collector, facts(tmp_path, "old2", hostname="old-2.corp.example"), tmp_path / "old", secret)
        assert stale.returncode == 6, stale.stderr
        assert "already holds a valid node key" in stale.stderr
        assert stored_hostname(db) == "new.corp.example"
    finally:
        assert collector.stop() == 0, collector.log()


def test_an_allowance_admits_one_enrollment_until_it_expires_and_a_waiting_agent_takes_it(
    tmp_path: Path, secret: Path
) -> None:
    db = tmp_path / "rmsfleet.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(secret)])
    agent: subprocess.Popen[str] | None = None
    log_path = tmp_path / "agent.log"
    try:
        first = once(collector, facts(tmp_path, "first", hostname="first.corp.example"), tmp_path / "first", secret)
        assert first.returncode == 0, first.stderr

        # An allowance that expired admits nothing.
        short = admin(collector, "allow-reenroll", HOST, "--for", "1s")
        assert short.returncode == 0, short.stderr
        assert f"host {HOST} may enroll once more until" in short.stdout
        assert "its current key stays valid until the new enrollment replaces it" in short.stdout
        time.sleep(1.5)
        late = once(collector, facts(tmp_path, "late", hostname="late.corp.example"), tmp_path / "late", secret)
        assert late.returncode == 6, late.stderr
        assert stored_hostname(db) == "first.corp.example"

        # The reinstalled machine runs as a service meanwhile: refused, loud, retried.
        config = tmp_path / "agent.toml"
        replacement = facts(tmp_path, "replacement", hostname="replacement.corp.example")
        config.write_text(
            f"""
[agent]
collectors = ["{collector.address}"]
interval_seconds = 0.3
jitter = 0
state_dir = "replacement-state"
facts_file = "{replacement.name}"

[sender]
initial_backoff = 0.1
max_backoff = 0.3

[enroll]
secret_file = "{secret.name}"
"""
        )
        with log_path.open("w") as log:
            agent = subprocess.Popen(
                [command("rmsfleet-agent"), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, text=True
            )
        refusal = f"refused to enroll this machine as host {HOST}"
        wait_for(lambda: log_path.read_text().count(refusal) >= 3, what="the refusal, logged at every attempt")
        assert "ERROR" in next(line for line in log_path.read_text().splitlines() if refusal in line)
        assert "report(s) kept in the outbox, next attempt in" in log_path.read_text()
        assert stored_hostname(db) == "first.corp.example"

        # The operator allows it: the waiting agent enrolls on its next attempt, no restart.
        allowed = admin(collector, "allow-reenroll", HOST, "--for", "1h")
        assert allowed.returncode == 0, allowed.stderr
        wait_for(lambda: stored_hostname(db) == "replacement.corp.example", what="the replacement's report")
        assert f"enrolled host {HOST} from" in collector.log() and "now used up" in collector.log()

        # Used once: another machine is refused again, and the first machine's key is void.
        third = once(collector, facts(tmp_path, "third", hostname="third.corp.example"), tmp_path / "third", secret)
        assert third.returncode == 6, third.stderr
        evicted = once(
            collector, facts(tmp_path, "first2", hostname="first-2.corp.example"), tmp_path / "first", secret
        )
        assert evicted.returncode == 6, evicted.stderr
        assert "node key does not belong to host" in collector.log()
        assert stored_hostname(db) == "replacement.corp.example"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
        agent = None
        assert "Traceback" not in log_path.read_text()
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        assert collector.stop() == 0, collector.log()


def test_allow_reenroll_refuses_a_bad_duration_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            command("rmsfleet-collector"),
            "hosts",
            "allow-reenroll",
            HOST,
            "--for",
            "forever",
            "--db",
            f"sqlite:///{tmp_path / 'none.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "rmsfleet-collector: hosts allow-reenroll: --for: expected a duration such as 30m, 2h or 7d, got 'forever'"
    )
    assert not (tmp_path / "none.db").exists()


def test_with_certificate_binding_a_host_id_must_be_a_name_of_the_client_certificate(
    tmp_path: Path, sqlite_url: str, secret: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    by_cn = pki.ca.issue(HOST, server=False)
    by_san = pki.ca.issue("agent-ws-3", server=False, names=("ws-3.corp.example",))
    collector = start_tls_collector(
        tmp_path,
        sqlite_url,
        pki,
        ["--bind-host-id-to-certificate", "--enroll-secret-file", str(secret)],
        mutual=True,
    )

    def agent(host_id: str, cert: Path, key: Path, state: str) -> subprocess.CompletedProcess[str]:
        return run_agent(
            "--collector",
            collector.address,
            "--facts",
            str(facts(tmp_path, state, host_id=host_id)),
            "--once",
            "--state-dir",
            str(tmp_path / state),
            "--enroll-secret-file",
            str(secret),
            "--tls-ca",
            str(pki.ca.cert),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        )

    try:
        assert "host ids are bound to client certificates" in collector.log()
        assert agent(HOST, by_cn.cert, by_cn.key, "cn").returncode == 0
        assert agent("ws-3.corp.example", by_san.cert, by_san.key, "san").returncode == 0

        # ws-1's certificate cannot speak for ws-2: refused at enrollment, in one line.
        mismatch = agent("ws-2.corp.example", by_cn.cert, by_cn.key, "mismatch")
        assert mismatch.returncode == 6, mismatch.stderr
        line = mismatch.stderr.strip().splitlines()[-1]
        assert line.endswith(
            f"refused to enroll this machine as host ws-2.corp.example: host ws-2.corp.example is not named by the "
            f"client certificate (CN {HOST}): the host id must be a DNS name of its subjectAltName or its CN; "
            "give this host a certificate for ws-2.corp.example, or report under a name the certificate carries "
            "([host] host_id)"
        )
        # ... and at report time, with a node key it holds (enrolled under its own name first).
        sneaky = agent("ws-3.corp.example", by_cn.cert, by_cn.key, "san")
        assert sneaky.returncode == 6, sneaky.stderr
        assert "host ws-3.corp.example is not named by the client certificate" in sneaky.stderr
        assert "PERMISSION_DENIED: host ws-3.corp.example is not named by the client certificate" in collector.log()
        listed = {h["host_id"] for h in _hosts(collector, pki)}
        assert listed == {HOST, "ws-3.corp.example"}
    finally:
        assert collector.stop() == 0, collector.log()


def _hosts(collector: Collector, pki: object) -> list[dict[str, object]]:
    import json

    from certs import Pki

    assert isinstance(pki, Pki)
    done = subprocess.run(
        [
            command("rmsfleet-collector"),
            "hosts",
            "--json",
            "--collector",
            collector.address,
            "--tls-ca",
            str(pki.ca.cert),
            "--tls-cert",
            str(pki.client.cert),
            "--tls-key",
            str(pki.client.key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    hosts: list[dict[str, object]] = json.loads(done.stdout)
    return hosts
