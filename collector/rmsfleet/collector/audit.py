"""Writing the audit trail and counting admin actions (docs/security.md, docs/metrics.md).

An admin action writes its row itself, in the transaction of the change (admin_servicer.py); a
refused call has no transaction of its own, so `refused` opens one. Either way the metric
rmsfleet_admin_actions_total{action,outcome} counts it, with labels from bounded sets only."""

from __future__ import annotations

import logging

import grpc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.clock import Clock
from rmsfleet.collector.metrics import ADMIN_ACTIONS, CollectorMetrics
from rmsfleet.collector.store.audit_sql import REFUSED, AuditEntry, record

log = logging.getLogger(__name__)


def outcome_label(code: grpc.StatusCode | None) -> str:
    """`ok`, or the status code's name in lower case (a bounded set)."""
    return "ok" if code is None or code is grpc.StatusCode.OK else code.name.lower()


class Auditor:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock, metrics: CollectorMetrics) -> None:
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics

    def count(self, action: str, code: grpc.StatusCode | None) -> None:
        if action in ADMIN_ACTIONS:
            self.metrics.admin_actions.labels(action=action, outcome=outcome_label(code)).inc()

    def refused(self, actor: str, action: str, target: str, peer: str, code: grpc.StatusCode, reason: str) -> None:
        """Record a refused call in a transaction of its own. A database failure is logged, not
        raised: the caller is refused either way."""
        entry = AuditEntry(actor, action, target, peer, REFUSED, code.name, reason)
        try:
            with self.sessions.begin() as session:
                record(session, entry, self.clock())
        except SQLAlchemyError as exc:
            self.metrics.database_errors.labels(operation="audit").inc()
            log.error("could not record a refused %s in the audit trail: %s", action, str(exc).splitlines()[0])
        self.count(action, code)
