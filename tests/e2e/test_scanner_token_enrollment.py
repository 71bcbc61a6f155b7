"""Enrolling with a scanner token end to end (docs/security.md, "Roles and the admin API"): a
real collector, real `rmsfleet-agent spool --once` processes (a sender of many hosts, as the
scanner is) and the collector's CLI. A scanner token enrolls each spooled host under its own node
key with no enrollment secret configured, and the reports go under those keys (they keep going
after the token is revoked); a reader token, a revoked token and a missing token file are refused
in one line that names the file and never shows the token; a host a scanner enrolled is not
taken over by an agent holding the enrollment secret until an operator allows it (and then the
scanner is the one refused)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from processes import Collector, command, make_token, start_collector, write_facts
from scanner_run import run_scan

from rmsfleet.agent.multihost import HostOutboxes

pytestmark = pytest.mark.e2e

SECRET = "fleet-secret-for-agents"
HOSTS = ["scanned-1.corp.example", "scanned-2.corp.example", "scanned-3.corp.example"]


def facts(host_id: str, version: str = "SP2") -> dict[str, Any]:
    return {
        "host_id": host_id,
        "hostname": host_id,
        "forest": "corp.example",
        "client": {"version": version, "activation": "self", "cluster": None, "activated_users": 2},
    }


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RMSFLEET_")}, **extra}


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command("rmsfleet-agent"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env if env is not None else clean_env(),
    )


def last_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The line the agent ends with (logging goes to stderr before it)."""
    assert done.returncode == code, (done.returncode, done.stderr)
    return done.stderr.strip().splitlines()[-1]


def admin_cli(collector: Collector, admin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [command("rmsfleet-collector"), *args, "--collector", collector.address, "--token-file", str(admin)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 0, (args, done.stderr)
    return done


class Spool:
    """A spool folder and state directory, sent with `rmsfleet-agent spool --once`."""

    def __init__(self, tmp: Path, collector: Collector, name: str = "spool") -> None:
        self.folder = tmp / name / "in"
        self.state = tmp / name / "state"
        self.folder.mkdir(parents=True)
        self.config = tmp / name / "agent.toml"
        # No [enroll] section: the token comes by flag, variable or a line added by the test.
        self.config.write_text(
            f"""[agent]
collectors = ["{collector.address}"]
state_dir = "{self.state}"

[sender]
initial_backoff = 0.2
max_backoff = 0.5
rpc_deadline_seconds = 5

[spool]
dir = "{self.folder}"
settle_seconds = 0.2
"""
        )

    def drop(self, *documents: dict[str, Any]) -> None:
        for document in documents:
            write_facts(self.folder / f"{document['host_id']}.json", **document)

    def send(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return agent("spool", "--once", "--config", str(self.config), *args, env=env)

    def keys(self) -> dict[str, str | None]:
        """The node key each host's outbox holds."""
        with HostOutboxes(self.state) as outboxes:
            return {host: outboxes.node_key(host) for host in HOSTS}


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "enroll.secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def enrollments_by(collector: Collector, admin: Path, actor: str) -> list[str]:
    entries = json.loads(admin_cli(collector, admin, "audit", "--json").stdout)
    return sorted(
        e["target"] for e in entries if e["action"] == "Enroll" and e["actor"] == actor and e["outcome"] == "ok"
    )


def test_a_scanner_token_enrolls_each_spooled_host_under_its_own_key_and_no_secret(
    tmp_path: Path, db_url: str, secret: Path
) -> None:
    collector = start_collector(tmp_path, db_url, ["--enroll-secret-file", str(secret)])
    try:
        admin = make_token(tmp_path, db_url)
        scanner = make_token(tmp_path, db_url, "scanner-1", "scanner")
        token = scanner.read_text().strip()
        spool = Spool(tmp_path, collector)
        spool.drop(*(facts(host) for host in HOSTS))

        done = spool.send("--enroll-token-file", str(scanner))
        assert done.returncode == 0, done.stderr
        for host in HOSTS:
            assert f"enrolled host {host} with the collector at {collector.address}" in done.stderr
        keys = spool.keys()
        assert sorted(keys) == HOSTS and all(keys.values()) and len(set(keys.values())) == 3, "a key per host"
        assert sorted(h["host_id"] for h in collector.cli_json("hosts")) == HOSTS
        # The collector says which credential enrolled each host.
        assert enrollments_by(collector, admin, "token:scanner-1") == [f"host {host}" for host in HOSTS]

        # Reports go under the hosts' own keys: revoking the token stops enrollment, not them.
        admin_cli(collector, admin, "tokens", "revoke", "scanner-1")
        spool.drop(facts(HOSTS[1], version="SP1"))
        again = spool.send("--enroll-token-file", str(scanner))
        assert again.returncode == 0, again.stderr
        assert "enrolled host" not in again.stderr
        assert {h["host_id"]: h["client"]["version"] for h in collector.cli_json("hosts")}[HOSTS[1]] == "SP1"

        # A new host needs the token, which is revoked now: one line naming the file, exit 5;
        # the report waits in its outbox. The file comes from [enroll] token_file this time.
        with spool.config.open("a") as config:
            config.write(f'\n[enroll]\ntoken_file = "{scanner}"\n')
        spool.drop(facts("scanned-4.corp.example"))
        refused = last_line(spool.send(), 5)
        assert refused.startswith(
            f"rmsfleet-agent: the collector at {collector.address} refused the enrollment token in {scanner}: "
            "the token scanner-1 is revoked"
        ), refused
        assert "1 report(s) kept in the outboxes" in refused
        assert "scanned-4.corp.example" not in {h["host_id"] for h in collector.cli_json("hosts")}

        # The token never shows: not in what the agent printed, its effective configuration, its
        # state directory or the collector's log.
        shown = agent("check-config", "--config", str(spool.config), "--facts", str(tmp_path / "any.json"))
        assert shown.returncode == 0, shown.stderr
        assert f'token_file = "{scanner}"' in shown.stdout and "the token itself is never shown" in shown.stdout
        printed = done.stdout + done.stderr + again.stdout + again.stderr + refused + shown.stdout + shown.stderr
        state = b"".join(p.read_bytes() for p in spool.state.rglob("*") if p.is_file())
        for text in (printed, collector.log(), state.decode("latin-1")):
            assert token not in text
            assert token[-20:] not in text
    finally:
        assert collector.stop() == 0, collector.log()


def test_a_reader_token_a_missing_file_and_a_secret_beside_a_token_are_refused_in_one_line(
    tmp_path: Path, sqlite_url: str, secret: Path
) -> None:
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secret)])
    try:
        reader = make_token(tmp_path, sqlite_url, "reader-1", "reader")
        spool = Spool(tmp_path, collector)
        spool.drop(facts(HOSTS[0]), facts(HOSTS[1]))
        # By the variable this time. The role is too small: PERMISSION_DENIED, exit 6 as for any
        # host id the collector refuses to this sender; the reports wait in their outboxes.
        done = spool.send(env=clean_env(RMSFLEET_ENROLL_TOKEN_FILE=str(reader)))
        line = last_line(done, 6)
        assert line.startswith("rmsfleet-agent: the collector refuses 2 host id(s) to this agent"), line
        assert (
            f"with the enrollment token in {reader}: token:reader-1 has the role reader; this call needs scanner"
            in (line)
        )
        assert collector.cli_json("hosts") == []
        assert reader.read_text().strip() not in done.stderr

        # A file that is not there, or holds no token: exit 2, one line naming it, nothing sent.
        missing = tmp_path / "nowhere.token"
        assert last_line(spool.send("--enroll-token-file", str(missing)), 2) == (
            f"rmsfleet-agent: enroll token_file {missing}: cannot read: No such file or directory"
        )
        empty = tmp_path / "empty.token"
        empty.write_text("# tokens create printed nothing here yet\n\n")
        assert last_line(spool.send("--enroll-token-file", str(empty)), 2).startswith(
            f"rmsfleet-agent: enroll token_file {empty}: holds no token"
        )
        # Both credentials: the operator keeps one (the agent does not guess which one counts).
        both = last_line(spool.send("--enroll-token-file", str(reader), "--enroll-secret-file", str(secret)), 2)
        assert both == (
            "rmsfleet-agent: enroll: secret_file (flag --enroll-secret-file) and token_file "
            "(flag --enroll-token-file) are both set: keep one (a scanner token needs no secret)"
        )
        # The scanner takes the same flag and checks it the same way before scanning anything.
        scanned = run_scan(
            "--collector", collector.address, "--state-dir", str(tmp_path / "scan"), "--forest", "corp.example",
            "--enroll-token-file", str(missing), "rms01",
        )  # fmt: skip
        assert scanned.returncode == 2, scanned.stderr
        assert scanned.stderr.strip().splitlines() == [
            f"rmsfleet-scan: enroll token_file {missing}: cannot read: No such file or directory"
        ]
        assert collector.cli_json("hosts") == []
    finally:
        assert collector.stop() == 0, collector.log()


