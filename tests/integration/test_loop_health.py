"""The long-running loops survive what the database hands them and health says whether they make
progress, on SQLite and PostgreSQL with a real collector over real gRPC: a damaged row read back
by the evaluator leaves that host out (logged, counted) while the rest is evaluated; a writer
held up by a lock turns health NOT_SERVING and rmsfleet_loop_healthy to 0 until it moves again."""

from __future__ import annotations

import logging

import pytest
from live_collector import (
    INVENTORY,
    NOT_SERVING,
    QUERY,
    SERVING,
    Live,
    database_lock,
    live_collector,
    now_micros,
    report,
    wait_for,
)

from rmsfleet.v1 import facts_pb2, query_pb2

NOT_SELF_ACTIVATING = "client-not-self-activating"


def open_violations(live: Live) -> set[tuple[str, str]]:
    response = live.query.ListViolations(query_pb2.ListViolationsRequest(state="open"), timeout=30)
    return {(v.policy, v.subject) for v in response.violations}


def test_a_damaged_row_is_left_out_and_the_evaluator_goes_on(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rmsfleet.collector.evaluator")
    with live_collector(db_url, full_pass_interval=0.3) as live:
        sequence = now_micros()
        for host in ("ws-rtm", "ws-damaged"):
            live.inventory.Report(report(host, sequence, client_version=facts_pb2.VERSION_RTM), timeout=30)
        both = {(NOT_SELF_ACTIVATING, "ws-rtm"), (NOT_SELF_ACTIVATING, "ws-damaged")}
        wait_for(lambda: open_violations(live) == both, "both RTM clients' violations")
        # A value no release of the collector writes, as a hand edit or a newer release would leave it.
        long_junk = "SP9-" + "x" * 5000
        live.sql(f"UPDATE hosts SET client_version = '{long_junk[:16]}' WHERE host_id = 'ws-damaged'")
        wait_for(lambda: live.metric("rmsfleet_evaluation_unreadable_hosts") == 1, "the damaged host to be counted")
        assert "left out 1 host(s) whose stored row cannot be read" in caplog.text
        assert "column client_version holds 'SP9-xxxxxxxxxxxx'" in caplog.text
        # The evaluator still works: a new RTM client opens its violation; the damaged host's
        # violation is kept open (its facts are unknown now, not fixed).
        live.inventory.Report(report("ws-new-rtm", sequence, client_version=facts_pb2.VERSION_RTM), timeout=30)
        wait_for(
            lambda: open_violations(live) == both | {(NOT_SELF_ACTIVATING, "ws-new-rtm")},
            "the new host's violation, the damaged one's kept",
        )
        assert live.metric("rmsfleet_loop_healthy", loop="evaluator") == 1
        assert live.health() == SERVING
        # Repaired, the host is evaluated again.
        live.sql("UPDATE hosts SET client_version = 'SP2' WHERE host_id = 'ws-damaged'")
        wait_for(lambda: live.metric("rmsfleet_evaluation_unreadable_hosts") == 0, "the repaired host to count again")
        wait_for(lambda: (NOT_SELF_ACTIVATING, "ws-damaged") not in open_violations(live), "the violation to resolve")


def test_a_damaged_cluster_kind_costs_an_aggregates_refresh_not_the_evaluator(db_url: str) -> None:
    with live_collector(db_url, full_pass_interval=0.3) as live:
        server = report("srv-1", now_micros())
        server.facts.server.CopyFrom(
            facts_pb2.ServerFacts(
                version=facts_pb2.VERSION_SP2,
                cluster="https://rms.corp.example",
                cluster_kind=facts_pb2.CLUSTER_KIND_ROOT_CERTIFICATION,
                enrollment=facts_pb2.ENROLLMENT_OFFLINE,
            )
        )
        live.inventory.Report(server, timeout=30)
        live.sql("UPDATE hosts SET server_cluster_kind = 'galactic' WHERE host_id = 'srv-1'")
        wait_for(lambda: live.metric("rmsfleet_loop_errors_total", loop="evaluator") >= 1, "the error to be counted")
        wait_for(lambda: live.metric("rmsfleet_evaluation_unreadable_hosts") == 1, "the damaged host to be counted")
        # The loop goes on: a new RTM client's violation opens.
        live.inventory.Report(report("ws-rtm", now_micros(), client_version=facts_pb2.VERSION_RTM), timeout=30)
        wait_for(lambda: (NOT_SELF_ACTIVATING, "ws-rtm") in open_violations(live), "the evaluator to go on")
        assert live.metric("rmsfleet_loop_healthy", loop="evaluator") == 1
        assert live.health() == SERVING


def test_a_stuck_writer_turns_health_not_serving_until_it_moves_again(db_url: str) -> None:
    with live_collector(db_url, stall_after=0.5) as live:
        assert live.inventory.Report(report("ws-1", now_micros()), timeout=30).applied
        assert live.metric("rmsfleet_loop_healthy", loop="writer") == 1
        with database_lock(live.db_url):
            waiting = live.inventory.Report.future(report("ws-2", now_micros()), timeout=60)
            wait_for(lambda: live.health(INVENTORY) == NOT_SERVING, "health to turn NOT_SERVING")
            assert live.health() == NOT_SERVING
            assert live.health(QUERY) == SERVING, "queries do not need the writer"
            assert live.metric("rmsfleet_loop_healthy", loop="writer") == 0
        assert waiting.result().applied
        wait_for(lambda: live.health() == SERVING, "health to be SERVING again")
        assert live.health(INVENTORY) == SERVING
        assert live.metric("rmsfleet_loop_healthy", loop="writer") == 1


def test_a_stuck_evaluator_turns_liveness_not_serving_and_leaves_reports_flowing(postgres_url: str) -> None:
    # Only PostgreSQL can block a reader: SQLite in WAL mode never makes one wait.
    with live_collector(postgres_url, stall_after=0.5, full_pass_interval=0.2) as live:
        with database_lock(live.db_url, "LOCK TABLE violations IN ACCESS EXCLUSIVE MODE"):
            wait_for(lambda: live.health() == NOT_SERVING, "health to turn NOT_SERVING")
            assert live.metric("rmsfleet_loop_healthy", loop="evaluator") == 0
            assert live.health(INVENTORY) == SERVING
            assert live.inventory.Report(report("ws-1", now_micros()), timeout=30).applied
        wait_for(lambda: live.health() == SERVING, "health to be SERVING again")
        assert live.metric("rmsfleet_loop_healthy", loop="evaluator") == 1


def test_a_stopping_collector_stays_not_serving(db_url: str) -> None:
    with live_collector(db_url) as live:
        live.running.health.enter_graceful_shutdown()
        live.running.health_watch.check()
        assert live.health() == NOT_SERVING
        assert live.health(INVENTORY) == NOT_SERVING
