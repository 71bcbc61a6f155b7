"""The ingest use-case: reports queue up and a single writer commits them in batches (group
commit). A report is acknowledged only after the transaction holding it has committed.

With enrollment on (`require_node_keys`), the writer also checks every report's node key in the
batch's own transaction, with one query per batch: no round trip per report, no cache to
invalidate, and a revocation committed by any replica (or by `hosts revoke`) applies to the very
next batch every replica writes.

One report cannot fail the others. A batch the database refuses for a reason a single report can
cause (a value or constraint error, a trigger, a value the driver cannot bind) is split in halves
that commit apart, down to the report at fault, which alone is refused (ReportRefused); the
reports that shared its batch are committed and acknowledged. An error that is the database's
(a dropped connection, a lock timeout, a full disk) fails the whole batch as before, UNAVAILABLE,
so agents retry. The writer's thread survives any exception, and reports its progress to the
health watch (liveness.py).

With a change-feed recorder (`record_changes`, the evaluator's), the batch's transaction also
writes the hosts it changed to the change feed (one statement per batch), so the replica that
evaluates learns of them whichever replica this is; the listener hears the highest feed id the
batch wrote."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.enrollment import NodeKeyRejected
from rmsfleet.collector.liveness import DEFAULT_STALL_AFTER, LoopProgress, one_line
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport
from rmsfleet.collector.store.identity_sql import check_node_keys
from rmsfleet.collector.store.ingest_writes import SequenceRefused, apply_reports

log = logging.getLogger(__name__)

# SQLSTATE classes that one row's values can cause: data exceptions (22: out of range, NUL in
# text, too long), integrity constraints (23) and errors raised by PL/pgSQL, i.e. triggers (P0).
_REPORT_SQLSTATE_CLASSES = frozenset({"22", "23", "P0"})


class IngestOverloaded(Exception):
    """The queue is full: the agent should back off (RESOURCE_EXHAUSTED)."""


class IngestStopped(Exception):
    """The collector is shutting down: the agent should retry elsewhere or later (UNAVAILABLE)."""


class IngestFailed(Exception):
    """The batch holding the report could not be committed (UNAVAILABLE); nothing of it was kept."""


class ReportRefused(Exception):
    """This report, and only it, cannot be stored (FAILED_PRECONDITION): the database refused it
    alone, or its sequence is beyond the host's ceiling. `reason` is one bounded line."""

    def __init__(self, host_id: str, reason: str) -> None:
        super().__init__(reason)
        self.host_id = host_id
        self.reason = reason


@dataclass
class _Pending:
    report: IncomingReport
    future: Future[AppliedReport]
    # The hash of the node key the report carried (None: none), checked when keys are required.
    key_hash: str | None = None


_STOP = object()

# Writes the hosts a batch changed to the change feed, in the batch's transaction; returns the
# highest feed id written (None: none).
ChangeRecorder = Callable[[Session, Sequence[AppliedReport]], int | None]


class GroupCommitWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        metrics: CollectorMetrics,
        on_committed: Callable[[Sequence[AppliedReport], int | None], None],
        max_batch: int = 1000,
        max_queue: int = 20000,
        *,
        require_node_keys: bool = False,
        stall_after: float = DEFAULT_STALL_AFTER,
        record_changes: ChangeRecorder | None = None,
    ) -> None:
        self._sessions = sessions
        self.require_node_keys = require_node_keys
        self._metrics = metrics
        self._on_committed = on_committed
        self._record_changes = record_changes
        self._max_batch = max_batch
        self._queue: queue.Queue[_Pending | object] = queue.Queue(maxsize=max_queue)
        self._accepting = True
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="group-commit-writer", daemon=True)
        self.progress = LoopProgress("writer", stall_after)
        self.progress.watch(self._thread)
        metrics.loop_healthy.labels(loop="writer").set_function(lambda: float(self.progress.healthy()))

    def start(self) -> None:
        self._thread.start()

    def submit(self, report: IncomingReport, key_hash: str | None = None) -> Future[AppliedReport]:
        """Queue a report. Its future ends in the AppliedReport once the batch committed, or in
        IngestFailed, or in ReportRefused, or (keys required) in NodeKeyRejected when its key does
        not fit its host."""
        pending = _Pending(report, Future(), key_hash)
        with self._lock:
            if not self._accepting:
                raise IngestStopped("the collector is shutting down")
            # Before the put: were it after, the writer could commit the report and go idle in
            # between, and the clock would then run on an empty queue.
            self.progress.working()
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                raise IngestOverloaded(f"ingest queue full ({self._queue.maxsize} reports waiting)") from None
        self._metrics.ingest_queue_depth.set(self._queue.qsize())
        return pending.future

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new reports, commit everything already queued, then stop."""
        with self._lock:
            self._accepting = False
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Pending] = []
            try:
                if first is _STOP:
                    stopping = True
                else:
                    assert isinstance(first, _Pending)
                    batch.append(first)
                # Take whatever queued up while the last batch committed: batches grow with load
                # without making a lone report wait for company.
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        continue
                    assert isinstance(item, _Pending)
                    batch.append(item)
                self._metrics.ingest_queue_depth.set(self._queue.qsize())
                if batch:
                    self._commit(batch)
            except Exception as exc:  # a bug must cost one batch, never the writer
                self._survive(batch, exc)
            # Progress first, then look for more work: a report queued in between is never missed.
            self.progress.progressed()
            if not self._queue.empty():
                self.progress.working()

    def _survive(self, batch: Sequence[_Pending], error: Exception) -> None:
        self._metrics.loop_errors.labels(loop="writer").inc()
        log.error(
            "group-commit writer: unexpected error with a batch of %d reports, which get UNAVAILABLE: %s (at %s)",
            len(batch),
            one_line(error),
            _where(error),
        )
        failure = IngestFailed("the collector failed to store the batch (an internal error, logged)")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(failure)

    def _commit(self, batch: Sequence[_Pending]) -> None:
        """Commit `batch`. When the database refuses it for a reason one report can cause, commit
        its halves apart, down to the single report at fault (at most about 2 log2(n) extra
        transactions per bad report)."""
        started = time.perf_counter()
        try:
            accepted, rejected, results, feed_id = self._write(batch)
        except Exception as error:
            if not _blames_a_report(error):
                self._metrics.database_errors.labels(operation="ingest").inc()
                log.error("could not commit a batch of %d reports: %s", len(batch), one_line(error))
                failure = IngestFailed(f"the database did not accept the batch: {one_line(error)}")
                for pending in batch:
                    pending.future.set_exception(failure)
                return
            if len(batch) == 1:
                self._refuse(batch[0], error)
                return
            middle = len(batch) // 2
            log.info(
                "the database refused a batch of %d reports (%s): committing its halves apart to find the report "
                "at fault",
                len(batch),
                one_line(error),
            )
            self._commit(batch[:middle])
            self._commit(batch[middle:])
            return
        self._metrics.ingest_batch_size.observe(len(batch))
        self._metrics.ingest_commit_duration.observe(time.perf_counter() - started)
        # The listener hears of the batch before any agent is acknowledged, so whoever learns
        # of an acknowledged report (and asks to wait for its evaluation) finds it counted.
        try:
            self._on_committed([r for r in results if not isinstance(r, SequenceRefused)], feed_id)
        except Exception as error:  # the reports are committed; a failing listener must not undo acks
            self._metrics.loop_errors.labels(loop="writer").inc()
            log.error("post-commit listener failed: %s (at %s)", one_line(error), _where(error))
        for index, refusal in rejected.items():
            batch[index].future.set_exception(refusal)
        for pending, result in zip(accepted, results, strict=True):
            if isinstance(result, SequenceRefused):
                log.warning("refused report %d of host %s: %s", result.sequence, result.host_id, result.message)
                pending.future.set_exception(ReportRefused(result.host_id, result.message))
            else:
                pending.future.set_result(result)

    def _write(
        self, batch: Sequence[_Pending]
    ) -> tuple[list[_Pending], dict[int, NodeKeyRejected], list[AppliedReport], int | None]:
        """One transaction for the batch: (reports written, key refusals by index, results, the
        highest change-feed id written).
        Retried once when another replica inserted one of its hosts first (the retry sees the
        host as known) or when the database dropped the connection (instead of pinging before
        every batch); otherwise the error is raised."""
        for attempt in range(2):
            try:
                with self._sessions.begin() as session:
                    rejected: dict[int, NodeKeyRejected] = {}
                    accepted = list(batch)
                    if self.require_node_keys:
                        problems = check_node_keys(session, [(p.report.facts.host_id, p.key_hash) for p in batch])
                        rejected = {
                            index: NodeKeyRejected(batch[index].report.facts.host_id, problem)
                            for index, problem in problems.items()
                        }
                        accepted = [p for index, p in enumerate(batch) if index not in rejected]
                    results = apply_reports(session, [p.report for p in accepted])
                    feed_id = None
                    if self._record_changes is not None:
                        applied = [r for r in results if not isinstance(r, SequenceRefused)]
                        feed_id = self._record_changes(session, applied)
                    return accepted, rejected, results, feed_id
            except DBAPIError as error:
                if attempt == 0 and _is_unique_violation(error):
                    log.info("batch of %d raced another writer, retrying", len(batch))
                elif attempt == 0 and error.connection_invalidated:
                    log.info("database connection was lost, retrying the batch of %d", len(batch))
                else:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _refuse(self, pending: _Pending, error: Exception) -> None:
        report = pending.report
        reason = f"the database refused this report alone: {one_line(error)}"
        log.warning("refused report %d of host %s: %s", report.sequence, report.facts.host_id, reason)
        pending.future.set_exception(ReportRefused(report.facts.host_id, reason))


def _blames_a_report(error: Exception) -> bool:
    """True when one report of the batch can have caused `error`: then splitting the batch finds
    it. False when the error is the database's (connection, locks, disk, schema), which would
    fail every report alike."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return False
        if isinstance(error, DataError | IntegrityError):
            return True
        state = getattr(error.orig, "sqlstate", None)
        return isinstance(state, str) and state[:2] in _REPORT_SQLSTATE_CLASSES
    # Anything else was raised while turning one report into statement parameters (e.g. an
    # integer the driver cannot bind): a property of that report. Pool timeouts and the like are
    # the database's; running out of memory is nobody's report.
    return not isinstance(error, SQLAlchemyError | MemoryError | RecursionError)


def _is_unique_violation(error: DBAPIError) -> bool:
    if not isinstance(error, IntegrityError):
        return False
    state = getattr(error.orig, "sqlstate", None)
    if isinstance(state, str):
        return state == "23505"
    return "UNIQUE constraint failed" in str(error.orig)


def _where(error: BaseException) -> str:
    """The innermost frame of the error's traceback (file:line function), for the log: enough to
    find a bug without printing its message unbounded."""
    tb = error.__traceback__
    if tb is None:
        return "unknown place"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename}:{tb.tb_lineno} {code.co_name}"
