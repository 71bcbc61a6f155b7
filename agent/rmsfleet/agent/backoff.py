"""Retry timing and the retry decision, as pure functions of their inputs (no clock, no grpc).

`Backoff` grows the wait between attempts exponentially up to a cap and spreads it with jitter,
so thousands of agents that lost the collector together do not come back in lockstep.
`classify_status` sorts a gRPC status code *name* ("UNAVAILABLE", or "StatusCode.UNAVAILABLE"
as str(grpc.StatusCode.UNAVAILABLE) prints) into what the sender does next; taking names keeps
this module free of grpc and trivially testable.
"""

from __future__ import annotations

import enum
import random


class Backoff:
    """Delays for consecutive failed attempts: initial, initial*multiplier, ... capped at maximum.

    Each delay is drawn from [(1 - jitter) * d, d] where d is the capped exponential step: the
    jitter only ever shortens a wait, so `maximum` is a true upper bound an operator can rely on.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        multiplier: float,
        jitter: float,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if multiplier < 1:
            raise ValueError("backoff multiplier must be >= 1")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be a fraction from 0 to 1")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Failed attempts since the last reset."""
        return self._attempts

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one more failure."""
        # Cap the exponent's result rather than computing multiplier**attempts unbounded: after a
        # long outage attempts is large and the float would overflow.
        step = self.initial
        for _ in range(self._attempts):
            step *= self.multiplier
            if step >= self.maximum:
                step = self.maximum
                break
        self._attempts += 1
        return step * (1 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """A success: the next failure starts again from `initial`."""
        self._attempts = 0


def jittered_interval(interval: float, jitter: float, rng: random.Random) -> float:
    """The wait until the next regular report: `interval` moved by up to ±jitter of itself, so
    agents started together (a fleet reboot) drift apart instead of reporting in bursts. The
    mean stays `interval`, which keeps the collector's stale-agent window meaningful."""
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be a fraction from 0 to 1")
    return interval * (1 + jitter * (2 * rng.random() - 1))


class Outcome(enum.Enum):
    RETRY = "retry"  # keep the report, wait (Backoff), send again
    REENROLL = "reenroll"  # the node key is not accepted: clear it, enroll, send again
    REFUSED = "refused"  # this report will never be accepted: set it aside, go on with the next
    # The collector does not let this agent speak for the host id (PERMISSION_DENIED: another
    # machine holds the id, or the client certificate does not name it). Not the report's fault:
    # keep it, say so loudly, try to enroll, and retry with backoff until an operator settles it.
    IDENTITY = "identity"


# Transient by nature: the collector is down, overloaded, restarting or timed out.
_RETRY = frozenset(
    {
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "CANCELLED",  # the call was cancelled (e.g. the channel closed under it): not the report's fault
        "UNKNOWN",  # what a proxy or a broken connection produces; no verdict on the report
        # A collector bug (or a store outage surfaced as INTERNAL) is fixed by operators, and the
        # report is still good: keep it rather than lose a host's facts to a server fault.
        "INTERNAL",
        # Seen during a rolling collector upgrade when a replica lacks the method; another
        # replica (or the upgraded one) will have it.
        "UNIMPLEMENTED",
        "DATA_LOSS",
    }
)
# The collector judged the report itself: sending it again gives the same answer.
_REFUSED = frozenset(
    {
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "NOT_FOUND",
        "ALREADY_EXISTS",
    }
)


def _normalise(code_name: str) -> str:
    name = code_name.strip().upper()
    return name.removeprefix("STATUSCODE.")


def classify_status(code_name: str) -> Outcome:
    """What to do after an RPC failed with `code_name`. A name that is not a gRPC error code is
    treated as transient (RETRY): the report is kept rather than lost to a misreading."""
    name = _normalise(code_name)
    if name == "OK":
        raise ValueError("OK is not a failure")
    if name == "UNAUTHENTICATED":
        return Outcome.REENROLL
    if name == "PERMISSION_DENIED":
        return Outcome.IDENTITY
    if name in _REFUSED:
        return Outcome.REFUSED
    if name in _RETRY:
        return Outcome.RETRY
    # Not a gRPC code name at all: say nothing about the report, so keep it.
    return Outcome.RETRY
