"""No single report can stop the collector (issue 13), on SQLite and PostgreSQL, with a real
collector in this process over real gRPC: every bad field is INVALID_ARGUMENT naming it (the
message quoting at most a bounded part of the input), a report the database refuses alone is
refused while the reports sharing its batch are committed, a sequence far ahead is refused so no
report freezes a host, and in each case the honest reports are acknowledged and stored, nothing
counts as a database error, and health stays SERVING."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from live_collector import (
    INVENTORY,
    SERVING,
    Live,
    database_lock,
    is_postgres,
    live_collector,
    now_micros,
    report,
    wait_for,
)

from rmsfleet.v1 import inventory_pb2

REPORT = "/rmsfleet.v1.InventoryService/Report"
HUGE = "h" * 3_000_000
# What a status message may grow to: a field name, the bound and a short quote, never the input.
MAX_DETAILS = 300


def set_sequence(value: int) -> Callable[[inventory_pb2.ReportRequest], None]:
    def mutate(request: inventory_pb2.ReportRequest) -> None:
        request.sequence = value

    return mutate


def set_observed(seconds: int, nanos: int = 0) -> Callable[[inventory_pb2.ReportRequest], None]:
    def mutate(request: inventory_pb2.ReportRequest) -> None:
        request.observed_at.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))

    return mutate


def set_text(path: str, value: str) -> Callable[[inventory_pb2.ReportRequest], None]:
    def mutate(request: inventory_pb2.ReportRequest) -> None:
        *parents, name = path.split(".")
        target: Any = request
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return mutate


def now_seconds() -> int:
    return now_micros() // 1_000_000


# (what is wrong, the change to an honest report, the field named, a word of the bound)
BAD_REPORTS: list[tuple[str, Callable[[inventory_pb2.ReportRequest], None], str, str]] = [
    ("sequence 2^64-1 (the column is signed 64-bit)", set_sequence(2**64 - 1), "sequence", "2^63-1"),
    ("sequence 2^63", set_sequence(2**63), "sequence", "2^63-1"),
    ("observed_at beyond what datetime holds", set_observed(2**62), "observed_at", "9999-12-31"),
    ("observed_at with negative nanos", set_observed(1_790_000_000, -5), "observed_at", "nanos"),
    ("observed_at before RMS existed", set_observed(631_152_000), "observed_at", "2000-01-01"),
    ("observed_at two days ahead", set_observed(now_seconds() + 2 * 86_400), "observed_at", "a time from"),
    ("NUL in agent_version", set_text("agent_version", "1.0\x00evil"), "agent_version", "control characters"),
    ("agent_version too long", set_text("agent_version", "v" * 65), "agent_version", "at most 64"),
    ("NUL in hostname", set_text("facts.hostname", "a\x00b"), "facts.hostname", "control characters"),
    ("NUL in forest", set_text("facts.forest", "corp\x00example"), "facts.forest", "control characters"),
    ("a 3 MB host id", set_text("facts.host_id", HUGE), "facts.host_id", "at most 255"),
    ("a 3 MB agent_version", set_text("agent_version", HUGE), "agent_version", "at most 64"),
    ("a node key far too long", set_text("node_key", "k" * 1000), "node_key", "at most 256"),
]


def test_every_bad_report_field_is_invalid_argument_and_honest_reports_are_stored(db_url: str) -> None:
    with live_collector(db_url) as live:
        sequence = now_micros()
        for number, (what, mutate, field, bound) in enumerate(BAD_REPORTS):
            bad = report(f"bad-{number}", sequence)
            mutate(bad)
            honest = [report(f"honest-{number}-{i}", sequence + number) for i in range(3)]
            pending_bad = live.inventory.Report.future(bad, timeout=30)
            pending = [live.inventory.Report.future(request, timeout=30) for request in honest]
            assert all(p.result().applied for p in pending), what
            with pytest.raises(grpc.RpcError) as refused:
                pending_bad.result()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
            details = refused.value.details() or ""
            assert details.startswith(f"{field}: expected"), (what, details)
            assert bound in details, (what, details)
            assert len(details) < MAX_DETAILS, (what, len(details))
        stored = live.stored_hosts()
        assert sorted(h for h in stored if h.startswith("honest-")) == sorted(
            f"honest-{n}-{i}" for n in range(len(BAD_REPORTS)) for i in range(3)
        )
        assert not any(h.startswith("bad-") for h in stored)
        assert live.metric("rmsfleet_reports_total", outcome="invalid") == len(BAD_REPORTS)
        assert live.metric("rmsfleet_rpcs_total", method="Report", code="INVALID_ARGUMENT") == len(BAD_REPORTS)
        assert live.metric("rmsfleet_database_errors_total", operation="ingest") == 0
        assert live.health() == SERVING and live.health(INVENTORY) == SERVING


@pytest.mark.parametrize("field", ["facts.host_id", "facts.hostname", "agent_version", "node_key"])
def test_invalid_utf8_is_invalid_argument_naming_the_field(db_url: str, field: str) -> None:
    with live_collector(db_url) as live:
        marker = "\u00e9t\u00e9-marker"  # é is 0xC3 0xA9 in UTF-8; cut to 0xC3 it is invalid
        request = report("utf8-host", now_micros())
        set_text(field, marker)(request)
        data = request.SerializeToString()
        assert data.count(marker.encode()) == 1
        data = data.replace(marker.encode(), b"\xc3(" + marker.encode()[2:])
        with pytest.raises(grpc.RpcError) as refused:
            live.raw(REPORT)(data, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == f"{field}: expected valid UTF-8 text"
        assert live.inventory.Report(report("after-utf8", now_micros()), timeout=30).applied
        assert list(live.stored_hosts()) == ["after-utf8"]
        assert live.metric("rmsfleet_reports_total", outcome="invalid") == 1
        assert live.metric("rmsfleet_rpcs_total", method="Report", code="INVALID_ARGUMENT") == 1
        assert live.health() == SERVING


def test_a_sequence_far_ahead_is_refused_and_the_host_keeps_reporting(db_url: str) -> None:
    with live_collector(db_url) as live:
        start = now_micros()
        assert live.inventory.Report(report("ws-1", start, "v1.corp.example"), timeout=30).applied
        for poison in (2**63 - 1, start + 2**41):
            with pytest.raises(grpc.RpcError) as refused:
                live.inventory.Report(report("ws-1", poison, "poisoned.corp.example"), timeout=30)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (refused.value.details() or "").startswith("sequence: expected at most ")
        # A host new to the collector cannot start at the top either.
        with pytest.raises(grpc.RpcError) as refused:
            live.inventory.Report(report("ws-new", 2**63 - 1), timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The honest agent's next report applies: the host is not frozen.
        response = live.inventory.Report(report("ws-1", start + 1, "v2.corp.example"), timeout=30)
        assert response.applied and response.acknowledged_sequence == start + 1
        assert live.stored_hosts() == {"ws-1": ("v2.corp.example", start + 1)}
        assert live.metric("rmsfleet_reports_total", outcome="refused") == 3
        assert live.metric("rmsfleet_database_errors_total", operation="ingest") == 0


def test_a_host_frozen_by_an_earlier_release_starts_a_new_sequence_when_it_enrolls_again(
    db_url: str, tmp_path: Path
) -> None:
    secrets = tmp_path / "enroll.secrets"
    secrets.write_text("fleet-secret-1\n")
    secrets.chmod(0o600)
    with live_collector(db_url, enroll_secret_file=secrets) as live:
        enroll = inventory_pb2.EnrollRequest(host_id="ws-2", enroll_secret="fleet-secret-1")
        key = live.inventory.Enroll(enroll, timeout=30).node_key
        start = now_micros()
        first = report("ws-2", start, "v1.corp.example")
        first.node_key = key
        assert live.inventory.Report(first, timeout=30).applied
        # What a collector without the ceiling accepted: the host is stuck at the top.
        live.sql("UPDATE hosts SET last_sequence = 9223372036854775807 WHERE host_id = 'ws-2'")
        stuck = report("ws-2", start + 1, "v2.corp.example")
        stuck.node_key = key
        assert not live.inventory.Report(stuck, timeout=30).applied
        # The way out (docs/limits.md): revoke and enroll again; the new key starts a new sequence.
        # (Enrolling again while the key is valid is refused: docs/security.md, "Host identity".)
        with pytest.raises(grpc.RpcError) as refused:
            live.inventory.Enroll(enroll, timeout=30)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        live.sql("UPDATE node_keys SET revoked_at = CURRENT_TIMESTAMP WHERE host_id = 'ws-2'")
        new_key = live.inventory.Enroll(enroll, timeout=30).node_key
        again = report("ws-2", start + 2, "v3.corp.example")
        again.node_key = new_key
        assert live.inventory.Report(again, timeout=30).applied
        assert live.stored_hosts() == {"ws-2": ("v3.corp.example", start + 2)}


def site_rule(live: Live) -> list[str]:
    """Install a rule inside the database that the collector's edge cannot know of: hostnames
    starting with 'poison' are refused, by a trigger (SQLite; PostgreSQL, PL/pgSQL RAISE) and a
    CHECK constraint (PostgreSQL). Returns the hostnames that break it."""
    if is_postgres(live.db_url):
        live.sql(
            "ALTER TABLE hosts ADD CONSTRAINT site_rule CHECK (hostname NOT LIKE 'poison-check%')",
            """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 IF NEW.hostname LIKE 'poison-trigger%' THEN
                   RAISE EXCEPTION 'hostname % refused by a site rule', NEW.hostname;
                 END IF;
                 RETURN NEW;
               END $$""",
            "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON hosts FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        )
        return ["poison-check.corp.example", "poison-trigger.corp.example"]
    live.sql(
        """CREATE TRIGGER refuse_poison_insert BEFORE INSERT ON hosts WHEN NEW.hostname LIKE 'poison%'
           BEGIN SELECT RAISE(ABORT, 'hostname refused by a site rule'); END""",
        """CREATE TRIGGER refuse_poison_update BEFORE UPDATE ON hosts WHEN NEW.hostname LIKE 'poison%'
           BEGIN SELECT RAISE(ABORT, 'hostname refused by a site rule'); END""",
    )
    return ["poison-trigger.corp.example"]


def queued(live: Live, count: int) -> Callable[[], bool]:
    return lambda: live.metric("rmsfleet_ingest_queue_depth") == count


def test_a_report_the_database_refuses_is_refused_alone_and_its_batch_commits(db_url: str) -> None:
    with live_collector(db_url) as live:
        poisons = site_rule(live)
        sequence = now_micros()
        # A known host, so that the poison of one batch is an UPDATE, of the other an INSERT.
        assert live.inventory.Report(report("known-0", sequence), timeout=30).applied
        for round_number in range(2):
            with database_lock(live.db_url):
                # The writer takes the first report and waits on the lock; the rest queue up behind
                # it and make up the next batch together.
                first = live.inventory.Report.future(report(f"first-{round_number}", sequence), timeout=60)
                wait_for(lambda: live.metric("rmsfleet_ingest_queue_depth") == 0, "the writer to take a batch")
                honest = [
                    live.inventory.Report.future(report(f"honest-{round_number}-{i}", sequence), timeout=60)
                    for i in range(6)
                ]
                host = "known-0" if round_number else "new-poison"
                bad = [
                    live.inventory.Report.future(report(host, sequence + 1 + i, hostname), timeout=60)
                    for i, hostname in enumerate(poisons)
                ]
                honest += [
                    live.inventory.Report.future(report(f"honest-{round_number}-{i}", sequence), timeout=60)
                    for i in range(6, 12)
                ]
                wait_for(queued(live, len(honest) + len(bad)), "the batch to queue up")
            assert first.result().applied
            assert all(f.result().applied for f in honest)
            for refused_future in bad:
                with pytest.raises(grpc.RpcError) as refused:
                    refused_future.result()
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                details = refused.value.details() or ""
                assert details.startswith("the database refused this report alone: "), details
                assert "site_rule" in details or "site rule" in details, details
                assert len(details) < MAX_DETAILS
        stored = live.stored_hosts()
        assert {f"honest-{r}-{i}" for r in range(2) for i in range(12)} <= set(stored)
        assert "new-poison" not in stored
        assert stored["known-0"] == ("known-0.corp.example", sequence)
        assert live.metric("rmsfleet_reports_total", outcome="refused") == 2 * len(poisons)
        assert live.metric("rmsfleet_database_errors_total", operation="ingest") == 0
        assert live.health() == SERVING and live.health(INVENTORY) == SERVING
        # The refused host reports again with a hostname the rule accepts: it is applied.
        assert live.inventory.Report(report("known-0", sequence + 10), timeout=30).applied


def test_a_dropped_connection_is_retried_not_refused(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rmsfleet.collector.ingest")
    with live_collector(postgres_url) as live:
        sequence = now_micros()
        assert live.inventory.Report(report("before", sequence), timeout=30).applied
        # The database drops every connection the collector holds (a restart, a failover).
        live.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert live.inventory.Report(report("after", sequence), timeout=30).applied
        assert set(live.stored_hosts()) == {"before", "after"}
        assert "database connection was lost, retrying the batch of 1" in caplog.text
        assert live.metric("rmsfleet_database_errors_total", operation="ingest") == 0
        assert live.metric("rmsfleet_reports_total", outcome="refused") == 0
