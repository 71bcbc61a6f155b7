"""Three collector replicas on one PostgreSQL, six real agents spread over them by the order of
their fail-over lists, reporting changes continuously; some hosts violate a policy. The replica
that evaluates (`rmsfleet_evaluation_leader` is 1 on its /metrics) is SIGKILLed while the agents
send. Then:
- another replica takes the evaluation over (the time from the SIGKILL is printed and recorded
  as a test property, not asserted: timing belongs in bench/);
- the agents that preferred the killed replica fail over to the next address on their list, and
  their later changes are stored;
- every report is stored exactly once: each host's history is exactly the changes its facts
  went through, in order, and its last sequence is the last one its outbox handed out (the
  same check as tests/e2e/test_faults.py);
- every violation that should be open is open exactly once; one opened before the kill keeps
  its row and its `since` (it was not reopened), one resolved after the kill is resolved, and one
  a host started after the kill is opened, by the replica that took over.

Every replica runs a full pass only every 600 s: within the test, only the change feed explains
a change being evaluated (docs/deploy.md, "Replicas").

The second test gives a collector a multi-host database URL (docs/deploy.md, "PostgreSQL primary
with a hot standby"): two TCP proxies in front of the one PostgreSQL stand for a primary and
the server that replaces it. The collector serves through the first; when that one goes away it
reconnects through the second, with no restart, and goes on storing and evaluating reports."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy
from fleet_agents import (
    COMPLIANT_CLIENT,
    VIOLATING_CLIENT,
    Agent,
    Store,
    change_all,
    finish_and_verify,
    wait_stored,
)
from processes import Collector, metric_value, start_collector, wait_for
from sqlalchemy.engine import make_url
from tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

POLICY = "client-not-self-activating"
SLOW_FULL_PASS = ("--full-pass-interval", "600")
REPLICAS = 3
AGENTS = 6
# Hosts by what their client does (indexes into the agents): violating throughout; violating
# until after the kill, then fixed; compliant until after the kill, then violating.
STAYS_VIOLATING = (0, 1)
FIXED_AFTER_THE_KILL = 2
BREAKS_AFTER_THE_KILL = 3


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process is not None and agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait(10)


def leads(collector: Collector) -> bool:
    return metric_value(collector.metrics(), "rmsfleet_evaluation_leader") == 1


def leaders(replicas: list[Collector]) -> list[Collector]:
    return [r for r in replicas if r.process.poll() is None and leads(r)]


def violation_rows(store: Store) -> list[tuple[str, str, datetime, datetime | None]]:
    """(policy, subject, since, resolved_at) of every violation row, open or resolved."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT policy, subject, since, resolved_at FROM violations ORDER BY id")
        ).all()
    return [(str(r[0]), str(r[1]), r[2], r[3]) for r in rows]


def open_since(store: Store) -> dict[str, datetime]:
    """subject -> since of the open violations of POLICY (asserts one open row per subject)."""
    open_rows = [(s, since) for p, s, since, resolved in violation_rows(store) if p == POLICY and resolved is None]
    subjects = [s for s, _since in open_rows]
    assert len(subjects) == len(set(subjects)), f"a violation is open twice: {open_rows}"
    return dict(open_rows)


def feed_rows(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sqlalchemy.text("SELECT count(*) FROM evaluation_feed")).scalar_one())


def spread(addresses: list[str], index: int) -> list[str]:
    """Agent `index`'s fail-over list: every replica, starting at a different one per agent, so
    each replica is the preferred address of AGENTS / REPLICAS agents."""
    start = index % len(addresses)
    return addresses[start:] + addresses[:start]


