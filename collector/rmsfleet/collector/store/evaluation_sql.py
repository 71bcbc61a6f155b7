"""What the evaluator reads (the fleet, the history the rules need) and writes (violations)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, insert, or_, select, text, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from rmsfleet.collector.domain.model import FactChange, Finding, Fleet, HostRecord
from rmsfleet.collector.store.models import ExemptionRow, HostHistoryRow, HostRow, ViolationRow
from rmsfleet.collector.store.rows import FACT_COLUMNS, UnreadableRow, facts_from_columns, utc
from rmsfleet.contract.facts import Activation, ClusterKind, Enrollment, Version

# An arbitrary constant both replicas agree on: the key of the evaluation advisory lock.
EVALUATION_LOCK_KEY = 0x524D53464C454554  # "RMSFLEET"


def try_evaluation_lock(session: Session) -> bool:
    """On PostgreSQL, take the transaction-scoped advisory lock that makes one replica evaluate
    at a time; other replicas skip the pass. SQLite has one collector per file: always True."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": EVALUATION_LOCK_KEY}).scalar())


@dataclass(frozen=True, slots=True)
class HostRange:
    """The host ids after `after` up to and including `through` (None: no bound on that side),
    in the database's own order of host ids: a full pass walks the fleet range by range, so the
    ranges together cover every id, also of a host deleted since its violation opened."""

    after: str | None
    through: str | None

    def where(self, column: InstrumentedAttribute[str]) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.after is not None:
            conditions.append(column > self.after)
        if self.through is not None:
            conditions.append(column <= self.through)
        return conditions


def next_host_range(session: Session, after: str | None, size: int) -> HostRange:
    """The range of the next `size` host ids after `after`; the last range is open-ended."""
    statement = select(HostRow.host_id).order_by(HostRow.host_id).offset(size - 1).limit(1)
    if after is not None:
        statement = statement.where(HostRow.host_id > after)
    return HostRange(after, session.scalar(statement))


def may_break_a_host_rule(now: datetime, stale_after: timedelta) -> ColumnElement[bool]:
    """policies.may_break_a_host_rule in SQL, or a row that may make no facts (which the load
    must see, to leave the host out and count it): the hosts a full pass reads."""
    versions = [v.value for v in Version]
    return or_(
        HostRow.server_version.in_([Version.RTM.value, Version.SP2.value]),
        HostRow.client_version == Version.RTM.value,
        HostRow.last_seen < now - stale_after,
        and_(
            HostRow.server_version.is_not(None),
            or_(
                HostRow.server_version.not_in(versions),
                HostRow.server_cluster.is_(None),
                HostRow.server_cluster_kind.is_(None),
                HostRow.server_cluster_kind.not_in([k.value for k in ClusterKind]),
                HostRow.server_enrollment.is_(None),
                HostRow.server_enrollment.not_in([e.value for e in Enrollment]),
            ),
        ),
        and_(
            HostRow.client_version.is_not(None),
            or_(
                HostRow.client_version.not_in(versions),
                HostRow.client_activation.is_(None),
                HostRow.client_activation.not_in([a.value for a in Activation]),
            ),
        ),
    )


