"""Bad query input on SQLite and PostgreSQL, over real gRPC: every field out of bounds is
INVALID_ARGUMENT naming it, before anything reaches the database (PostgreSQL refuses NUL in text,
which used to surface as UNAVAILABLE and a database-error count), a filter value the store does
not know is refused rather than ignored, and no reply quotes more than a bounded part of the
input."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from live_collector import QUERY, SERVING, live_collector, now_micros, report

from rmsfleet.collector.paging import MAX_TOKEN_LENGTH
from rmsfleet.v1 import facts_pb2, query_pb2

HUGE = "h" * 3_000_000
NUL_TOKEN = base64.urlsafe_b64encode(b"ws-1\x00").decode()

# (the call, the request, the field named, a word of the bound)
BAD_QUERIES: list[tuple[str, Any, str, str]] = [
    ("ListHosts", query_pb2.ListHostsRequest(page_token="A" * 3_000_000), "page_token", f"at most {MAX_TOKEN_LENGTH}"),
    ("ListHosts", query_pb2.ListHostsRequest(page_token=NUL_TOKEN), "page_token", "previous response"),
    ("ListHosts", query_pb2.ListHostsRequest(version=99), "version", "got enum value 99"),  # type: ignore[arg-type]
    ("ListHosts", query_pb2.ListHostsRequest(forest="corp\x00example"), "forest", "control characters"),
    ("ListHosts", query_pb2.ListHostsRequest(cluster="https://a\x00"), "cluster", "control characters"),
    ("ListHosts", query_pb2.ListHostsRequest(forest=HUGE), "forest", "at most 255"),
    ("GetHost", query_pb2.GetHostRequest(host_id=HUGE), "host_id", "at most 255"),
    ("GetHost", query_pb2.GetHostRequest(host_id="ws\x00-1"), "host_id", "control characters"),
    ("ListViolations", query_pb2.ListViolationsRequest(policy="stale\x00"), "policy", "control characters"),
    ("ListViolations", query_pb2.ListViolationsRequest(page_token="Zm9v" * 5000), "page_token", "at most"),
    ("ListViolations", query_pb2.ListViolationsRequest(since=Timestamp(seconds=2**62)), "since", "9999"),
    ("ListClusters", query_pb2.ListClustersRequest(page_token="x" * 20_000), "page_token", "at most"),
    ("ListExemptions", query_pb2.ListExemptionsRequest(page_token=NUL_TOKEN), "page_token", "previous response"),
    ("GetPlan", query_pb2.GetPlanRequest(forest="corp\x00"), "forest", "control characters"),
    (
        "ListViolations",
        query_pb2.ListViolationsRequest(wait_for_evaluation=query_pb2.EvaluationWait(timeout=Duration(seconds=-1))),
        "wait_for_evaluation.timeout",
        "from 0 to 86400 s",
    ),
    (
        "ListHosts",
        query_pb2.ListHostsRequest(wait_for_evaluation=query_pb2.EvaluationWait(timeout=Duration(seconds=2**62))),
        "wait_for_evaluation.timeout",
        "from 0 to 86400 s",
    ),
    (
        "GetHost",
        query_pb2.GetHostRequest(
            host_id="ws-1", wait_for_evaluation=query_pb2.EvaluationWait(timeout=Duration(seconds=1, nanos=-5))
        ),
        "wait_for_evaluation.timeout",
        "nanos=-5",
    ),
]


def test_every_bad_query_field_is_invalid_argument_naming_it(db_url: str) -> None:
    with live_collector(db_url) as live:
        assert live.inventory.Report(report("ws-1", now_micros()), timeout=30).applied
        for method, request, field, bound in BAD_QUERIES:
            call: Callable[..., Any] = getattr(live.query, method)
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, field, refused.value)
            details = refused.value.details() or ""
            assert details.startswith(f"{field}: expected"), (method, details)
            assert bound in details, (method, details)
            assert len(details) < 300
        # An unknown host is NOT_FOUND, quoting at most a bounded part of the id.
        with pytest.raises(grpc.RpcError) as missing:
            live.query.GetHost(query_pb2.GetHostRequest(host_id="n" * 255), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "(255 characters)" in (missing.value.details() or "")
        assert len(missing.value.details() or "") < 150
        # Good queries still answer.
        hosts = live.query.ListHosts(query_pb2.ListHostsRequest(version=facts_pb2.VERSION_SP2), timeout=30)
        assert [h.facts.host_id for h in hosts.hosts] == ["ws-1"]
        assert live.metric("rmsfleet_database_errors_total", operation="query") == 0
        for method in {m for m, *_ in BAD_QUERIES}:
            expected = sum(1 for m, *_ in BAD_QUERIES if m == method)
            assert live.metric("rmsfleet_rpcs_total", method=method, code="INVALID_ARGUMENT") == expected, method
        assert live.health() == SERVING and live.health(QUERY) == SERVING


def test_invalid_utf8_in_a_query_filter_is_invalid_argument_naming_it(db_url: str) -> None:
    with live_collector(db_url) as live:
        data = query_pb2.ListHostsRequest(forest="caf\u00e9-forest").SerializeToString()
        data = data.replace("\u00e9".encode(), b"\xc3(")
        with pytest.raises(grpc.RpcError) as refused:
            live.raw("/rmsfleet.v1.QueryService/ListHosts")(data, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "forest: expected valid UTF-8 text"
        truncated = query_pb2.GetHostRequest(host_id="ws-1").SerializeToString()[:-2]
        with pytest.raises(grpc.RpcError) as broken:
            live.raw("/rmsfleet.v1.QueryService/GetHost")(truncated, timeout=10)
        assert broken.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert broken.value.details() == "the request is not a valid rmsfleet.v1.GetHostRequest message"
        assert live.metric("rmsfleet_rpcs_total", method="ListHosts", code="INVALID_ARGUMENT") == 1
