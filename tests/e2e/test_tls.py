"""TLS and mutual TLS between real agent and collector processes, the loopback rule for
plaintext, and certificates that rotate without a restart. Certificates come from a throwaway
CA made for each test (certs.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from certs import make_pki, start_tls_collector
from processes import command, run_agent, wait_for, write_facts

pytestmark = pytest.mark.e2e


def facts_file(tmp: Path, host_id: str) -> Path:
    return write_facts(
        tmp / f"{host_id}.json",
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        client={"version": "SP2", "activation": "self", "cluster": None},
    )


def query(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("rmsfleet-collector"), "hosts", "--collector", address, "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_agent_reports_over_tls_and_the_cli_queries_over_tls(tmp_path: Path, sqlite_url: str) -> None:
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, sqlite_url, pki)
    try:
        assert "TLS on 127.0.0.1:0: serving certificate" in collector.log()
        assert "issued by CN=rmsfleet fleet test CA" in collector.log()
        facts = facts_file(tmp_path, "tls-01")
        done = run_agent(
            "--collector", collector.address, "--facts", str(facts), "--once", "--tls-ca", str(pki.ca.cert)
        )
        assert done.returncode == 0, done.stderr
        listed = query(collector.address, "--tls-ca", str(pki.ca.cert))
        assert listed.returncode == 0, listed.stderr
        assert '"host_id": "tls-01"' in listed.stdout
        # The CLI follows the loopback rule too: plaintext to this TLS port fails, clearly.
        plain = query(collector.address, "--timeout", "3")
        assert plain.returncode == 3 and "cannot reach the collector" in plain.stderr
    finally:
        assert collector.stop() == 0, collector.log()


def test_mutual_tls_accepts_an_agent_with_a_certificate_from_the_client_ca(tmp_path: Path, sqlite_url: str) -> None:
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, sqlite_url, pki, mutual=True)
    try:
        assert "mutual TLS: clients must present a certificate signed by a CA in" in collector.log()
        facts = facts_file(tmp_path, "mtls-01")
        done = run_agent(
            "--collector",
            collector.address,
            "--facts",
            str(facts),
            "--once",
            "--tls-ca",
            str(pki.ca.cert),
            "--tls-cert",
            str(pki.client.cert),
            "--tls-key",
            str(pki.client.key),
        )
        assert done.returncode == 0, done.stderr
        listed = query(
            collector.address,
            "--tls-ca",
            str(pki.ca.cert),
            "--tls-cert",
            str(pki.client.cert),
            "--tls-key",
            str(pki.client.key),
        )
        assert listed.returncode == 0, listed.stderr
        assert '"host_id": "mtls-01"' in listed.stdout
    finally:
        assert collector.stop() == 0, collector.log()


def test_the_collector_refuses_plaintext_on_a_non_loopback_address_without_insecure(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    done = subprocess.run(
        [
            command("rmsfleet-collector"),
            "serve",
            "--db",
            db,
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--listen 0.0.0.0:0: refusing plaintext gRPC on an address other hosts can reach" in lines[0]
    assert "--insecure" in lines[0] and "--tls-cert" in lines[0]
    assert not (tmp_path / "x.db").exists(), "nothing may be started or created"


def test_with_insecure_the_collector_serves_plaintext_on_any_address_and_says_so(tmp_path: Path) -> None:
    log_path = tmp_path / "insecure.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                command("rmsfleet-collector"),
                "serve",
                "--db",
                f"sqlite:///{tmp_path / 'insecure.db'}",
                "--listen",
                "0.0.0.0:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "RMSFLEET_INSECURE": "1"},
        )
    try:
        wait_for(lambda: "gRPC on 0.0.0.0:0 (port" in log_path.read_text(), what="the collector to start")
        assert "plaintext gRPC on 0.0.0.0:0 (--insecure)" in log_path.read_text()
    finally:
        process.terminate()
        assert process.wait(30) == 0, log_path.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "CA"], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", "CERT", "--tls-key", "OTHERKEY"], "not a PEM certificate chain with its matching private key"),
        (["--tls-cert", "CERT", "--tls-key", "KEY", "--insecure"], "--insecure turns TLS off"),
        (["--enroll-secret-file", "MISSING"], "--enroll-secret-file"),
    ],
)
def test_bad_security_settings_stop_the_collector_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    pki = make_pki(tmp_path / "pki")
    replace = {
        "CERT": str(pki.server.cert),
        "KEY": str(pki.server.key),
        "OTHERKEY": str(pki.client.key),
        "CA": str(pki.ca.cert),
        "MISSING": str(tmp_path / "no-such-file"),
    }
    done = subprocess.run(
        [
            command("rmsfleet-collector"),
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            *[replace.get(a, a) for a in args],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("rmsfleet-collector:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path, sqlite_url: str) -> None:
    """Replace the certificate and key files: new connections get the new certificate."""
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, sqlite_url, pki)
    try:
        facts = facts_file(tmp_path, "rot-01")
        first = run_agent(
            "--collector", collector.address, "--facts", str(facts), "--once", "--tls-ca", str(pki.ca.cert)
        )
        assert first.returncode == 0, first.stderr
        renewed = pki.other_ca.issue("collector-renewed", server=True)
        # Write the new pair over the served files (key first: a reader between the two writes
        # sees a mismatch, which is logged and ignored until both are in place).
        pki.server.key.write_bytes(renewed.key.read_bytes())
        pki.server.cert.write_bytes(renewed.cert.read_bytes())
        args = ("--collector", collector.address, "--facts", str(facts), "--once", "--deadline", "5")
        after = run_agent(*args, "--tls-ca", str(pki.other_ca.cert))
        assert after.returncode == 0, after.stderr + collector.log()
        old = run_agent(*args, "--tls-ca", str(pki.ca.cert))
        assert old.returncode == 3 and "TLS certificate is not trusted" in old.stderr
        assert "TLS files changed: now serving" in collector.log()
    finally:
        assert collector.stop() == 0, collector.log()
