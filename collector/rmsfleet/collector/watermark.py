"""How far evaluation has got: the reports this collector process has committed, how many of
them evaluation has covered, and when the last pass ran. Queries return it with their answer
and can wait for it; /metrics exports the lag.

The count is per collector process, whichever replica evaluates. A batch whose reports changed
something a rule reads wrote rows to the change feed (store/change_feed_sql.py); the watermark
remembers the highest feed id each batch wrote, and the batch is covered once the feed holds no
row at or below it: the evaluating replica (this one or another) consumed them in a committed
pass. A batch that wrote no feed row (heartbeats) is covered as soon as no earlier batch is
waiting. Pure bookkeeping: no database, no grpc; the clock is passed in."""

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
# Stands for the feed id of a batch that changed something but wrote no feed rows: only a pass
# that covers its count (covered()) covers it. Above any id a feed can reach; merged batches keep
# the highest, so a merge never lets it through early.
_BY_A_PASS = 2**63


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
        # Batches not covered yet, oldest first: (committed total after it, commit time, the
        # highest feed id it wrote or None).
        self._pending: deque[tuple[int, datetime, int | None]] = deque()

    def committed(self, reports: int, feed_id: int | None = None, *, changed: bool = True) -> int:
        """Count a committed batch of `reports`; returns the new committed total. A batch that
        wrote change-feed rows up to `feed_id` is covered once the feed holds none of them
        (covered_by_feed); one that `changed` nothing a rule reads, as soon as no earlier batch
        waits; any other batch when a pass covers its total (covered)."""
        with self._changed:
            if reports <= 0:
                return self._committed
            self._committed += reports
            waits_for = feed_id if feed_id is not None else (_BY_A_PASS if changed else None)
            if waits_for is None and not self._pending:
                self._evaluated = self._committed
                self._changed.notify_all()
            elif len(self._pending) < MAX_PENDING_BATCHES:
                self._pending.append((self._committed, self._clock(), waits_for))
            else:
                last = self._pending[-1]
                merged = last[2] if waits_for is None else max(waits_for, last[2] or 0)
                self._pending[-1] = (self._committed, last[1], merged)
            return self._committed

    def highest_feed_id(self) -> int | None:
        """The highest feed id a waiting batch wrote (None: none waits on the feed)."""
        with self._changed:
            ids = [f for _c, _t, f in self._pending if f is not None and f != _BY_A_PASS]
            return max(ids) if ids else None

    def coverable(self, through: int, lowest_pending: int | None) -> bool:
        """Whether covered_by_feed(through, lowest_pending) would cover any batch."""
        with self._changed:
            return bool(self._pending) and _feed_covers(self._pending[0], through, lowest_pending)

    def covered_by_feed(self, through: int, lowest_pending: int | None, pass_at: datetime | None) -> None:
        """The feed held no row below `lowest_pending` (None: no row at all) when read after the
        batches up to the committed total `through` had committed: those whose rows are all
        below it are covered, in order. `pass_at` is the time of the pass that consumed them,
        when this process ran it."""
        with self._changed:
            while self._pending and _feed_covers(self._pending[0], through, lowest_pending):
                self._evaluated = self._pending.popleft()[0]
            if pass_at is not None and (self._evaluated_at is None or pass_at > self._evaluated_at):
                self._evaluated_at = pass_at
            self._changed.notify_all()

    def covered(self, through: int, pass_at: datetime | None) -> None:
        """Evaluation has covered every report up to `through` (a full pass, or a pass over
        hosts given directly); `pass_at` is the time of the pass that did."""
        with self._changed:
            if through > self._evaluated:
                self._evaluated = min(through, self._committed)
            # Batches that wrote no feed rows go with the batches before them (_feed_covers).
            while self._pending and (self._pending[0][0] <= self._evaluated or self._pending[0][2] is None):
                self._evaluated = max(self._evaluated, self._pending.popleft()[0])
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


def _feed_covers(batch: tuple[int, datetime, int | None], through: int, lowest_pending: int | None) -> bool:
    count, _at, feed_id = batch
    if feed_id is None:
        # It changed nothing a rule reads and waited only for the batches before it, so it is
        # covered with them, even when it committed after `through`: nothing else would ever
        # cover it (a replica that does not evaluate looks at the feed only for batches that
        # wrote to it), and a wait on it hung until the next full pass.
        return True
    if count > through or feed_id == _BY_A_PASS:
        return False
    return lowest_pending is None or feed_id < lowest_pending
