"""Faults with real processes: every report an agent makes is stored exactly once.

Each agent runs in loop mode with its own state directory (a TOML config with short backoff) and
a facts file the test rewrites: the host name carries a version number, so every rewrite is a
change of facts the collector's history must show exactly once, in order. A change is written
only after the agent has observed the previous one (it is in the agent's outbox or already in the
database), so no change is skipped by the agent itself. At the end a last `--once` run drains the
outbox, and then:
- the history of each host is exactly the changes written, in order, each once;
- each host's `last_sequence` is the last sequence its outbox handed out, and the outbox is empty.

Faults: (a) the collector is down when the agents start; (b) it is SIGKILLed while agents send and
restarted on the same database and port; (c) PostgreSQL goes away behind a TCP proxy and comes
back, the collector staying up; (d) an agent is SIGKILLed mid-send, before and after the
collector committed, and restarted.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_agents import Agent, Store, change_all, finish_and_verify, make_agents, wait_stored
from processes import Collector, free_port, metric_value, start_collector, wait_for
from sqlalchemy.engine import make_url
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def agents_cleanup() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process is not None and agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait(10)


# --- the faults --------------------------------------------------------------------------------


def test_a_collector_that_is_down_when_agents_start_gets_every_report_once_it_is_up(
    tmp_path: Path, sqlite_url: str, agents_cleanup: list[Agent]
) -> None:
    """(a) Agents start against a collector that is not there yet: reports (three changes each)
    wait in their outboxes, and all arrive, once each, when the collector comes up."""
    port = free_port()
    agents = make_agents(tmp_path, [f"127.0.0.1:{port}"])
    agents_cleanup.extend(agents)
    store = Store(sqlite_url)
    for agent in agents:
        agent.start()
    try:
        change_all(agents, store)
        change_all(agents, store)
        for agent in agents:
            wait_for(
                lambda a=agent: [h for _s, h in a.pending()] == a.written,
                what=f"{agent.host_id}'s three changes waiting in its outbox",
            )
            wait_for(lambda a=agent: "cannot reach the collector" in a.log(), what="the agent to say why it waits")
        collector = start_collector(tmp_path, sqlite_url, ["--listen", f"127.0.0.1:{port}"])
        try:
            wait_stored(agents, store)
            change_all(agents, store)  # and one more change once the collector is up
            wait_stored(agents, store)
            finish_and_verify(agents, store)
        finally:
            assert collector.stop() == 0, collector.log()
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_collector_killed_while_agents_send_loses_and_duplicates_nothing(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, agents_cleanup: list[Agent]
) -> None:
    """(b) SIGKILL the collector while agents report changes, report more changes while it is
    down, restart it on the same database and port: every change stored once."""
    db_url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url"))
    port = free_port()
    listen = ["--listen", f"127.0.0.1:{port}"]
    collector = start_collector(tmp_path, db_url, listen, name="collector-1")
    store = Store(db_url)
    agents = make_agents(tmp_path, [f"127.0.0.1:{port}"])
    agents_cleanup.extend(agents)
    restarted: Collector | None = None
    try:
        for agent in agents:
            agent.start()
        wait_stored(agents, store)
        for agent in agents:
            agent.change()
        # No wait: the agents are sending this change (and heartbeats) when the collector dies.
        collector.process.send_signal(signal.SIGKILL)
        assert collector.process.wait(10) == -signal.SIGKILL
        change_all(agents, store)
        change_all(agents, store)
        for agent in agents:
            wait_for(lambda a=agent: "cannot reach the collector" in a.log(), what="the agent to notice the outage")
        restarted = start_collector(tmp_path, db_url, listen, name="collector-2")
        wait_stored(agents, store)
        change_all(agents, store)
        wait_stored(agents, store)
        finish_and_verify(agents, store)
    finally:
        store.close()
        if restarted is not None:
            assert restarted.stop() == 0, restarted.log()
        elif collector.process.poll() is None:
            collector.stop()


def test_the_collector_answers_unavailable_while_postgresql_is_away_and_recovers_without_a_restart(
    tmp_path: Path, postgres_url: str, agents_cleanup: list[Agent]
) -> None:
    """(c) PostgreSQL becomes unreachable (a TCP proxy in front of it is cut): the collector
    refuses reports with UNAVAILABLE and stays up; agents keep their reports; once the database
    is back, everything arrives once, with no collector restart."""
    url = make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = Store(postgres_url)
    collector = start_collector(tmp_path, proxied)
    agents = make_agents(tmp_path, [collector.address])
    agents_cleanup.extend(agents)
    try:
        for agent in agents:
            agent.start()
        wait_stored(agents, store)
        proxy.cut()
        change_all(agents, store)
        change_all(agents, store)
        for agent in agents:
            wait_for(
                lambda a=agent: "UNAVAILABLE: the database did not accept the batch" in a.log(),
                what=f"{agent.host_id} to be told the database is unavailable",
            )
            wait_for(lambda a=agent: len(a.pending()) >= 2, what=f"{agent.host_id}'s changes kept in its outbox")
        assert "could not commit a batch" in collector.log()
        assert collector.process.poll() is None
        proxy.restore()
        wait_stored(agents, store, timeout=30)
        change_all(agents, store)
        wait_stored(agents, store)
        finish_and_verify(agents, store)
        assert collector.process.poll() is None, "the collector must recover without a restart"
        errors = metric_value(collector.metrics(), "rmsfleet_database_errors_total", operation="ingest")
        assert errors is not None and errors >= 1
    finally:
        store.close()
        collector.stop()
        proxy.close()


def test_an_agent_killed_mid_send_resends_and_nothing_is_lost_or_duplicated(
    tmp_path: Path, sqlite_url: str, agents_cleanup: list[Agent]
) -> None:
    """(d) SIGKILL an agent while its report is in flight, twice: once before the collector got
    it (the request is swallowed), once after the collector committed it (the answer is
    swallowed). Restarted on the same state, the agent sends the report again: stored once."""
    collector = start_collector(tmp_path, sqlite_url)
    host, port = collector.address.rsplit(":", 1)
    proxy = TcpProxy((host, int(port)), http2=True)
    store = Store(sqlite_url)
    (agent,) = make_agents(tmp_path, [f"127.0.0.1:{proxy.port}"], count=1, deadline=20)
    agents_cleanup.append(agent)
    try:
        agent.start()
        wait_stored([agent], store)

        # 1. The request never reaches the collector.
        assert agent.stop() == 0
        changed = agent.change()
        proxy.swallow("requests")
        agent.start()
        wait_for(lambda: any(h == changed for _s, h in agent.pending()), what="the change in the outbox")
        wait_for(lambda: proxy.swallowed["requests"] > 0, what="the agent to send")
        assert agent.process is not None
        agent.process.kill()
        agent.process.wait(10)
        agent.process = None
        assert not any(h == changed for h, _s in store.history(agent.host_id))
        assert any(h == changed for _s, h in agent.pending())
        proxy.reset()
        agent.start()
        wait_stored([agent], store)

        # 2. The collector commits, the acknowledgement is lost.
        assert agent.stop() == 0
        # A report the agent observed as it stopped can still be in its outbox (the collector may
        # even have applied it). It goes first on the next start, and with every answer swallowed
        # the agent would resend it forever, never reaching the change: send it now.
        drained = agent.drain_once()
        assert drained.returncode == 0, drained.stderr
        assert agent.pending() == []
        changed = agent.change()
        proxy.swallow("answers")
        agent.start()
        wait_stored([agent], store)
        wait_for(lambda: proxy.swallowed["answers"] > 0, what="the acknowledgement to be lost")
        ((in_flight, name),) = [(s, h) for s, h in agent.pending() if h == changed]
        host_row = store.host(agent.host_id)
        assert host_row is not None and host_row["last_sequence"] == in_flight
        assert agent.process is not None
        agent.process.kill()
        agent.process.wait(10)
        agent.process = None
        proxy.reset()
        agent.start()
        # On restart the agent reads the same facts again: the outbox coalesces them into the
        # pending report (a newer sequence), which is sent and applied without a history row.
        wait_for(lambda: all(s != in_flight for s, _h in agent.pending()), what="the resent report to be acknowledged")
        wait_for(lambda: (store.host(agent.host_id) or {}).get("last_sequence", 0) > in_flight, what="a newer sequence")
        assert [h for h, _s in store.history(agent.host_id)].count(name) == 1

        change_all([agent], store)
        wait_stored([agent], store)
        finish_and_verify([agent], store)
    finally:
        store.close()
        proxy.close()
        collector.stop()


def test_sigterm_keeps_unsent_reports_for_the_next_start(tmp_path: Path, agents_cleanup: list[Agent]) -> None:
    """An agent stopped (SIGTERM) during an outage exits 0 and keeps its reports on disk."""
    port = free_port()
    (agent,) = make_agents(tmp_path, [f"127.0.0.1:{port}"], count=1)
    agents_cleanup.append(agent)
    agent.start()
    store = Store(f"sqlite:///{tmp_path / 'unused.db'}")
    try:
        change_all([agent], store)
        wait_for(lambda: len(agent.pending()) == 2, what="two changes in the outbox")
        assert agent.stop(signal.SIGTERM) == 0
        assert "2 report(s) kept in the outbox for the next start" in agent.log()
        assert [h for _s, h in agent.pending()] == agent.written
        assert (agent.state / "outbox.sqlite3").stat().st_mode & 0o077 == 0
    finally:
        store.close()