def load_fleet(
    session: Session,
    host_ids: Iterable[str] | None = None,
    servers_only: bool = False,
    with_history: bool = True,
    unreadable: list[UnreadableRow] | None = None,
    in_range: HostRange | None = None,
    where: ColumnElement[bool] | None = None,
) -> Fleet:
    """All hosts (or only `host_ids`, or with `servers_only` only what the cluster rules look at:
    hosts with a server part and RTM clients, D14) with the history the rules need: the fact
    changes of hosts that ever reported an RTM server (D1's upgrade-path rule); other histories
    are not loaded, nor any history for `servers_only` or without `with_history`.

    A row that makes no facts (rows.UnreadableRow) leaves its host out, and is added to
    `unreadable` when given: one damaged row must not stop every host's evaluation. `in_range`
    limits it to the hosts of one range (a full pass's step), `where` to the hosts it holds for."""
    skipped: list[UnreadableRow] = [] if unreadable is None else unreadable
    columns = [HostRow.host_id, HostRow.first_seen, HostRow.last_seen, *[getattr(HostRow, c) for c in FACT_COLUMNS]]
    statement = select(*columns)
    wanted = None if host_ids is None else sorted(set(host_ids))
    if wanted is not None:
        statement = statement.where(HostRow.host_id.in_(wanted))
    if servers_only:
        statement = statement.where(or_(HostRow.server_version.is_not(None), HostRow.client_version == "RTM"))
    if in_range is not None:
        statement = statement.where(*in_range.where(HostRow.host_id))
    if where is not None:
        statement = statement.where(where)
    hosts = []
    for row in session.execute(statement):
        try:
            facts = facts_from_columns(row.host_id, row)
        except UnreadableRow as problem:
            skipped.append(problem)
            continue
        hosts.append(HostRecord(facts=facts, first_seen=utc(row.first_seen), last_seen=utc(row.last_seen)))
    if servers_only or not with_history:
        return Fleet(hosts=hosts)
    history_columns = [
        HostHistoryRow.host_id,
        HostHistoryRow.changed_at,
        *[getattr(HostHistoryRow, c) for c in FACT_COLUMNS],
    ]
    rtm_hosts = select(HostHistoryRow.host_id).where(HostHistoryRow.server_version == "RTM")
    if wanted is not None:
        rtm_hosts = rtm_hosts.where(HostHistoryRow.host_id.in_(wanted))
    if in_range is not None:
        rtm_hosts = rtm_hosts.where(*in_range.where(HostHistoryRow.host_id))
    if where is not None:
        meeting = select(HostRow.host_id).where(where)
        if in_range is not None:
            meeting = meeting.where(*in_range.where(HostRow.host_id))
        rtm_hosts = rtm_hosts.where(HostHistoryRow.host_id.in_(meeting))
    history_statement = (
        select(*history_columns)
        .where(HostHistoryRow.host_id.in_(rtm_hosts.distinct()))
        .order_by(HostHistoryRow.host_id, HostHistoryRow.changed_at, HostHistoryRow.sequence)
    )
    history: dict[str, list[FactChange]] = defaultdict(list)
    left_out = {problem.host_id for problem in skipped}
    for row in session.execute(history_statement):
        if row.host_id in left_out:
            continue
        try:
            facts = facts_from_columns(row.host_id, row)
        except UnreadableRow as problem:
            # A host whose history is damaged is left out whole: D1's rule reads the history.
            skipped.append(problem)
            left_out.add(row.host_id)
            continue
        history[row.host_id].append(FactChange(host_id=row.host_id, changed_at=utc(row.changed_at), facts=facts))
    if left_out:
        hosts = [h for h in hosts if h.facts.host_id not in left_out]
    return Fleet(hosts=hosts, history={h: c for h, c in history.items() if h not in left_out})


@dataclass(frozen=True, slots=True)
class OpenViolation:
    id: int
    policy: str
    subject_kind: str
    subject: str
    severity: str
    detail: str
    since: datetime


def open_violations(
    session: Session,
    policies: Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
    *,
    subject_kind: str | None = None,
    in_range: HostRange | None = None,
) -> list[OpenViolation]:
    """The open violations, or those of `policies`, of `subjects` or of the subjects of
    `subject_kind` in `in_range`. Plain rows, not ORM objects: a full pass reads every open
    violation, and building mapped objects took a third of a pass at 200,000 hosts (profiled)."""
    v = ViolationRow
    statement = select(v.id, v.policy, v.subject_kind, v.subject, v.severity, v.detail, v.since).where(
        v.resolved_at.is_(None)
    )
    if policies is not None:
        statement = statement.where(ViolationRow.policy.in_(list(policies)))
    if subjects is not None:
        statement = statement.where(ViolationRow.subject.in_(sorted(set(subjects))))
    if subject_kind is not None:
        statement = statement.where(ViolationRow.subject_kind == subject_kind)
    if in_range is not None:
        statement = statement.where(*in_range.where(ViolationRow.subject))
    return [
        OpenViolation(r.id, r.policy, r.subject_kind, r.subject, r.severity, r.detail, utc(r.since))
        for r in session.execute(statement)
    ]


@dataclass(frozen=True, slots=True)
class ViolationChanges:
    opened: int
    updated: int
    resolved: int


def write_violations(
    session: Session,
    opened: Sequence[Finding],
    updated: Sequence[tuple[int, Finding]],
    resolved: Sequence[int],
    now: datetime,
) -> ViolationChanges:
    """Insert, update (severity/detail) and resolve violations: at most three statements."""
    if opened:
        session.execute(
            insert(ViolationRow),
            [
                {
                    "policy": f.policy,
                    "subject_kind": f.subject_kind.value,
                    "subject": f.subject,
                    "severity": f.severity.value,
                    "detail": f.detail,
                    "since": now,
                    "resolved_at": None,
                }
                for f in opened
            ],
        )
    if updated:
        session.execute(
            update(ViolationRow),
            [{"id": vid, "severity": f.severity.value, "detail": f.detail} for vid, f in updated],
        )
    if resolved:
        session.execute(update(ViolationRow), [{"id": vid, "resolved_at": now} for vid in resolved])
    return ViolationChanges(len(opened), len(updated), len(resolved))


def active_exemptions(session: Session, now: datetime) -> list[ExemptionRow]:
    statement = select(ExemptionRow).where((ExemptionRow.expires_at.is_(None)) | (ExemptionRow.expires_at > now))
    return list(session.scalars(statement))
