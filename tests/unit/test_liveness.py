"""Loop progress and the health it drives, with the clock as the seam: a loop with work and no
progress for longer than its bound is stalled, a loop without work never is, a loop whose thread
ended is, and gRPC health follows per service and logs each change once."""

from __future__ import annotations

import logging
import threading
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health, health_pb2

from rmsfleet.collector.liveness import HealthWatch, LoopProgress, one_line


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_work_without_progress_past_the_bound_is_a_stall() -> None:
    clock = Clock()
    progress = LoopProgress("writer", stall_after=60, monotonic=clock)
    clock.now += 3600
    assert progress.healthy(), "idle for an hour is not stalled"
    progress.working()
    clock.now += 59
    progress.working()  # more work does not restart the clock
    clock.now += 2
    assert not progress.healthy()
    assert progress.describe() == "the writer loop has had work for 61 s without progress"
    progress.progressed()
    assert progress.healthy() and progress.stalled_for() == 0


def test_a_loop_whose_thread_ended_is_unhealthy() -> None:
    progress = LoopProgress("evaluator", stall_after=60)
    thread = threading.Thread(target=lambda: None)
    progress.watch(thread)
    assert progress.healthy(), "not started yet is not dead"
    thread.start()
    thread.join()
    assert not progress.healthy()
    assert progress.describe() == "the evaluator loop has ended"


def status(servicer: health.HealthServicer, service: str) -> int:
    # Check reads the context only to answer NOT_FOUND for a service never set; these all are.
    no_context = cast(grpc.ServicerContext, None)
    response: health_pb2.HealthCheckResponse = servicer.Check(
        health_pb2.HealthCheckRequest(service=service), no_context
    )
    return response.status


def test_health_follows_the_loops_each_service_needs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rmsfleet.collector.liveness")
    clock = Clock()
    writer = LoopProgress("writer", 10, clock)
    evaluator = LoopProgress("evaluator", 10, clock)
    servicer = health.HealthServicer()
    watch = HealthWatch(servicer, {"": [writer, evaluator], "inventory": [writer], "query": []})
    watch.check()
    assert {s: status(servicer, s) for s in ("", "inventory", "query")} == dict.fromkeys(
        ("", "inventory", "query"), health_pb2.HealthCheckResponse.SERVING
    )
    evaluator.working()
    clock.now += 11
    watch.check()
    watch.check()
    assert status(servicer, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert status(servicer, "inventory") == health_pb2.HealthCheckResponse.SERVING
    assert caplog.text.count("NOT_SERVING") == 1, "a change is logged once"
    evaluator.progressed()
    watch.check()
    assert status(servicer, "") == health_pb2.HealthCheckResponse.SERVING
    assert "health of (overall) is SERVING again" in caplog.text
    servicer.enter_graceful_shutdown()
    watch.check()
    assert status(servicer, "inventory") == health_pb2.HealthCheckResponse.NOT_SERVING


def test_an_error_in_a_log_line_is_one_bounded_line() -> None:
    error = ValueError("x" * 5000 + "\nsecond line")
    assert one_line(error) == f"ValueError: {'x' * 200}... (5000 characters)"
    assert one_line(RuntimeError()) == "RuntimeError"
    logging.getLogger(__name__).info("%s", one_line(None))
