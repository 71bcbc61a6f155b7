"""The query service (servicers.QueryServicer and query_convert) in a gRPC server on a loopback
port, over a real store on SQLite and PostgreSQL: every list pages through everything, and every
bad request field is INVALID_ARGUMENT naming the field, with a bounded message, no database
error and no database work."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector import query_convert as qv
from rmsfleet.collector.config import ServeConfig
from rmsfleet.collector.domain.model import Finding, Severity, SubjectKind
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.paging import MAX_TOKEN_LENGTH, encode_token
from rmsfleet.collector.reports import IncomingReport
from rmsfleet.collector.servicers import QueryServicer
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.evaluation_sql import write_violations
from rmsfleet.collector.store.ingest_writes import apply_reports
from rmsfleet.collector.watermark import NOT_EVALUATED, EvaluationWatermark
from rmsfleet.contract.facts import Activation, ClientFacts, ClusterKind, Enrollment, HostFacts, ServerFacts, Version
from rmsfleet.v1 import facts_pb2, query_pb2, query_pb2_grpc

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ROOT = "https://rms.corp.example"


def server(host_id: str, version: Version) -> HostFacts:
    return HostFacts(
        host_id,
        f"{host_id}.corp.example",
        "corp.example",
        ServerFacts(version, ROOT, ClusterKind.ROOT_CERTIFICATION, None, Enrollment.OFFLINE),
        None,
    )


def client(host_id: str, version: Version, activation: Activation = Activation.SELF) -> HostFacts:
    return HostFacts(
        host_id, f"{host_id}.corp.example", "corp.example", None, ClientFacts(version, activation, ROOT, 3)
    )


FLEET = [
    server("s1", Version.SP1),
    server("s2", Version.SP2),
    server("s3", Version.SP1),
    client("c1", Version.BUILTIN, Activation.UNKNOWN),
    client("c2", Version.RTM, Activation.INTERNET),
]


@dataclass
class Query:
    stub: query_pb2_grpc.QueryServiceStub
    registry: CollectorRegistry
    sessions: sessionmaker[Session]
    watermark: EvaluationWatermark

    def errors(self) -> float:
        return self.registry.get_sample_value("rmsfleet_database_errors_total", {"operation": "query"}) or 0.0


def serve(sessions: sessionmaker[Session]) -> Iterator[Query]:
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, "test")
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=4))
    watermark = EvaluationWatermark(lambda: NOW)
    query_pb2_grpc.add_QueryServiceServicer_to_server(
        QueryServicer(sessions, ServeConfig(), metrics, lambda: NOW, watermark), grpc_server
    )
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Query(query_pb2_grpc.QueryServiceStub(channel), registry, sessions, watermark)
    finally:
        channel.close()
        grpc_server.stop(None).wait()


@pytest.fixture
def query(db_url: str) -> Iterator[Query]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions.begin() as session:
        apply_reports(session, [IncomingReport(f, NOW, 1, "test", NOW) for f in FLEET])
        apply_reports(session, [IncomingReport(server("s2", Version.SP1), NOW, 0, "test", NOW)])
        findings = [
            Finding("stale-agent", SubjectKind.HOST, f"s{n}", Severity.WARNING, f"host s{n} is silent")
            for n in range(1, 4)
        ]
        write_violations(session, findings, [], [], NOW - timedelta(hours=1))
        for n in range(3):
            queries.add_exemption(session, "stale-agent", "host", f"c{n}", "kiosk", NOW, None)
    yield from serve(sessions)
    engine.dispose()


def every_page(fetch: Any, request: Any, field: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    pages = 0
    while True:
        response = fetch(request)
        pages += 1
        items += list(getattr(response, field))
        if not response.next_page_token:
            return items, pages
        request.page_token = response.next_page_token


def test_every_list_pages_through_everything_once(query: Query) -> None:
    hosts, pages = every_page(query.stub.ListHosts, query_pb2.ListHostsRequest(page_size=2), "hosts")
    assert [h.facts.host_id for h in hosts] == ["c1", "c2", "s1", "s2", "s3"] and pages == 3
    violations, pages = every_page(
        query.stub.ListViolations, query_pb2.ListViolationsRequest(page_size=2), "violations"
    )
    assert sorted(v.subject for v in violations) == ["s1", "s2", "s3"] and pages == 2
    exemptions, _ = every_page(query.stub.ListExemptions, query_pb2.ListExemptionsRequest(page_size=1), "exemptions")
    assert [e.subject for e in exemptions] == ["c0", "c1", "c2"]


def test_answers_carry_what_the_contract_says(query: Query) -> None:
    builtin = query.stub.ListHosts(query_pb2.ListHostsRequest(version=facts_pb2.VERSION_BUILTIN, role="client"))
    assert next(qv.host_dict(h) for h in builtin.hosts)["client"] == {
        "version": "BUILTIN",
        "activation": "unknown",
        "cluster": ROOT,
        "activated_users": 3,
    }
    sp1 = query.stub.ListHosts(query_pb2.ListHostsRequest(version=facts_pb2.VERSION_SP1, role="server"))
    assert [h.facts.host_id for h in sp1.hosts] == ["s1", "s3"], "s2's retried report (sequence 0 < 1) changed nothing"
    (cluster,) = query.stub.ListClusters(query_pb2.ListClustersRequest()).clusters
    assert qv.cluster_dict(cluster)["server_versions"] == {"SP1": 2, "SP2": 1}
    assert qv.cluster_dict(cluster)["client_versions"] == {"BUILTIN": 1, "RTM": 1}
    detail = qv.host_detail_dict(query.stub.GetHost(query_pb2.GetHostRequest(host_id="s2")))
    assert detail["host"]["server"]["version"] == "SP2" and len(detail["history"]) == 1
    plan = qv.plan_dict(query.stub.GetPlan(query_pb2.GetPlanRequest(max_unavailable=0.5)))
    assert {(s["from"], s["to"]) for w in plan["waves"] for s in w["steps"]} >= {("SP1", "SP2"), ("RTM", "SP2")}


def test_hosts_and_violations_answers_say_how_far_evaluation_got(query: Query) -> None:
    query.watermark.committed(3)
    query.watermark.covered(2, NOW)
    answers: list[query_pb2.ListHostsResponse | query_pb2.GetHostResponse | query_pb2.ListViolationsResponse] = [
        query.stub.ListHosts(query_pb2.ListHostsRequest(page_size=2)),
        query.stub.GetHost(query_pb2.GetHostRequest(host_id="s1")),
        query.stub.ListViolations(query_pb2.ListViolationsRequest()),
    ]
    for answer in answers:
        assert qv.evaluation_dict(answer.evaluation) == {
            "collector_id": query.watermark.collector_id,
            "reports_committed": 3,
            "reports_evaluated": 2,
            "evaluated_at": "2026-11-01T12:00:00Z",
            "oldest_pending_at": "2026-11-01T12:00:00Z",
        }


def test_a_wait_for_evaluation_that_runs_out_says_how_far_it_got(query: Query) -> None:
    query.watermark.committed(1)  # and no evaluator to cover it
    wait = query_pb2.EvaluationWait(timeout=Duration(nanos=200_000_000))
    with pytest.raises(grpc.RpcError) as refused:
        query.stub.ListViolations(query_pb2.ListViolationsRequest(wait_for_evaluation=wait), timeout=30)
    assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert (refused.value.details() or "").startswith(f"{NOT_EVALUATED} within 0.2 s: 0 of 1 reports evaluated")
    query.watermark.covered(1, NOW)
    answered = query.stub.ListViolations(query_pb2.ListViolationsRequest(wait_for_evaluation=wait), timeout=30)
    assert answered.evaluation.reports_evaluated == 1 and len(answered.violations) == 3


def test_an_unknown_host_is_not_found_naming_it(query: Query) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        query.stub.GetHost(query_pb2.GetHostRequest(host_id="nobody"))
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "host_id: no host 'nobody' has reported"


def far_future() -> Timestamp:
    stamp = Timestamp()
    stamp.seconds = 10**12  # year 33658
    return stamp


BAD_REQUESTS: list[tuple[str, str, Any, str]] = [
    ("ListHosts", "version", query_pb2.ListHostsRequest(version=99), "version: expected a known version"),  # type: ignore[arg-type]
    ("ListHosts", "role", query_pb2.ListHostsRequest(role="admin"), "role: expected one of 'server', 'client'"),
    ("ListHosts", "cluster NUL", query_pb2.ListHostsRequest(cluster="https://a\x00b"), "cluster: expected no control"),
    ("ListHosts", "forest long", query_pb2.ListHostsRequest(forest="f" * 3_000_000), "forest: expected at most 255"),
    ("ListHosts", "page_size", query_pb2.ListHostsRequest(page_size=-1), "page_size: expected a number >= 0"),
    ("ListHosts", "token long", query_pb2.ListHostsRequest(page_token="A" * (MAX_TOKEN_LENGTH * 100)), "page_token:"),
    ("ListHosts", "token NUL", query_pb2.ListHostsRequest(page_token=encode_token("a\x00")), "page_token:"),
    ("GetHost", "host_id empty", query_pb2.GetHostRequest(), "host_id: expected a host id"),
    ("GetHost", "host_id long", query_pb2.GetHostRequest(host_id="h" * 3_000_000), "host_id: expected at most 255"),
    ("GetHost", "host_id NUL", query_pb2.GetHostRequest(host_id="h\x00"), "host_id: expected no control"),
    ("ListViolations", "policy NUL", query_pb2.ListViolationsRequest(policy="p\x00"), "policy: expected no control"),
    ("ListViolations", "state", query_pb2.ListViolationsRequest(state="closed"), "state: expected one of"),
    (
        "ListViolations",
        "severity",
        query_pb2.ListViolationsRequest(severity="x" * 100_000),
        "severity: expected one of",
    ),
    ("ListViolations", "since", query_pb2.ListViolationsRequest(since=far_future()), "since: expected a time"),
    ("ListViolations", "id token", query_pb2.ListViolationsRequest(page_token=encode_token(str(2**64))), "page_token:"),
    ("ListExemptions", "id token", query_pb2.ListExemptionsRequest(page_token=encode_token("ws1")), "page_token:"),
    ("ListClusters", "token", query_pb2.ListClustersRequest(page_token="%%%"), "page_token:"),
    ("GetPlan", "share", query_pb2.GetPlanRequest(max_unavailable=1.5), "max_unavailable: expected a share in (0, 1]"),
    ("GetPlan", "NaN", query_pb2.GetPlanRequest(max_unavailable=math.nan), "max_unavailable: expected a share"),
    ("GetPlan", "forest NUL", query_pb2.GetPlanRequest(forest="\x00"), "forest: expected no control"),
    (
        "ListViolations",
        "wait nanos",
        query_pb2.ListViolationsRequest(wait_for_evaluation=query_pb2.EvaluationWait(timeout=Duration(nanos=-1))),
        "wait_for_evaluation.timeout: expected a duration from 0 to 86400 s",
    ),
]


@pytest.mark.parametrize(
    ("method", "case", "request_message", "expected"), BAD_REQUESTS, ids=[f"{m}-{c}" for m, c, _, _ in BAD_REQUESTS]
)
def test_a_bad_field_is_invalid_argument_naming_it(
    query: Query, method: str, case: str, request_message: Any, expected: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        getattr(query.stub, method)(request_message, timeout=30)
    details = refused.value.details() or ""
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(expected), details
    assert len(details) < 300, "the input is never echoed unbounded"
    assert query.errors() == 0
    counted = query.registry.get_sample_value("rmsfleet_rpcs_total", {"method": method, "code": "INVALID_ARGUMENT"})
    assert counted == 1


def test_a_database_failure_is_unavailable_and_counted(tmp_path: Any) -> None:
    # A database that cannot be opened: its folder does not exist.
    broken = sessionmaker(create_engine(f"sqlite:///{tmp_path / 'absent' / 'x.db'}"))
    for query in serve(broken):
        with pytest.raises(grpc.RpcError) as refused:
            query.stub.ListHosts(query_pb2.ListHostsRequest())
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == "the database is not available"
        assert query.errors() == 1
