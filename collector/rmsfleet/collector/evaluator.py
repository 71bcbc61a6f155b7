"""The evaluator: runs the pure policies over the stored fleet, keeps the violations table in
step (opening, escalating, resolving) and publishes fresh aggregates for metrics and queries."""

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
from rmsfleet.collector.domain.policies import Exemption, PolicyContext, apply_exemptions, escalate, evaluate_all
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
from rmsfleet.collector.store.rows import utc

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


class Evaluator:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy_config: PolicyConfig,
        clock: Clock,
        metrics: CollectorMetrics,
        aggregates: AggregatesHolder,
        refresh_interval: float = 5.0,
        debounce: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._config = policy_config
        self._clock = clock
        self._metrics = metrics
        self._aggregates = aggregates
        self._refresh_interval = refresh_interval
        self._debounce = debounce
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._dirty.set()
        self._thread.join(timeout)

    def on_committed(self, results: Sequence[AppliedReport]) -> None:
        """Called by the writer after each commit. Any applied report can change what holds
        (facts) or the aggregates (last_seen), so wake up; the debounce merges bursts."""
        if any(r.outcome.value == "applied" for r in results):
            self._dirty.set()

    def evaluate_once(self) -> ViolationChanges | None:
        """One full pass and an aggregates refresh. None when another replica holds the
        evaluation lock (only aggregates are refreshed then)."""
        now = self._clock()
        ctx = PolicyContext(now=now, config=self._config)
        started = time.perf_counter()
        changes: ViolationChanges | None = None
        try:
            with self._sessions.begin() as session:
                if try_evaluation_lock(session):
                    fleet = load_fleet(session)
                    exemptions = [
                        Exemption(
                            e.policy,
                            SubjectKind(e.subject_kind),
                            e.subject,
                            e.reason,
                            e.expires_at and utc(e.expires_at),
                        )
                        for e in active_exemptions(session, now)
                    ]
                    # An exempted subject is not in violation: its open violation resolves.
                    findings = apply_exemptions(evaluate_all(fleet, ctx), exemptions, now)
                    plan = reconcile(open_violations(session), findings, ctx)
                    changes = write_violations(session, plan.opened, plan.updated, plan.resolved, now)
        except SQLAlchemyError as exc:
            self._metrics.database_errors.labels(operation="evaluate").inc()
            log.error("evaluation failed: %s", str(exc).splitlines()[0])
            return None
        if changes is not None:
            self._metrics.evaluation_duration.labels(kind="full").observe(time.perf_counter() - started)
            self._metrics.evaluation_last_success.set(now.timestamp())
            if changes.opened or changes.resolved or changes.updated:
                log.info(
                    "evaluation: %d opened, %d escalated or changed, %d resolved",
                    changes.opened,
                    changes.updated,
                    changes.resolved,
                )
        self.refresh_aggregates(now)
        return changes

    def refresh_aggregates(self, now: datetime) -> None:
        try:
            with self._sessions() as session:
                self._aggregates.publish(compute_aggregates(session, now, self._config.stale_after))
        except SQLAlchemyError as exc:
            self._metrics.database_errors.labels(operation="aggregate").inc()
            log.error("aggregates refresh failed: %s", str(exc).splitlines()[0])

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.evaluate_once()
            # Time-based rules (grace periods, stale agents) need a pass even when nothing arrives.
            self._dirty.wait(self._refresh_interval)
            if self._stopping.is_set():
                return
            time.sleep(self._debounce)
            self._dirty.clear()
