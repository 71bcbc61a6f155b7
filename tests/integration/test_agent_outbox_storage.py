"""The agent's run loop against a real collector (in this process, real gRPC over loopback) when
its own outbox file is locked by another process for a while: the failing put or ack is logged
and retried with backoff, the service survives, and every report reaches the collector once.
And a drain sends what is pending in one pass, oldest first, removing each on its acknowledgement."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from live_collector import Live, live_collector, wait_for

from rmsfleet.agent.config import AgentConfig, SenderConfig
from rmsfleet.agent.enrollment import EnrollCredential
from rmsfleet.agent.outbox import OUTBOX_FILE, Outbox
from rmsfleet.agent.runner import Runner
from rmsfleet.agent.transport import GrpcLink, Stopped, open_links
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version
from rmsfleet.v1 import inventory_pb2


def facts(hostname: str = "ws-1.corp.example") -> HostFacts:
    return HostFacts("ws-1", hostname, "corp.example", None, ClientFacts(Version.SP2, Activation.SELF, None))


class FileProbe:
    """The facts the probe reads now (the probe is a seam the design names)."""

    def __init__(self) -> None:
        self.facts = facts()

    def read(self) -> HostFacts:
        return self.facts


class LockAfterReport:
    """A real gRPC link; after the report the collector acknowledged, another process takes the
    outbox's lock for `hold` seconds, so the agent's ack meets a locked file."""

    def __init__(self, link: GrpcLink, outbox_path: Path, hold: float) -> None:
        self._link = link
        self.address = link.address
        self._path = outbox_path
        self._hold = hold
        self.locks_taken = 0
        self.sent: list[int] = []

    def report(self, request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse:
        response = self._link.report(request, stop)
        self.sent.append(request.sequence)
        if self.locks_taken == 0:
            self.locks_taken += 1
            taken = threading.Event()
            threading.Thread(target=hold_lock, args=(self._path, self._hold, taken), daemon=True).start()
            taken.wait(10)
        return response

    def enroll(self, host_id: str, credential: EnrollCredential, stop: threading.Event) -> str:
        return self._link.enroll(host_id, credential, stop)

    def explain(self, failure: object) -> str:
        return str(failure)

    def close(self) -> None:
        self._link.close()


def hold_lock(path: Path, seconds: float, taken: threading.Event | None = None) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        if taken is not None:
            taken.set()
        threading.Event().wait(seconds)
        other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.fixture
def live(sqlite_url: str) -> Iterator[Live]:
    with live_collector(sqlite_url) as running:
        yield running


def agent_config(tmp_path: Path, live: Live) -> AgentConfig:
    return AgentConfig(
        state_dir=tmp_path / "state",
        collectors=(f"127.0.0.1:{live.running.grpc_port}",),
        interval_seconds=3600,
        jitter=0.0,
        sender=SenderConfig(initial_backoff=0.05, max_backoff=0.2, backoff_multiplier=2, rpc_deadline_seconds=10),
    )


def run_in_background(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    return thread


def test_a_locked_outbox_delays_the_first_report_and_the_agent_survives(
    tmp_path: Path, live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rmsfleet.agent")
    config = agent_config(tmp_path, live)
    (tmp_path / "state").mkdir()
    with Outbox(tmp_path / "state" / OUTBOX_FILE, busy_timeout=0.05) as outbox:
        runner = Runner(
            config, FileProbe(), outbox, open_links(config.collectors, config.tls, config.sender), threading.Event()
        )
        taken = threading.Event()
        locker = threading.Thread(target=hold_lock, args=(outbox.path, 1.5, taken))
        locker.start()
        assert taken.wait(10)
        agent = run_in_background(runner)
        wait_for(lambda: runner.storage_backoff.attempts >= 2, "the agent to retry the put")
        assert agent.is_alive()
        locker.join()
        wait_for(lambda: "ws-1" in live.stored_hosts(), "the report to reach the collector")
        wait_for(lambda: outbox.pending_count() == 0, "the acknowledged report to leave the outbox")
        runner.stop.set()
        agent.join(10)
    assert not agent.is_alive()
    assert "cannot queue this host's report" in caplog.text and "database is locked" in caplog.text


def test_a_locked_outbox_at_ack_time_resends_until_removed_and_the_collector_applies_it_once(
    tmp_path: Path, live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rmsfleet.agent")
    config = agent_config(tmp_path, live)
    with Outbox.in_state_dir(config.state_dir) as outbox:
        outbox_fast = Outbox(outbox.path, busy_timeout=0.05)
    with outbox_fast as outbox:
        (link,) = open_links(config.collectors, config.tls, config.sender)
        locking = LockAfterReport(link, outbox.path, hold=0.8)
        runner = Runner(config, FileProbe(), outbox, [locking], threading.Event())
        agent = run_in_background(runner)
        wait_for(lambda: len(locking.sent) >= 2 and outbox.pending_count() == 0, "the resent report to be acknowledged")
        runner.stop.set()
        agent.join(10)
    assert len(set(locking.sent)) == 1, "the same report, sent again"
    assert "cannot remove an acknowledged report: database is locked" in caplog.text
    assert "already applied" in caplog.text
    assert live.stored_hosts() == {"ws-1": ("ws-1.corp.example", locking.sent[0])}
    assert live.metric("rmsfleet_reports_total", outcome="applied") == 1
    assert live.metric("rmsfleet_reports_total", outcome="duplicate") == len(locking.sent) - 1


def test_a_drain_sends_the_pending_reports_in_order_removing_each_on_its_ack(tmp_path: Path, live: Live) -> None:
    config = agent_config(tmp_path, live)
    with Outbox.in_state_dir(config.state_dir) as outbox:
        start = datetime.now(UTC) - timedelta(hours=1)
        entries = [outbox.put(facts(f"v{i}.corp.example"), start + timedelta(minutes=i)) for i in range(50)]
        links = open_links(config.collectors, config.tls, config.sender)
        runner = Runner(config, FileProbe(), outbox, links, threading.Event())
        stop_after = 20
        original = links[0].report

        def report_then_maybe_stop(
            request: inventory_pb2.ReportRequest, stop: threading.Event
        ) -> inventory_pb2.ReportResponse:
            response = original(request, stop)
            if request.sequence == entries[stop_after - 1].sequence:
                stop.set()  # SIGTERM in the middle of a drain
            return response

        links[0].report = report_then_maybe_stop  # type: ignore[method-assign]
        with pytest.raises(Stopped):
            runner.drain()
        assert [e.sequence for e in outbox.pending()] == [e.sequence for e in entries[stop_after:]]
        runner.stop.clear()
        assert runner.drain() is None
        assert outbox.pending() == []
    assert live.stored_hosts() == {"ws-1": ("v49.corp.example", entries[-1].sequence)}
