"""Backoff timing and what each gRPC status means for a report."""

from __future__ import annotations

import random

import pytest

from rmsfleet.agent.backoff import Backoff, Outcome, classify_status, jittered_interval


def test_without_jitter_the_delays_grow_by_the_multiplier_up_to_the_cap() -> None:
    backoff = Backoff(initial=5, maximum=30, multiplier=1.5, jitter=0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == pytest.approx([5, 7.5, 11.25, 16.875, 25.3125, 30, 30, 30])
    assert backoff.attempts == 8


def test_jitter_only_shortens_and_never_passes_the_maximum() -> None:
    backoff = Backoff(initial=5, maximum=30, multiplier=1.5, jitter=0.2, rng=random.Random(42))
    steps = [5, 7.5, 11.25, 16.875, 25.3125] + [30] * 45
    for step in steps:
        delay = backoff.next_delay()
        assert step * 0.8 <= delay <= step
        assert delay <= 30


def test_the_same_seed_gives_the_same_delays() -> None:
    def run() -> list[float]:
        backoff = Backoff(5, 30, 1.5, 0.1, rng=random.Random(7))
        return [backoff.next_delay() for _ in range(5)]

    assert run() == run()


def test_jittered_delays_are_spread_out() -> None:
    backoff = Backoff(5, 30, 1.5, 0.5, rng=random.Random(3))
    for _ in range(10):
        backoff.next_delay()
    assert len({round(backoff.next_delay(), 6) for _ in range(20)}) > 10


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(5, 30, 2, 0, rng=random.Random(0))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 5


def test_a_very_long_outage_does_not_overflow() -> None:
    backoff = Backoff(5, 30, 1.5, 0, rng=random.Random(0))
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert delay == 30


@pytest.mark.parametrize(
    ("initial", "maximum", "multiplier", "jitter"),
    [(0, 30, 1.5, 0.1), (40, 30, 1.5, 0.1), (5, 30, 0.5, 0.1), (5, 30, 1.5, 1.0)],
)
def test_bad_parameters_are_refused(initial: float, maximum: float, multiplier: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, multiplier, jitter)


def test_jittered_interval_stays_within_the_band_around_the_interval() -> None:
    rng = random.Random(11)
    waits = [jittered_interval(60, 0.1, rng) for _ in range(200)]
    assert all(54 <= w <= 66 for w in waits)
    assert min(waits) < 57 and max(waits) > 63  # spread on both sides
    assert jittered_interval(60, 0, rng) == 60


@pytest.mark.parametrize(
    "code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN", "CANCELLED"]
)
def test_transient_failures_are_retried(code: str) -> None:
    assert classify_status(code) is Outcome.RETRY


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "NOT_FOUND"])
def test_refusals_are_permanent(code: str) -> None:
    assert classify_status(code) is Outcome.REFUSED


def test_a_refused_identity_is_neither_retried_blindly_nor_set_aside() -> None:
    # PERMISSION_DENIED: the host id is not this agent's to use (another machine holds it, or the
    # client certificate does not name it): the runner keeps the report and retries loudly.
    assert classify_status("PERMISSION_DENIED") is Outcome.IDENTITY


def test_unauthenticated_means_enroll_again() -> None:
    assert classify_status("UNAUTHENTICATED") is Outcome.REENROLL


def test_grpc_status_code_strings_are_understood() -> None:
    # str(grpc.StatusCode.UNAVAILABLE) == "StatusCode.UNAVAILABLE"
    assert classify_status("StatusCode.UNAVAILABLE") is Outcome.RETRY
    assert classify_status("statuscode.invalid_argument") is Outcome.REFUSED


def test_ok_is_not_a_failure() -> None:
    with pytest.raises(ValueError):
        classify_status("OK")


def test_an_unrecognised_name_keeps_the_report() -> None:
    assert classify_status("SOMETHING_NEW") is Outcome.RETRY
