"""Agents in loop mode and the collector's database read directly, for end-to-end tests that check
that every report an agent makes is stored exactly once (tests/e2e/test_faults.py,
tests/e2e/test_replica_failover_e2e.py).

Each agent runs in loop mode with its own state directory (a TOML config with short backoff and
its list of collector addresses, in the order it tries them) and a facts file the test rewrites:
the host name carries a version number, so every rewrite is a change of facts the collector's
history must show exactly once, in order."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy
from live_collector import SETTLE_TIMEOUT
from processes import command, wait_for

FOREST = "corp.example"
COMPLIANT_CLIENT: dict[str, Any] = {"version": "SP2", "activation": "self", "cluster": None}
VIOLATING_CLIENT: dict[str, Any] = {"version": "RTM", "activation": "internet", "cluster": None}


# --- the database, read directly ---------------------------------------------------------------


class Store:
    """Reads the collector's database directly (never through the collector under test)."""

    def __init__(self, url: str) -> None:
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)

    def history(self, host_id: str) -> list[tuple[str, int]]:
        with self.engine.connect() as connection:
            try:
                rows = connection.execute(
                    sqlalchemy.text("SELECT hostname, sequence FROM host_history WHERE host_id = :h ORDER BY id"),
                    {"h": host_id},
                ).all()
            except sqlalchemy.exc.OperationalError:
                return []  # the collector has not created the schema yet
        return [(str(r[0]), int(r[1])) for r in rows]

    def host(self, host_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sqlalchemy.text("SELECT hostname, last_sequence FROM hosts WHERE host_id = :h"), {"h": host_id}
            ).first()
        return None if row is None else {"hostname": row[0], "last_sequence": int(row[1])}

    def host_count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sqlalchemy.text("SELECT count(*) FROM hosts")).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


# --- agents ------------------------------------------------------------------------------------


@dataclass
class Agent:
    """One host: its facts file, its state directory, its TOML config and (when running) its
    loop-mode process, whose stderr goes to a log file."""

    host_id: str
    folder: Path
    collectors: list[str]
    deadline: float = 5.0
    version: int = 0
    process: subprocess.Popen[str] | None = None
    runs: int = 0
    written: list[str] = field(default_factory=list)
    # The client the facts describe; the default violates no policy. RTM activating over the
    # internet violates client-not-self-activating (D10): see `VIOLATING_CLIENT`.
    client: dict[str, Any] = field(default_factory=lambda: dict(COMPLIANT_CLIENT))

    @property
    def facts(self) -> Path:
        return self.folder / "facts.json"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def config(self) -> Path:
        return self.folder / "agent.toml"

    @property
    def log_path(self) -> Path:
        return self.folder / f"agent-{self.runs}.log"

    def hostname(self, version: int) -> str:
        return f"{self.host_id}-v{version}.{FOREST}"

    def write_config(self) -> None:
        collectors = ", ".join(json.dumps(c) for c in self.collectors)
        self.config.write_text(
            f"""
[agent]
collectors = [{collectors}]
interval_seconds = 0.2
jitter = 0
state_dir = "state"
facts_file = "facts.json"

[sender]
initial_backoff = 0.1
max_backoff = 0.5
backoff_multiplier = 1.5
rpc_deadline_seconds = {self.deadline}
"""
        )

    def change(self) -> str:
        """Write the next version of the facts: a change the history must show once."""
        self.version += 1
        hostname = self.hostname(self.version)
        document = {
            "host_id": self.host_id,
            "hostname": hostname,
            "forest": FOREST,
            "client": self.client,
        }
        tmp = self.facts.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(self.facts)  # atomic: the agent never reads half a file
        self.written.append(hostname)
        return hostname

    def start(self) -> None:
        self.write_config()
        self.runs += 1
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [command("rmsfleet-agent"), "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.folder,
        )

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.folder.glob("agent-*.log")))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(20)
        self.process = None
        return code

    def pending(self) -> list[tuple[int, str]]:
        """(sequence, hostname) of the reports waiting in the agent's outbox."""
        path = self.state / "outbox.sqlite3"
        if not path.exists():
            return []
        with sqlite3.connect(path, timeout=10) as db:
            try:
                rows = db.execute("SELECT sequence, facts FROM pending ORDER BY sequence").fetchall()
            except sqlite3.OperationalError:
                return []
        return [(int(r[0]), json.loads(r[1])["hostname"]) for r in rows]

    def next_sequence(self) -> int:
        with sqlite3.connect(self.state / "outbox.sqlite3", timeout=10) as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'next_sequence'").fetchone()[0])

    def observed(self, store: Store, hostname: str) -> bool:
        """The agent has taken `hostname` in: pending in its outbox, or stored by the collector."""
        return any(h == hostname for _s, h in self.pending()) or any(
            h == hostname for h, _s in store.history(self.host_id)
        )

    def drain_once(self) -> subprocess.CompletedProcess[str]:
        """A last `--once` run on the same state: sends what is pending, exit 0 when acknowledged."""
        self.write_config()
        return subprocess.run(
            [command("rmsfleet-agent"), "--config", str(self.config), "--once"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.folder,
        )


def make_agents(tmp: Path, collectors: list[str], count: int = 3, deadline: float = 5.0) -> list[Agent]:
    agents = []
    for index in range(count):
        folder = tmp / f"agent{index}"
        folder.mkdir()
        agent = Agent(f"fault-{index:02}", folder, collectors, deadline)
        agent.change()
        agents.append(agent)
    return agents


def change_all(agents: list[Agent], store: Store) -> None:
    """Each agent: wait until it observed its current facts, then write the next change."""
    for agent in agents:
        current = agent.written[-1]
        wait_for(lambda a=agent, h=current: a.observed(store, h), what=f"{agent.host_id} to observe {current}")
        agent.change()


def wait_stored(agents: list[Agent], store: Store, timeout: float = SETTLE_TIMEOUT) -> None:
    for agent in agents:
        latest = agent.written[-1]
        wait_for(
            lambda a=agent, h=latest: any(name == h for name, _s in store.history(a.host_id)),
            timeout=timeout,
            what=f"{agent.host_id}'s {latest} in the database",
        )


def finish_and_verify(agents: list[Agent], store: Store) -> None:
    """Stop the loops cleanly, drain with --once, and check that each change arrived once, in
    order, and that the last sequence handed out is the host's last_sequence."""
    for agent in agents:
        if agent.process is not None:
            code = agent.stop()
            assert code == 0, agent.log()
        assert "Traceback" not in agent.log(), agent.log()
    for agent in agents:
        done = agent.drain_once()
        assert done.returncode == 0, done.stderr
        assert agent.pending() == []
        history = store.history(agent.host_id)
        assert [name for name, _s in history] == agent.written, (history, agent.written)
        sequences = [s for _n, s in history]
        assert sequences == sorted(set(sequences)), sequences
        host = store.host(agent.host_id)
        assert host is not None
        assert host["hostname"] == agent.written[-1]
        assert host["last_sequence"] == agent.next_sequence() - 1
    assert store.host_count() == len(agents)