def test_a_host_a_scanner_enrolled_is_not_taken_over_by_an_agent_until_an_operator_allows_it(
    tmp_path: Path, sqlite_url: str, secret: Path
) -> None:
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secret)])
    host = HOSTS[0]
    try:
        admin = make_token(tmp_path, sqlite_url)
        scanner = make_token(tmp_path, sqlite_url, "scanner-1", "scanner")
        spool = Spool(tmp_path, collector)
        spool.drop(facts(host))
        assert spool.send("--enroll-token-file", str(scanner)).returncode == 0

        # The machine starts its own agent, with the enrollment secret: the host id holds the
        # scanner's valid key, so the secret does not take it over (the re-enrollment rule).
        own = write_facts(tmp_path / "own.json", **facts(host, version="SP1"))
        run = ["--collector", collector.address, "--facts", str(own), "--once", "--enroll-secret-file", str(secret)]
        run += ["--state-dir", str(tmp_path / "agent")]
        refused = last_line(agent(*run), 6)
        assert f"refused to enroll this machine as host {host}: host {host} already holds a valid node key" in refused
        assert f"rmsfleet-collector hosts allow-reenroll {host}" in refused
        assert collector.cli_json("hosts")[0]["client"]["version"] == "SP2"

        # An operator allows one more enrollment: the agent enrolls and reports.
        admin_cli(collector, admin, "hosts", "allow-reenroll", host, "--for", "1h")
        assert agent(*run).returncode == 0
        assert collector.cli_json("hosts")[0]["client"]["version"] == "SP1"

        # Now the scanner's key is the old one; its token cannot take the host back either.
        spool.drop(facts(host))
        back = last_line(spool.send("--enroll-token-file", str(scanner)), 6)
        assert f"with the enrollment token in {scanner}: host {host} already holds a valid node key" in back, back
        assert collector.cli_json("hosts")[0]["client"]["version"] == "SP1"
    finally:
        assert collector.stop() == 0, collector.log()
