"""Limits per client address, so that no one client holds the collector (docs/limits.md).

gRPC Python's synchronous server receives a unary request *in a worker thread*: a client that
sends a call's headers and never its message holds that thread until the connection closes. 64
such streams on one connection held all 64 workers, and Report, Query and Health from everyone
else timed out. `PeerLimits` therefore hands every unary method to gRPC as a *stream*-unary one:
the worker enters our code before anything is received, knows the caller's address, and refuses
with RESOURCE_EXHAUSTED when that address already has `max_calls` calls in flight, before it waits
for the message. One address can then hold at most `max_calls` workers, however many streams or
connections it opens; the server's connection options (server.py: max_concurrent_streams, idle
and age limits, keepalive enforcement) bound each connection and how long a stalled stream lives.

`Enroll` is also limited in rate per address (a token bucket of `enroll_per_minute`): an
enrollment secret is shared by every host, so a peer trying secrets or host ids is slowed, and so
is the log it writes.

An "address" is the IP address without the port (a new connection must not reset a limit).
Clients behind one NAT or proxy that hides their addresses share it: raise the limits there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from rmsfleet.collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)

ENROLL_METHOD = "/rmsfleet.v1.InventoryService/Enroll"
# Buckets kept for this many addresses at most (the least recently seen are forgotten first):
# a flood from many addresses cannot grow the collector's memory without bound.
MAX_TRACKED_PEERS = 100_000
# A refusal is logged once per address and reason in this many seconds, not per call.
LOG_EVERY = 60.0


def peer_address(peer: str) -> str:
    """`ipv4:10.1.2.3` from gRPC's `ipv4:10.1.2.3:50123` (`ipv6:[::1]` from `ipv6:[::1]:50123`);
    other kinds (unix sockets) as they are."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return f"{kind}:{rest.rpartition(':')[0] or rest}"
    if kind == "ipv6":
        host = rest.rpartition("]")[0]
        return f"{kind}:{host}]" if host else peer
    return peer


class InFlight:
    """Calls in flight per address, at most `limit` each. Entries leave with their last call, so
    the map holds only addresses with calls running."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        with self._lock:
            count = self._counts.get(address, 0)
            if count >= self.limit:
                return False
            self._counts[address] = count + 1
            return True

    def release(self, address: str) -> None:
        with self._lock:
            count = self._counts.get(address, 0) - 1
            if count > 0:
                self._counts[address] = count
            else:
                self._counts.pop(address, None)


class RatePerMinute:
    """A token bucket per address: `per_minute` calls at once, refilled at `per_minute` a minute.
    `clock` is monotonic seconds (injected for tests)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def take(self, address: str) -> float | None:
        """None when the call may go ahead (a token taken); else the seconds until one is free."""
        now = self._clock()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.pop(address, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[address] = (tokens, now)
            while len(self._buckets) > MAX_TRACKED_PEERS:
                self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / rate


class _Throttled:
    """Remembers when a refusal was last logged per (address, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()

    def due(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.pop(key, None)
            due = last is None or now - last >= LOG_EVERY
            self._last[key] = now if due or last is None else last
            while len(self._last) > MAX_TRACKED_PEERS:
                self._last.popitem(last=False)
        return due


class PeerLimits(grpc.ServerInterceptor):
    """Calls in flight per address (every method), Enroll calls per address per minute."""

    def __init__(self, metrics: CollectorMetrics, *, max_calls: int, enroll_per_minute: int | None) -> None:
        self._metrics = metrics
        self.in_flight = InFlight(max_calls)
        self.enroll_rate = RatePerMinute(enroll_per_minute) if enroll_per_minute else None
        self._logged = _Throttled()
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._lock = threading.Lock()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = continuation(details)
        if handler is None:
            return None
        wrapped = self._wrap(method, handler)
        with self._lock:
            self._wrapped[method] = wrapped
        return wrapped

    def _admit(self, method: str, context: grpc.ServicerContext) -> str:
        """The caller's address, once its call may run; otherwise the call ends here."""
        address = peer_address(context.peer())
        if method == ENROLL_METHOD and self.enroll_rate is not None:
            wait = self.enroll_rate.take(address)
            if wait is not None:
                self._refuse(
                    method,
                    context,
                    address,
                    "enroll-rate",
                    f"too many enrollments from {address}: at most {self.enroll_rate.per_minute} a minute; "
                    f"try again in {wait:.0f} s",
                )
        if not self.in_flight.acquire(address):
            self._refuse(
                method,
                context,
                address,
                "in-flight",
                f"too many calls in flight from {address}: at most {self.in_flight.limit} at once; "
                "try again when one has finished",
            )
        return address

    def _refuse(self, method: str, context: grpc.ServicerContext, address: str, reason: str, message: str) -> None:
        name = method.rsplit("/", 1)[-1]
        self._metrics.rpcs.labels(method=name, code=grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
        self._metrics.limited_calls.labels(limit=reason).inc()
        if self._logged.due((address, reason)):
            log.warning("refused %s from %s: %s (logged once a minute per address)", name, context.peer(), message)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        decode, encode = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            def one_in_one_out(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                address = self._admit(method, context)
                try:
                    return unary_unary(_only(requests, context), context)
                finally:
                    self.in_flight.release(address)

            return grpc.stream_unary_rpc_method_handler(
                one_in_one_out, request_deserializer=decode, response_serializer=encode
            )
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            def one_in_many_out(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                address = self._admit(method, context)
                try:
                    yield from unary_stream(_only(requests, context), context)
                finally:
                    self.in_flight.release(address)

            return grpc.stream_stream_rpc_method_handler(
                one_in_many_out, request_deserializer=decode, response_serializer=encode
            )
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            def many_in_one_out(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                address = self._admit(method, context)
                try:
                    return stream_unary(requests, context)
                finally:
                    self.in_flight.release(address)

            return grpc.stream_unary_rpc_method_handler(
                many_in_one_out, request_deserializer=decode, response_serializer=encode
            )
        stream_stream = handler.stream_stream
        assert stream_stream is not None

        def many_in_many_out(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            address = self._admit(method, context)
            try:
                yield from stream_stream(requests, context)
            finally:
                self.in_flight.release(address)

        return grpc.stream_stream_rpc_method_handler(
            many_in_many_out, request_deserializer=decode, response_serializer=encode
        )


def _only(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
    """The one request message of a unary method. A client that half-closes without one gets
    the same answer gRPC gives for a unary method (a cancelled call raises out of here, and gRPC
    ends it without logging)."""
    try:
        return next(requests)
    except StopIteration:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this method requires exactly one request message")
