"""The durable outbox: sequences, coalescing, the bound, refusals, the node key, corruption."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rmsfleet.agent.outbox import OUTBOX_FILE, Outbox, OutboxError
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FACTS = HostFacts(
    host_id="ws-0042",
    hostname="ws-0042.corp.example",
    forest="corp.example",
    server=None,
    client=ClientFacts(version=Version.SP1, activation=Activation.SELF, cluster="https://rms.corp.example"),
)
UPGRADED = replace(
    FACTS, client=ClientFacts(version=Version.SP2, activation=Activation.SELF, cluster="https://rms.corp.example")
)


def clock(at: datetime = T0) -> Callable[[], datetime]:
    return lambda: at


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def open_outbox(tmp_path: Path, max_changes: int = 1000) -> Outbox:
    return Outbox(tmp_path / OUTBOX_FILE, max_changes, clock=clock())


def test_sequences_strictly_increase_and_survive_a_restart(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        first = outbox.next_sequence()
        second = outbox.put(FACTS, minutes(1)).sequence
        assert second > first
    with Outbox(tmp_path / OUTBOX_FILE, clock=clock(T0 - timedelta(days=1))) as reopened:
        # A clock that went backwards does not matter once the counter exists.
        assert reopened.next_sequence() > second


def test_a_new_outbox_starts_its_sequence_at_the_clock(tmp_path: Path) -> None:
    # So an outbox that was lost or replaced never hands out numbers the collector already saw.
    with open_outbox(tmp_path) as outbox:
        assert outbox.next_sequence() == int(T0.timestamp() * 1_000_000)


def test_pending_reports_survive_a_restart_oldest_first(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        a = outbox.put(FACTS, minutes(1))
        b = outbox.put(UPGRADED, minutes(2))
    with open_outbox(tmp_path) as reopened:
        pending = reopened.pending()
    assert [(e.sequence, e.facts, e.observed_at) for e in pending] == [
        (a.sequence, FACTS, minutes(1)),
        (b.sequence, UPGRADED, minutes(2)),
    ]


def test_identical_heartbeats_coalesce_into_the_newest(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        outbox.put(FACTS, minutes(1))
        outbox.put(FACTS, minutes(2))
        last = outbox.put(FACTS, minutes(3))
        pending = outbox.pending()
    assert len(pending) == 1
    assert pending[0].sequence == last.sequence
    assert pending[0].observed_at == minutes(3)


def test_every_change_is_kept_in_order(tmp_path: Path) -> None:
    # D13: a version can go down again; the collector must see up, down and up.
    with open_outbox(tmp_path) as outbox:
        outbox.put(FACTS, minutes(1))
        outbox.put(UPGRADED, minutes(2))
        outbox.put(UPGRADED, minutes(3))  # heartbeat, coalesces
        outbox.put(FACTS, minutes(4))
        outbox.put(UPGRADED, minutes(5))
        pending = outbox.pending()
    assert [e.facts.client.version for e in pending if e.facts.client] == [
        Version.SP1,
        Version.SP2,
        Version.SP1,
        Version.SP2,
    ]
    assert [e.observed_at for e in pending] == [minutes(1), minutes(3), minutes(4), minutes(5)]
    sequences = [e.sequence for e in pending]
    assert sequences == sorted(sequences)


def test_past_the_bound_the_oldest_are_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open_outbox(tmp_path, max_changes=3) as outbox, caplog.at_level(logging.WARNING):
        puts = [outbox.put(FACTS if i % 2 == 0 else UPGRADED, minutes(i)) for i in range(5)]
        pending = outbox.pending()
    assert [e.sequence for e in pending] == [p.sequence for p in puts[2:]]
    assert pending[-1].facts == FACTS  # the newest state is always kept
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
    assert all(r.levelno == logging.WARNING and "dropped the 1 oldest" in r.getMessage() for r in dropped)


def test_ack_removes_only_that_report(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        a = outbox.put(FACTS, minutes(1))
        b = outbox.put(UPGRADED, minutes(2))
        assert outbox.ack(a.sequence) is True
        assert outbox.ack(a.sequence) is False  # acknowledging twice is harmless
        assert [e.sequence for e in outbox.pending()] == [b.sequence]
        assert outbox.pending_count() == 1


def test_a_heartbeat_coalesced_while_in_flight_stays_pending(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        in_flight = outbox.put(FACTS, minutes(1))
        newer = outbox.put(FACTS, minutes(2))
        assert outbox.ack(in_flight.sequence) is False
        assert [e.sequence for e in outbox.pending()] == [newer.sequence]


def test_set_aside_moves_a_refused_report_out_of_the_retry_path(tmp_path: Path) -> None:
    with Outbox(tmp_path / OUTBOX_FILE, clock=clock(minutes(9))) as outbox:
        bad = outbox.put(FACTS, minutes(1))
        good = outbox.put(UPGRADED, minutes(2))
        assert outbox.set_aside(bad.sequence, "INVALID_ARGUMENT: forest: a non-empty string") is True
        assert outbox.set_aside(bad.sequence, "again") is False
        assert [e.sequence for e in outbox.pending()] == [good.sequence]
    with open_outbox(tmp_path) as reopened:
        refused = reopened.refused()
    assert len(refused) == 1
    assert refused[0].sequence == bad.sequence
    assert refused[0].facts == FACTS
    assert refused[0].reason == "INVALID_ARGUMENT: forest: a non-empty string"
    assert refused[0].refused_at == minutes(9)


def test_a_change_after_a_refused_report_is_not_coalesced_away(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        first = outbox.put(FACTS, minutes(1))
        outbox.set_aside(first.sequence, "refused")
        again = outbox.put(FACTS, minutes(2))
        assert [e.sequence for e in outbox.pending()] == [again.sequence]


def test_the_node_key_is_stored_and_cleared(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        assert outbox.node_key() is None
        outbox.save_node_key("nk-123")
    with open_outbox(tmp_path) as reopened:
        assert reopened.node_key() == "nk-123"
        reopened.clear_node_key()
        assert reopened.node_key() is None


def test_the_outbox_file_is_private(tmp_path: Path) -> None:
    outbox = Outbox.in_state_dir(tmp_path / "state")
    outbox.close()
    assert (tmp_path / "state" / OUTBOX_FILE).stat().st_mode & 0o077 == 0
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"this is not a database at all" * 200),
        lambda path: path.write_bytes(path.read_bytes()[:100] + b"\x00" * 4000),
    ],
    ids=["not-sqlite", "truncated"],
)
def test_a_corrupt_outbox_is_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], object]
) -> None:
    path = tmp_path / OUTBOX_FILE
    with open_outbox(tmp_path) as outbox:
        outbox.put(FACTS, minutes(1))
        outbox.save_node_key("nk-123")
    for suffix in ("-wal", "-shm"):
        (tmp_path / (OUTBOX_FILE + suffix)).unlink(missing_ok=True)
    damage(path)
    with caplog.at_level(logging.ERROR), open_outbox(tmp_path) as fresh:
        assert fresh.pending() == []
        assert fresh.node_key() is None
        fresh.put(FACTS, minutes(2))
    moved = tmp_path / f"{OUTBOX_FILE}.corrupt-20240501T120000Z"
    assert moved.exists()
    assert any(str(moved) in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_an_outbox_from_a_newer_agent_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / OUTBOX_FILE
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(OutboxError, match="newer agent"):
        open_outbox(tmp_path)
    assert path.exists()


def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OutboxError, match="cannot create the state directory"):
        Outbox.in_state_dir(blocker / "state")


def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox, pytest.raises(ValueError, match="timezone"):
        outbox.put(FACTS, datetime(2024, 5, 1, 12, 0))
