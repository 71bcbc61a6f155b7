"""A request that cannot be decoded is the caller's error, not the server's.

gRPC decodes a request before any servicer runs; when protobuf refuses the bytes (a string field
that is not valid UTF-8, a truncated message), gRPC Python answers INTERNAL ("Exception
deserializing request!") and logs a traceback. This interceptor lets the decoding fail softly and
answers INVALID_ARGUMENT naming the field, counted in rmsfleet_rpcs_total (and, for reports, as an
invalid report), with one bounded log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.reports import Outcome

log = logging.getLogger(__name__)

REPORT_METHOD = "/rmsfleet.v1.InventoryService/Report"


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the lenient decoder hands the handler instead of a request it could not decode."""

    message: str


def lenient(decode: Callable[[bytes], Any], message_type: type[Message] | None) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError:
            return Undecodable(explain(message_type, data))

    return run


def explain(message_type: type[Message] | None, data: bytes) -> str:
    """Why `data` is not a message of `message_type`, naming the field when it is a string field
    with invalid UTF-8."""
    if message_type is not None:
        field = bad_utf8_field(message_type.DESCRIPTOR, data)
        if field is not None:
            return f"{field}: expected valid UTF-8 text"
        return f"the request is not a valid {message_type.DESCRIPTOR.full_name} message"
    return "the request is not a valid protobuf message"


def bad_utf8_field(descriptor: Any, data: bytes, prefix: str = "") -> str | None:
    """The dotted path of the first string field in the wire bytes that is not valid UTF-8, or
    None (also for bytes too broken to walk). Walks the protobuf wire format by the descriptor."""
    try:
        return _walk(descriptor, memoryview(data), prefix, depth=0)
    except (IndexError, ValueError):
        return None


_MAX_DEPTH = 16


def _walk(descriptor: Descriptor | None, data: memoryview, prefix: str, depth: int) -> str | None:
    if descriptor is None or depth > _MAX_DEPTH:
        return None
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(data, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                return None
            chunk = data[position : position + length]
            position += length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = prefix + field.name
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    bytes(chunk).decode("utf-8")
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _walk(field.message_type, chunk, path + ".", depth + 1)
                if found is not None:
                    return found
        else:  # groups (proto2) or garbage: nothing of ours
            return None
    return None


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


class DecodeGuard(grpc.ServerInterceptor):
    """Swaps each unary-unary handler's request decoder for one that fails softly, and answers
    an undecodable request with INVALID_ARGUMENT."""

    def __init__(self, metrics: CollectorMetrics) -> None:
        self._metrics = metrics
        # gRPC asks for the handler on every call: build each method's guarded handler once.
        self._guarded: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        cached = self._guarded.get(method)
        if cached is not None:
            return cached
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        guarded = self._guard(method, handler)
        self._guarded[method] = guarded
        return guarded

    def _guard(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        decode = handler.request_deserializer
        behaviour = handler.unary_unary
        assert decode is not None and behaviour is not None
        message_type = _message_type(decode)

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                self._refuse(method, request, context)
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=lenient(decode, message_type),
            response_serializer=handler.response_serializer,
        )

    def _refuse(self, method: str, request: Undecodable, context: grpc.ServicerContext) -> None:
        name = method.rsplit("/", 1)[-1]
        self._metrics.rpcs.labels(method=name, code=grpc.StatusCode.INVALID_ARGUMENT.name).inc()
        if method == REPORT_METHOD:
            self._metrics.reports.labels(outcome=Outcome.INVALID.value).inc()
        log.warning("refused an undecodable %s request from %s: %s", name, context.peer(), request.message)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _message_type(decode: Callable[[bytes], Any]) -> type[Message] | None:
    """The message class behind a generated stub's decoder (`SomeRequest.FromString`)."""
    owner = getattr(decode, "__self__", None)
    return owner if isinstance(owner, type) and issubclass(owner, Message) else None
