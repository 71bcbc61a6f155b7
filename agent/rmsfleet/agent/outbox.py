"""The durable outbox: every report is written to disk before it is sent and deleted only when
the collector acknowledges it (design.md), so a collector outage or an agent restart loses
nothing.

One SQLite file, `outbox.sqlite3` in the state directory, holds:
- `pending`: reports not yet acknowledged, each with its sequence number (per host, strictly
  increasing, never reused: the collector applies a sequence once);
- `refused`: reports the collector refused for good (set aside, never retried, kept for
  diagnosis);
- `meta`: the next sequence number and the node key from enrollment.

Semantics:
- Heartbeats coalesce. When the newest pending report carries the same facts as the new one,
  it is replaced (new sequence, new observed_at) instead of adding a row: during an outage the
  outbox then grows only with *changes*, and the collector still learns that the host was alive
  at the latest observation.
- Changes are all kept, oldest first, so the collector's history sees every change in order.
- The outbox is bounded (`max_changes` pending reports). Past the bound the oldest pending
  reports are dropped with a WARNING naming how many: the newest state always survives, the
  collector only misses intermediate changes of a very long outage.
- The sequence counter of a new outbox starts at the current time in microseconds. If the
  file is lost or replaced (a corrupt file is moved aside), the new counter still starts above
  every sequence the old one handed out (it advanced by one per report, far slower than the
  clock), so the collector never mistakes new reports for retries of old ones.
- A read or write that fails (the file is locked by another process past the busy timeout, the
  disk is full or failing) raises OutboxStorageError and changes nothing; the run loop logs it,
  backs off and tries again, so a passing storage problem delays reports and loses none.
- A file that is not a usable SQLite database is moved aside to
  `outbox.sqlite3.corrupt-<UTC timestamp>` and a fresh outbox is created; its pending reports
  and node key are lost (the agent enrolls again), which the log says.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rmsfleet.contract.facts import HostFacts, facts_from_json, facts_to_json

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
SCHEMA_VERSION = 1
# Refused reports are kept for diagnosis only; a collector that refuses everything must not make
# the file grow without end.
MAX_REFUSED = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    sequence INTEGER PRIMARY KEY,
    observed_at TEXT NOT NULL,
    facts TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    sequence INTEGER PRIMARY KEY,
    observed_at TEXT NOT NULL,
    facts TEXT NOT NULL,
    refused_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    sequence: int
    observed_at: datetime
    facts: HostFacts


@dataclass(frozen=True, slots=True)
class RefusedEntry:
    sequence: int
    observed_at: datetime
    facts: HostFacts
    refused_at: datetime
    reason: str


class OutboxError(Exception):
    """The outbox cannot be opened or written (e.g. the state directory is not writable)."""


class OutboxStorageError(OutboxError):
    """A read or write of an open outbox failed (locked, disk full, I/O error); nothing changed.
    Worth retrying later."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """Thread-safe: the run loop may put while the sender acknowledges."""

    def __init__(
        self,
        path: Path,
        max_changes: int = 1000,
        *,
        clock: Callable[[], datetime] = _utc_now,
        busy_timeout: float = 10.0,
    ) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        self.path = path
        self.max_changes = max_changes
        self._clock = clock
        # How long a statement waits for another process's lock on the file before failing.
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db = self._open()

    @classmethod
    def in_state_dir(cls, state_dir: Path, max_changes: int = 1000) -> Outbox:
        """The outbox at `state_dir/outbox.sqlite3`, creating the directory when needed."""
        try:
            # 0o700: the outbox holds the node key, a credential (on Windows the installer is
            # expected to restrict the folder's ACL to SYSTEM and Administrators).
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"{state_dir}: cannot create the state directory: {exc.strerror or exc}") from exc
        return cls(state_dir / OUTBOX_FILE, max_changes)

    # --- opening and recovery --------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not self._looks_corrupt(exc):
                # "unable to open database file", "disk I/O error", "readonly database": the
                # file may be fine; moving it aside would throw away good reports.
                raise OutboxError(f"{self.path}: cannot open the outbox: {exc}") from exc
            self._move_aside(exc)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: cannot create a fresh outbox: {exc}") from exc

    @staticmethod
    def _looks_corrupt(exc: sqlite3.DatabaseError) -> bool:
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "corrupt" in text

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: access is serialised by self._lock instead.
        db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            if os.name == "posix":
                # The node key lives here: only the agent's account may read it. SQLite gives the
                # -wal and -shm files the database file's permissions.
                self.path.chmod(0o600)
            # WAL: a commit appends to the log instead of rewriting pages, and readers never block
            # the writer. synchronous=FULL: every commit is fsynced before it returns, so a report
            # is on disk before it is sent (a power cut cannot lose it; NORMAL could lose the last
            # commits in WAL mode). The cost is one fsync per report, i.e. per interval: nothing.
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed (quick_check: {check and check[0]})")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"{self.path}: written by a newer agent (outbox schema {version}, this agent knows "
                    f"{SCHEMA_VERSION}); upgrade the agent or move the file away"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if db.execute("SELECT 1 FROM meta WHERE key = 'next_sequence'").fetchone() is None:
                first = max(1, int(self._clock().timestamp() * 1_000_000))
                db.execute("INSERT INTO meta (key, value) VALUES ('next_sequence', ?)", (str(first),))
            log.debug("outbox %s open (journal mode %s)", self.path, mode and mode[0])
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> None:
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            self.path.replace(target)
            # The WAL and shared-memory files belong to the broken database: keep them with it,
            # or SQLite would try to replay them into the fresh one.
            for suffix in ("-wal", "-shm"):
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    companion.replace(target.with_name(target.name + suffix))
        except OSError as move_error:
            raise OutboxError(
                f"{self.path}: the outbox is damaged ({exc}) and cannot be moved aside: {move_error.strerror or move_error}"
            ) from move_error
        log.error(
            "outbox %s is not a usable SQLite database (%s): moved it to %s and started a fresh outbox; "
            "the reports that were pending in it are lost and the agent enrolls again",
            self.path,
            exc,
            target,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _storage(self, what: str) -> Iterator[None]:
        """Turn a failing read or write into OutboxStorageError naming the file and the step."""
        try:
            yield
        except sqlite3.Error as exc:
            raise OutboxStorageError(f"{self.path}: cannot {what}: {exc}") from exc

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._storage(what):
            # BEGIN IMMEDIATE takes the write lock up front, so two agents started on one state
            # directory by mistake cannot interleave a read and a write of the counter.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) may leave the transaction open, or SQLite may have
                # rolled it back already.
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error as rollback_error:
                        log.debug("outbox rollback failed: %s", rollback_error)
                raise

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._storage(what):
            yield self._db

    # --- sequences -------------------------------------------------------------------------------

    def next_sequence(self) -> int:
        """Hand out a sequence number: persisted, strictly increasing, never handed out twice."""
        with self._transaction("take a sequence number") as db:
            return self._take_sequence(db)

    @staticmethod
    def _take_sequence(db: sqlite3.Connection) -> int:
        stored = int(db.execute("SELECT value FROM meta WHERE key = 'next_sequence'").fetchone()[0])
        newest = db.execute("SELECT MAX(sequence) FROM pending").fetchone()[0]
        sequence = max(stored, (newest or 0) + 1)
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_sequence'", (str(sequence + 1),))
        return sequence

    # --- reports ---------------------------------------------------------------------------------

    def put(self, facts: HostFacts, observed_at: datetime) -> OutboxEntry:
        """Store a report and give it a sequence. Coalesces with the newest pending report when the
        facts are the same; drops the oldest pending reports past `max_changes`."""
        if observed_at.tzinfo is None:
            raise ValueError("observed_at must be timezone-aware")
        document = json.dumps(facts_to_json(facts), sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(document.encode("utf-8")).hexdigest()
        when = observed_at.astimezone(UTC).isoformat()
        with self._transaction("store a report") as db:
            sequence = self._take_sequence(db)
            newest = db.execute("SELECT sequence, fingerprint FROM pending ORDER BY sequence DESC LIMIT 1").fetchone()
            if newest is not None and newest[1] == fingerprint:
                db.execute(
                    "UPDATE pending SET sequence = ?, observed_at = ? WHERE sequence = ?", (sequence, when, newest[0])
                )
            else:
                db.execute(
                    "INSERT INTO pending (sequence, observed_at, facts, fingerprint) VALUES (?, ?, ?, ?)",
                    (sequence, when, document, fingerprint),
                )
                self._enforce_bound(db)
        return OutboxEntry(sequence=sequence, observed_at=observed_at.astimezone(UTC), facts=facts)

    def _enforce_bound(self, db: sqlite3.Connection) -> None:
        count = db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        excess = count - self.max_changes
        if excess <= 0:
            return
        dropped = db.execute("SELECT sequence FROM pending ORDER BY sequence LIMIT ?", (excess,)).fetchall()
        db.execute("DELETE FROM pending WHERE sequence <= ?", (dropped[-1][0],))
        log.warning(
            "outbox holds more than %d unacknowledged changes: dropped the %d oldest (sequences %d to %d); "
            "the collector will not see those intermediate changes, the newest facts are kept",
            self.max_changes,
            len(dropped),
            dropped[0][0],
            dropped[-1][0],
        )

    def pending(self) -> list[OutboxEntry]:
        """Unacknowledged reports, oldest first (the order to send them in)."""
        with self._reading("read the pending reports") as db:
            rows = db.execute("SELECT sequence, observed_at, facts FROM pending ORDER BY sequence").fetchall()
        return [OutboxEntry(row[0], datetime.fromisoformat(row[1]), _facts(row[2])) for row in rows]

    def pending_count(self) -> int:
        with self._reading("count the pending reports") as db:
            count: int = db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        return count

    def ack(self, sequence: int) -> bool:
        """The collector acknowledged `sequence`: remove it. False when it is no longer pending
        (already acknowledged, or coalesced into a newer heartbeat while it was in flight)."""
        with self._transaction("remove an acknowledged report") as db:
            return db.execute("DELETE FROM pending WHERE sequence = ?", (sequence,)).rowcount > 0

    def set_aside(self, sequence: int, reason: str) -> bool:
        """The collector refused `sequence` for good: move it to `refused`, never to be retried."""
        refused_at = self._clock().astimezone(UTC).isoformat()
        with self._transaction("set a refused report aside") as db:
            row = db.execute("SELECT observed_at, facts FROM pending WHERE sequence = ?", (sequence,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM pending WHERE sequence = ?", (sequence,))
            db.execute(
                "INSERT OR REPLACE INTO refused (sequence, observed_at, facts, refused_at, reason) VALUES (?, ?, ?, ?, ?)",
                (sequence, row[0], row[1], refused_at, reason),
            )
            db.execute(
                "DELETE FROM refused WHERE sequence NOT IN (SELECT sequence FROM refused ORDER BY sequence DESC LIMIT ?)",
                (MAX_REFUSED,),
            )
        log.warning("report %d set aside, the collector refused it: %s", sequence, reason)
        return True

    def refused(self) -> list[RefusedEntry]:
        """Reports set aside, oldest first (the newest MAX_REFUSED are kept)."""
        with self._reading("read the refused reports") as db:
            rows = db.execute(
                "SELECT sequence, observed_at, facts, refused_at, reason FROM refused ORDER BY sequence"
            ).fetchall()
        return [
            RefusedEntry(row[0], datetime.fromisoformat(row[1]), _facts(row[2]), datetime.fromisoformat(row[3]), row[4])
            for row in rows
        ]

    # --- the node key ----------------------------------------------------------------------------

    def node_key(self) -> str | None:
        """The node key from enrollment, or None before the first enrollment."""
        with self._reading("read the node key") as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'node_key'").fetchone()
        return None if row is None else str(row[0])

    def node_key_host(self) -> str | None:
        """The host id the node key was issued for (None: not recorded, or no key). A key belongs
        to one host: when the probe starts reporting another host id, the agent enrolls again."""
        with self._reading("read the node key") as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'node_key_host'").fetchone()
        return None if row is None else str(row[0])

    def save_node_key(self, key: str, host_id: str | None = None) -> None:
        if not key:
            raise ValueError("an empty node key")
        with self._transaction("store the node key") as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('node_key', ?)", (key,))
            if host_id is None:
                db.execute("DELETE FROM meta WHERE key = 'node_key_host'")
            else:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('node_key_host', ?)", (host_id,))

    def clear_node_key(self) -> None:
        """Forget the node key (the collector said UNAUTHENTICATED: enroll again)."""
        with self._transaction("forget the node key") as db:
            db.execute("DELETE FROM meta WHERE key IN ('node_key', 'node_key_host')")


def _facts(document: str) -> HostFacts:
    return facts_from_json(json.loads(document))
