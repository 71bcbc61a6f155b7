"""The evaluator: runs the pure policies over the stored fleet, keeps the violations table in
step (opening, escalating, resolving) and publishes fresh aggregates for metrics and queries.

Its thread survives any exception (logged with a bounded message, counted in
rmsfleet_loop_errors_total) and reports its progress to the health watch (liveness.py). A host
whose stored row cannot be read is left out of the pass, logged and counted
(rmsfleet_evaluation_unreadable_hosts), and its open violations are kept as they are."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.clock import Clock
from rmsfleet.collector.domain.model import Finding, PolicyConfig, SubjectKind
from rmsfleet.collector.domain.policies import (
    Exemption,
    PolicyContext,
    Scope,
    apply_exemptions,
    escalate,
    evaluate_all,
    policy_ids,
)
from rmsfleet.collector.liveness import DEFAULT_STALL_AFTER, LoopProgress, one_line
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics
from rmsfleet.collector.reports import AppliedReport
from rmsfleet.collector.store.aggregates_sql import compute_aggregates
from rmsfleet.collector.store.evaluation_sql import (
    OpenViolation,
    ViolationChanges,
    active_exemptions,
    load_fleet,
    open_violations,
    try_evaluation_lock,
    write_violations,
)
from rmsfleet.collector.store.rows import UnreadableRow, utc
from rmsfleet.collector.watermark import EvaluationWatermark

log = logging.getLogger(__name__)

SubjectKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Reconciliation:
    opened: list[Finding]
    updated: list[tuple[int, Finding]]
    resolved: list[int]


def reconcile(current: Sequence[OpenViolation], findings: Sequence[Finding], ctx: PolicyContext) -> Reconciliation:
    """Compare what is stored as open with what the policies find now. A violation that still
    holds keeps its row and its `since` (so severity can escalate with age); one that no longer
    holds is resolved; a new finding opens a row."""
    stored = {(v.policy, v.subject_kind, v.subject): v for v in current}
    seen: set[SubjectKey] = set()
    opened: list[Finding] = []
    updated: list[tuple[int, Finding]] = []
    for finding in findings:
        key = (finding.policy, finding.subject_kind.value, finding.subject)
        if key in seen:
            continue
        seen.add(key)
        existing = stored.get(key)
        if existing is None:
            opened.append(finding)
            continue
        escalated = escalate(finding, existing.since, ctx)
        if escalated.severity.value != existing.severity or escalated.detail != existing.detail:
            updated.append((existing.id, escalated))
    resolved = [v.id for key, v in stored.items() if key not in seen]
    return Reconciliation(opened, updated, resolved)


# Host ids per incremental query: well inside SQLite's bound-parameter limit.
_CHUNK = 500


class Evaluator:
    """Evaluates what each committed batch changed as it arrives (incremental: the changed hosts
    for host rules, all servers for cluster and forest rules), plus a periodic full pass for the
    time-based rules and as a backstop. Only the replica holding the PostgreSQL advisory lock
    writes violations; every replica refreshes its aggregates.

    `watermark` counts the committed reports and how many of them a pass has covered: a pass
    covers the batches whose hosts it took, and a batch that changed nothing a rule reads is
    covered as soon as no earlier batch is waiting. A pass that could not run (another replica
    held the lock, the database failed, an unexpected error) gives its hosts back for the next."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy_config: PolicyConfig,
        clock: Clock,
        metrics: CollectorMetrics,
        aggregates: AggregatesHolder,
        refresh_interval: float = 5.0,
        full_pass_interval: float = 60.0,
        debounce: float = 1.0,
        stall_after: float = DEFAULT_STALL_AFTER,
        watermark: EvaluationWatermark | None = None,
    ) -> None:
        self._sessions = sessions
        self._config = policy_config
        self._clock = clock
        self._metrics = metrics
        self._aggregates = aggregates
        self._refresh_interval = refresh_interval
        self._full_pass_interval = full_pass_interval
        self._debounce = debounce
        self.watermark = watermark if watermark is not None else EvaluationWatermark(clock)
        self._touched: set[str] = set()
        self._servers_touched = False
        # The watermark's committed count when the hosts in _touched were last added to.
        self._through = 0
        self._in_flight = False
        self._last_pass_at: datetime | None = None
        self._touched_lock = threading.Lock()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)
        # Hosts whose unreadable row was logged already: logged again only once readable between.
        self._unreadable_logged: set[str] = set()
        self.progress = LoopProgress("evaluator", stall_after)
        self.progress.watch(self._thread)
        metrics.loop_healthy.labels(loop="evaluator").set_function(lambda: float(self.progress.healthy()))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._dirty.set()
        self._thread.join(timeout)

    def on_committed(self, results: Sequence[AppliedReport]) -> None:
        """Called by the writer after each commit, before the reports are acknowledged: counts
        them on the watermark and remembers the hosts a pass must look at, those whose facts
        changed and those back from being stale (their stale-agent finding resolves)."""
        through = self.watermark.committed(len(results))
        now = self._clock()
        touched = [r.host_id for r in results if r.facts_changed or self._was_stale(r, now)]
        with self._touched_lock:
            self._touched.update(touched)
            self._servers_touched |= any(r.touches_servers for r in results)
            self._through = through
            idle = not self._touched and not self._in_flight
        if idle:
            # Heartbeats of hosts that were not stale change nothing a rule reads.
            self.watermark.covered(through, None)
        else:
            self._dirty.set()

    def _was_stale(self, report: AppliedReport, now: datetime) -> bool:
        seen = report.previous_last_seen
        return seen is not None and now - seen > self._config.stale_after

    def _take_touched(self, full: bool) -> tuple[set[str], bool, int]:
        """The hosts for the next pass, and the watermark it covers. Batches committed while a
        pass is in flight wait for it to settle, since it may not have seen them."""
        with self._touched_lock:
            touched, self._touched = self._touched, set()
            servers, self._servers_touched = self._servers_touched, False
            self._in_flight = full or bool(touched)
            return touched, servers, self._through

    def _settle(self, taken: tuple[set[str], bool, int], done: bool, pass_at: datetime | None) -> None:
        """End of a pass over `taken`: advance the watermark, or give the hosts back."""
        touched, servers, through = taken
        with self._touched_lock:
            self._in_flight = False
            if not done:
                self._touched |= touched
                self._servers_touched |= servers
        if done:
            self.watermark.covered(through, pass_at)

    def evaluate_once(self) -> ViolationChanges | None:
        """A full pass and an aggregates refresh. None when another replica holds the lock."""
        taken = self._take_touched(full=True)  # a full pass covers them
        changes: ViolationChanges | None = None
        try:
            changes = self._evaluate(None)
            self.refresh_aggregates(self._clock())
        finally:
            self._settle(taken, changes is not None, self._last_pass_at)
        return changes

    def evaluate_changes(self, host_ids: set[str], servers_touched: bool = True) -> ViolationChanges | None:
        """An incremental pass over the hosts whose facts changed; the cluster and forest rules
        run only when a changed host is or was a server (clients cannot change them)."""
        return self._evaluate(host_ids, servers_touched)

    def _evaluate(self, host_ids: set[str] | None, servers_touched: bool = True) -> ViolationChanges | None:
        now = self._clock()
        ctx = PolicyContext(now=now, config=self._config)
        kind = "full" if host_ids is None else "incremental"
        started = time.perf_counter()
        changes: ViolationChanges | None = None
        unreadable: list[UnreadableRow] = []
        try:
            with self._sessions.begin() as session:
                if not try_evaluation_lock(session):
                    return None
                exemptions = [
                    Exemption(
                        e.policy, SubjectKind(e.subject_kind), e.subject, e.reason, e.expires_at and utc(e.expires_at)
                    )
                    for e in active_exemptions(session, now)
                ]
                if host_ids is None:
                    findings = evaluate_all(load_fleet(session, unreadable=unreadable), ctx)
                    current = open_violations(session)
                else:
                    findings, current = [], []
                    if servers_touched:
                        servers = load_fleet(session, servers_only=True, unreadable=unreadable)
                        findings = evaluate_all(servers, ctx, frozenset({Scope.SERVERS}))
                        current = open_violations(session, policy_ids(Scope.SERVERS))
                    # The time rules are per host (stale-agent): for the hosts that just reported
                    # they run here too, so a host back from being stale resolves at once.
                    scopes = frozenset({Scope.HOST, Scope.TIME})
                    ids = [*policy_ids(Scope.HOST), *policy_ids(Scope.TIME)]
                    ordered = sorted(host_ids)
                    for start in range(0, len(ordered), _CHUNK):
                        chunk = ordered[start : start + _CHUNK]
                        hosts = load_fleet(session, chunk, unreadable=unreadable)
                        findings += evaluate_all(hosts, ctx, scopes)
                        current += open_violations(session, ids, chunk)
                # A host left out is not evaluated, so its open violations say nothing new: keep
                # them rather than resolve them.
                left_out = self._left_out(unreadable, kind)
                current = [
                    v for v in current if not (v.subject_kind == SubjectKind.HOST.value and v.subject in left_out)
                ]
                # An exempted subject is not in violation: its open violation resolves.
                plan = reconcile(current, apply_exemptions(findings, exemptions, now), ctx)
                changes = write_violations(session, plan.opened, plan.updated, plan.resolved, now)
        except SQLAlchemyError as exc:
            self._metrics.database_errors.labels(operation="evaluate").inc()
            log.error("%s evaluation failed: %s", kind, one_line(exc))
            return None
        except Exception as exc:  # a bug or a value the policies cannot take: this pass only
            self._metrics.loop_errors.labels(loop="evaluator").inc()
            log.error("%s evaluation failed with an unexpected error: %s", kind, one_line(exc))
            return None
        self._metrics.evaluation_duration.labels(kind=kind).observe(time.perf_counter() - started)
        self._metrics.evaluation_last_success.set(now.timestamp())
        self._last_pass_at = now
        if changes.opened or changes.resolved or changes.updated:
            log.info(
                "%s evaluation: %d opened, %d escalated or changed, %d resolved",
                kind,
                changes.opened,
                changes.updated,
                changes.resolved,
            )
        return changes

    def _left_out(self, unreadable: Sequence[UnreadableRow], kind: str) -> set[str]:
        """Log the hosts a pass left out (each once while it stays unreadable, not every pass); a
        full pass, which reads every host, sets the gauge."""
        left_out = {problem.host_id for problem in unreadable}
        new = [problem for problem in unreadable if problem.host_id not in self._unreadable_logged]
        self._unreadable_logged |= left_out
        if kind == "full":
            self._metrics.evaluation_unreadable_hosts.set(len(left_out))
            self._unreadable_logged = left_out
        if new:
            shown = "; ".join(str(problem) for problem in new[:3])
            more = f" (and {len(new) - 3} more)" if len(new) > 3 else ""
            log.warning(
                "%s evaluation left out %d host(s) whose stored row cannot be read: %s%s; fix or delete the row",
                kind,
                len({problem.host_id for problem in new}),
                shown,
                more,
            )
        return left_out

    def refresh_aggregates(self, now: datetime) -> None:
        try:
            with self._sessions() as session:
                self._aggregates.publish(compute_aggregates(session, now, self._config.stale_after))
        except SQLAlchemyError as exc:
            self._metrics.database_errors.labels(operation="aggregate").inc()
            log.error("aggregates refresh failed: %s", one_line(exc))
        except Exception as exc:  # e.g. a damaged value in a grouped column; the last snapshot stays
            self._metrics.loop_errors.labels(loop="evaluator").inc()
            log.error("aggregates refresh failed with an unexpected error: %s", one_line(exc))

    def _run(self) -> None:
        next_full = time.monotonic() + self._full_pass_interval
        next_refresh = time.monotonic() + self._refresh_interval
        while not self._stopping.is_set():
            try:
                next_full, next_refresh = self._step(next_full, next_refresh)
            except Exception as exc:  # the loop outlives anything one pass does
                self._metrics.loop_errors.labels(loop="evaluator").inc()
                log.error("evaluator loop survived an unexpected error: %s", one_line(exc))
                # Not a hot loop on an error that repeats; the next full pass is the backstop.
                self._stopping.wait(1.0)
            self.progress.progressed()

    def _step(self, next_full: float, next_refresh: float) -> tuple[float, float]:
        """Wait for changes or the next timer, then run what is due. Returns the next timers."""
        timeout = max(0.0, min(next_full, next_refresh) - time.monotonic())
        if self._dirty.wait(timeout) and not self._stopping.is_set():
            time.sleep(self._debounce)  # let a burst of batches land in one pass
            self._dirty.clear()
        if self._stopping.is_set():
            return next_full, next_refresh
        # Work starts after the wait and the debounce (both deliberate): from here on, a pass that
        # does not end is a stall.
        self.progress.working()
        changed: ViolationChanges | None = None
        full = time.monotonic() >= next_full
        taken = self._take_touched(full)
        touched, servers_touched, _through = taken
        # No pass is needed when the batches since the last one changed nothing a rule reads.
        ran = full or bool(touched)
        done = False
        try:
            if full:
                changed = self._evaluate(None)
                next_full = time.monotonic() + self._full_pass_interval
            elif touched:
                changed = self.evaluate_changes(touched, servers_touched)
            moved = changed is not None and bool(changed.opened or changed.updated or changed.resolved)
            if moved or time.monotonic() >= next_refresh:
                self.refresh_aggregates(self._clock())
                next_refresh = time.monotonic() + self._refresh_interval
            done = not ran or changed is not None
        finally:
            # Settled after the refresh: once the watermark covers a report, the violation
            # gauges of /metrics reflect it too. On any failure the hosts go back for the next pass.
            self._settle(taken, done, self._last_pass_at if ran else None)
        return next_full, next_refresh
