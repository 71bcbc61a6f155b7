"""The run loop's decisions, in process: a real outbox, fake collector links (the `Link`
interface) that answer from a script. The same rules run end to end in test_faults*.py; here
each branch is pinned down exactly (which report is set aside, when the agent enrolls again,
where it fails over to)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmsfleet.agent.config import AgentConfig, SenderConfig
from rmsfleet.agent.enrollment import EnrollCredential
from rmsfleet.agent.outbox import Outbox
from rmsfleet.agent.runner import (
    EXIT_ENROLLMENT,
    EXIT_IDENTITY,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Problem,
    Runner,
)
from rmsfleet.agent.transport import RpcFailure
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version
from rmsfleet.v1 import inventory_pb2

Answer = RpcFailure | None  # None: acknowledged


def facts(host_id: str = "run-01", hostname: str = "run-01.corp.example") -> HostFacts:
    return HostFacts(
        host_id=host_id,
        hostname=hostname,
        forest="corp.example",
        server=None,
        client=ClientFacts(Version.SP2, Activation.SELF, None),
    )


class FakeProbe:
    def __init__(self) -> None:
        self.facts = facts()

    def read(self) -> HostFacts:
        return self.facts


class FakeLink:
    """Answers reports and enrollments from scripts; records what it was sent."""

    def __init__(
        self, address: str, reports: list[Answer] | None = None, enrolls: list[RpcFailure | str] | None = None
    ):
        self.address = address
        self.reports = list(reports or [])
        self.enrolls = list(enrolls or [])
        self.sent: list[inventory_pb2.ReportRequest] = []
        self.enrolled: list[tuple[str, str]] = []

    def report(self, request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse:
        self.sent.append(request)
        answer = self.reports.pop(0) if self.reports else None
        if answer is not None:
            raise answer
        return inventory_pb2.ReportResponse(applied=True, acknowledged_sequence=request.sequence)

    def enroll(self, host_id: str, credential: EnrollCredential, stop: threading.Event) -> str:
        self.enrolled.append((host_id, credential.secret))
        answer = self.enrolls.pop(0) if self.enrolls else f"key-{len(self.enrolled)}"
        if isinstance(answer, RpcFailure):
            raise answer
        return answer

    def explain(self, failure: RpcFailure) -> str:
        return str(failure)

    def close(self) -> None:
        pass


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.in_state_dir(tmp_path / "state") as box:
        yield box


def make_runner(tmp_path: Path, outbox: Outbox, links: list[FakeLink], secret: str | None = None) -> Runner:
    secret_file = None
    if secret is not None:
        secret_file = tmp_path / "agent.secret"
        secret_file.write_text(f"# the fleet secret\n{secret}\n")
    config = AgentConfig(
        state_dir=tmp_path / "state",
        collectors=tuple(link.address for link in links),
        jitter=0.0,
        enroll_secret_file=secret_file,
        sender=SenderConfig(initial_backoff=0.01, max_backoff=0.05, backoff_multiplier=2, rpc_deadline_seconds=1),
    )
    return Runner(config, FakeProbe(), outbox, links, threading.Event())


UNAVAILABLE = RpcFailure("UNAVAILABLE", "connection refused")


def test_a_refused_report_is_set_aside_with_the_collectors_reason_and_the_next_is_sent(
    tmp_path: Path, outbox: Outbox
) -> None:
    link = FakeLink("c:1", reports=[RpcFailure("INVALID_ARGUMENT", "facts.forest: expected non-empty")])
    runner = make_runner(tmp_path, outbox, [link])
    first = outbox.put(facts(hostname="a.corp.example"), runner._clock())
    second = outbox.put(facts(hostname="b.corp.example"), runner._clock())
    assert runner.drain() is None
    assert [r.sequence for r in outbox.refused()] == [first.sequence]
    assert outbox.refused()[0].reason == "INVALID_ARGUMENT: facts.forest: expected non-empty"
    assert [r.sequence for r in link.sent] == [first.sequence, second.sequence]
    assert outbox.pending() == []


def test_once_exits_4_when_its_own_report_is_refused(tmp_path: Path, outbox: Outbox) -> None:
    link = FakeLink("c:1", reports=[RpcFailure("FAILED_PRECONDITION", "sequence: expected at most 9 for this host")])
    code, message = make_runner(tmp_path, outbox, [link]).run_once()
    assert code == EXIT_REFUSED
    assert message == (
        "the collector at c:1 refused the report: FAILED_PRECONDITION: sequence: expected at most 9 for this host"
    )


WRONG_HOST = RpcFailure("PERMISSION_DENIED", "node key does not belong to host run-01: another machine enrolled")
TAKEN = RpcFailure("PERMISSION_DENIED", "host run-01 already holds a valid node key (enrolled 2026-12-01T10:00:00Z)")


def test_a_refused_identity_keeps_the_report_and_exits_6_with_the_collectors_reason(
    tmp_path: Path, outbox: Outbox
) -> None:
    # No enrollment secret: a collector binding host ids to certificates refuses the report.
    link = FakeLink("c:1", reports=[RpcFailure("PERMISSION_DENIED", "host run-01 is not named by the client cert")])
    code, message = make_runner(tmp_path, outbox, [link]).run_once()
    assert code == EXIT_IDENTITY
    assert message is not None and "\n" not in message
    assert message.startswith("the collector at c:1 refused report ")
    assert message.endswith("of host run-01: host run-01 is not named by the client cert")
    assert outbox.refused() == [], "never set aside: every later report of the host would go the same way"
    assert outbox.pending_count() == 1


def test_a_key_another_machine_replaced_tries_to_enroll_and_keeps_the_old_key_when_refused(
    tmp_path: Path, outbox: Outbox
) -> None:
    link = FakeLink("c:1", reports=[WRONG_HOST, WRONG_HOST], enrolls=["key-1", TAKEN])
    runner = make_runner(tmp_path, outbox, [link], secret="s3cret")
    outbox.put(facts(), runner._clock())
    failure = runner.drain()
    assert failure is not None and failure.problem is Problem.IDENTITY_REFUSED and failure.this_host_only
    assert failure.message == ("the collector at c:1 refused to enroll this machine as host run-01: " + TAKEN.details)
    assert outbox.node_key() == "key-1", "a refused enrollment leaves the key it had"
    assert outbox.pending_count() == 1 and outbox.refused() == []
    # An operator allowed the re-enrollment: the next attempt enrolls and the report goes through.
    link.reports = [WRONG_HOST]
    link.enrolls = ["key-3"]
    assert runner.drain() is None
    assert outbox.node_key() == "key-3" and outbox.pending_count() == 0
    assert [request.node_key for request in link.sent[-2:]] == ["key-1", "key-3"]


def test_retryable_failures_fail_over_to_the_next_address_and_stay_there(tmp_path: Path, outbox: Outbox) -> None:
    down, up = FakeLink("a:1", reports=[UNAVAILABLE]), FakeLink("b:2")
    runner = make_runner(tmp_path, outbox, [down, up])
    assert runner.run_once() == (EXIT_OK, None)
    assert len(down.sent) == 1 and len(up.sent) == 1
    assert runner.run_once() == (EXIT_OK, None)
    assert len(down.sent) == 1 and len(up.sent) == 2, "the agent stays with the collector that answers"


def test_when_every_address_fails_the_report_stays_and_once_exits_3(tmp_path: Path, outbox: Outbox) -> None:
    links = [FakeLink("a:1", reports=[UNAVAILABLE]), FakeLink("b:2", reports=[RpcFailure("DEADLINE_EXCEEDED", "slow")])]
    code, message = make_runner(tmp_path, outbox, links).run_once()
    assert code == EXIT_UNREACHABLE
    assert message == "cannot reach the collector at b:2: DEADLINE_EXCEEDED: slow"
    assert outbox.pending_count() == 1


def test_the_agent_enrolls_first_and_sends_its_key_with_every_report(tmp_path: Path, outbox: Outbox) -> None:
    link = FakeLink("c:1")
    runner = make_runner(tmp_path, outbox, [link], secret="s3cret")
    assert runner.run_once() == (EXIT_OK, None)
    assert runner.run_once() == (EXIT_OK, None)
    assert link.enrolled == [("run-01", "s3cret")]
    assert [r.node_key for r in link.sent] == ["key-1", "key-1"]
    assert outbox.node_key() == "key-1" and outbox.node_key_host() == "run-01"


def test_unauthenticated_makes_the_agent_enroll_again_once(tmp_path: Path, outbox: Outbox) -> None:
    revoked = RpcFailure("UNAUTHENTICATED", "key revoked: the node key of host run-01 was revoked; enroll again")
    link = FakeLink("c:1", reports=[revoked])
    outbox.save_node_key("old-key", "run-01")
    runner = make_runner(tmp_path, outbox, [link], secret="s3cret")
    assert runner.run_once() == (EXIT_OK, None)
    assert [r.node_key for r in link.sent] == ["old-key", "key-1"]
    assert outbox.node_key() == "key-1"
    # A fresh key refused as well is not looped on: the report stays for later.
    link.reports = [revoked, revoked]
    failure = runner.deliver(runner.outbox.put(facts(), runner._clock()))
    assert failure is not None and failure.problem is Problem.UNREACHABLE
    assert "refused a fresh node key" in failure.message


def test_a_key_for_another_host_id_is_not_sent(tmp_path: Path, outbox: Outbox) -> None:
    link = FakeLink("c:1")
    outbox.save_node_key("key-of-old-name", "old-name")
    assert make_runner(tmp_path, outbox, [link], secret="s").run_once() == (EXIT_OK, None)
    assert link.enrolled == [("run-01", "s")] and link.sent[0].node_key == "key-1"


def test_a_refused_secret_or_a_missing_one_is_an_enrollment_failure(tmp_path: Path, outbox: Outbox) -> None:
    refused = FakeLink("c:1", enrolls=[RpcFailure("UNAUTHENTICATED", "the enrollment secret is not accepted")])
    code, message = make_runner(tmp_path, outbox, [refused], secret="wrong").run_once()
    assert code == EXIT_ENROLLMENT and message is not None
    assert message.startswith(f"the collector at c:1 refused the enrollment secret from {tmp_path / 'agent.secret'}")
    assert refused.sent == [] and outbox.pending_count() == 1
    needs = FakeLink("c:1", reports=[RpcFailure("UNAUTHENTICATED", "no node key in the report: enroll first")])
    code, message = make_runner(tmp_path, outbox, [needs]).run_once()
    assert code == EXIT_ENROLLMENT and message is not None and "requires enrollment" in message


def test_a_collector_without_enrollment_gets_reports_without_a_key(tmp_path: Path, outbox: Outbox) -> None:
    link = FakeLink("c:1", enrolls=[RpcFailure("UNIMPLEMENTED", "this collector runs without enrollment")] * 2)
    assert make_runner(tmp_path, outbox, [link], secret="s").run_once() == (EXIT_OK, None)
    assert link.sent[0].node_key == "" and outbox.node_key() is None


def test_the_loop_backs_off_while_unreachable_and_stops_on_request(tmp_path: Path, outbox: Outbox) -> None:
    link = FakeLink("c:1", reports=[UNAVAILABLE] * 4)
    runner = make_runner(tmp_path, outbox, [link])

    def stop_after_success(request: inventory_pb2.ReportRequest, stop: threading.Event) -> inventory_pb2.ReportResponse:
        response = FakeLink.report(link, request, stop)
        runner.stop.set()  # reached only once the scripted failures are used up
        return response

    link.report = stop_after_success  # type: ignore[method-assign]
    assert runner.run_forever() == EXIT_OK
    assert len(link.sent) == 5 and outbox.pending() == []
    assert runner.backoff.attempts == 0, "a success resets the backoff"
