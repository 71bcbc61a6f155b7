"""The evaluator: runs the pure policies over the stored fleet, keeps the violations table in
step (opening, escalating, resolving) and publishes fresh aggregates for metrics and queries.

What to evaluate comes from the change feed (store/change_feed_sql.py): every replica's writer
records the hosts a batch changed in the batch's transaction, and the replica that evaluates
(leadership.py; on SQLite the one process) consumes them in its incremental passes, whichever
replica committed them.

Its thread survives any exception (logged with a bounded message, counted in
rmsfleet_loop_errors_total) and reports its progress to the health watch (liveness.py). A host
whose stored row cannot be read is left out of the pass, logged and counted
(rmsfleet_evaluation_unreadable_hosts), and its open violations are kept as they are."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.clock import Clock
from rmsfleet.collector.domain.model import Finding, PolicyConfig, SubjectKind, Version
from rmsfleet.collector.domain.policies import (
    Exemption,
    PolicyContext,
    Scope,
    apply_exemptions,
    escalate,
    evaluate_all,
    policy_ids,
)
from rmsfleet.collector.domain.server_rules import (
    ServerPass,
    client_findings,
    cluster_findings,
    evaluate_servers,
    forest_findings,
    newer_versions,
    rtm_clients,
)
from rmsfleet.collector.leadership import EvaluationLeadership
from rmsfleet.collector.liveness import DEFAULT_STALL_AFTER, LoopProgress, one_line
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics
from rmsfleet.collector.reports import AppliedReport
from rmsfleet.collector.store.aggregates_sql import compute_aggregates, violation_counts, with_violations
from rmsfleet.collector.store.change_feed_sql import (
    FeedBacklog,
    FeedEntry,
    consume_changes,
    feed_backlog,
    lowest_pending,
)
from rmsfleet.collector.store.change_feed_sql import record_changes as record_feed
from rmsfleet.collector.store.evaluation_sql import (
    OpenViolation,
    ViolationChanges,
    active_exemptions,
    load_fleet,
    may_break_a_host_rule,
    next_host_range,
    open_violations,
    try_evaluation_lock,
    write_violations,
)
from rmsfleet.collector.store.rows import UnreadableRow, utc
from rmsfleet.collector.store.server_summary_sql import SqlServerSource, touched_by
from rmsfleet.collector.watermark import EvaluationWatermark

log = logging.getLogger(__name__)

SubjectKey = tuple[str, str, str]


def _open_server_violations(session: Session, result: ServerPass) -> list[OpenViolation]:
    """The open violations of the cluster and forest rules for the subjects `result` evaluated."""
    wanted = (
        (("mixed-version-cluster", "licensing-ahead-of-root"), SubjectKind.CLUSTER, result.clusters),
        (("mixed-versions-in-forest",), SubjectKind.FOREST, result.forests),
        (("client-cannot-publish-online",), SubjectKind.HOST, result.hosts),
    )
    found: list[OpenViolation] = []
    for policies, kind, subjects in wanted:
        ordered = sorted(subjects)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            found += [v for v in open_violations(session, policies, chunk) if v.subject_kind == kind.value]
    return found


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
# Feed rows one incremental pass takes at most; a longer backlog is worked off pass after pass.
FEED_BATCH = 5000
# The feed backlog is counted up to this many rows (docs/metrics.md).
BACKLOG_COUNT_BOUND = 1_000_000
# Hosts per step of a full pass, each step in a transaction of its own: what a full pass holds in
# memory at once, and how long it keeps the change feed waiting (bench/full_pass_load_bench.py; 20,000 was
# faster than 5,000 at 200,000 hosts, with a fleet of one range slower again).
FULL_PASS_RANGE = 20000
_HOST_AND_TIME = frozenset({Scope.HOST, Scope.TIME})


def _added(total: ViolationChanges, more: ViolationChanges) -> ViolationChanges:
    return ViolationChanges(total.opened + more.opened, total.updated + more.updated, total.resolved + more.resolved)


@dataclass
class _FeedTake:
    """What a feed pass took: filled in inside its transaction, read after it committed."""

    limit: int
    rows: int = 0
    lowest_pending: int | None = None


class Evaluator:
    """Evaluates what the committed batches of every replica changed, from the change feed
    (incremental: the changed hosts for host rules, all servers for cluster and forest rules),
    plus a periodic full pass for the time-based rules and as a backstop. Only the replica that
    leads (`leadership`; None: this process is the only one, as on SQLite) runs passes, each
    under the transaction-scoped advisory lock; every replica refreshes its aggregates.

    On PostgreSQL the leader looks at the feed every `feed_poll` seconds (other replicas' rows)
    and one `debounce` after its own writer wrote some; the other replicas read the lowest id left in
    the feed as often, for their watermark. A pass that could not run (the lock held elsewhere,
    the database failed) leaves its rows in the feed, and the next try takes them again."""

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
        *,
        leadership: EvaluationLeadership | None = None,
        feed_poll: float = 1.0,
        feed_batch: int = FEED_BATCH,
        full_pass_range: int = FULL_PASS_RANGE,
    ) -> None:
        self._sessions = sessions
        self._config = policy_config
        self._clock = clock
        self._metrics = metrics
        self._aggregates = aggregates
        self._refresh_interval = refresh_interval
        self._full_pass_interval = full_pass_interval
        self._debounce = debounce
        self._leadership = leadership
        self._feed_poll = feed_poll
        self._feed_batch = feed_batch
        self._full_pass_range = full_pass_range
        self.watermark = watermark if watermark is not None else EvaluationWatermark(clock)
        self.backlog = FeedBacklog(0, None)
        # Other processes write the feed only on PostgreSQL: SQLite's one process is woken by
        # its own writer and never polls.
        bind = sessions.kw.get("bind")
        self._shared = bind is not None and bind.dialect.name == "postgresql"
        self._last_pass_at: datetime | None = None
        # The rows left behind by a pass that failed are tried again after `feed_poll`.
        self._retry = False
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)
        # Each cluster's SP1-or-later server versions as the last committed pass saw them: an
        # incremental pass re-evaluates a cluster's RTM clients only when they moved (D14).
        # Complete after a full pass; forgotten whenever another replica may have evaluated.
        self._newer: dict[str, frozenset[Version]] = {}
        self._newer_complete = False
        self._newer_term = 0
        # Hosts whose unreadable row was logged already: logged again only once readable between.
        self._unreadable_logged: set[str] = set()
        self.progress = LoopProgress("evaluator", stall_after)
        self.progress.watch(self._thread)
        metrics.loop_healthy.labels(loop="evaluator").set_function(lambda: float(self.progress.healthy()))
        metrics.track_feed(self, clock)

    def start(self) -> None:
        # Rows left by a process that stopped before consuming them are taken by the first pass.
        self._dirty.set()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._dirty.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self._leadership is not None:
            self._leadership.release()

    def leads(self) -> bool:
        """Whether this process evaluates (always, without a leadership to contend for)."""
        return True if self._leadership is None else self._leadership.held

    def record_changes(self, session: Session, results: Sequence[AppliedReport]) -> int | None:
        """Called by the writer inside each batch's transaction: write the hosts a pass must look
        at to the change feed, those whose facts changed and those back from being stale (their
        stale-agent finding resolves). Returns the highest feed id written (None: none)."""
        now = self._clock()
        entries = [
            FeedEntry(r.host_id, r.touches_servers) for r in results if r.facts_changed or self._was_stale(r, now)
        ]
        return record_feed(session, entries, now)

    def on_committed(self, results: Sequence[AppliedReport], feed_id: int | None = None) -> None:
        """Called by the writer after each commit, before the reports are acknowledged: counts
        them on the watermark with the highest feed id the batch wrote, and wakes the loop when
        there is something to evaluate."""
        self.watermark.committed(len(results), feed_id, changed=feed_id is not None)
        if feed_id is not None:
            self._dirty.set()

    def _was_stale(self, report: AppliedReport, now: datetime) -> bool:
        seen = report.previous_last_seen
        return seen is not None and now - seen > self._config.stale_after

    def evaluate_once(self) -> ViolationChanges | None:
        """A full pass and an aggregates refresh. None when this replica does not evaluate (it
        does not lead, or another holds the pass lock)."""
        leading = self._leadership is None or self._leadership.leads()
        through = self.watermark.snapshot().reports_committed
        changes = self._full_pass() if leading else None
        self.refresh_aggregates(self._clock())
        if changes is not None:
            self.watermark.covered(through, self._last_pass_at)
        return changes

    def evaluate_changes(self, host_ids: set[str], servers_touched: bool = True) -> ViolationChanges | None:
        """An incremental pass over the hosts whose facts changed; the cluster and forest rules
        run only when a changed host is or was a server (clients cannot change them)."""
        return self._evaluate(host_ids, servers_touched)

    def evaluate_feed(self) -> ViolationChanges | None:
        """An incremental pass over the oldest rows of the change feed (at most `feed_batch`),
        consumed in the pass's transaction, and the watermark moved on. None when the pass could
        not run; its rows stay in the feed."""
        through = self.watermark.snapshot().reports_committed
        take = _FeedTake(self._feed_batch)
        changes = self._evaluate(None, feed=take)
        if changes is None:
            return None
        if changes.opened or changes.updated or changes.resolved:
            self.refresh_aggregates(self._clock(), hosts=False)
        # Settled after the refresh: once the watermark covers a report, the violation gauges of
        # /metrics reflect it too.
        self.watermark.covered_by_feed(through, take.lowest_pending, self._last_pass_at if take.rows else None)
        if take.lowest_pending is None:
            self.backlog = FeedBacklog(0, None)
        if take.rows >= take.limit:
            self._dirty.set()  # more rows wait: the next pass follows at once
        return changes

    def follow_feed(self) -> None:
        """For a replica that does not evaluate: read how far the evaluating replica has
        consumed the feed, and cover the batches whose rows it has (after refreshing the
        aggregates, so the gauges reflect what the watermark says)."""
        if self.watermark.highest_feed_id() is None:
            return
        through = self.watermark.snapshot().reports_committed
        try:
            with self._sessions() as session:
                lowest = lowest_pending(session)
        except SQLAlchemyError as exc:
            self._metrics.database_errors.labels(operation="evaluate").inc()
            log.error("reading the change feed failed: %s", one_line(exc))
            return
        if self.watermark.coverable(through, lowest):
            self.refresh_aggregates(self._clock(), hosts=False)
            # The pass ran on another replica, before this read: the read's time stands for it.
            self.watermark.covered_by_feed(through, lowest, self._clock())

    def _evaluate(
        self, host_ids: Collection[str] | None, servers_touched: bool = True, feed: _FeedTake | None = None
    ) -> ViolationChanges | None:
        """An incremental pass under the evaluation lock: over `host_ids`, or over the rows `feed`
        takes from the change feed in the pass's own transaction."""
        now = self._clock()
        ctx = PolicyContext(now=now, config=self._config)
        started = time.perf_counter()
        changes: ViolationChanges | None = None
        unreadable: list[UnreadableRow] = []
        newer: dict[str, frozenset[Version]] | None = None
        self._check_term()
        try:
            with self._sessions.begin() as session:
                if not try_evaluation_lock(session):
                    self._forget_newer()  # another replica may evaluate meanwhile
                    return None
                if feed is not None:
                    consumed = consume_changes(session, feed.limit)
                    feed.rows = consumed.rows
                    feed.lowest_pending = lowest_pending(session)
                    if not consumed.rows:
                        return ViolationChanges(0, 0, 0)  # nothing to do: not a pass
                    host_ids, servers_touched = consumed.host_ids, consumed.servers_touched
                assert host_ids is not None
                findings: list[Finding] = []
                current: list[OpenViolation] = []
                if servers_touched:
                    # The cluster and forest rules over per-cluster counts of the clusters and
                    # forests the changed hosts are or were in (domain/server_rules.py).
                    result = evaluate_servers(
                        touched_by(session, host_ids), SqlServerSource(session), self._previous_newer, ctx
                    )
                    findings = list(result.findings)
                    current = _open_server_violations(session, result)
                    newer = result.newer
                # The time rules are per host (stale-agent): for the hosts that just reported they
                # run here too, so a host back from being stale resolves at once.
                ids = [*policy_ids(Scope.HOST), *policy_ids(Scope.TIME)]
                ordered = sorted(host_ids)
                for start in range(0, len(ordered), _CHUNK):
                    chunk = ordered[start : start + _CHUNK]
                    hosts = load_fleet(session, chunk, unreadable=unreadable)
                    findings += evaluate_all(hosts, ctx, _HOST_AND_TIME)
                    current += open_violations(session, ids, chunk)
                left_out = self._left_out(unreadable, "incremental")
                changes = self._settle(session, current, findings, left_out, self._exemptions(session, now), ctx)
        except Exception as exc:  # the database, a bug, a value the policies cannot take: this pass only
            self._failed("incremental", exc)
            return None
        # Committed: the stored client-cannot-publish-online violations now follow these versions.
        if newer:
            self._newer.update(newer)
        self._passed("incremental", started, now, changes)
        return changes

    def _full_pass(self) -> ViolationChanges | None:
        """Every rule over every host, as a series of short transactions, so that a full pass
        holds neither the whole fleet in memory nor the change feed for its whole length:

        1. the cluster and forest rules over the per-cluster counts of every server (a few rows
           per cluster), against every open cluster and forest violation;
        2. then range after range of `full_pass_range` host ids in the database's order: the
           host and time rules and client-cannot-publish-online (D14, with the SP1-or-later
           versions step 1 found, as the incremental passes between ranges move them on) over
           the range's hosts, against the open host violations of that range, which also
           resolves those of hosts deleted since.

        Between ranges the loop's own work goes on: the changes committed meanwhile are
        evaluated from the feed (a range reads the hosts as they are then, so the two agree).
        None when the pass could not run, or stopped part-way (the lock lost, the database
        failed): what its finished steps committed stands, and the next full pass starts over."""
        now = self._clock()
        ctx = PolicyContext(now=now, config=self._config)
        started = time.perf_counter()
        self._check_term()
        unreadable: set[str] = set()
        try:
            with self._sessions.begin() as session:
                if not try_evaluation_lock(session):
                    self._forget_newer()
                    return None
                counts = SqlServerSource(session).every_count()
                findings = [
                    *cluster_findings(counts, {row.cluster for row in counts}, ctx),
                    *forest_findings(counts, {row.forest for row in counts}, ctx),
                ]
                current = [
                    v
                    for kind in SubjectKind
                    if kind is not SubjectKind.HOST
                    for v in open_violations(session, subject_kind=kind.value)
                ]
                # Once for the whole pass, not once per range.
                exemptions = self._exemptions(session, now)
                changes = self._settle(session, current, findings, set(), exemptions, ctx)
            # Committed: each cluster's RTM clients are evaluated with these versions from here on
            # (an incremental pass between ranges moves them on as it commits).
            self._newer, self._newer_complete = newer_versions(counts), True
            candidates = may_break_a_host_rule(now, self._config.stale_after)
            after: str | None = None
            next_feed_look = time.monotonic() + self._feed_poll
            while True:
                with self._sessions.begin() as session:
                    if not try_evaluation_lock(session):
                        self._forget_newer()
                        return None
                    span = next_host_range(session, after, self._full_pass_range)
                    problems: list[UnreadableRow] = []
                    # Only the hosts that can break a host rule: the others' open host violations
                    # in this range resolve (policies.may_break_a_host_rule).
                    fleet = load_fleet(
                        session,
                        unreadable=problems,
                        in_range=span,
                        where=candidates,
                    )
                    findings = evaluate_all(fleet, ctx, _HOST_AND_TIME)
                    findings += client_findings(rtm_clients(fleet.hosts), self._newer, ctx)
                    current = open_violations(session, subject_kind=SubjectKind.HOST.value, in_range=span)
                    left_out = self._left_out(problems, "full")
                    unreadable |= left_out
                    changes = _added(changes, self._settle(session, current, findings, left_out, exemptions, ctx))
                if span.through is None:
                    break
                if self._stopping.is_set():
                    return None  # stopping: the next process's first pass starts over
                after = span.through
                next_feed_look = self._between_ranges(next_feed_look)
        except Exception as exc:  # the database, a bug, a value the policies cannot take: this pass only
            self._failed("full", exc)
            return None
        # Read every host: hosts readable again are logged again when they break again.
        self._metrics.evaluation_unreadable_hosts.set(len(unreadable))
        self._unreadable_logged = unreadable
        self._passed("full", started, now, changes)
        return changes

    def _between_ranges(self, next_feed_look: float) -> float:
        """Between two ranges of a full pass: evaluate what the feed holds when this process's
        writer woke the loop, or (other replicas write it too) when a look is due. Returns when
        the next look is due."""
        self.progress.progressed()
        self.progress.working()
        due = self._shared and time.monotonic() >= next_feed_look
        if self._dirty.is_set() or due:
            self._dirty.clear()
            self.evaluate_feed()
            next_feed_look = time.monotonic() + self._feed_poll
        return next_feed_look

    def _exemptions(self, session: Session, now: datetime) -> list[Exemption]:
        return [
            Exemption(e.policy, SubjectKind(e.subject_kind), e.subject, e.reason, e.expires_at and utc(e.expires_at))
            for e in active_exemptions(session, now)
        ]

    def _settle(
        self,
        session: Session,
        current: Sequence[OpenViolation],
        findings: Sequence[Finding],
        left_out: set[str],
        exemptions: Sequence[Exemption],
        ctx: PolicyContext,
    ) -> ViolationChanges:
        """Reconcile what is stored with what the rules found, and write the difference."""
        # A host left out is not evaluated, so its open violations say nothing new: keep them
        # rather than resolve them.
        current = [v for v in current if not (v.subject_kind == SubjectKind.HOST.value and v.subject in left_out)]
        findings = [f for f in findings if not (f.subject_kind is SubjectKind.HOST and f.subject in left_out)]
        # An exempted subject is not in violation: its open violation resolves.
        plan = reconcile(current, apply_exemptions(findings, exemptions, ctx.now), ctx)
        return write_violations(session, plan.opened, plan.updated, plan.resolved, ctx.now)

    def _failed(self, kind: str, exc: Exception) -> None:
        if isinstance(exc, SQLAlchemyError):
            self._metrics.database_errors.labels(operation="evaluate").inc()
            log.error("%s evaluation failed: %s", kind, one_line(exc))
        else:
            self._metrics.loop_errors.labels(loop="evaluator").inc()
            log.error("%s evaluation failed with an unexpected error: %s", kind, one_line(exc))

    def _passed(self, kind: str, started: float, now: datetime, changes: ViolationChanges) -> None:
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

    def _check_term(self) -> None:
        term = 0 if self._leadership is None else self._leadership.terms
        if term != self._newer_term:
            self._forget_newer()  # led again: another replica may have evaluated between
            self._newer_term = term

    def _previous_newer(self, cluster: str) -> frozenset[Version] | None:
        """The SP1-or-later versions of `cluster` that its RTM clients' stored violations were
        evaluated with (D14), None when not known (no committed pass of this process's current
        leadership has evaluated them)."""
        known = self._newer.get(cluster)
        if known is not None:
            return known
        return frozenset() if self._newer_complete else None

    def _forget_newer(self) -> None:
        self._newer, self._newer_complete = {}, False

    def _left_out(self, unreadable: Sequence[UnreadableRow], kind: str) -> set[str]:
        """Log the hosts a pass left out, each once while it stays unreadable (not every pass)."""
        left_out = {problem.host_id for problem in unreadable}
        new = [problem for problem in unreadable if problem.host_id not in self._unreadable_logged]
        self._unreadable_logged |= left_out
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

    def refresh_aggregates(self, now: datetime, hosts: bool = True) -> None:
        """Publish fresh aggregates; with `hosts` False only their violation part (after a pass
        that moved violations: the host counts follow at the next timed refresh, and need a scan
        of every host)."""
        try:
            with self._sessions() as session:
                current = self._aggregates.current()
                if hosts or current is None:
                    self._aggregates.publish(compute_aggregates(session, now, self._config.stale_after))
                else:
                    self._aggregates.publish(with_violations(current[0], violation_counts(session)))
                self.backlog = feed_backlog(session, BACKLOG_COUNT_BOUND)
        except SQLAlchemyError as exc:
            self._metrics.database_errors.labels(operation="aggregate").inc()
            log.error("aggregates refresh failed: %s", one_line(exc))
        except Exception as exc:  # e.g. a damaged value in a grouped column; the last snapshot stays
            self._metrics.loop_errors.labels(loop="evaluator").inc()
            log.error("aggregates refresh failed with an unexpected error: %s", one_line(exc))

    def _run(self) -> None:
        timers = _Timers(
            full=time.monotonic() + self._full_pass_interval,
            refresh=time.monotonic() + self._refresh_interval,
            poll=time.monotonic() + self._feed_poll,
        )
        while not self._stopping.is_set():
            try:
                self._step(timers)
            except Exception as exc:  # the loop outlives anything one pass does
                self._metrics.loop_errors.labels(loop="evaluator").inc()
                log.error("evaluator loop survived an unexpected error: %s", one_line(exc))
                # Not a hot loop on an error that repeats; the next full pass is the backstop.
                self._stopping.wait(1.0)
            self.progress.progressed()

    def _step(self, timers: _Timers) -> None:
        """Wait for changes or the next timer, then run what is due; moves the timers on."""
        polls = self._shared or self._retry
        due = min(timers.full, timers.refresh, timers.poll if polls else timers.full)
        woken = self._dirty.wait(max(0.0, due - time.monotonic()))
        if woken and not self._stopping.is_set():
            time.sleep(self._debounce)  # let a burst of batches land in one pass
            self._dirty.clear()
        if self._stopping.is_set():
            return
        # Work starts after the wait and the debounce (both deliberate): from here on, a pass that
        # does not end is a stall.
        self.progress.working()
        now = time.monotonic()
        poll_due = polls and now >= timers.poll
        if poll_due:
            timers.poll = now + self._feed_poll
        leading = self._leadership is None or self._leadership.leads()
        refreshed = False
        if leading and now >= timers.full:
            through = self.watermark.snapshot().reports_committed
            full = self._full_pass()
            timers.full = time.monotonic() + self._full_pass_interval
            if full is not None:
                self.refresh_aggregates(self._clock())
                refreshed = True
                self.watermark.covered(through, self._last_pass_at)
        elif not leading and now >= timers.full:
            # Not due here; checked again with the leadership, so a replica that takes over runs
            # its first full pass at once (the time rules, and anything a predecessor missed).
            timers.full = now + self._feed_poll
        if leading and (woken or poll_due):
            # Its refresh covers the violations only: the host counts keep their own timer, or
            # steady ingest would put them off for ever.
            self._retry = self.evaluate_feed() is None
        elif not leading and poll_due:
            self.follow_feed()
        if refreshed:
            timers.refresh = time.monotonic() + self._refresh_interval
        elif time.monotonic() >= timers.refresh:
            self.refresh_aggregates(self._clock())
            timers.refresh = time.monotonic() + self._refresh_interval


@dataclass
class _Timers:
    """When the loop next runs a full pass, refreshes the aggregates, and looks at the feed
    (time.monotonic())."""

    full: float
    refresh: float
    poll: float
