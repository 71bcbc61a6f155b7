"""Sending one report: a deadline on every call, and errors sorted into what a retry can fix."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True, slots=True)
class SendFailure(Exception):
    code: str
    message: str
    retryable: bool

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Sender:
    def __init__(self, address: str, deadline: float = 10.0, channel: grpc.Channel | None = None) -> None:
        self.address = address
        self._deadline = deadline
        self._channel = channel or grpc.insecure_channel(address)
        self._stub = inventory_pb2_grpc.InventoryServiceStub(self._channel)

    def send(self, request: inventory_pb2.ReportRequest) -> inventory_pb2.ReportResponse:
        try:
            response: inventory_pb2.ReportResponse = self._stub.Report(request, timeout=self._deadline)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = (exc.details() if hasattr(exc, "details") else None) or str(code)
            raise SendFailure(code.name, details, code in RETRYABLE) from None
        return response

    def close(self) -> None:
        self._channel.close()
