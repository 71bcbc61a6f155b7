"""How far evaluation has got: the reports this collector process has committed, how many of
them evaluation has covered, and when the last pass ran. Queries return it with their answer
and can wait for it; /metrics exports the lag.

The count is per collector process. With several replicas behind a load balancer, a watermark
speaks for the replica that answered: each replica evaluates (under the advisory lock) the
reports it committed itself. Pure bookkeeping: no database, no grpc; the clock is passed in."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from rmsfleet.collector.clock import Clock

# Commit times kept for the lag of reports not yet evaluated. A stalled evaluator with a busy
# ingest path would otherwise grow this by one entry per batch; past the bound the newest
# entries merge, keeping the older time, so the lag is never under-reported.
MAX_PENDING_BATCHES = 1024
# How a query that waited in vain starts its message (the CLI recognises it by this).
NOT_EVALUATED = "evaluation has not covered the reports committed before this call"


@dataclass(frozen=True, slots=True)
class EvaluationMark:
    collector_id: str
    # Reports this collector has committed since it started, and how many of them evaluation has
    # covered: an answer read after this mark reflects every one of the `reports_evaluated`.
    reports_committed: int
    reports_evaluated: int
    # The time the last evaluation pass ran (fleet state and stale windows as of then); None
    # before the first.
    evaluated_at: datetime | None
    # When the oldest report that evaluation has not covered was committed; None when caught up.
    oldest_pending_at: datetime | None

    @property
    def pending(self) -> int:
        return self.reports_committed - self.reports_evaluated

    def lag_seconds(self, now: datetime) -> float:
        return 0.0 if self.oldest_pending_at is None else max(0.0, (now - self.oldest_pending_at).total_seconds())


class EvaluationWatermark:
    def __init__(self, clock: Clock) -> None:
        self.collector_id = uuid.uuid4().hex
        self._clock = clock
        self._changed = threading.Condition()
        self._committed = 0
        self._evaluated = 0
        self._evaluated_at: datetime | None = None
        self._pending: deque[tuple[int, datetime]] = deque()

    def committed(self, reports: int) -> int:
        """Count a committed batch of `reports`; returns the new committed total, the mark an
        evaluation pass must cover for these reports to count as evaluated."""
        with self._changed:
            if reports > 0:
                self._committed += reports
                if len(self._pending) < MAX_PENDING_BATCHES:
                    self._pending.append((self._committed, self._clock()))
                else:
                    self._pending[-1] = (self._committed, self._pending[-1][1])
            return self._committed

    def covered(self, through: int, pass_at: datetime | None) -> None:
        """Evaluation has covered every report up to `through`; `pass_at` is the time of the pass
        that did (None when no pass was needed: the reports changed nothing a rule reads)."""
        with self._changed:
            if through > self._evaluated:
                self._evaluated = min(through, self._committed)
            while self._pending and self._pending[0][0] <= self._evaluated:
                self._pending.popleft()
            if pass_at is not None and (self._evaluated_at is None or pass_at > self._evaluated_at):
                self._evaluated_at = pass_at
            self._changed.notify_all()

    def snapshot(self) -> EvaluationMark:
        with self._changed:
            return self._mark()

    def _mark(self) -> EvaluationMark:
        return EvaluationMark(
            collector_id=self.collector_id,
            reports_committed=self._committed,
            reports_evaluated=self._evaluated,
            evaluated_at=self._evaluated_at,
            oldest_pending_at=self._pending[0][1] if self._pending else None,
        )

    def wait_for_committed(self, timeout: float) -> tuple[bool, EvaluationMark]:
        """Wait until evaluation has covered every report committed before this call, at most
        `timeout` seconds. Returns (covered, the mark at return)."""
        with self._changed:
            target = self._committed
            done = self._changed.wait_for(lambda: self._evaluated >= target, timeout=max(0.0, timeout))
            return done, self._mark()
