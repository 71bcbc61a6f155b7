"""The evaluation watermark: counts, coverage, the lag, and waiting for the reports committed
before a call."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from rmsfleet.collector.watermark import MAX_PENDING_BATCHES, EvaluationWatermark

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_new_collector_is_caught_up_with_no_pass_yet() -> None:
    mark = EvaluationWatermark(Clock()).snapshot()
    assert (mark.reports_committed, mark.reports_evaluated, mark.pending) == (0, 0, 0)
    assert mark.evaluated_at is None and mark.oldest_pending_at is None
    assert mark.lag_seconds(T0) == 0.0


def test_lag_runs_from_the_oldest_report_not_yet_covered() -> None:
    clock = Clock()
    watermark = EvaluationWatermark(clock)
    first = watermark.committed(3)
    clock.now = T0 + timedelta(seconds=5)
    second = watermark.committed(2)
    assert (first, second) == (3, 5)
    clock.now = T0 + timedelta(seconds=8)
    mark = watermark.snapshot()
    assert mark.pending == 5 and mark.lag_seconds(clock.now) == 8.0

    watermark.covered(first, pass_at=T0 + timedelta(seconds=6))
    mark = watermark.snapshot()
    assert (mark.reports_evaluated, mark.pending) == (3, 2)
    assert mark.evaluated_at == T0 + timedelta(seconds=6)
    assert mark.lag_seconds(clock.now) == 3.0  # the second batch, committed at +5 s

    watermark.covered(second, pass_at=None)  # no pass was needed: evaluated_at stays
    mark = watermark.snapshot()
    assert mark.pending == 0 and mark.lag_seconds(clock.now) == 0.0
    assert mark.evaluated_at == T0 + timedelta(seconds=6)


def test_coverage_never_goes_back() -> None:
    watermark = EvaluationWatermark(Clock())
    watermark.committed(4)
    watermark.covered(4, T0 + timedelta(seconds=2))
    watermark.covered(1, T0 + timedelta(seconds=1))  # a slower, older pass finishing late
    mark = watermark.snapshot()
    assert mark.reports_evaluated == 4 and mark.evaluated_at == T0 + timedelta(seconds=2)


def test_wait_returns_once_the_reports_committed_before_it_are_covered() -> None:
    watermark = EvaluationWatermark(Clock())
    through = watermark.committed(2)
    waiting = threading.Event()
    result: list[bool] = []

    def wait() -> None:
        waiting.set()
        covered, _mark = watermark.wait_for_committed(timeout=30)
        result.append(covered)

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiting.wait()
    # Reports committed after the call do not lengthen the wait.
    later = watermark.committed(10)
    watermark.covered(through, T0)
    waiter.join(30)
    assert result == [True]
    assert watermark.snapshot().pending == later - through


def test_wait_gives_up_after_its_timeout_saying_how_far_evaluation_got() -> None:
    watermark = EvaluationWatermark(Clock())
    watermark.committed(3)
    watermark.covered(1, T0)
    covered, mark = watermark.wait_for_committed(timeout=0.05)
    assert not covered
    assert (mark.reports_evaluated, mark.reports_committed) == (1, 3)


def test_a_stalled_evaluator_keeps_bounded_state_and_still_reports_the_oldest_lag() -> None:
    clock = Clock()
    watermark = EvaluationWatermark(clock)
    for second in range(MAX_PENDING_BATCHES * 3):
        clock.now = T0 + timedelta(seconds=second)
        watermark.committed(1)
    assert len(watermark._pending) == MAX_PENDING_BATCHES
    mark = watermark.snapshot()
    assert mark.pending == MAX_PENDING_BATCHES * 3
    assert mark.oldest_pending_at == T0
    # Covering part of the merged tail keeps the older time: the lag is never under-reported.
    watermark.covered(MAX_PENDING_BATCHES * 2, clock.now)
    assert watermark.snapshot().oldest_pending_at is not None
    watermark.covered(MAX_PENDING_BATCHES * 3, clock.now)
    assert watermark.snapshot().oldest_pending_at is None


def test_a_batch_that_wrote_feed_rows_is_covered_once_the_feed_holds_none_of_them() -> None:
    watermark = EvaluationWatermark(Clock())
    first = watermark.committed(2, feed_id=10)
    watermark.committed(1, feed_id=None, changed=False)  # a heartbeat behind it waits in line
    assert watermark.snapshot().pending == 3 and watermark.highest_feed_id() == 10

    watermark.covered_by_feed(first + 1, lowest_pending=10, pass_at=None)  # row 10 still there
    assert watermark.snapshot().pending == 3
    assert not watermark.coverable(first + 1, lowest_pending=7)

    assert watermark.coverable(first + 1, lowest_pending=11)
    watermark.covered_by_feed(first + 1, lowest_pending=11, pass_at=T0)  # rows below 11 consumed
    mark = watermark.snapshot()
    assert mark.pending == 0 and mark.evaluated_at == T0
    assert watermark.highest_feed_id() is None


def test_an_empty_feed_covers_only_the_batches_committed_before_it_was_read() -> None:
    watermark = EvaluationWatermark(Clock())
    read_after = watermark.committed(1, feed_id=5)
    watermark.committed(1, feed_id=6)  # committed after the read
    watermark.covered_by_feed(read_after, lowest_pending=None, pass_at=None)
    mark = watermark.snapshot()
    assert (mark.reports_evaluated, mark.pending) == (1, 1)


def test_heartbeats_behind_nothing_are_covered_at_once_and_a_change_without_feed_rows_needs_a_pass() -> None:
    watermark = EvaluationWatermark(Clock())
    watermark.committed(4, changed=False)
    assert watermark.snapshot().pending == 0
    through = watermark.committed(1)  # changed, but no feed: the feed cannot cover it
    watermark.covered_by_feed(through, lowest_pending=None, pass_at=None)
    assert watermark.snapshot().pending == 1
    watermark.covered(through, T0)
    assert watermark.snapshot().pending == 0


def test_a_heartbeat_committed_after_the_feed_was_read_goes_with_the_batch_before_it() -> None:
    """A replica that does not evaluate looks at the feed only while a batch that wrote to it
    waits; a heartbeat batch left behind once that batch was covered made every later
    --wait-for-evaluation on that replica hang (seen with three replicas and a SIGKILL)."""
    watermark = EvaluationWatermark(Clock())
    read_after = watermark.committed(2, feed_id=10)
    watermark.committed(1, feed_id=None, changed=False)  # committed after the feed was read
    watermark.covered_by_feed(read_after, lowest_pending=None, pass_at=T0)
    mark = watermark.snapshot()
    assert (mark.reports_evaluated, mark.pending) == (3, 0)
    assert watermark.wait_for_committed(0.0)[0]

    # The same behind a batch a full pass covers.
    through = watermark.committed(1)
    watermark.committed(2, feed_id=None, changed=False)
    watermark.covered(through, T0)
    assert watermark.snapshot().pending == 0
