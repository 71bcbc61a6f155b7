"""Thin gRPC servicers: validate, convert, call the use-case, map errors to status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import grpc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector import bounds
from rmsfleet.collector.clock import Clock
from rmsfleet.collector.config import ServeConfig
from rmsfleet.collector.domain.cluster_summary import summarize_clusters
from rmsfleet.collector.domain.planner import plan_upgrade
from rmsfleet.collector.enrollment import MAX_SECRET_LENGTH, KeyProblem, NodeKeyRejected, SecretFile, hash_node_key
from rmsfleet.collector.identity import (
    CertificateBinding,
    Enroller,
    EnrollmentUnavailable,
    IdentityRefused,
    SecretNotAccepted,
)
from rmsfleet.collector.ingest import GroupCommitWriter, IngestFailed, IngestOverloaded, IngestStopped, ReportRefused
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.paging import BadPageToken, decode_token, encode_token, page_size
from rmsfleet.collector.reports import IncomingReport, Outcome
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.aggregates_sql import compute_aggregates
from rmsfleet.collector.store.evaluation_sql import load_fleet
from rmsfleet.contract import wire as convert
from rmsfleet.contract.facts import MAX_ID_LENGTH, InvalidFacts, Version
from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc, query_pb2, query_pb2_grpc

log = logging.getLogger(__name__)
R = TypeVar("R")
Q = TypeVar("Q")

# An agent's deadline bounds how long it waits; this bounds it when the agent sets none.
DEFAULT_ACK_WAIT = 30.0


def observed(method: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Count every call in rmsfleet_rpcs_total by its final status code."""

    def wrap(handler: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(handler)
        def run(self: Any, request: Any, context: grpc.ServicerContext) -> R:
            try:
                response = handler(self, request, context)
            except Exception:
                code = context.code() if hasattr(context, "code") else None
                self.metrics.rpcs.labels(method=method, code=(code or grpc.StatusCode.UNKNOWN).name).inc()
                raise
            self.metrics.rpcs.labels(method=method, code="OK").inc()
            return response

        return run

    return wrap


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    """Report and Enroll. With `secrets` (an enrollment secret file) every report must carry the
    node key of the host it claims; the writer checks keys per batch. Without, Enroll answers
    UNIMPLEMENTED and node keys are ignored."""

    def __init__(
        self,
        writer: GroupCommitWriter,
        metrics: CollectorMetrics,
        clock: Clock,
        secrets: SecretFile | None = None,
        sessions: sessionmaker[Session] | None = None,
        *,
        enroller: Enroller | None = None,
        binding: CertificateBinding | None = None,
    ) -> None:
        if secrets is not None and sessions is None:
            raise ValueError("enrollment needs the database sessions")
        self.writer = writer
        self.metrics = metrics
        self.clock = clock
        self.secrets = secrets
        self.sessions = sessions
        # Host identity (identity.py): who may enroll as a host id; host ids bound to certificates.
        if enroller is None and secrets is not None and sessions is not None:
            enroller = Enroller(sessions, secrets, clock, binding=binding)
        self.enroller = enroller
        self.binding = binding

    @observed("Report")
    def Report(
        self, request: inventory_pb2.ReportRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ReportResponse:
        received_at = self.clock()
        try:
            facts, observed_at, sequence, agent_version = convert.report_fields_from_pb(request, received_at)
        except InvalidFacts as exc:
            self.metrics.reports.labels(outcome=Outcome.INVALID.value).inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.field}: expected {exc.reason}")
        if self.binding is not None:
            try:
                self.binding.check(facts.host_id, context.auth_context())
            except IdentityRefused as exc:
                self.metrics.reports.labels(outcome=Outcome.REFUSED.value).inc()
                log.warning("refused a report from %s: PERMISSION_DENIED: %s", context.peer(), exc)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        key_hash: str | None = None
        if self.secrets is not None:
            if not request.node_key:
                self._refuse_key(context, NodeKeyRejected(facts.host_id, KeyProblem.MISSING))
            key_hash = hash_node_key(request.node_key)
        report = IncomingReport(facts, observed_at, sequence, agent_version, received_at=received_at)
        try:
            future = self.writer.submit(report, key_hash)
        except IngestOverloaded as exc:
            self.metrics.reports.labels(outcome=Outcome.REFUSED.value).inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except IngestStopped as exc:
            self.metrics.reports.labels(outcome=Outcome.REFUSED.value).inc()
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        remaining = context.time_remaining()
        try:
            result = future.result(timeout=DEFAULT_ACK_WAIT if remaining is None else max(remaining, 0.0))
        except NodeKeyRejected as exc:
            self._refuse_key(context, exc)
        except ReportRefused as exc:
            # This report alone; the others of its batch were committed. Not a database error.
            self.metrics.reports.labels(outcome=Outcome.REFUSED.value).inc()
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.reason)
        except IngestFailed as exc:
            self.metrics.reports.labels(outcome=Outcome.ERROR.value).inc()
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except FutureTimeout:
            # The batch may still commit; the agent's retry with the same sequence is then a duplicate.
            self.metrics.reports.labels(outcome=Outcome.ERROR.value).inc()
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the report was not committed before the deadline")
        self.metrics.reports.labels(outcome=result.outcome.value).inc()
        return inventory_pb2.ReportResponse(
            applied=result.outcome is Outcome.APPLIED, acknowledged_sequence=result.sequence
        )

    def _refuse_key(self, context: grpc.ServicerContext, refusal: NodeKeyRejected) -> None:
        self.metrics.reports.labels(outcome=Outcome.REFUSED.value).inc()
        code = grpc.StatusCode.PERMISSION_DENIED if refusal.problem.authenticated else grpc.StatusCode.UNAUTHENTICATED
        log.warning("refused a report from %s: %s: %s", context.peer(), code.name, refusal.message)
        context.abort(code, refusal.message)

    @observed("Enroll")
    def Enroll(
        self, request: inventory_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.EnrollResponse:
        if self.enroller is None:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "this collector runs without enrollment (no --enroll-secret-file): send reports without a node key",
            )
        host_id = request.host_id.strip()
        try:
            convert.check_wire_text("host_id", request.host_id, MAX_ID_LENGTH, required=True)
            convert.check_wire_text("enroll_secret", request.enroll_secret, MAX_SECRET_LENGTH)
        except InvalidFacts as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.field}: expected {exc.reason}")
        if host_id != request.host_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "host_id: expected an id without surrounding spaces")
        try:
            enrolled = self.enroller.enroll(host_id, request.enroll_secret, context.peer(), context.auth_context())
        except IdentityRefused as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except SecretNotAccepted as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except EnrollmentUnavailable as exc:
            self.metrics.database_errors.labels(operation="enroll").inc()
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return inventory_pb2.EnrollResponse(node_key=enrolled.node_key)


