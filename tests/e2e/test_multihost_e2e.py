"""Many hosts from one process (multihost.py) against a real collector process over loopback
gRPC: each host arrives as its own host with its own sequences, and with enrollment on each
host enrolls with its own node key (a revoked key concerns that host only)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from processes import command, start_collector

from rmsfleet.agent.config import AgentConfig, SenderConfig
from rmsfleet.agent.multihost import HostOutboxes, HostStatus
from rmsfleet.agent.transport import open_links
from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    ServerFacts,
    Version,
)

pytestmark = pytest.mark.e2e

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def server(host_id: str, version: Version) -> HostFacts:
    return HostFacts(
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        server=ServerFacts(
            version, "https://rms.corp.example", ClusterKind.ROOT_CERTIFICATION, None, Enrollment.OFFLINE
        ),
        client=ClientFacts(Version.SP2, Activation.SELF, "https://rms.corp.example"),
    )


def agent_config(tmp_path: Path, address: str, secret_file: Path | None = None) -> AgentConfig:
    return AgentConfig(
        state_dir=tmp_path / "state",
        collectors=(address,),
        jitter=0.0,
        enroll_secret_file=secret_file,
        sender=SenderConfig(initial_backoff=0.1, max_backoff=0.5, rpc_deadline_seconds=10),
    )


def stored_hosts(db: Path) -> dict[str, tuple[int, str]]:
    """host id -> (last sequence, server version) as the collector stored them."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT host_id, last_sequence, server_version FROM hosts").fetchall()
    return {row[0]: (int(row[1]), str(row[2])) for row in rows}


