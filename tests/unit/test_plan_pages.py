"""The plan in pages (domain/plan_pages.py, read back by query_convert.merge_plan_pages): for
every page size, the pages of a plan joined again are the whole plan, each page holds at most
its size in host entries, and a wave's D4 checklist comes once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from plan_fleet import plan_fleet

from rmsfleet.collector import query_convert as qv
from rmsfleet.collector.domain.model import HostRecord
from rmsfleet.collector.domain.plan_pages import PagedPlan
from rmsfleet.collector.domain.planner import plan_upgrade

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def fleet(hosts: int, seed: int) -> list[HostRecord]:
    return [HostRecord(facts, T0, T0) for facts in plan_fleet(hosts, seed)]


def whole(paged: PagedPlan) -> dict[str, object]:
    return qv.plan_dict(qv.plan_response(paged.page(0, max(paged.entries, 1)), ""))


def walk(paged: PagedPlan, size: int) -> list[dict[str, object]]:
    pages, start = [], 0
    while True:
        page = paged.page(start, size)
        entries = sum(len(s.hosts) for w in page.waves for s in w.steps) + len(page.unplanned)
        assert 0 < entries <= size or paged.entries == 0
        pages.append(qv.plan_dict(qv.plan_response(page, "")))
        if page.next_start is None:
            return pages
        start = page.next_start


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 50, 10_000])
def test_the_pages_joined_are_the_whole_plan(seed: int, size: int) -> None:
    paged = PagedPlan(plan_upgrade(fleet(120, seed), max_unavailable=0.34))
    assert paged.plan.waves and paged.plan.unplanned, "the fleet exercises waves and unplanned hosts"
    pages = walk(paged, size)
    assert qv.merge_plan_pages(pages) == whole(paged)
    checklists = [c for page in pages for w in page["waves"] for c in w["checklist"]]  # type: ignore[attr-defined]
    assert len(checklists) == sum(len(w.checklist) for w in paged.plan.waves), "each checklist comes once"


def test_an_empty_plan_is_one_empty_page() -> None:
    paged = PagedPlan(plan_upgrade([], max_unavailable=0.34))
    page = paged.page(0, 10)
    assert page.waves == () and page.unplanned == () and page.next_start is None


def test_a_start_past_the_plan_is_refused() -> None:
    paged = PagedPlan(plan_upgrade(fleet(30, 1), max_unavailable=0.34))
    with pytest.raises(ValueError, match="no page starts at"):
        paged.page(paged.entries, 10)
    with pytest.raises(ValueError, match="no page starts at"):
        paged.page(-1, 10)
