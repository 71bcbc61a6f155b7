"""Which replica evaluates: the one holding a session-level PostgreSQL advisory lock on a
connection of its own (docs/deploy.md, "Replicas").

The leader runs the incremental passes over the change feed and the full passes; the others
only write reports (and feed rows), refresh their aggregates and follow the feed for their
watermark. When the leader dies its connection closes and PostgreSQL releases the lock; another
replica takes it at its next try, at most one `recheck` interval later.

Leadership decides who works, not who may write: every pass still takes the transaction-scoped
evaluation lock (evaluation_sql.try_evaluation_lock), so a leader that lost its connection
without noticing yet can never evaluate at the same time as its successor."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from rmsfleet.collector.liveness import one_line
from rmsfleet.collector.store.evaluation_sql import EVALUATION_LOCK_KEY

log = logging.getLogger(__name__)

# Another key than the pass lock's: a session lock on that key held by this process's
# leadership connection would keep its own pass transactions (other connections) from taking it.
LEADERSHIP_LOCK_KEY = EVALUATION_LOCK_KEY + 1


class EvaluationLeadership:
    """Tries for the leadership lock, and checks that its connection still holds it, at most
    once per `recheck` seconds (one round trip); between checks `leads()` answers from memory."""

    def __init__(self, engine: Engine, recheck: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._recheck = recheck
        self._monotonic = monotonic
        self._connection: Connection | None = None
        self._next_check = 0.0
        # How many times this replica took the leadership: the evaluator forgets what it
        # remembers of its passes when this moves (another replica evaluated between).
        self.terms = 0

    @property
    def held(self) -> bool:
        return self._connection is not None

    def leads(self) -> bool:
        """Whether this replica evaluates now; takes or re-checks the lock when due."""
        now = self._monotonic()
        if now < self._next_check:
            return self.held
        self._next_check = now + self._recheck
        if self._connection is not None:
            self._still_held(self._connection)
        else:
            self._try_to_lead()
        return self.held

    def _try_to_lead(self) -> None:
        try:
            # Autocommit: the connection holds a session lock, never an open transaction (one
            # would hold back vacuum for as long as this replica leads).
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.warning("cannot try for the evaluation leadership: %s", one_line(exc))
            return
        try:
            taken = bool(
                connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADERSHIP_LOCK_KEY}).scalar()
            )
        except SQLAlchemyError as exc:
            log.warning("cannot try for the evaluation leadership: %s", one_line(exc))
            connection.invalidate()
            connection.close()
            return
        if not taken:
            connection.close()  # it holds nothing: back to the pool
            return
        self._connection = connection
        self.terms += 1
        log.info("this replica now evaluates: it holds the evaluation leadership lock")

    def _still_held(self, connection: Connection) -> None:
        try:
            connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("this replica no longer evaluates: its leadership connection failed: %s", one_line(exc))
            self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        # Never back to the pool: a pooled connection must not carry the lock to other work.
        self._connection = None
        try:
            connection.invalidate()
            connection.close()
        except SQLAlchemyError:
            pass

    def release(self) -> None:
        """Give the leadership up (graceful stop), so another replica takes over at once."""
        connection = self._connection
        if connection is None:
            return
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LEADERSHIP_LOCK_KEY})
        except SQLAlchemyError as exc:
            log.warning("could not release the evaluation leadership: %s", one_line(exc))
        self._drop(connection)