def within_bounds(context: grpc.ServicerContext, check: Callable[[Q], None], request: Q) -> None:
    """Run a bounds check (bounds.py) on a request; a field out of bounds is INVALID_ARGUMENT."""
    try:
        check(request)
    except InvalidFacts as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.field}: expected {exc.reason}")


def _stamp(moment: datetime | None) -> Any:
    return None if moment is None else convert.datetime_to_timestamp(moment)


VERSION_NAMES = {pb: v.value for v, pb in convert.VERSION_TO_PB.items()}


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(
        self, sessions: sessionmaker[Session], config: ServeConfig, metrics: CollectorMetrics, clock: Clock
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.metrics = metrics
        self.clock = clock

    def _paging(self, request: Any, context: grpc.ServicerContext, numeric: bool = False) -> tuple[int, Any]:
        """(page size, the key after which the page starts) from a list request."""
        try:
            limit = page_size(request.page_size)
            after: Any = decode_token(request.page_token)
            if numeric and after is not None:
                after = int(after)
        except BadPageToken as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: expected a token from a previous response")
        return limit, after

    def _read(self, context: grpc.ServicerContext, query: Callable[[Session], R]) -> R:
        """Run a read in its own session; a database failure is UNAVAILABLE, counted and logged."""
        try:
            with self.sessions() as session:
                return query(session)
        except SQLAlchemyError as exc:
            self._database_failed(context, exc)

    def _database_failed(self, context: grpc.ServicerContext, exc: SQLAlchemyError) -> NoReturn:
        self.metrics.database_errors.labels(operation="query").inc()
        log.error("query failed: %s", str(exc).splitlines()[0])
        context.abort(grpc.StatusCode.UNAVAILABLE, "the database is not available")

    @observed("ListHosts")
    def ListHosts(
        self, request: query_pb2.ListHostsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListHostsResponse:
        within_bounds(context, bounds.check_list_hosts, request)
        limit, after = self._paging(request, context)
        if request.role not in ("", "server", "client"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "role: expected 'server', 'client' or empty")
        flt = queries.HostFilter(
            role=request.role or None,
            version=VERSION_NAMES.get(request.version),
            cluster=request.cluster or None,
            forest=request.forest or None,
            stale_only=request.stale_only,
        )
        now, stale_after = self.clock(), self.config.policy.stale_after
        hosts = self._read(context, lambda session: queries.list_hosts(session, flt, after, limit, now, stale_after))
        response = query_pb2.ListHostsResponse(hosts=[_host_pb(h) for h in hosts])
        if len(hosts) == limit:
            response.next_page_token = encode_token(hosts[-1].facts.host_id)
        return response

    @observed("GetHost")
    def GetHost(self, request: query_pb2.GetHostRequest, context: grpc.ServicerContext) -> query_pb2.GetHostResponse:
        within_bounds(context, bounds.check_get_host, request)
        now, stale_after = self.clock(), self.config.policy.stale_after
        found = self._read(context, lambda session: queries.get_host(session, request.host_id, now, stale_after))
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"host_id: no host {convert.quote(request.host_id)} has reported")
        host, history = found
        return query_pb2.GetHostResponse(
            host=_host_pb(host),
            history=[
                query_pb2.HostChange(changed_at=_stamp(c.changed_at), facts=convert.facts_to_pb(c.facts))
                for c in history
            ],
        )

    @observed("ListViolations")
    def ListViolations(
        self, request: query_pb2.ListViolationsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListViolationsResponse:
        within_bounds(context, bounds.check_list_violations, request)
        limit, after = self._paging(request, context, numeric=True)
        if request.state not in ("", "open", "resolved", "all"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "state: expected 'open', 'resolved' or 'all'")
        if request.severity not in ("", "warning", "critical"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "severity: expected 'warning' or 'critical'")
        flt = queries.ViolationFilter(
            policy=request.policy or None,
            severity=request.severity or None,
            state=request.state or "open",
            since=convert.timestamp_to_datetime(request.since) if request.HasField("since") else None,
        )
        rows = self._read(context, lambda session: queries.list_violations(session, flt, after, limit))
        response = query_pb2.ListViolationsResponse(
            violations=[
                query_pb2.Violation(
                    policy=v.policy,
                    subject_kind=v.subject_kind,
                    subject=v.subject,
                    severity=v.severity,
                    since=_stamp(v.since),
                    resolved_at=_stamp(v.resolved_at),
                    detail=v.detail,
                )
                for v in rows
            ]
        )
        if len(rows) == limit:
            response.next_page_token = encode_token(str(rows[-1].id))
        return response

    @observed("ListClusters")
    def ListClusters(
        self, request: query_pb2.ListClustersRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListClustersResponse:
        within_bounds(context, bounds.check_paged, request)
        limit, after = self._paging(request, context)
        now, stale_after = self.clock(), self.config.policy.stale_after
        aggregates = self._read(context, lambda session: compute_aggregates(session, now, stale_after))
        # Clusters are few (tens to hundreds): summarise all, then page the sorted list.
        summaries = [
            s
            for s in summarize_clusters(aggregates.cluster_servers, aggregates.cluster_clients)
            if after is None or s.url > after
        ][:limit]
        response = query_pb2.ListClustersResponse(
            clusters=[
                query_pb2.Cluster(
                    url=s.url,
                    kind=convert.KIND_TO_PB[s.kind],
                    root_cluster=s.root_cluster or "",
                    forest=s.forest,
                    server_versions=_version_counts(s.server_versions.as_dict()),
                    client_versions=_version_counts(s.client_versions.as_dict()),
                    offline_enrollment=s.offline_enrollment,
                    self_activating_clients=s.self_activating_clients.value,
                    server_lockbox=s.server_lockbox,
                    sql_server_2005_by_default=s.sql_server_2005_by_default,
                )
                for s in summaries
            ]
        )
        if len(summaries) == limit:
            response.next_page_token = encode_token(summaries[-1].url)
        return response

    @observed("ListExemptions")
    def ListExemptions(
        self, request: query_pb2.ListExemptionsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListExemptionsResponse:
        within_bounds(context, bounds.check_paged, request)
        limit, after = self._paging(request, context, numeric=True)
        rows = self._read(context, lambda session: queries.list_exemptions(session, after, limit))
        response = query_pb2.ListExemptionsResponse(
            exemptions=[
                query_pb2.Exemption(
                    id=e.id,
                    policy=e.policy,
                    subject_kind=e.subject_kind,
                    subject=e.subject,
                    reason=e.reason,
                    created_at=_stamp(e.created_at),
                    expires_at=_stamp(e.expires_at),
                )
                for e in rows
            ]
        )
        if len(rows) == limit:
            response.next_page_token = encode_token(str(rows[-1].id))
        return response

    @observed("GetPlan")
    def GetPlan(self, request: query_pb2.GetPlanRequest, context: grpc.ServicerContext) -> query_pb2.GetPlanResponse:
        within_bounds(context, bounds.check_get_plan, request)
        share = request.max_unavailable or self.config.plan_max_unavailable
        if not 0 < share <= 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"max_unavailable: expected a share in (0, 1], got {share}")
        # The planner reads current facts only; no history.
        fleet = self._read(context, lambda session: load_fleet(session, with_history=False))
        hosts = [h for h in fleet.hosts if not request.forest or h.facts.forest == request.forest]
        plan = plan_upgrade(hosts, max_unavailable=share)
        return query_pb2.GetPlanResponse(
            waves=[
                query_pb2.PlanWave(
                    number=wave.number,
                    steps=[
                        query_pb2.PlanStep(
                            forest=step.forest,
                            cluster=step.cluster or "",
                            role=step.role,
                            hosts=list(step.hosts),
                            from_version=convert.VERSION_TO_PB[step.from_version],
                            to_version=convert.VERSION_TO_PB[step.to_version],
                        )
                        for step in wave.steps
                    ],
                    checklist=[
                        query_pb2.ChecklistItem(forest=item.forest, cluster=item.cluster, action=item.action)
                        for item in wave.checklist
                    ],
                )
                for wave in plan.waves
            ],
            unplanned=[
                query_pb2.UnplannedHost(
                    host_id=u.host_id, role=u.role, version=convert.VERSION_TO_PB[u.version], reason=u.reason
                )
                for u in plan.unplanned
            ],
        )


def _version_counts(counts: Any) -> list[query_pb2.ClusterVersionCount]:
    return [
        query_pb2.ClusterVersionCount(version=convert.VERSION_TO_PB[Version(v)], count=n)
        for v, n in sorted(counts.items())
        if n
    ]


def _host_pb(host: queries.HostView) -> query_pb2.Host:
    return query_pb2.Host(
        facts=convert.facts_to_pb(host.facts),
        first_seen=_stamp(host.first_seen),
        last_seen=_stamp(host.last_seen),
        observed_at=_stamp(host.observed_at),
        last_sequence=host.last_sequence,
        agent_version=host.agent_version,
        stale=host.stale,
    )
