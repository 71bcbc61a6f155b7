"""The upgrade plan in pages: pure, a Plan in, a slice of it out.

A page holds at most `size` host entries: the host ids of the steps, wave after wave, then the
hosts the plan leaves out. Waves and steps are cut where the page ends, so one wave of 900,000
clients (the first wave of a big fleet) still goes in answers of a bounded size. A wave cut in
two appears on both pages with its number; its D4 checklist comes with the page that holds the
wave's first host. Within a wave the steps differ by (forest, cluster, role, versions), so a
reader joins the parts of a step by that key (query_client.merge_plan_pages)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from rmsfleet.collector.domain.planner import Plan, Step, Unplanned, Wave

__all__ = ["PagedPlan", "PlanPage"]


@dataclass(frozen=True, slots=True)
class PlanPage:
    """Waves (possibly cut) and unplanned hosts from host entry `start` on; `next_start` is where
    the next page starts, None after the last."""

    waves: tuple[Wave, ...]
    unplanned: tuple[Unplanned, ...]
    next_start: int | None


class PagedPlan:
    """A plan with the position of every step's first host among the plan's host entries, so a
    page is found by bisection, not by walking the plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        # (wave index, step index) of every step in plan order, and its first entry's position.
        self._steps: list[tuple[int, int]] = []
        self._starts: list[int] = []
        position = 0
        for w, wave in enumerate(plan.waves):
            for s, step in enumerate(wave.steps):
                self._steps.append((w, s))
                self._starts.append(position)
                position += len(step.hosts)
        self.step_entries = position
        self.entries = position + len(plan.unplanned)

    def page(self, start: int, size: int) -> PlanPage:
        """Entries [start, start + size). Raises ValueError for a start past the end (a page
        token from another plan) or a size below 1."""
        if size < 1:
            raise ValueError(f"a page holds at least one entry, got {size}")
        if not 0 <= start <= self.entries or (start == self.entries and self.entries > 0):
            raise ValueError(f"the plan has {self.entries} entries; no page starts at {start}")
        end = min(start + size, self.entries)
        waves: list[Wave] = []
        if start < self.step_entries:
            first = bisect_right(self._starts, start) - 1
            by_wave: dict[int, list[Step]] = {}
            for index in range(first, len(self._steps)):
                step_start = self._starts[index]
                if step_start >= end:
                    break
                w, s = self._steps[index]
                step = self.plan.waves[w].steps[s]
                lo, hi = max(start - step_start, 0), min(end - step_start, len(step.hosts))
                cut = step if (lo, hi) == (0, len(step.hosts)) else _slice(step, lo, hi)
                by_wave.setdefault(w, []).append(cut)
            for w, steps in by_wave.items():
                wave = self.plan.waves[w]
                checklist = wave.checklist if start <= self._wave_start(w) else ()
                waves.append(Wave(number=wave.number, steps=tuple(steps), checklist=checklist))
        lo = max(start - self.step_entries, 0)
        hi = max(end - self.step_entries, 0)
        unplanned = self.plan.unplanned[lo:hi]
        return PlanPage(tuple(waves), unplanned, end if end < self.entries else None)

    def _wave_start(self, wave_index: int) -> int:
        return self._starts[bisect_right(self._steps, (wave_index, -1))]


def _slice(step: Step, lo: int, hi: int) -> Step:
    return Step(step.forest, step.cluster, step.role, step.hosts[lo:hi], step.from_version, step.to_version)
