"""The CLI's side of credentials and the AdminService: the token (from --token-file or
RMSFLEET_TOKEN, never from the command line) sent as `authorization: Bearer TOKEN` on every call,
and the admin calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from rmsfleet.collector import admin_convert as ac
from rmsfleet.collector.query_client import pages
from rmsfleet.collector.tokens import MAX_TOKEN_LENGTH
from rmsfleet.contract.wire import datetime_to_timestamp
from rmsfleet.v1 import admin_pb2, admin_pb2_grpc

TOKEN_VARIABLE = "RMSFLEET_TOKEN"


class TokenFileError(ValueError):
    """The token cannot be read; one line naming the file or the variable."""


def read_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    """The token of --token-file, else of RMSFLEET_TOKEN, else None (no credential)."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"--token-file {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        where = f"--token-file {path}"
    else:
        text = environ.get(TOKEN_VARIABLE, "")
        if not text.strip():
            return None
        where = TOKEN_VARIABLE
    token = text.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in token):
        raise TokenFileError(f"{where}: expected one token (as `tokens create` printed it), on one line")
    return token


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return continuation(
            _Details(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                getattr(details, "wait_for_ready", None),
                getattr(details, "compression", None),
            ),
            request,
        )


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    return channel if token is None else grpc.intercept_channel(channel, BearerToken(token))


class AdminClient:
    """Each method calls the AdminService and returns what the CLI prints; grpc.RpcError passes up."""

    def __init__(self, channel: grpc.Channel, timeout: float) -> None:
        self.stub = admin_pb2_grpc.AdminServiceStub(channel)
        self.timeout = timeout

    def add_exemption(self, policy: str, subject_kind: str, subject: str, reason: str, expires: datetime | None) -> str:
        request = admin_pb2.AddExemptionRequest(
            policy=policy, subject_kind=subject_kind, subject=subject, reason=reason
        )
        if expires is not None:
            request.expires_at.CopyFrom(datetime_to_timestamp(expires))
        return str(self.stub.AddExemption(request, timeout=self.timeout).message)

    def remove_exemption(self, exemption_id: int) -> str:
        request = admin_pb2.RemoveExemptionRequest(id=exemption_id)
        return str(self.stub.RemoveExemption(request, timeout=self.timeout).message)

    def revoke_host(self, host_id: str) -> str:
        return str(self.stub.RevokeHost(admin_pb2.RevokeHostRequest(host_id=host_id), timeout=self.timeout).message)

    def allow_reenroll(self, host_id: str, duration: timedelta | None) -> str:
        request = admin_pb2.AllowReenrollRequest(host_id=host_id)
        if duration is not None:
            request.duration.CopyFrom(ac.duration_pb(duration))
        return str(self.stub.AllowReenroll(request, timeout=self.timeout).message)

    def create_token(self, name: str, role: str, expires_in: timedelta | None) -> tuple[str, dict[str, Any]]:
        request = admin_pb2.CreateTokenRequest(name=name, role=role)
        if expires_in is not None:
            request.expires_in.CopyFrom(ac.duration_pb(expires_in))
        response = self.stub.CreateToken(request, timeout=self.timeout)
        return str(response.token), ac.token_dict(response.info)

    def revoke_token(self, name: str) -> dict[str, Any]:
        response = self.stub.RevokeToken(admin_pb2.RevokeTokenRequest(name=name), timeout=self.timeout)
        return ac.token_dict(response.token)

    def tokens(self) -> list[dict[str, Any]]:
        request = admin_pb2.ListTokensRequest()

        def fetch(token: str) -> admin_pb2.ListTokensResponse:
            request.page_token = token
            return self.stub.ListTokens(request, timeout=self.timeout)

        return [ac.token_dict(t) for t in pages(fetch, lambda r: list(r.tokens))]

    def audit(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` entries, newest first, page by page."""
        request = admin_pb2.ListAuditRequest(page_size=min(limit, 1000))
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            response = self.stub.ListAudit(request, timeout=self.timeout)
            found.extend(ac.audit_dict(e) for e in response.entries)
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
        return found[:limit]