def key_hashes(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT host_id, key_hash FROM node_keys WHERE revoked_at IS NULL").fetchall()
    return {row[0]: row[1] for row in rows}


def test_two_hosts_from_one_process_are_two_hosts_with_their_own_sequences(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}")
    try:
        config = agent_config(tmp_path, collector.address)
        links = open_links(config.collectors, config.tls, config.sender)
        hosts = HostOutboxes(config.state_dir)
        try:
            a1 = hosts.put(server("ams-rms-01", Version.SP1), T0)
            b1 = hosts.put(server("ams-rms-02", Version.SP1), T0)
            a2 = hosts.put(server("ams-rms-01", Version.SP2), T0 + timedelta(minutes=1))
            result = hosts.drain(config, links, threading.Event(), concurrency=2)
        finally:
            hosts.close()
            for link in links:
                link.close()
        assert result.exit_code == 0, result
        assert {(o.host_id, o.status, o.delivered) for o in result.outcomes} == {
            ("ams-rms-01", HostStatus.DELIVERED, 2),
            ("ams-rms-02", HostStatus.DELIVERED, 1),
        }
        # The collector holds two hosts, each at the last sequence its own outbox handed out.
        assert stored_hosts(db) == {"ams-rms-01": (a2.sequence, "SP2"), "ams-rms-02": (b1.sequence, "SP1")}
        assert a1.sequence < a2.sequence
        listed = {host["host_id"]: host for host in collector.cli_json("hosts")}
        assert listed["ams-rms-01"]["last_sequence"] == a2.sequence
        assert listed["ams-rms-02"]["last_sequence"] == b1.sequence
    finally:
        assert collector.stop() == 0, collector.log()


def test_with_enrollment_each_host_enrolls_with_its_own_node_key(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    secrets = tmp_path / "collector.secrets"
    secrets.write_text("fleet-secret\n")
    secrets.chmod(0o600)
    agent_secret = tmp_path / "agent.secret"
    agent_secret.write_text("fleet-secret\n")
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(secrets)])
    try:
        config = agent_config(tmp_path, collector.address, agent_secret)
        links = open_links(config.collectors, config.tls, config.sender)
        hosts = HostOutboxes(config.state_dir)
        try:
            hosts.put(server("ams-rms-01", Version.SP1), T0)
            hosts.put(server("ams-rms-02", Version.SP1), T0)
            first = hosts.drain(config, links, threading.Event(), concurrency=2)
            assert first.count(HostStatus.DELIVERED) == 2, first
            keys = {host_id: hosts.node_key(host_id) for host_id in ("ams-rms-01", "ams-rms-02")}
            assert all(keys.values()) and keys["ams-rms-01"] != keys["ams-rms-02"]
            # The collector keeps each host's own key (by hash), the one that host's outbox holds.
            assert key_hashes(db) == {
                host_id: "sha256:" + hashlib.sha256((key or "").encode()).hexdigest() for host_id, key in keys.items()
            }

            # Revoking one host's key makes that host enroll again; the other keeps its key.
            done = subprocess.run(
                [command("rmsfleet-collector"), "hosts", "revoke", "ams-rms-01", "--db", f"sqlite:///{db}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            hosts.put(server("ams-rms-01", Version.SP2), T0 + timedelta(minutes=1))
            hosts.put(server("ams-rms-02", Version.SP2), T0 + timedelta(minutes=1))
            second = hosts.drain(config, links, threading.Event(), concurrency=2)
            assert second.count(HostStatus.DELIVERED) == 2, second
            assert hosts.node_key("ams-rms-01") not in (None, keys["ams-rms-01"])
            assert hosts.node_key("ams-rms-02") == keys["ams-rms-02"]
        finally:
            hosts.close()
            for link in links:
                link.close()
        assert {host_id: version for host_id, (_, version) in stored_hosts(db).items()} == {
            "ams-rms-01": "SP2",
            "ams-rms-02": "SP2",
        }
        assert collector.log().count("enrolled host ams-rms-01") == 2
        assert collector.log().count("enrolled host ams-rms-02") == 1
    finally:
        assert collector.stop() == 0, collector.log()


def test_a_host_id_refused_to_this_process_is_set_aside_alone_and_tried_again(tmp_path: Path) -> None:
    """One host whose id another machine holds (PERMISSION_DENIED on Enroll) must not stop the
    others: it is set aside for this drain, loudly, with its report kept, and the next drain
    after an operator allowed the re-enrollment delivers it."""
    db = tmp_path / "rmsfleet.db"
    secrets = tmp_path / "collector.secrets"
    secrets.write_text("fleet-secret\n")
    secrets.chmod(0o600)
    agent_secret = tmp_path / "agent.secret"
    agent_secret.write_text("fleet-secret\n")
    collector = start_collector(tmp_path, f"sqlite:///{db}", ["--enroll-secret-file", str(secrets)])
    try:
        # Another machine enrolled as aa-rms-01 first, with a real agent of its own.
        other = tmp_path / "other.json"
        other.write_text(
            '{"host_id": "aa-rms-01", "hostname": "other.corp.example", "forest": "corp.example",'
            ' "client": {"version": "SP2", "activation": "self", "cluster": null}}'
        )
        owner = subprocess.run(
            [
                command("rmsfleet-agent"),
                "--collector",
                collector.address,
                "--facts",
                str(other),
                "--once",
                "--enroll-secret-file",
                str(agent_secret),
                "--state-dir",
                str(tmp_path / "other-state"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert owner.returncode == 0, owner.stderr

        config = agent_config(tmp_path, collector.address, agent_secret)
        links = open_links(config.collectors, config.tls, config.sender)
        hosts = HostOutboxes(config.state_dir)
        try:
            for host_id in ("aa-rms-01", "bb-rms-02", "cc-rms-03"):
                hosts.put(server(host_id, Version.SP1), T0)
            # One host at a time, the refused one first: before, it halted the drain for the rest.
            first = hosts.drain(config, links, threading.Event(), concurrency=1)
            by_host = {outcome.host_id: outcome for outcome in first.outcomes}
            assert by_host["aa-rms-01"].status is HostStatus.IDENTITY and by_host["aa-rms-01"].pending == 1
            assert "aa-rms-01 already holds a valid node key" in (by_host["aa-rms-01"].message or "")
            assert by_host["bb-rms-02"].status is HostStatus.DELIVERED
            assert by_host["cc-rms-03"].status is HostStatus.DELIVERED
            assert first.failure is None and first.exit_code == 6
            assert set(stored_hosts(db)) == {"aa-rms-01", "bb-rms-02", "cc-rms-03"}
            assert stored_hosts(db)["aa-rms-01"][1] == "None", "the other machine's facts stand"

            allowed = subprocess.run(
                [
                    command("rmsfleet-collector"),
                    "hosts",
                    "allow-reenroll",
                    "aa-rms-01",
                    "--for",
                    "1h",
                    "--db",
                    f"sqlite:///{db}",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert allowed.returncode == 0, allowed.stderr
            second = hosts.drain(config, links, threading.Event(), concurrency=1)
            assert [(o.host_id, o.status) for o in second.outcomes] == [("aa-rms-01", HostStatus.DELIVERED)]
            assert second.exit_code == 0
        finally:
            hosts.close()
            for link in links:
                link.close()
        assert stored_hosts(db)["aa-rms-01"][1] == "SP1"
    finally:
        assert collector.stop() == 0, collector.log()
