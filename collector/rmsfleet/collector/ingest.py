"""The ingest use-case: reports queue up and a single writer commits them in batches (group
commit). A report is acknowledged only after the transaction holding it has committed.

With enrollment on (`require_node_keys`), the writer also checks every report's node key in the
batch's own transaction, with one query per batch: no round trip per report, no cache to
invalidate, and a revocation committed by any replica (or by `hosts revoke`) applies to the very
next batch every replica writes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.enrollment import NodeKeyRejected
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.reports import AppliedReport, IncomingReport
from rmsfleet.collector.store.identity_sql import check_node_keys
from rmsfleet.collector.store.ingest_writes import apply_reports

log = logging.getLogger(__name__)


class IngestOverloaded(Exception):
    """The queue is full: the agent should back off (RESOURCE_EXHAUSTED)."""


class IngestStopped(Exception):
    """The collector is shutting down: the agent should retry elsewhere or later (UNAVAILABLE)."""


class IngestFailed(Exception):
    """The batch holding the report could not be committed (UNAVAILABLE); nothing of it was kept."""


@dataclass
class _Pending:
    report: IncomingReport
    future: Future[AppliedReport]
    # The hash of the node key the report carried (None: none), checked when keys are required.
    key_hash: str | None = None


_STOP = object()


class GroupCommitWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        metrics: CollectorMetrics,
        on_committed: Callable[[Sequence[AppliedReport]], None],
        max_batch: int = 1000,
        max_queue: int = 20000,
        *,
        require_node_keys: bool = False,
    ) -> None:
        self._sessions = sessions
        self.require_node_keys = require_node_keys
        self._metrics = metrics
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._queue: queue.Queue[_Pending | object] = queue.Queue(maxsize=max_queue)
        self._accepting = True
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="group-commit-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, report: IncomingReport, key_hash: str | None = None) -> Future[AppliedReport]:
        """Queue a report. Its future ends in the AppliedReport once the batch committed, or in
        IngestFailed, or (keys required) in NodeKeyRejected when its key does not fit its host."""
        pending = _Pending(report, Future(), key_hash)
        with self._lock:
            if not self._accepting:
                raise IngestStopped("the collector is shutting down")
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

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        results: list[AppliedReport] | None = None
        rejected: dict[int, NodeKeyRejected] = {}
        accepted = batch
        error: Exception | None = None
        for attempt in range(2):
            try:
                with self._sessions.begin() as session:
                    if self.require_node_keys:
                        problems = check_node_keys(session, [(p.report.facts.host_id, p.key_hash) for p in batch])
                        rejected = {
                            index: NodeKeyRejected(batch[index].report.facts.host_id, problem)
                            for index, problem in problems.items()
                        }
                        accepted = [p for index, p in enumerate(batch) if index not in rejected]
                    results = apply_reports(session, [p.report for p in accepted])
                break
            except IntegrityError as exc:
                # Another replica inserted one of these hosts first; the retry sees it as known.
                error = exc
                log.info("batch of %d raced another writer (attempt %d), retrying", len(batch), attempt + 1)
            except DBAPIError as exc:
                error = exc
                # A connection the database dropped (restart, failover) is retried once on a fresh
                # one, instead of pinging before every batch.
                if not exc.connection_invalidated:
                    break
                log.info("database connection was lost (attempt %d), retrying the batch", attempt + 1)
            except SQLAlchemyError as exc:
                error = exc
                break
        if results is None:
            self._metrics.database_errors.labels(operation="ingest").inc()
            log.error("could not commit a batch of %d reports: %s", len(batch), _one_line(error))
            failure = IngestFailed(f"the database did not accept the batch: {_one_line(error)}")
            for pending in batch:
                pending.future.set_exception(failure)
            return
        self._metrics.ingest_batch_size.observe(len(batch))
        self._metrics.ingest_commit_duration.observe(time.perf_counter() - started)
        # The listener hears of the batch before any agent is acknowledged, so whoever learns
        # of an acknowledged report (and asks to wait for its evaluation) finds it counted.
        try:
            self._on_committed(results)
        except Exception:  # the reports are committed; a failing listener must not undo acks
            log.exception("post-commit listener failed")
        for index, refusal in rejected.items():
            batch[index].future.set_exception(refusal)
        for pending, result in zip(accepted, results, strict=True):
            pending.future.set_result(result)


def _one_line(error: Exception | None) -> str:
    return str(error).splitlines()[0] if error else "unknown error"
