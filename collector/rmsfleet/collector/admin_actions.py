"""The admin actions themselves, on a session the caller owns: the AdminService (admin_servicer.py)
and the break-glass `--db` commands (admin.py) run the same code, and each writes its audit row in
the same transaction. Validation raises query_convert.BadRequest naming the wire field; an
action that finds nothing to act on raises NotFound, a token name in use AlreadyExists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from rmsfleet.collector.domain.policies import POLICIES
from rmsfleet.collector.identity_admin import DEFAULT_ALLOWANCE, MAX_ALLOWANCE
from rmsfleet.collector.query_convert import BadRequest
from rmsfleet.collector.store import queries
from rmsfleet.collector.store.audit_sql import OK, AuditEntry, record
from rmsfleet.collector.store.identity_sql import allow_reenroll as write_allowance
from rmsfleet.collector.store.identity_sql import node_key_record, revoke_node_key
from rmsfleet.collector.store.tokens_sql import TokenNameTaken, TokenRecord, create_token, revoke_token
from rmsfleet.collector.tokens import BadName, check_name, new_token, role_of
from rmsfleet.contract.facts import MAX_ID_LENGTH, MAX_URL_LENGTH
from rmsfleet.contract.text import shown, unsafe_reason

SUBJECT_KINDS = ("cluster", "host", "forest")
MAX_REASON_LENGTH = 1000
MAX_TOKEN_LIFETIME = timedelta(days=366)
BREAK_GLASS = "break-glass"


class NotFound(Exception):
    pass


class AlreadyExists(Exception):
    pass


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def text(field: str, value: str, max_length: int) -> str:
    """A required text field: non-empty, bounded, no control characters."""
    if not value.strip():
        raise BadRequest(field, "a non-empty value")
    if len(value) > max_length:
        raise BadRequest(field, f"at most {max_length} characters, got {len(value)}")
    unsafe = unsafe_reason(value)
    if unsafe is not None:
        raise BadRequest(field, unsafe)
    return value


def name(field: str, value: str) -> str:
    try:
        return check_name(value)
    except BadName as exc:
        raise BadRequest(field, str(exc)) from None


def duration(field: str, value: timedelta | None, default: timedelta | None, maximum: timedelta) -> timedelta | None:
    if value is None:
        return default
    if not timedelta(seconds=1) <= value <= maximum:
        raise BadRequest(field, f"a duration from 1s to {maximum.days}d, got {value.total_seconds():g}s")
    return value


@dataclass(frozen=True, slots=True)
class Done:
    """What an action did: the line shown to the operator and the audit row's target."""

    message: str
    target: str
    token: str = ""
    record: TokenRecord | None = None
    until: datetime | None = None


def audit_ok(session: Session, actor: str, action: str, done: Done, peer: str, now: datetime) -> None:
    record(session, AuditEntry(actor, action, done.target, peer, OK), now)


# --- exemptions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exemption:
    policy: str
    subject_kind: str
    subject: str
    reason: str
    expires_at: datetime | None


def exemption(
    policy: str, subject_kind: str, subject: str, reason: str, expires_at: datetime | None, now: datetime
) -> Exemption:
    if policy not in {p.id for p in POLICIES}:
        known = ", ".join(p.id for p in POLICIES)
        raise BadRequest("policy", f"a known policy ({known}), got {shown(policy, 80)}")
    if subject_kind not in SUBJECT_KINDS:
        raise BadRequest("subject_kind", f"one of {', '.join(SUBJECT_KINDS)}, got {shown(subject_kind, 40)}")
    subject = text("subject", subject, MAX_URL_LENGTH if subject_kind == "cluster" else MAX_ID_LENGTH)
    reason = text("reason", reason, MAX_REASON_LENGTH)
    if expires_at is not None and expires_at <= now:
        raise BadRequest("expires_at", f"a time in the future, got {_iso(expires_at)}")
    return Exemption(policy, subject_kind, subject, reason, expires_at)


def exemption_target(policy: str, subject_kind: str, subject: str) -> str:
    return f"exemption {policy} {subject_kind} {shown(subject, 300)}"


def add_exemption(session: Session, wanted: Exemption, now: datetime) -> Done:
    new_id = queries.add_exemption(
        session, wanted.policy, wanted.subject_kind, wanted.subject, wanted.reason, now, wanted.expires_at
    )
    until = _iso(wanted.expires_at) if wanted.expires_at else "removed"
    return Done(
        f"exempted {wanted.subject_kind} {wanted.subject} from {wanted.policy} until {until} (id {new_id})",
        f"{exemption_target(wanted.policy, wanted.subject_kind, wanted.subject)} (id {new_id})",
    )


