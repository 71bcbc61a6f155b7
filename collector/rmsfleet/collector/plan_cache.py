"""The upgrade plan, computed at most a few at a time, once per question, and reused while the
fleet's facts stay as they were.

A plan reads every host of the fleet (or of one forest): 1.6 s and about 200 MiB of transient
memory at 100,000 hosts, measured (docs/benchmarks.md). Computed per call, 64 parallel calls held
every pooled database connection and doubled the collector's memory. Here:

- **Bounded**: at most `max_concurrent` plans are computed at once. A caller that needs another
  waits up to its wait (bounded by its deadline), then gets PlanBusy (RESOURCE_EXHAUSTED, "retry").
- **Few callers held**: a caller that must wait (for a slot, or for the identical plan in
  progress) holds a gRPC worker thread; at most `max_waiting` do, so a storm of plan calls
  leaves workers for every other query. Beyond, PlanBusy at once. A plan already kept is
  answered at once and holds nobody.
- **Single-flight**: callers asking the same question (forest, share) of the same facts wait
  for the one computation in progress instead of starting their own; they do not count against
  the bound, and hold no database connection while they wait.
- **Reused while the facts stand**: a plan is kept with the facts generation it was computed
  from (plan_sql.facts_generation: the highest host_history id, which every fact change of
  every replica raises, and which one indexed read returns). The evaluation watermark was the
  other candidate; it counts only this process's reports, so a change another replica or an
  admin write made would go unseen. As a backstop for a change committed out of id order by
  another replica, a plan is also never reused past `max_age` seconds.

No grpc and no SQLAlchemy here: the generation and the hosts come in as functions."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rmsfleet.collector.domain.model import HostRecord
from rmsfleet.collector.domain.plan_pages import PagedPlan
from rmsfleet.collector.domain.planner import plan_upgrade

DEFAULT_MAX_CONCURRENT = 2
DEFAULT_MAX_WAITING = 16
# Plans kept (one per forest and share asked for); a plan of 1M hosts holds their ids.
MAX_ENTRIES = 4
DEFAULT_MAX_AGE = 60.0

PlanKey = tuple[str | None, float]


class PlanBusy(Exception):
    """No plan could be computed within the caller's wait: the bound is taken."""


@dataclass(frozen=True, slots=True)
class CachedPlan:
    # Names the plan for page tokens: the same facts, forest and share make the same id, on any
    # replica, so a token stays good as long as the facts stand.
    plan_id: str
    generation: int
    computed_at: float
    paged: PagedPlan


def plan_id_of(generation: int, forest: str | None, share: float) -> str:
    digest = hashlib.sha256(f"{generation}|{forest!r}|{share!r}".encode()).hexdigest()
    return digest[:16]


class _Flight:
    """One computation in progress; the callers that asked the same question wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: CachedPlan | None = None
        self.error: BaseException | None = None


class PlanCache:
    def __init__(
        self,
        generation: Callable[[], int],
        hosts: Callable[[str | None], Sequence[HostRecord]],
        *,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        max_waiting: int = DEFAULT_MAX_WAITING,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self._generation = generation
        self._hosts = hosts
        self.max_concurrent = max_concurrent
        self.max_waiting = max(max_waiting, max_concurrent)
        self._waiting = 0
        self._max_age = max_age
        self._clock = clock
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._entries: OrderedDict[PlanKey, CachedPlan] = OrderedDict()
        self._flights: dict[tuple[PlanKey, int], _Flight] = {}
        # Plans computed since start: how a test or a bench sees that calls were shared.
        self.computed = 0

    def get(self, forest: str | None, share: float, wait: float) -> CachedPlan:
        """The plan of the current facts; raises PlanBusy after `wait` seconds without one.
        Errors of the generation or hosts functions (a database error) pass up to every caller
        that waited on the same computation."""
        generation = self._generation()
        key: PlanKey = (forest, share)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.generation == generation and self._fresh(entry):
                self._entries.move_to_end(key)
                return entry
            if self._waiting >= self.max_waiting:
                raise PlanBusy(f"{self._waiting} calls are already waiting for an upgrade plan; retry in a few seconds")
            self._waiting += 1
            flight = self._flights.get((key, generation))
            leader = flight is None
            if flight is None:
                flight = self._flights[(key, generation)] = _Flight()
        try:
            if not leader:
                return self._follow(flight, wait)
            try:
                result = self._compute(key, generation, wait)
            except BaseException as exc:
                flight.error = exc
                raise
            else:
                flight.result = result
                return result
            finally:
                with self._lock:
                    del self._flights[(key, generation)]
                flight.done.set()
        finally:
            with self._lock:
                self._waiting -= 1

    def cached(self, plan_id: str) -> CachedPlan | None:
        """A kept plan by its id (a page token names it), however old: the pages of one walk
        come from one plan."""
        with self._lock:
            return next((e for e in self._entries.values() if e.plan_id == plan_id), None)

    def _fresh(self, entry: CachedPlan) -> bool:
        return self._clock() - entry.computed_at <= self._max_age

    def _follow(self, flight: _Flight, wait: float) -> CachedPlan:
        if not flight.done.wait(max(0.0, wait)):
            raise PlanBusy(f"the same plan has been computing for more than {wait:.1f} s; retry in a few seconds")
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        return flight.result

    def _compute(self, key: PlanKey, generation: int, wait: float) -> CachedPlan:
        if not self._slots.acquire(timeout=max(0.0, wait)):
            raise PlanBusy(
                f"{self.max_concurrent} upgrade plans are being computed (the collector's --max-concurrent-plans) "
                f"and none finished within {wait:.1f} s; retry in a few seconds"
            )
        try:
            forest, share = key
            paged = PagedPlan(plan_upgrade(self._hosts(forest), max_unavailable=share))
        finally:
            self._slots.release()
        entry = CachedPlan(plan_id_of(generation, forest, share), generation, self._clock(), paged)
        with self._lock:
            self.computed += 1
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        return entry
