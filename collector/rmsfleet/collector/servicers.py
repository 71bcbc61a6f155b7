"""Thin gRPC servicers: validate, convert, call the use-case, map errors to status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NoReturn, TypeVar

import grpc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector import query_convert as qv
from rmsfleet.collector.clock import Clock
from rmsfleet.collector.config import ServeConfig
from rmsfleet.collector.domain.cluster_summary import summarize_clusters
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
from rmsfleet.collector.plan_cache import PlanBusy, PlanCache, plan_id_of
from rmsfleet.collector.query_convert import BadRequest
from rmsfleet.collector.reports import IncomingReport, Outcome
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.aggregates_sql import compute_aggregates
from rmsfleet.collector.store.plan_sql import plan_reads
from rmsfleet.collector.watermark import EvaluationMark, EvaluationWatermark
from rmsfleet.contract import wire as convert
from rmsfleet.contract.facts import MAX_ID_LENGTH, InvalidFacts
from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc, query_pb2, query_pb2_grpc

log = logging.getLogger(__name__)
R = TypeVar("R")
Q = TypeVar("Q")

# An agent's deadline bounds how long it waits; this bounds it when the agent sets none.
DEFAULT_ACK_WAIT = 30.0
# A query that waits for evaluation answers this much before the caller's deadline, so the
# caller gets the collector's explanation instead of a bare "deadline exceeded".
EVALUATION_WAIT_MARGIN = 0.5
# How long a GetPlan waits for a free plan slot (or the identical plan in progress) at most.
PLAN_WAIT = 10.0


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


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """Validate (query_convert), read (the store), answer (query_convert)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: ServeConfig,
        metrics: CollectorMetrics,
        clock: Clock,
        watermark: EvaluationWatermark,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.watermark = watermark
        # A quarter of the workers at most wait for a plan: the rest keep answering (plan_cache.py).
        self.plans = PlanCache(
            *plan_reads(sessions), max_concurrent=config.max_concurrent_plans, max_waiting=max(1, config.workers // 4)
        )

    def _evaluation(self, context: grpc.ServicerContext, wait: float | None) -> EvaluationMark:
        """The watermark an answer goes with, taken before its read (so the answer reflects at
        least what it claims), after waiting up to `wait` seconds (query_convert.evaluation_wait_of)
        for evaluation to cover the reports committed before the call."""
        if wait is None:
            return self.watermark.snapshot()
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(0.0, remaining - EVALUATION_WAIT_MARGIN))
        covered, mark = self.watermark.wait_for_committed(wait)
        if not covered:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, qv.not_evaluated_message(mark, wait))
        return mark

    def _valid(self, context: grpc.ServicerContext, check: Callable[[], R]) -> R:
        """Run a request check; a bad field is INVALID_ARGUMENT naming it."""
        try:
            return check()
        except BadRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

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
        limit, after = self._valid(context, lambda: qv.page_of(request))
        flt = self._valid(context, lambda: qv.hosts_filter(request))
        evaluation = self._evaluation(context, self._valid(context, lambda: qv.evaluation_wait_of(request)))
        now, stale_after = self.clock(), self.config.policy.stale_after
        hosts = self._read(context, lambda session: queries.list_hosts(session, flt, after, limit, now, stale_after))
        return qv.hosts_response(hosts, limit, evaluation)

    @observed("GetHost")
    def GetHost(self, request: query_pb2.GetHostRequest, context: grpc.ServicerContext) -> query_pb2.GetHostResponse:
        host_id = self._valid(context, lambda: qv.host_id_of(request))
        evaluation = self._evaluation(context, self._valid(context, lambda: qv.evaluation_wait_of(request)))
        now, stale_after = self.clock(), self.config.policy.stale_after
        found = self._read(context, lambda session: queries.get_host(session, host_id, now, stale_after))
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"host_id: no host {convert.quote(host_id)} has reported")
        return qv.host_response(*found, evaluation)

    @observed("ListViolations")
    def ListViolations(
        self, request: query_pb2.ListViolationsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListViolationsResponse:
        limit, after = self._valid(context, lambda: qv.page_of(request, numeric=True))
        flt = self._valid(context, lambda: qv.violations_filter(request))
        evaluation = self._evaluation(context, self._valid(context, lambda: qv.evaluation_wait_of(request)))
        rows = self._read(context, lambda session: queries.list_violations(session, flt, after, limit))
        return qv.violations_response(rows, limit, evaluation)

    @observed("ListClusters")
    def ListClusters(
        self, request: query_pb2.ListClustersRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListClustersResponse:
        limit, after = self._valid(context, lambda: qv.page_of(request))
        now, stale_after = self.clock(), self.config.policy.stale_after
        aggregates = self._read(context, lambda session: compute_aggregates(session, now, stale_after))
        # Clusters are few (tens to hundreds): summarise all, then page the sorted list.
        summaries = [
            s
            for s in summarize_clusters(aggregates.cluster_servers, aggregates.cluster_clients)
            if after is None or s.url > after
        ][:limit]
        return qv.clusters_response(summaries, limit)

    @observed("ListExemptions")
    def ListExemptions(
        self, request: query_pb2.ListExemptionsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListExemptionsResponse:
        limit, after = self._valid(context, lambda: qv.page_of(request, numeric=True))
        rows = self._read(context, lambda session: queries.list_exemptions(session, after, limit))
        return qv.exemptions_response(rows, limit)

    @observed("GetPlan")
    def GetPlan(self, request: query_pb2.GetPlanRequest, context: grpc.ServicerContext) -> query_pb2.GetPlanResponse:
        share = self._valid(context, lambda: qv.plan_share(request, self.config.plan_max_unavailable))
        forest = self._valid(context, lambda: qv.plan_forest(request))
        size = self._valid(context, lambda: qv.plan_page_size(request))
        position = self._valid(context, lambda: qv.plan_position(request))
        if position is not None and plan_id_of(position[0], forest, share) != position[1]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(qv.bad_plan_token()))
        # Computed at most config.max_concurrent_plans at a time, shared by identical calls,
        # reused while the facts stand (plan_cache.py). A caller waits for a slot no longer
        # than its deadline allows, so it hears why rather than a bare DEADLINE_EXCEEDED.
        remaining = context.time_remaining()
        wait = PLAN_WAIT if remaining is None else min(PLAN_WAIT, max(0.0, remaining - EVALUATION_WAIT_MARGIN))
        try:
            found = None if position is None else self.plans.cached(position[1])
            if found is None:
                found = self.plans.get(forest, share, wait)
        except PlanBusy as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except SQLAlchemyError as exc:
            self._database_failed(context, exc)
        if position is not None and found.plan_id != position[1]:
            context.abort(
                grpc.StatusCode.ABORTED,
                "page_token: the fleet's facts changed since the first page and its plan is gone; "
                "ask again from the first page",
            )
        start = 0 if position is None else position[2]
        if size is None:
            if found.paged.entries > qv.PLAN_UNPAGED_LIMIT:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"page_size: the plan holds {found.paged.entries} host entries, more than one answer "
                    f"carries ({qv.PLAN_UNPAGED_LIMIT}); ask for pages (page_size 1 to {qv.PLAN_MAX_PAGE_SIZE})",
                )
            size = max(found.paged.entries, 1)
        try:
            page = found.paged.page(start, size)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(qv.bad_plan_token()))
        token = "" if page.next_start is None else qv.plan_token(found.generation, found.plan_id, page.next_start)
        return qv.plan_response(page, token)
