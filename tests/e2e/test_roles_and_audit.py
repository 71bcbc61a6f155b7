"""Roles, the admin API and the audit trail end to end (docs/security.md, "Roles and the admin
API"): real collector, agent and CLI processes over loopback. Queries without a credential are
refused on a --require-credentials collector; a reader reads and cannot administer; an admin
exempts, revokes and allows re-enrollment through the collector; expired and revoked tokens are
refused; every admin action and every refusal is in `audit --json` with its actor and peer and in
rmsfleet_admin_actions_total; the database keeps no token; break-glass --db says so and is
audited; a scanner token enrolls in place of the secret; client certificates carry roles."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import make_pki, start_tls_collector
from processes import Collector, command, make_token, metric_value, run_agent, start_collector, write_facts

from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc, query_pb2, query_pb2_grpc

pytestmark = pytest.mark.e2e

HOST = "ws-1.corp.example"


def cli(
    collector: Collector, *args: str, token: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`rmsfleet-collector ARGS --collector ADDRESS [--token-file TOKEN]`, no RMSFLEET_* but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RMSFLEET_")}
    extra = ["--token-file", str(token)] if token is not None else []
    return subprocess.run(
        [command("rmsfleet-collector"), *args, "--collector", collector.address, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


def one_line(done: subprocess.CompletedProcess[str], code: int, *expected: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


def audit(collector: Collector, token: Path) -> list[dict[str, Any]]:
    done = cli(collector, "audit", "--json", token=token)
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


def find(entries: list[dict[str, Any]], **wanted: str) -> dict[str, Any]:
    matching = [e for e in entries if all(e[k] == v for k, v in wanted.items())]
    assert len(matching) == 1, (wanted, entries)
    return matching[0]


EXEMPT = [
    "exemptions",
    "add",
    "--policy",
    "stale-agent",
    "--subject-kind",
    "host",
    "--subject",
    HOST,
    "--reason",
    "kiosk",
]


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "enroll.secret"
    path.write_text("fleet-secret\n")
    path.chmod(0o600)
    return path


def test_who_may_read_and_administer_and_the_audit_trail(tmp_path: Path, secret: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    url = f"sqlite:///{db}"
    collector = start_collector(tmp_path, url, ["--require-credentials", "--enroll-secret-file", str(secret)])
    try:
        assert "every query needs a credential with the reader or admin role" in collector.log()
        # No credential: queries are refused too, in one line, on this collector.
        one_line(cli(collector, "hosts"), 1, "UNAUTHENTICATED", "needs a credential for queries")

        admin = make_token(tmp_path, url)
        made = cli(collector, "tokens", "create", "reader-1", "--role", "reader", token=admin)
        assert made.returncode == 0, made.stderr
        assert "created token reader-1 (role reader, expires never); it is shown once" in made.stderr
        reader = tmp_path / "reader.token"
        reader.write_text(made.stdout)
        reader_token = made.stdout.strip()
        assert reader_token.startswith("rmsfleet_")

        # A reader reads (by file, or by the variable), and cannot exempt.
        assert cli(collector, "hosts", token=reader).returncode == 0
        assert cli(collector, "hosts", env={"RMSFLEET_TOKEN": reader_token}).returncode == 0
        one_line(
            cli(collector, *EXEMPT, token=reader),
            1,
            "PERMISSION_DENIED: token:reader-1 has the role reader; this call needs admin",
        )
        assert cli(collector, "exemptions", "--json", token=reader).stdout.strip() == "[]"

        # An admin exempts and removes, revokes a host and allows it to enroll again.
        added = cli(collector, *EXEMPT, token=admin)
        assert added.returncode == 0 and added.stdout.startswith(f"exempted host {HOST} from stale-agent"), added
        listed = json.loads(cli(collector, "exemptions", "--json", token=admin).stdout)
        assert [(e["policy"], e["subject"]) for e in listed] == [("stale-agent", HOST)]
        bad = cli(collector, *EXEMPT[:2], "--policy", "no-such", *EXEMPT[4:], token=admin)
        one_line(bad, 2, "INVALID_ARGUMENT: policy: expected a known policy")
        removed = cli(collector, "exemptions", "remove", "--id", str(listed[0]["id"]), token=admin)
        assert removed.returncode == 0 and removed.stdout.strip() == f"removed exemption {listed[0]['id']}"
        facts = write_facts(
            tmp_path / "ws1.json",
            host_id=HOST,
            hostname=HOST,
            forest="corp.example",
            client={"version": "SP2", "activation": "self", "cluster": None},
        )
        agent = ["--collector", collector.address, "--facts", str(facts), "--once", "--enroll-secret-file", str(secret)]
        assert run_agent(*agent, "--state-dir", str(tmp_path / "agent")).returncode == 0
        revoked = cli(collector, "hosts", "revoke", HOST, token=admin)
        assert revoked.returncode == 0 and revoked.stdout.startswith(f"revoked the node key of host {HOST}"), revoked
        allowed = cli(collector, "hosts", "allow-reenroll", HOST, "--for", "2h", token=admin)
        assert allowed.returncode == 0 and f"host {HOST} may enroll once more until" in allowed.stdout, allowed

        # Expired and revoked tokens are refused, and say which.
        short = cli(collector, "tokens", "create", "short", "--role", "reader", "--expires-in", "1s", token=admin)
        assert short.returncode == 0, short.stderr
        short_file = tmp_path / "short.token"
        short_file.write_text(short.stdout)
        time.sleep(1.5)
        one_line(cli(collector, "hosts", token=short_file), 1, "UNAUTHENTICATED: the token short expired at")
        assert cli(collector, "tokens", "revoke", "reader-1", token=admin).returncode == 0
        one_line(cli(collector, "hosts", token=reader), 1, "UNAUTHENTICATED: the token reader-1 is revoked")
        forged = tmp_path / "forged.token"
        forged.write_text(reader_token[:-4] + "AAAA")
        one_line(cli(collector, "hosts", token=forged), 1, "UNAUTHENTICATED: the token is not valid on this collector")

        # A token file that is not there: one line naming it, nothing sent.
        missing = tmp_path / "nowhere.token"
        assert one_line(cli(collector, "hosts", token=missing), 2) == (
            f"rmsfleet-collector: --token-file {missing}: cannot read: No such file or directory"
        )

        # Break-glass: straight to the database, says so, audited as such.
        glass = subprocess.run(
            [command("rmsfleet-collector"), *EXEMPT, "--db", url], capture_output=True, text=True, check=False
        )
        assert glass.returncode == 0, glass.stderr
        assert "break-glass: writing to the database directly, bypassing the collector" in glass.stderr
        glass_bad = subprocess.run(
            [command("rmsfleet-collector"), *EXEMPT[:-1], "x" * 1001, "--db", url],
            capture_output=True,
            text=True,
            check=False,
        )
        assert glass_bad.returncode == 2
        assert glass_bad.stderr.strip().splitlines()[-1] == (
            "rmsfleet-collector: exemptions add: --reason: expected at most 1000 characters, got 1001"
        )

        entries = audit(collector, admin)
        peer = "ipv4:127.0.0.1:"
        refused = find(entries, actor="token:reader-1", action="AddExemption")
        assert (refused["outcome"], refused["status"]) == ("refused", "PERMISSION_DENIED")
        assert refused["peer"].startswith(peer) and refused["target"] == f"exemption stale-agent host {HOST}"
        for action in ("RemoveExemption", "RevokeHost", "AllowReenroll", "RevokeToken"):
            entry = find(entries, actor="token:e2e-admin", action=action)
            assert (entry["outcome"], entry["status"]) == ("ok", "OK") and entry["peer"].startswith(peer), entry
        assert find(entries, actor="token:e2e-admin", action="RevokeHost")["target"] == f"host {HOST}"
        invalid = find(entries, actor="token:e2e-admin", action="AddExemption", status="INVALID_ARGUMENT")
        assert invalid["reason"].startswith("policy: expected a known policy")
        assert find(entries, actor="token:e2e-admin", action="AddExemption", outcome="ok")["peer"].startswith(peer)
        assert find(entries, actor="token:short", action="ListHosts")["status"] == "UNAUTHENTICATED"
        assert find(entries, actor="token:reader-1", action="ListHosts")["reason"] == "the token reader-1 is revoked"
        assert find(entries, actor="break-glass", action="AddExemption", outcome="ok")["peer"] == "local"
        assert find(entries, actor="break-glass", outcome="refused")["status"] == "INVALID_ARGUMENT"
        assert find(entries, actor="break-glass", action="CreateToken")["target"].startswith("token e2e-admin")
        assert entries == sorted(entries, key=lambda e: e["id"], reverse=True), "newest first"
        assert (
            len(audit_limited := json.loads(cli(collector, "audit", "--json", "--limit", "2", token=admin).stdout)) == 2
        )
        assert audit_limited == entries[:2]

        # The token list shows no secret; the database holds only hashes; no log names a token.
        tokens = json.loads(cli(collector, "tokens", "--json", token=admin).stdout)
        assert [(t["name"], t["role"], t["created_by"]) for t in tokens] == [
            ("e2e-admin", "admin", "break-glass"),
            ("reader-1", "reader", "token:e2e-admin"),
            ("short", "reader", "token:e2e-admin"),
        ]
        assert tokens[1]["revoked_at"] is not None and tokens[2]["expires_at"] is not None
        secrets = [admin.read_text().strip(), reader_token, short_file.read_text().strip()]
        with sqlite3.connect(db) as connection:
            rows = connection.execute("SELECT * FROM api_tokens").fetchall()
            hashes = {row[0] for row in connection.execute("SELECT secret_hash FROM api_tokens")}
            dump = "\n".join(connection.iterdump())
        assert len(rows) == 3
        assert hashes == {"sha256:" + hashlib.sha256(s.encode()).hexdigest() for s in secrets}
        for token in secrets:
            assert token not in dump and token not in collector.log()
            # The random part alone is not there either (the lookup id before it is, by design).
            assert token[len("rmsfleet_") + 17 :] not in dump

        metrics = collector.metrics()
        name = "rmsfleet_admin_actions_total"
        assert metric_value(metrics, name, action="AddExemption", outcome="ok") == 1
        assert metric_value(metrics, name, action="AddExemption", outcome="permission_denied") == 1
        assert metric_value(metrics, name, action="AddExemption", outcome="invalid_argument") == 1
        assert metric_value(metrics, name, action="RevokeHost", outcome="ok") == 1
        # Refused queries are counted with the others, by their code.
        rpcs = "rmsfleet_rpcs_total"
        assert metric_value(metrics, rpcs, method="ListHosts", code="UNAUTHENTICATED") == 4
        assert metric_value(metrics, rpcs, method="AddExemption", code="PERMISSION_DENIED") == 1
        assert metric_value(metrics, rpcs, method="RevokeHost", code="OK") == 1
    finally:
        assert collector.stop() == 0, collector.log()


def test_on_loopback_reads_need_no_credential_but_admin_calls_do(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        assert "queries without a credential are allowed on this loopback listener" in collector.log()
        assert cli(collector, "hosts").returncode == 0
        one_line(cli(collector, *EXEMPT), 1, "UNAUTHENTICATED: this collector needs a credential for admin calls")
        admin = make_token(tmp_path, sqlite_url)
        entry = find(audit(collector, admin), action="AddExemption")
        assert (entry["actor"], entry["status"]) == ("anonymous", "UNAUTHENTICATED")
    finally:
        assert collector.stop() == 0, collector.log()


def test_a_scanner_token_enrolls_in_place_of_the_secret_and_does_nothing_else(
    tmp_path: Path, sqlite_url: str, secret: Path
) -> None:
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secret)])
    try:
        scanner = make_token(tmp_path, sqlite_url, "scanner-1", "scanner").read_text().strip()
        reader = make_token(tmp_path, sqlite_url, "reader-1", "reader").read_text().strip()
        with grpc.insecure_channel(collector.address) as channel:
            inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
            query = query_pb2_grpc.QueryServiceStub(channel)

            def enroll(host: str, token: str) -> Any:
                return inventory.Enroll(
                    inventory_pb2.EnrollRequest(host_id=host),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )

            assert enroll("scanned-1.corp.example", scanner).node_key
            # Its own node key per host: the identity rule holds for a scanner too.
            with pytest.raises(grpc.RpcError) as again:
                enroll("scanned-1.corp.example", scanner)
            assert again.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "already holds a valid node key" in (again.value.details() or "")
            with pytest.raises(grpc.RpcError) as as_reader:
                enroll("scanned-2.corp.example", reader)
            assert as_reader.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert as_reader.value.details() == "token:reader-1 has the role reader; this call needs scanner"
            with pytest.raises(grpc.RpcError) as reading:
                query.ListHosts(
                    query_pb2.ListHostsRequest(), metadata=(("authorization", f"Bearer {scanner}"),), timeout=10
                )
            assert reading.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "enrolled host scanned-1.corp.example from ipv4:127.0.0.1:" in collector.log()
        assert "by token:scanner-1" in collector.log()
        # Which credential enrolled the host is in the audit trail, with the enrollment.
        admin = make_token(tmp_path, sqlite_url)
        entries = audit(collector, admin)
        enrolled = find(entries, action="Enroll", actor="token:scanner-1")
        assert (enrolled["target"], enrolled["outcome"]) == ("host scanned-1.corp.example", "ok")
        assert find(entries, action="Enroll", actor="token:reader-1")["status"] == "PERMISSION_DENIED"
        # Without a token, agents enroll with the secret as before.
        facts = write_facts(
            tmp_path / "a.json",
            host_id=HOST,
            hostname=HOST,
            forest="corp.example",
            client={"version": "SP2", "activation": "self", "cluster": None},
        )
        done = run_agent(
            "--collector", collector.address, "--facts", str(facts), "--once", "--enroll-secret-file", str(secret),
            "--state-dir", str(tmp_path / "agent"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        assert collector.stop() == 0, collector.log()


def test_client_certificates_carry_the_roles_of_the_roles_file(tmp_path: Path, sqlite_url: str) -> None:
    pki = make_pki(tmp_path / "pki")
    viewer = pki.ca.issue("viewer", server=False, names=("viewer.ops.example",))
    roles = tmp_path / "roles"
    roles.write_text("# who may do what\nviewer.ops.example reader\nops.example admin  # not the viewer\n")
    collector = start_tls_collector(
        tmp_path, sqlite_url, pki, ["--require-credentials", "--certificate-roles", str(roles)], mutual=True
    )

    def as_cert(issued: Any, *args: str) -> subprocess.CompletedProcess[str]:
        tls = ["--tls-ca", str(pki.ca.cert), "--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
        return cli(collector, *args, *tls)

    try:
        assert as_cert(viewer, "hosts").returncode == 0
        one_line(
            as_cert(viewer, *EXEMPT),
            1,
            "PERMISSION_DENIED: certificate:viewer.ops.example has the role reader; this call needs admin",
        )
        # A certificate the file does not name has no role.
        one_line(as_cert(pki.client, "hosts"), 1, "UNAUTHENTICATED")
    finally:
        assert collector.stop() == 0, collector.log()

    roles.write_text("viewer.ops.example reader\nops.example owner\n")
    done = subprocess.run(
        [command("rmsfleet-collector"), "serve", "--db", sqlite_url, "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
         "--tls-client-ca", str(pki.ca.cert), "--certificate-roles", str(roles)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"rmsfleet-collector: --certificate-roles {roles}:2: expected one of reader, admin, scanner"
    )
