"""Whether the long-running loops (the group-commit writer, the evaluator) make progress, and the
gRPC health that follows it.

A loop calls `working()` when it has work (a report queued, a pass begun) and `progressed()` when
it finished a unit of work: a batch committed or refused, a pass done, even one that ended in an
error the loop survived. A loop is *stalled* when it has had work for longer than `stall_after`
without progressing, or when its thread has ended. Failures a loop survives (a database outage,
a corrupt row) are not stalls: restarting the collector would not cure them, and they have
metrics of their own. A stall is what a restart does cure: a thread hung in a call that never
returns, or one that died."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

# A batch of 1000 reports commits in well under a second, a full pass over 100 000 hosts takes
# about two (docs/benchmarks.md): a minute of work without progress is a hung loop, not a slow one.
DEFAULT_STALL_AFTER = 60.0


class LoopProgress:
    """The progress of one loop, thread-safe: the loop and its producers report, health reads."""

    def __init__(self, loop: str, stall_after: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        if stall_after <= 0:
            raise ValueError("stall_after must be positive")
        self.loop = loop
        self.stall_after = stall_after
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._waiting_since: float | None = None
        self._thread: threading.Thread | None = None

    def watch(self, thread: threading.Thread) -> None:
        """The thread the loop runs in: once started, the loop is unhealthy when it has ended."""
        self._thread = thread

    def working(self) -> None:
        """There is work: the clock starts unless it already runs."""
        with self._lock:
            if self._waiting_since is None:
                self._waiting_since = self._monotonic()

    def progressed(self) -> None:
        """A unit of work is done. A loop with more work calls working() right after this."""
        with self._lock:
            self._waiting_since = None

    def stalled_for(self) -> float:
        """Seconds the loop has had work without progressing (0 when it has none)."""
        with self._lock:
            since = self._waiting_since
        return 0.0 if since is None else max(0.0, self._monotonic() - since)

    def alive(self) -> bool:
        thread = self._thread
        # ident is None until the thread starts: a loop not started yet has not died.
        return thread is None or thread.ident is None or thread.is_alive()

    def healthy(self) -> bool:
        return self.alive() and self.stalled_for() <= self.stall_after

    def describe(self) -> str:
        if not self.alive():
            return f"the {self.loop} loop has ended"
        return f"the {self.loop} loop has had work for {self.stalled_for():.0f} s without progress"


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthWatch:
    """Keeps gRPC health in step with the loops: every `interval` seconds each service is set
    SERVING while all the loops it depends on are healthy, NOT_SERVING otherwise, and the change
    is logged. After the health servicer entered its graceful shutdown it ignores these updates."""

    def __init__(
        self,
        health_servicer: health.HealthServicer,
        services: Mapping[str, Sequence[LoopProgress]],
        interval: float = 1.0,
    ) -> None:
        self._health = health_servicer
        self._services = services
        self._interval = interval
        self._serving: dict[str, bool] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)

    def check(self) -> None:
        for service, loops in self._services.items():
            stalled = [loop for loop in loops if not loop.healthy()]
            serving = not stalled
            before = self._serving.get(service)
            if before == serving:
                continue
            self._serving[service] = serving
            name = service or "(overall)"
            if serving:
                if before is not None:
                    log.info("health of %s is SERVING again: its loops make progress", name)
            else:
                log.error(
                    "health of %s is NOT_SERVING: %s; a supervisor should restart the collector",
                    name,
                    "; ".join(loop.describe() for loop in stalled),
                )
            self._health.set(service, SERVING if serving else NOT_SERVING)

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.check()
            except Exception as exc:  # the watch must outlive anything it reads
                log.error("health watch failed: %s", one_line(exc))


def one_line(error: BaseException | None, limit: int = 200) -> str:
    """An error for a log line or a status message: its type, the first line of its text, at
    most `limit` characters of it (an error can quote a huge input)."""
    if error is None:
        return "unknown error"
    lines = str(error).splitlines()
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
