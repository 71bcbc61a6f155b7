"""GetPlan on a real collector (server.start, gRPC on a loopback port) over SQLite and
PostgreSQL: a storm of 64 parallel plan calls answers each with the right plan or
RESOURCE_EXHAUSTED saying to retry, while ListHosts keeps answering and no call finds the
database pool exhausted; the plan's pages walked and joined are the whole plan; a bad page
token is INVALID_ARGUMENT naming it; a walk across a fact change is told to start again."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from live_collector import Live, live_collector, now_micros, report
from plan_fleet import plan_fleet
from sqlalchemy.orm import sessionmaker

from rmsfleet.collector import query_convert as qv
from rmsfleet.collector.domain.model import HostRecord
from rmsfleet.collector.domain.plan_pages import PagedPlan
from rmsfleet.collector.domain.planner import plan_upgrade
from rmsfleet.collector.paging import encode_token
from rmsfleet.collector.query_client import QueryClient
from rmsfleet.collector.reports import IncomingReport
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.ingest_writes import apply_reports
from rmsfleet.contract.facts import HostFacts
from rmsfleet.v1 import facts_pb2, query_pb2

NOW = datetime.now(UTC)
FLEET = plan_fleet(300, seed=7)


def expected(fleet: list[HostFacts], share: float, forest: str | None = None) -> dict[str, Any]:
    """The plan the pure planner makes of `fleet`, in the JSON form the CLI prints."""
    hosts = [HostRecord(f, NOW, NOW) for f in fleet if forest is None or f.forest == forest]
    paged = PagedPlan(plan_upgrade(hosts, max_unavailable=share))
    return qv.plan_dict(qv.plan_response(paged.page(0, max(paged.entries, 1)), ""))


@pytest.fixture
def live(db_url: str) -> Iterator[Live]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    with sessionmaker(engine).begin() as session:
        apply_reports(session, [IncomingReport(f, NOW, 1, "test", NOW) for f in FLEET])
    engine.dispose()
    # The per-address limit (16 calls in flight) would refuse most of a storm from one address
    # before it reached GetPlan; this test is about the plan's own bound.
    with live_collector(db_url, max_calls_per_peer=1000, max_concurrent_plans=1) as running:
        yield running


def test_a_storm_of_plan_calls_answers_the_plan_or_retry_while_other_queries_answer(live: Live) -> None:
    questions = [(share, forest) for share in (0.34, 0.5, 0.25, 1.0) for forest in (None, "lab.example")]
    plans = {q: expected(FLEET, *q) for q in questions}
    storm_over = threading.Event()
    listed: list[int] = []

    def plan(n: int) -> tuple[tuple[float, str | None], Any]:
        share, forest = questions[n % len(questions)]
        request = query_pb2.GetPlanRequest(max_unavailable=share, forest=forest or "")
        try:
            return (share, forest), qv.plan_dict(live.query.GetPlan(request, timeout=60))
        except grpc.RpcError as exc:
            return (share, forest), exc

    def list_hosts() -> None:
        while not storm_over.is_set() or not listed:
            listed.append(len(live.query.ListHosts(query_pb2.ListHostsRequest(page_size=50), timeout=30).hosts))

    with ThreadPoolExecutor(65) as pool:
        lister = pool.submit(list_hosts)
        answers = list(pool.map(plan, range(64)))
        storm_over.set()
        lister.result(timeout=60)  # raises if a ListHosts failed during the storm

    assert listed and all(n == 50 for n in listed), "ListHosts answered a full page during the storm"
    answered = 0
    for question, answer in answers:
        if isinstance(answer, grpc.RpcError):
            assert answer.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (answer.code(), answer.details())
            assert "retry in a few seconds" in (answer.details() or "")
        else:
            assert answer == plans[question]
            answered += 1
    assert answered > 0
    assert live.metric("rmsfleet_database_errors_total", operation="query") == 0, "no call found the pool exhausted"


def walk(live: Live, request: query_pb2.GetPlanRequest) -> list[query_pb2.GetPlanResponse]:
    pages = []
    while True:
        pages.append(live.query.GetPlan(request, timeout=30))
        if not pages[-1].next_page_token:
            return pages
        request.page_token = pages[-1].next_page_token


def test_the_pages_walked_and_joined_are_the_whole_plan(live: Live) -> None:
    pages = walk(live, query_pb2.GetPlanRequest(max_unavailable=0.5, page_size=7))
    assert len(pages) > 10 and all(
        sum(len(s.hosts) for w in p.waves for s in w.steps) + len(p.unplanned) <= 7 for p in pages
    )
    assert qv.merge_plan_pages(qv.plan_dict(p) for p in pages) == expected(FLEET, 0.5)
    unpaged = live.query.GetPlan(query_pb2.GetPlanRequest(max_unavailable=0.5), timeout=30)
    assert not unpaged.next_page_token and qv.plan_dict(unpaged) == expected(FLEET, 0.5), "page_size 0: all at once"
    client = QueryClient(live.channel, timeout=30)
    assert client.plan(None, "lab.example", page_size=3) == expected(FLEET, 0.34, "lab.example")


def token_parts(token: str) -> list[str]:
    return base64.urlsafe_b64decode(token).decode().split(":")


def test_a_bad_page_token_is_invalid_argument_naming_it(live: Live) -> None:
    first = live.query.GetPlan(query_pb2.GetPlanRequest(max_unavailable=0.5, page_size=5), timeout=30)
    generation, plan_id, _start = token_parts(first.next_page_token)
    bad = [
        query_pb2.GetPlanRequest(page_token="%%%"),
        query_pb2.GetPlanRequest(page_token=encode_token("ws1")),
        query_pb2.GetPlanRequest(page_token=encode_token(f"{generation}:{plan_id}:x")),
        # A token of another question (share 0.5 asked, the default share given back).
        query_pb2.GetPlanRequest(page_token=first.next_page_token),
        # Past the plan's end.
        query_pb2.GetPlanRequest(max_unavailable=0.5, page_token=encode_token(f"{generation}:{plan_id}:100000")),
    ]
    for request in bad:
        with pytest.raises(grpc.RpcError) as refused:
            live.query.GetPlan(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith("page_token: expected a token from a previous response")
    with pytest.raises(grpc.RpcError) as refused:
        live.query.GetPlan(query_pb2.GetPlanRequest(page_size=-1), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "page_size: expected a number >= 0"


def test_a_walk_across_a_fact_change_is_told_to_start_again(live: Live) -> None:
    request = query_pb2.GetPlanRequest(max_unavailable=0.5, page_size=5)
    stale_token = live.query.GetPlan(request, timeout=30).next_page_token
    live.inventory.Report(report("newcomer", now_micros(), client_version=facts_pb2.VERSION_RTM), timeout=30)
    fresh = live.query.GetPlan(request, timeout=30)  # a plan of the new facts replaces the old one
    assert fresh.next_page_token != stale_token
    request.page_token = stale_token
    with pytest.raises(grpc.RpcError) as refused:
        live.query.GetPlan(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.ABORTED
    assert "ask again from the first page" in (refused.value.details() or "")
    plan = QueryClient(live.channel, timeout=30).plan(0.5, None, page_size=5)
    assert any("newcomer" in s["hosts"] for w in plan["waves"] for s in w["steps"]), "the walk saw the new facts"
