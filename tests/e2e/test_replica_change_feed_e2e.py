"""Two collector processes on one PostgreSQL, on different ports: one evaluates (it holds the
leadership lock), the other only ingests. A violating change reported to the one that does not
evaluate reaches the evaluating one through the change feed, long before any full pass could
find it (both run a full pass every 600 s), and `--wait-for-evaluation` on the replica the agent
reported to waits for exactly that. Then the evaluating replica is SIGKILLed: the other takes
the leadership and the feed over, evaluates the next change, and no violation is lost,
duplicated or reopened with a new `since`.

The delay from the agent's acknowledgement to the violation being stored is printed and
recorded as a test property (docs/benchmarks.md quotes it); it is measured, not asserted."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from processes import Collector, metric_value, report_facts, start_collector, wait_for, write_facts

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

POLICY = "client-not-self-activating"
# Long enough that only the change feed can explain a violation appearing within the test.
SLOW_FULL_PASS = ("--full-pass-interval", "600")


def rtm_client(tmp: Path, host_id: str) -> Path:
    """Facts of a client that violates client-not-self-activating (D10)."""
    return write_facts(
        tmp / f"{host_id}.json",
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        client={"version": "RTM", "activation": "internet", "cluster": None},
    )


def leads(collector: Collector) -> bool:
    return metric_value(collector.metrics(), "rmsfleet_evaluation_leader") == 1


def stored_since(engine: sqlalchemy.Engine, host_id: str) -> list[Any]:
    """The `since` of every violation row (open or resolved) of the policy for the host."""
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT since FROM violations WHERE policy = :policy AND subject = :host ORDER BY id"),
            {"policy": POLICY, "host": host_id},
        )
        return [row.since for row in rows]


def evaluation_delay(engine: sqlalchemy.Engine, host_id: str) -> float:
    """Seconds from the report reaching the collector (the host's `last_seen`) to the pass that
    opened its violation (the violation's `since`): both are the collectors' clocks on this one
    machine. Waits for the violation (at most 60 s)."""
    wait_for(lambda: stored_since(engine, host_id), timeout=60, interval=0.05, what=f"a violation of {host_id}")
    with engine.connect() as connection:
        seen = connection.execute(
            sqlalchemy.text("SELECT last_seen FROM hosts WHERE host_id = :host"), {"host": host_id}
        ).scalar_one()
    return float((stored_since(engine, host_id)[0] - seen).total_seconds())


def open_subjects(collector: Collector, *wait: str) -> list[str]:
    done = collector.cli("violations", "--policy", POLICY, "--json", *wait)
    return sorted(v["subject"] for v in json.loads(done.stdout))


def test_a_change_reported_to_a_replica_that_does_not_evaluate_is_evaluated_through_the_feed(
    tmp_path: Path, postgres_url: str, record_property: Callable[[str, object], None]
) -> None:
    engine = sqlalchemy.create_engine(postgres_url)
    first = start_collector(tmp_path, postgres_url, SLOW_FULL_PASS, name="first")
    second: Collector | None = None
    try:
        wait_for(lambda: leads(first), what="the first replica to evaluate")
        second = start_collector(tmp_path, postgres_url, SLOW_FULL_PASS, name="second")
        assert not leads(second)

        report_facts(second, rtm_client(tmp_path, "ws1"))
        delay = evaluation_delay(engine, "ws1")
        print(f"\nchange reported to the non-evaluating replica, evaluated {delay:.3f} s after it arrived")
        record_property("feed_delay_seconds", round(delay, 3))
        # Read through either replica; the one the agent reported to waits for its own report.
        assert open_subjects(second, "--wait-for-evaluation", "--wait-timeout", "60") == ["ws1"]
        assert open_subjects(first) == ["ws1"]
        assert metric_value(second.metrics(), "rmsfleet_evaluation_pending_reports") == 0
        since = stored_since(engine, "ws1")

        killed_at = time.monotonic()
        first.stop(signal.SIGKILL)
        wait_for(lambda: leads(second), timeout=60, interval=0.05, what="the second replica to take over")
        takeover = time.monotonic() - killed_at
        print(f"the other replica took the evaluation over {takeover:.2f} s after the SIGKILL")
        record_property("takeover_seconds", round(takeover, 2))
        report_facts(second, rtm_client(tmp_path, "ws2"))
        takeover_delay = evaluation_delay(engine, "ws2")
        print(
            f"after the evaluating replica was killed, the next change was evaluated {takeover_delay:.3f} s after it arrived"
        )
        record_property("feed_delay_after_takeover_seconds", round(takeover_delay, 3))

        assert open_subjects(second, "--wait-for-evaluation", "--wait-timeout", "60") == ["ws1", "ws2"]
        # Nothing lost, nothing twice, nothing reopened: one row per host, ws1's `since` kept.
        assert stored_since(engine, "ws1") == since
        assert len(stored_since(engine, "ws2")) == 1
        with engine.connect() as connection:
            left = connection.execute(sqlalchemy.text("SELECT count(*) FROM evaluation_feed")).scalar_one()
        assert left == 0
        assert metric_value(second.metrics(), "rmsfleet_evaluation_feed_backlog") is not None
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()
        engine.dispose()
