"""AdminService messages at the edge: requests into checked values (query_convert.BadRequest
naming the field and its bound), records into messages, and messages into the plain dicts the
CLI prints. The checks themselves are admin_actions'."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.collector import admin_actions as act
from rmsfleet.collector import paging
from rmsfleet.collector import query_convert as qv
from rmsfleet.collector.query_convert import BadRequest
from rmsfleet.collector.store.audit_sql import AuditRecord
from rmsfleet.collector.store.tokens_sql import TokenRecord
from rmsfleet.contract.text import shown
from rmsfleet.contract.wire import datetime_to_timestamp, timestamp_to_datetime
from rmsfleet.v1 import admin_pb2

# A Duration field beyond this many seconds is refused before it becomes a timedelta.
_MAX_DURATION_SECONDS = 10 * 366 * 86_400


def _moment(field: str, stamp: Timestamp) -> datetime:
    try:
        return timestamp_to_datetime(stamp)
    except (ValueError, OverflowError):
        raise BadRequest(field, "a time from year 1 to 9999") from None


def _duration(field: str, message: Any, present: bool) -> timedelta | None:
    if not present:
        return None
    value: Duration = message
    if value.seconds < 0 or value.nanos < 0 or value.seconds > _MAX_DURATION_SECONDS:
        raise BadRequest(field, f"a duration from 1s to {_MAX_DURATION_SECONDS // 86_400}d")
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def exemption_of(request: admin_pb2.AddExemptionRequest, now: datetime) -> act.Exemption:
    expires = _moment("expires_at", request.expires_at) if request.HasField("expires_at") else None
    return act.exemption(request.policy, request.subject_kind, request.subject, request.reason, expires, now)


def allowance_of(request: admin_pb2.AllowReenrollRequest) -> tuple[str, timedelta]:
    return act.host_id(request.host_id), act.allowance(
        _duration("duration", request.duration, request.HasField("duration"))
    )


def token_wanted_of(request: admin_pb2.CreateTokenRequest) -> act.TokenWanted:
    return act.token_wanted(
        request.name, request.role, _duration("expires_in", request.expires_in, request.HasField("expires_in"))
    )


def target_of(method: str, request: Any) -> str:
    """What a request is about, for the audit row of a refused call (bounded; nothing checked)."""
    if method == "AddExemption":
        return act.exemption_target(shown(request.policy, 64), shown(request.subject_kind, 16), request.subject)
    if method == "RemoveExemption":
        return f"exemption {request.id}"
    if method in ("RevokeHost", "AllowReenroll"):
        return f"host {shown(request.host_id)}"
    if method in ("CreateToken", "RevokeToken"):
        return f"token {shown(request.name)}"
    return ""


def stamp(moment: datetime | None) -> Timestamp | None:
    return None if moment is None else datetime_to_timestamp(moment)


def token_pb(record: TokenRecord) -> admin_pb2.ApiToken:
    return admin_pb2.ApiToken(
        name=record.name,
        role=record.role,
        created_at=stamp(record.created_at),
        expires_at=stamp(record.expires_at),
        revoked_at=stamp(record.revoked_at),
        created_by=record.created_by,
    )


def next_token(ids: Sequence[int], limit: int) -> str:
    return paging.encode_token(str(ids[-1])) if ids and len(ids) == limit else ""


def audit_pb(entry: AuditRecord) -> admin_pb2.AuditEntry:
    e = entry.entry
    return admin_pb2.AuditEntry(
        id=entry.id,
        at=stamp(entry.at),
        actor=e.actor,
        action=e.action,
        target=e.target,
        peer=e.peer,
        outcome=e.outcome,
        status=e.status,
        reason=e.reason,
    )


# --- answers, on the CLI's side -------------------------------------------------------------------


def token_dict(token: admin_pb2.ApiToken) -> dict[str, Any]:
    return {
        "name": token.name,
        "role": token.role,
        "created_at": qv.iso(token.created_at, token.HasField("created_at")),
        "expires_at": qv.iso(token.expires_at, token.HasField("expires_at")),
        "revoked_at": qv.iso(token.revoked_at, token.HasField("revoked_at")),
        "created_by": token.created_by,
    }


def audit_dict(entry: admin_pb2.AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": qv.iso(entry.at, entry.HasField("at")),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "peer": entry.peer,
        "outcome": entry.outcome,
        "status": entry.status,
        "reason": entry.reason,
    }


def duration_pb(value: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(value)
    return message
