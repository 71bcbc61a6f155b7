"""Many hosts through the agent's outbox and run loop (multihost.py), in process: real outboxes
on disk, fake collector links (the `Link` seam) that answer from a script. The same code against
a real collector: tests/e2e/test_multihost.py."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rmsfleet.agent.config import AgentConfig, SenderConfig
from rmsfleet.agent.enrollment import EnrollCredential
from rmsfleet.agent.multihost import HostOutboxes, HostStatus, host_directory
from rmsfleet.agent.runner import EXIT_ENROLLMENT, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from rmsfleet.agent.transport import RpcFailure
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, InvalidFacts, Version
from rmsfleet.v1 import inventory_pb2

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UNAVAILABLE = RpcFailure("UNAVAILABLE", "connection refused")


def facts(host_id: str, version: Version = Version.SP2) -> HostFacts:
    return HostFacts(
        host_id=host_id,
        hostname=f"{host_id}.corp.example",
        forest="corp.example",
        server=None,
        client=ClientFacts(version, Activation.SELF, None),
    )


class FakeLink:
    """Answers from scripts (reports per host id); records what it was sent. Thread-safe."""

    def __init__(self, address: str, down: bool = False, refuse: set[str] | None = None) -> None:
        self.address = address
        self.down = down
        self.refuse = refuse or set()
        self.sent: list[inventory_pb2.ReportRequest] = []
        self.enrolled: list[str] = []
        self._lock = threading.Lock()

    def report(self, request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse:
        with self._lock:
            self.sent.append(request)
        if self.down:
            raise UNAVAILABLE
        if request.facts.host_id in self.refuse:
            raise RpcFailure("INVALID_ARGUMENT", "facts.hostname: not allowed here")
        return inventory_pb2.ReportResponse(applied=True, acknowledged_sequence=request.sequence)

    def enroll(self, host_id: str, credential: EnrollCredential, stop: threading.Event) -> str:
        if self.down:
            raise UNAVAILABLE
        if credential.secret != "fleet-secret":
            raise RpcFailure("UNAUTHENTICATED", "the enrollment secret is not accepted by this collector")
        with self._lock:
            self.enrolled.append(host_id)
        return f"key-of-{host_id}"

    def explain(self, failure: RpcFailure) -> str:
        return str(failure)

    def close(self) -> None:
        pass

    def sequences(self, host_id: str) -> list[int]:
        return [request.sequence for request in self.sent if request.facts.host_id == host_id]


def config(tmp_path: Path, links: list[FakeLink], secret: str | None = None) -> AgentConfig:
    secret_file = None
    if secret is not None:
        secret_file = tmp_path / "agent.secret"
        secret_file.write_text(f"{secret}\n")
    return AgentConfig(
        state_dir=tmp_path / "state",
        collectors=tuple(link.address for link in links),
        jitter=0.0,
        enroll_secret_file=secret_file,
        sender=SenderConfig(initial_backoff=0.01, max_backoff=0.05, backoff_multiplier=2, rpc_deadline_seconds=1),
    )


def test_host_directories_are_safe_and_never_shared() -> None:
    ids = ["ams-rms-01", "AMS-RMS-01", "ams/rms:01", "ams_rms_01", "..", "CON", "x" * 255, "ams rms 01", "Ω-host"]
    names = [host_directory(host_id) for host_id in ids]
    assert len(set(names)) == len(ids), "two host ids share a folder"
    for name in names:
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-"), name
        assert len(name) <= 70
    assert host_directory("ams-rms-01").startswith("ams-rms-01-"), "the folder is recognisable"
    assert host_directory("ams-rms-01") == host_directory("ams-rms-01"), "stable across runs"


def test_each_host_gets_its_own_outbox_and_a_put_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    hosts = HostOutboxes(tmp_path / "state")
    first = hosts.put(facts("ams-01"), T0)
    hosts.put(facts("ams-02"), T0)
    # Read the files with a separate connection, as a restarted process would.
    for host_id in ("ams-01", "ams-02"):
        path = tmp_path / "state" / "hosts" / host_directory(host_id) / "outbox.sqlite3"
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT sequence, facts FROM pending").fetchall()
        assert len(rows) == 1 and host_id in rows[0][1]
    assert hosts.pending_count("ams-01") == 1
    # Identical facts coalesce into a heartbeat with a newer sequence, as for one agent.
    again = hosts.put(facts("ams-01"), T0 + timedelta(minutes=1))
    assert again.sequence > first.sequence and hosts.pending_count("ams-01") == 1
    hosts.put(facts("ams-01", Version.SP1), T0 + timedelta(minutes=2))
    assert hosts.pending_count("ams-01") == 2
    hosts.close()


def test_facts_outside_the_contract_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    hosts = HostOutboxes(tmp_path / "state")
    bad = HostFacts("ams-01", "", "corp.example", None, ClientFacts(Version.SP2, Activation.SELF, None))
    with pytest.raises(InvalidFacts, match="hostname"):
        hosts.put(bad, T0)
    assert hosts.directories() == []


def test_a_drain_sends_every_hosts_reports_with_its_own_sequences(tmp_path: Path) -> None:
    link = FakeLink("a:1")
    hosts = HostOutboxes(tmp_path / "state")
    hosts.put(facts("ams-01", Version.SP1), T0)
    hosts.put(facts("ams-01", Version.SP2), T0 + timedelta(minutes=1))
    hosts.put(facts("ams-02"), T0)
    result = hosts.drain(config(tmp_path, [link]), [link], threading.Event(), concurrency=4)
    by_host = {outcome.host_id: outcome for outcome in result.outcomes}
    assert set(by_host) == {"ams-01", "ams-02"}
    assert by_host["ams-01"].status is HostStatus.DELIVERED and by_host["ams-01"].delivered == 2
    assert by_host["ams-02"].delivered == 1 and result.pending == 0 and result.exit_code == EXIT_OK
    first = link.sequences("ams-01")
    assert first == sorted(first) and len(first) == 2, "a host's changes go out oldest first"
    # A second drain has nothing to send.
    assert hosts.drain(config(tmp_path, [link]), [link], threading.Event()).outcomes == ()
    assert len(link.sent) == 3


def test_reports_left_by_an_earlier_process_are_sent_by_the_next(tmp_path: Path) -> None:
    with HostOutboxes(tmp_path / "state") as earlier:
        earlier.put(facts("ams-01"), T0)
        earlier.put(facts("ams-02"), T0)
    link = FakeLink("a:1")
    later = HostOutboxes(tmp_path / "state")
    result = later.drain(config(tmp_path, [link]), [link], threading.Event())
    assert sorted(o.host_id or "" for o in result.outcomes) == ["ams-01", "ams-02"]
    assert result.delivered == 2


def test_an_unreachable_collector_keeps_every_report_and_stops_the_pass(tmp_path: Path) -> None:
    link = FakeLink("a:1", down=True)
    hosts = HostOutboxes(tmp_path / "state")
    for number in range(6):
        hosts.put(facts(f"ams-{number:02d}"), T0)
    result = hosts.drain(config(tmp_path, [link]), [link], threading.Event(), concurrency=1)
    assert result.exit_code == EXIT_UNREACHABLE
    assert result.failure is not None and "connection refused" in result.failure.message
    assert result.count(HostStatus.UNREACHABLE) == 1
    # The others waited for the next drain instead of each timing out against a dead collector.
    assert result.count(HostStatus.SKIPPED) == 5 and len(link.sent) == 1
    assert result.pending == 6
    link.down = False
    retried = hosts.drain(config(tmp_path, [link]), [link], threading.Event(), concurrency=3)
    assert retried.count(HostStatus.DELIVERED) == 6 and retried.pending == 0


def test_fail_over_carries_to_the_next_hosts(tmp_path: Path) -> None:
    dead, alive = FakeLink("dead:1", down=True), FakeLink("alive:1")
    hosts = HostOutboxes(tmp_path / "state")
    for number in range(4):
        hosts.put(facts(f"ams-{number:02d}"), T0)
    result = hosts.drain(config(tmp_path, [dead, alive]), [dead, alive], threading.Event(), concurrency=1)
    assert result.count(HostStatus.DELIVERED) == 4
    assert len(dead.sent) == 1, "after the first host found the live address, the rest started there"


def test_a_refused_report_is_set_aside_and_the_other_hosts_go_on(tmp_path: Path) -> None:
    link = FakeLink("a:1", refuse={"ams-02"})
    hosts = HostOutboxes(tmp_path / "state")
    for host_id in ("ams-01", "ams-02", "ams-03"):
        hosts.put(facts(host_id), T0)
    result = hosts.drain(config(tmp_path, [link]), [link], threading.Event(), concurrency=2)
    by_host = {outcome.host_id: outcome for outcome in result.outcomes}
    assert by_host["ams-02"].status is HostStatus.REFUSED
    assert "not allowed here" in (by_host["ams-02"].message or "")
    assert by_host["ams-01"].status is by_host["ams-03"].status is HostStatus.DELIVERED
    assert result.exit_code == EXIT_REFUSED and result.pending == 0


def test_with_enrollment_each_host_enrolls_with_its_own_key(tmp_path: Path) -> None:
    link = FakeLink("a:1")
    hosts = HostOutboxes(tmp_path / "state")
    hosts.put(facts("ams-01"), T0)
    hosts.put(facts("ams-02"), T0)
    agent_config = config(tmp_path, [link], secret="fleet-secret")
    hosts.drain(agent_config, [link], threading.Event(), concurrency=2)
    assert sorted(link.enrolled) == ["ams-01", "ams-02"]
    assert {request.facts.host_id: request.node_key for request in link.sent} == {
        "ams-01": "key-of-ams-01",
        "ams-02": "key-of-ams-02",
    }
    assert hosts.node_key("ams-01") == "key-of-ams-01"
    # The keys are kept: the next reports enroll nobody again.
    hosts.put(facts("ams-01", Version.SP1), T0 + timedelta(minutes=1))
    hosts.drain(agent_config, [link], threading.Event())
    assert len(link.enrolled) == 2 and link.sent[-1].node_key == "key-of-ams-01"


def test_a_refused_enrollment_secret_keeps_the_reports_and_says_so(tmp_path: Path) -> None:
    link = FakeLink("a:1")
    hosts = HostOutboxes(tmp_path / "state")
    hosts.put(facts("ams-01"), T0)
    hosts.put(facts("ams-02"), T0)
    result = hosts.drain(config(tmp_path, [link], secret="wrong"), [link], threading.Event(), concurrency=1)
    assert result.exit_code == EXIT_ENROLLMENT
    assert result.count(HostStatus.ENROLLMENT) == 1 and result.count(HostStatus.SKIPPED) == 1
    assert result.failure is not None and "refused the enrollment secret" in result.failure.message
    assert result.pending == 2 and link.sent == []


def test_a_stop_request_leaves_the_reports_for_the_next_start(tmp_path: Path) -> None:
    link = FakeLink("a:1")
    hosts = HostOutboxes(tmp_path / "state")
    hosts.put(facts("ams-01"), T0)
    stop = threading.Event()
    stop.set()
    result = hosts.drain(config(tmp_path, [link]), [link], stop)
    assert result.stopped and result.exit_code == 1 and result.pending == 1 and link.sent == []


def test_puts_from_many_threads_while_draining_lose_nothing(tmp_path: Path) -> None:
    link = FakeLink("a:1")
    hosts = HostOutboxes(tmp_path / "state")
    stop = threading.Event()
    agent_config = config(tmp_path, [link])

    def scan(first: int) -> None:
        for number in range(first, first + 10):
            hosts.put(facts(f"ams-{number:03d}"), T0)

    threads = [threading.Thread(target=scan, args=(start,)) for start in range(0, 40, 10)]
    for thread in threads:
        thread.start()
    sent_hosts: set[str] = set()
    while any(thread.is_alive() for thread in threads):
        sent_hosts.update(o.host_id or "" for o in hosts.drain(agent_config, [link], stop, concurrency=4).outcomes)
    for thread in threads:
        thread.join()
    sent_hosts.update(o.host_id or "" for o in hosts.drain(agent_config, [link], stop, concurrency=4).outcomes)
    assert sent_hosts == {f"ams-{number:03d}" for number in range(40)}
    assert all(hosts.pending_count(f"ams-{number:03d}") == 0 for number in range(40))


def test_a_restart_opens_only_the_outboxes_that_hold_reports(tmp_path: Path) -> None:
    # Opening an outbox properly costs a quick_check and possibly fsyncs; a spool or scanner that
    # restarts with thousands of delivered hosts must not pay that for each. The quick look must
    # still never miss a pending report.
    link = FakeLink("a:1")
    with HostOutboxes(tmp_path / "state") as first:
        first.put(facts("ams-01"), T0)
        first.put(facts("ams-02"), T0)
        first.drain(config(tmp_path, [link]), [link], threading.Event())
        first.put(facts("ams-02", Version.SP1), T0 + timedelta(minutes=1))
    later = HostOutboxes(tmp_path / "state")
    assert not later._may_have_pending(host_directory("ams-01"))
    assert later._may_have_pending(host_directory("ams-02"))
    result = later.drain(config(tmp_path, [link]), [link], threading.Event())
    assert [(o.host_id, o.delivered) for o in result.outcomes] == [("ams-02", 1)]