def test_killing_the_evaluating_replica_loses_duplicates_and_reopens_nothing(
    tmp_path: Path, postgres_url: str, agents: list[Agent], record_property: Callable[[str, object], None]
) -> None:
    replicas: list[Collector] = []
    store = Store(postgres_url)
    try:
        # The first replica takes the leadership before the others start: one evaluates.
        replicas.append(start_collector(tmp_path, postgres_url, SLOW_FULL_PASS, name="replica0"))
        wait_for(lambda: leads(replicas[0]), what="the first replica to evaluate")
        for index in range(1, REPLICAS):
            replicas.append(start_collector(tmp_path, postgres_url, SLOW_FULL_PASS, name=f"replica{index}"))
        assert [leads(r) for r in replicas] == [True, False, False]
        addresses = [r.address for r in replicas]
        assert len(set(addresses)) == REPLICAS

        for index in range(AGENTS):
            folder = tmp_path / f"agent{index}"
            folder.mkdir()
            agent = Agent(f"replica-host-{index}", folder, spread(addresses, index))
            if index in STAYS_VIOLATING or index == FIXED_AFTER_THE_KILL:
                agent.client = dict(VIOLATING_CLIENT)
            agent.change()
            agents.append(agent)
            agent.start()
        wait_stored(agents, store)
        change_all(agents, store)
        wait_stored(agents, store)

        violating_before = {agents[i].host_id for i in (*STAYS_VIOLATING, FIXED_AFTER_THE_KILL)}
        wait_for(lambda: set(open_since(store)) == violating_before, what="the violations before the kill")
        since_before = open_since(store)

        (leader,) = leaders(replicas)
        survivors = [r for r in replicas if r is not leader]
        preferred_the_leader = [a for a in agents if a.collectors[0] == leader.address]
        assert len(preferred_the_leader) == AGENTS // REPLICAS

        # No wait: the agents are sending this change (and heartbeats) when the replica dies.
        for agent in agents:
            agent.change()
        killed_at = time.monotonic()
        leader.process.send_signal(signal.SIGKILL)
        assert leader.process.wait(10) == -signal.SIGKILL
        (successor,) = wait_for(
            lambda: leaders(survivors), interval=0.05, what="another replica to take the evaluation over"
        )
        takeover = time.monotonic() - killed_at
        print(f"\nreplica {successor.address} took the evaluation over {takeover:.2f} s after the SIGKILL")
        record_property("takeover_seconds", round(takeover, 2))
        assert "this replica now evaluates" in successor.log()

        # Changes after the kill, one of them fixing a violation and one opening a new one: only
        # the replica that took over can evaluate them.
        agents[FIXED_AFTER_THE_KILL].client = dict(COMPLIANT_CLIENT)
        agents[BREAKS_AFTER_THE_KILL].client = dict(VIOLATING_CLIENT)
        change_all(agents, store)
        change_all(agents, store)
        wait_stored(agents, store)

        for agent in preferred_the_leader:
            log = agent.log()
            assert f"cannot reach the collector at {leader.address}" in log, log
            assert any(f"trying {s.address}" in log for s in survivors), log
        # The survivors still answer to one leader only.
        assert leaders(survivors) == [successor]

        finish_and_verify(agents, store)

        violating_after = {agents[i].host_id for i in (*STAYS_VIOLATING, BREAKS_AFTER_THE_KILL)}
        wait_for(lambda: feed_rows(store) == 0, what="the change feed to be consumed")
        wait_for(lambda: set(open_since(store)) == violating_after, what="the violations after the kill")
        since_after = open_since(store)
        for index in STAYS_VIOLATING:
            host = agents[index].host_id
            assert since_after[host] == since_before[host], f"{host}'s violation was reopened"

        rows = violation_rows(store)
        by_subject: dict[str, list[tuple[datetime, datetime | None]]] = {}
        for policy, subject, since, resolved in rows:
            assert policy == POLICY, rows  # no other policy applies to these hosts
            by_subject.setdefault(subject, []).append((since, resolved))
        fixed = agents[FIXED_AFTER_THE_KILL].host_id
        broke = agents[BREAKS_AFTER_THE_KILL].host_id
        # One row per violation ever opened: none reopened, none twice.
        assert sorted(by_subject) == sorted(violating_before | {broke}), rows
        assert all(len(history) == 1 for history in by_subject.values()), rows
        ((fixed_since, fixed_resolved),) = by_subject[fixed]
        assert fixed_since == since_before[fixed] and fixed_resolved is not None, rows
        ((broke_since, _),) = by_subject[broke]
        assert broke_since > max(since_before.values()), rows

        # Both survivors read the same violations, and each waits for its own reports.
        for replica in survivors:
            listed = replica.cli_json("violations", "--policy", POLICY, "--wait-for-evaluation", "--wait-timeout", "30")
            assert sorted(v["subject"] for v in listed) == sorted(violating_after)
    finally:
        for replica in replicas:
            replica.stop()
        store.close()


def test_a_collector_given_a_multi_host_database_url_moves_to_the_next_host_when_the_first_goes(
    tmp_path: Path, postgres_url: str, agents: list[Agent]
) -> None:
    url = make_url(postgres_url)
    target = (url.host or "127.0.0.1", url.port or 5432)
    first, second = TcpProxy(target), TcpProxy(target)
    # SQLAlchemy's form of libpq's host list: one `host` parameter per server, tried in order.
    multi_host = (
        f"postgresql+psycopg://{url.username}@/{url.database}"
        f"?host=127.0.0.1:{first.port}&host=127.0.0.1:{second.port}"
        "&target_session_attrs=read-write&connect_timeout=5"
    )
    store = Store(postgres_url)
    collector: Collector | None = None
    try:
        collector = start_collector(tmp_path, multi_host, SLOW_FULL_PASS)
        wait_for(lambda: collector is not None and leads(collector), what="the collector to evaluate")
        for index, client in enumerate((VIOLATING_CLIENT, COMPLIANT_CLIENT)):
            folder = tmp_path / f"agent{index}"
            folder.mkdir()
            agent = Agent(f"multi-host-{index}", folder, [collector.address])
            agent.client = dict(client)
            agent.change()
            agents.append(agent)
            agent.start()
        wait_stored(agents, store)
        violating, compliant = agents
        wait_for(lambda: set(open_since(store)) == {violating.host_id}, what="the first violation")
        since = open_since(store)[violating.host_id]
        assert first.connections > 0 and second.connections == 0, "libpq takes the first host that answers"

        first.cut()  # the primary is gone: connections through it close, new ones are refused
        compliant.client = dict(VIOLATING_CLIENT)
        change_all(agents, store)
        change_all(agents, store)
        wait_stored(agents, store)
        wait_for(lambda: second.connections > 0, what="connections through the second host")
        # Its leadership connection went with the first host: the lock is taken again through
        # the second (advisory locks live in the server's memory, not in the database).
        wait_for(
            lambda: collector is not None and collector.log().count("this replica now evaluates") == 2,
            what="the collector to take the evaluation leadership again",
        )
        wait_for(
            lambda: set(open_since(store)) == {violating.host_id, compliant.host_id},
            what="the violation reported after the first host went away",
        )
        assert open_since(store)[violating.host_id] == since
        assert collector.process.poll() is None, "the collector reconnects without a restart"
        finish_and_verify(agents, store)
    finally:
        if collector is not None:
            collector.stop()
        first.close()
        second.close()
        store.close()
