"""plan_cache.PlanCache with its two reads replaced by functions the test controls (the facts
generation, and a hosts read that blocks until released): identical questions share one
computation, at most max_concurrent run at once and a caller beyond them hears why, and a plan
is reused until the facts generation moves or it is too old."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from rmsfleet.collector.domain.model import ClientFacts, HostFacts, HostRecord, Version
from rmsfleet.collector.plan_cache import PlanBusy, PlanCache
from rmsfleet.contract.facts import Activation

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOSTS = [HostRecord(HostFacts("c1", "c1", "corp", None, ClientFacts(Version.RTM, Activation.SELF, None, 1)), T0, T0)]


class Reads:
    """The generation and the hosts read; `gate` holds every hosts read until set."""

    def __init__(self) -> None:
        self.generation = 1
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.reads = 0
        self.fail: Exception | None = None

    def current(self) -> int:
        return self.generation

    def hosts(self, forest: str | None) -> list[HostRecord]:
        self.reads += 1
        self.started.release()
        self.gate.wait(30)
        if self.fail is not None:
            raise self.fail
        return HOSTS


@pytest.fixture
def reads() -> Iterator[Reads]:
    reads = Reads()
    yield reads
    reads.gate.set()


def test_identical_questions_share_one_computation(reads: Reads) -> None:
    cache = PlanCache(reads.current, reads.hosts, max_concurrent=1)
    with ThreadPoolExecutor(16) as pool:
        calls = [pool.submit(cache.get, None, 0.5, 30.0) for _ in range(16)]
        assert reads.started.acquire(timeout=30)
        reads.gate.set()
        plans = [c.result(timeout=30) for c in calls]
    assert reads.reads == 1 and cache.computed == 1
    assert all(p is plans[0] for p in plans) and plans[0].paged.entries == 1


def test_a_question_beyond_the_bound_waits_then_hears_why(reads: Reads) -> None:
    cache = PlanCache(reads.current, reads.hosts, max_concurrent=1)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.get, None, 0.5, 30.0)
        assert reads.started.acquire(timeout=30)
        with pytest.raises(PlanBusy, match=r"1 upgrade plans are being computed .*retry in a few seconds"):
            cache.get("other.example", 0.5, 0.05)
        reads.gate.set()
        assert first.result(timeout=30).paged.entries == 1
    assert cache.get("other.example", 0.5, 1.0).paged.entries == 1, "the slot is free again"


def test_a_plan_is_reused_until_the_facts_move(reads: Reads) -> None:
    reads.gate.set()
    cache = PlanCache(reads.current, reads.hosts)
    first = cache.get(None, 0.5, 1.0)
    assert cache.get(None, 0.5, 1.0) is first and reads.reads == 1
    assert cache.get(None, 0.25, 1.0) is not first, "another share is another question"
    reads.generation = 2
    second = cache.get(None, 0.5, 1.0)
    assert second is not first and second.plan_id != first.plan_id and reads.reads == 3
    assert cache.cached(first.plan_id) is None and cache.cached(second.plan_id) is second


def test_a_plan_past_its_age_is_computed_again(reads: Reads) -> None:
    reads.gate.set()
    now = [0.0]
    cache = PlanCache(reads.current, reads.hosts, max_age=60.0, clock=lambda: now[0])
    first = cache.get(None, 0.5, 1.0)
    now[0] = 61.0
    assert cache.get(None, 0.5, 1.0) is not first and reads.reads == 2


def test_a_failed_read_reaches_every_caller_and_is_not_kept(reads: Reads) -> None:
    cache = PlanCache(reads.current, reads.hosts)
    reads.fail = RuntimeError("database gone")
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(cache.get, None, 0.5, 30.0) for _ in range(4)]
        assert reads.started.acquire(timeout=30)
        reads.gate.set()
        for call in calls:
            with pytest.raises(RuntimeError, match="database gone"):
                call.result(timeout=30)
    reads.fail = None
    assert cache.get(None, 0.5, 1.0).paged.entries == 1


def test_callers_past_the_waiting_bound_are_refused_at_once(reads: Reads) -> None:
    cache = PlanCache(reads.current, reads.hosts, max_concurrent=1, max_waiting=2)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.get, None, 0.5, 30.0)
        assert reads.started.acquire(timeout=30)
        second = pool.submit(cache.get, None, 0.5, 30.0)
        while cache._waiting < 2:  # the second caller has joined the first one's computation
            threading.Event().wait(0.01)
        with pytest.raises(PlanBusy, match="2 calls are already waiting for an upgrade plan; retry"):
            cache.get(None, 0.5, 30.0)
        reads.gate.set()
        assert first.result(timeout=30) is second.result(timeout=30)
    assert cache.get(None, 0.5, 0.0) is first.result(), "a kept plan is answered at once, waiting for nobody"
