"""The outbox when its SQLite file cannot be written for a while (another process holds the lock,
as a backup tool or a second agent on the same state directory does): each step fails with one
OutboxStorageError naming the file and the step, changes nothing, and works again once the lock
is gone. A real file and a real lock, no mock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rmsfleet.agent.outbox import OUTBOX_FILE, Outbox, OutboxError, OutboxStorageError
from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, Version

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FACTS = HostFacts("ws-1", "ws-1.corp.example", "corp.example", None, ClientFacts(Version.SP2, Activation.SELF, None))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's write lock on the outbox file."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / OUTBOX_FILE, clock=lambda: T0, busy_timeout=0.1) as box:
        yield box


def test_a_locked_outbox_refuses_a_put_and_changes_nothing(outbox: Outbox) -> None:
    kept = outbox.put(FACTS, T0)
    with locked(outbox.path), pytest.raises(OutboxStorageError) as failed:
        outbox.put(FACTS, T0)
    assert str(failed.value) == f"{outbox.path}: cannot store a report: database is locked"
    assert isinstance(failed.value, OutboxError)
    assert [e.sequence for e in outbox.pending()] == [kept.sequence]
    # The lock gone, the same call works and the sequence moves on from where it was.
    again = outbox.put(FACTS, T0)
    assert again.sequence == kept.sequence + 1
    assert [e.sequence for e in outbox.pending()] == [again.sequence]


def test_a_locked_outbox_refuses_an_ack_and_keeps_the_report(outbox: Outbox) -> None:
    entry = outbox.put(FACTS, T0)
    with locked(outbox.path), pytest.raises(OutboxStorageError) as failed:
        outbox.ack(entry.sequence)
    assert "cannot remove an acknowledged report: database is locked" in str(failed.value)
    assert outbox.pending_count() == 1
    assert outbox.ack(entry.sequence) is True
    assert outbox.pending_count() == 0


def test_the_node_key_and_refusals_fail_the_same_way(outbox: Outbox) -> None:
    entry = outbox.put(FACTS, T0)
    with locked(outbox.path):
        with pytest.raises(OutboxStorageError, match="cannot store the node key"):
            outbox.save_node_key("key-1", "ws-1")
        with pytest.raises(OutboxStorageError, match="cannot set a refused report aside"):
            outbox.set_aside(entry.sequence, "INVALID_ARGUMENT: no")
    assert outbox.node_key() is None and outbox.refused() == []
    assert outbox.set_aside(entry.sequence, "INVALID_ARGUMENT: no") is True