def exemption_id(value: int) -> int:
    if not 1 <= value <= 2**63 - 1:
        raise BadRequest("id", "an exemption id from 1 (see `rmsfleet-collector exemptions`)")
    return value


def remove_exemption(session: Session, wanted: int, now: datetime) -> Done:
    if not queries.remove_exemption(session, wanted):
        raise NotFound(f"no exemption with id {wanted}")
    return Done(f"removed exemption {wanted}", f"exemption {wanted}")


# --- hosts ---------------------------------------------------------------------------------------


def host_id(value: str) -> str:
    host = text("host_id", value, MAX_ID_LENGTH)
    if host != host.strip():
        raise BadRequest("host_id", "an id without surrounding spaces")
    return host


def revoke_host(session: Session, host: str, now: datetime) -> Done:
    """Mark the host's node key revoked. Every collector replica checks keys in each batch's own
    transaction, so the next report with that key is refused (UNAUTHENTICATED) on all of them;
    the agent enrolls again if its enrollment secret is still accepted (rotate the secret first
    to keep a host out)."""
    found = revoke_node_key(session, host, now)
    if found is None:
        raise NotFound(f"host {shown(host)} has no node key (it never enrolled)")
    revoked = _iso(found.revoked_at) if found.revoked_at is not None else "now"
    return Done(
        f"revoked the node key of host {host} (enrolled {_iso(found.created_at)}, revoked {revoked}): its "
        "reports are refused until it enrolls again",
        f"host {shown(host)}",
    )


def allowance(value: timedelta | None) -> timedelta:
    found = duration("duration", value, DEFAULT_ALLOWANCE, MAX_ALLOWANCE)
    assert found is not None
    return found


def allow_reenroll(session: Session, host: str, lasting: timedelta, now: datetime) -> Done:
    """Let a host that holds a valid node key enroll once more (a reinstalled machine, a lost
    state directory) until the allowance expires (docs/security.md, host identity)."""
    until = now + lasting
    found = node_key_record(session, host)
    write_allowance(session, host, now, until)
    if found is None:
        state = "it has never enrolled, so it needs no allowance for its first enrollment"
    elif found.revoked_at is not None:
        state = "its key is revoked, so it may enroll again anyway"
    else:
        state = "its current key stays valid until the new enrollment replaces it"
    return Done(
        f"host {host} may enroll once more until {_iso(until)} ({state})",
        f"host {shown(host)} until {_iso(until)}",
        until=until,
    )


# --- tokens --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenWanted:
    name: str
    role: str
    expires_in: timedelta | None


def token_wanted(token_name: str, role: str, expires_in: timedelta | None) -> TokenWanted:
    token_name = name("name", token_name)
    try:
        role = role_of(role).value
    except BadName as exc:
        raise BadRequest("role", f"{exc}, got {shown(role, 40)}") from None
    return TokenWanted(token_name, role, duration("expires_in", expires_in, None, MAX_TOKEN_LIFETIME))


def create(session: Session, wanted: TokenWanted, created_by: str, now: datetime) -> Done:
    made = new_token()
    expires_at = None if wanted.expires_in is None else now + wanted.expires_in
    try:
        create_token(session, wanted.name, made.lookup_id, made.secret_hash, wanted.role, now, expires_at, created_by)
    except TokenNameTaken:
        raise AlreadyExists(
            f"a token named {wanted.name} exists (names are never reused: revoked tokens keep theirs)"
        ) from None
    until = _iso(expires_at) if expires_at else "never"
    stored = TokenRecord(
        0, wanted.name, made.lookup_id, made.secret_hash, wanted.role, now, expires_at, None, created_by
    )
    return Done(
        f"created token {wanted.name} (role {wanted.role}, expires {until})",
        f"token {wanted.name} (role {wanted.role}, expires {until})",
        token=made.token,
        record=stored,
    )


def revoke(session: Session, token_name: str, now: datetime) -> Done:
    found = revoke_token(session, token_name, now)
    if found is None:
        raise NotFound(f"no token named {token_name}")
    assert found.revoked_at is not None
    return Done(
        f"revoked token {found.name} (role {found.role}) at {_iso(found.revoked_at)}",
        f"token {found.name}",
        record=found,
    )
