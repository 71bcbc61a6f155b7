"""API tokens, the authorizer's token cache and the audit trail on SQLite and PostgreSQL: tokens
are stored as hashes and found with one indexed read, a name is never reused, revocation is at
once on the collector that revoked and within the cache's time on another, expiry follows the
clock; audit rows list newest first, page, and commit or roll back with their action."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector import admin_actions as act
from rmsfleet.collector.authz import Authorizer, Principal, Refusal, TokenCache
from rmsfleet.collector.store.audit_sql import OK, REFUSED, AuditEntry, list_audit, record
from rmsfleet.collector.store.database import create_db_engine, upgrade_to_head
from rmsfleet.collector.store.tokens_sql import TokenNameTaken, create_token, find_token, list_tokens, revoke_token
from rmsfleet.collector.tokens import Role, Scope, hash_token, lookup_id_of

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def make(sessions: sessionmaker[Session], name: str, role: str = "reader", expires_in: timedelta | None = None) -> str:
    with sessions.begin() as session:
        done = act.create(session, act.token_wanted(name, role, expires_in), "break-glass", T0)
    return done.token


def test_a_token_is_stored_as_its_hash_and_found_by_its_lookup_id(sessions: sessionmaker[Session]) -> None:
    token = make(sessions, "ci-reader")
    lookup = lookup_id_of(token)
    assert lookup is not None
    with sessions() as session:
        found = find_token(session, lookup)
        assert found is not None
        assert (found.name, found.role, found.created_by, found.expires_at, found.revoked_at) == (
            "ci-reader",
            "reader",
            "break-glass",
            None,
            None,
        )
        assert found.secret_hash == hash_token(token) and token not in found.secret_hash
        assert find_token(session, "0" * 16) is None


def test_a_name_is_never_reused_and_revocation_keeps_its_first_time(sessions: sessionmaker[Session]) -> None:
    make(sessions, "ops")
    with pytest.raises(act.AlreadyExists, match="a token named ops exists"), sessions.begin() as session:
        act.create(session, act.token_wanted("ops", "admin", None), "break-glass", T0)
    with pytest.raises(TokenNameTaken), sessions.begin() as session:
        create_token(session, "ops", "f" * 16, "sha256:x", "admin", T0, None, "break-glass")
    with sessions.begin() as session:
        first = revoke_token(session, "ops", T0 + timedelta(minutes=1))
        again = revoke_token(session, "ops", T0 + timedelta(minutes=2))
        assert revoke_token(session, "nobody", T0) is None
    assert first is not None and again is not None
    assert first.revoked_at == again.revoked_at == T0 + timedelta(minutes=1)
    with pytest.raises(act.AlreadyExists), sessions.begin() as session:
        act.create(session, act.token_wanted("ops", "reader", None), "break-glass", T0)


def test_tokens_list_in_pages(sessions: sessionmaker[Session]) -> None:
    for index in range(5):
        make(sessions, f"t{index}")
    with sessions() as session:
        first = list_tokens(session, None, 2)
        second = list_tokens(session, first[-1].id, 2)
        third = list_tokens(session, second[-1].id, 2)
    assert [t.name for t in first + second + third] == ["t0", "t1", "t2", "t3", "t4"]


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.monotonic = 0.0

    def __call__(self) -> datetime:
        return self.now


def count_selects(sessions: sessionmaker[Session]) -> list[str]:
    seen: list[str] = []
    engine = sessions.kw["bind"]

    def on_execute(*args: Any) -> None:
        statement = str(args[2])
        if "api_tokens" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    return seen


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_the_authorizer_reads_a_token_once_per_cache_period_and_revocation_is_prompt(
    sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    cache = TokenCache(sessions, ttl=5.0, monotonic=lambda: clock.monotonic)
    authorizer = Authorizer(cache, clock, anonymous_reads=False)
    reader, admin = make(sessions, "reader-1"), make(sessions, "admin-1", "admin")
    selects = count_selects(sessions)

    principal = authorizer.principal(metadata(reader), {})
    assert principal == Principal("token:reader-1", Role.READER)
    assert authorizer.check(Scope.QUERY, principal) == principal
    for _ in range(20):
        authorizer.principal(metadata(reader), {})
    assert len(selects) == 1, "one indexed read, then the cache"
    assert "WHERE api_tokens.lookup_id" in selects[0]

    with pytest.raises(Refusal) as small:
        authorizer.check(Scope.ADMIN, principal)
    assert small.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert str(small.value) == "token:reader-1 has the role reader; this call needs admin"
    assert authorizer.check(Scope.ADMIN, authorizer.principal(metadata(admin), {})).role is Role.ADMIN

    # Revoked on another replica (its row changes, this cache does not know): within the TTL.
    with sessions.begin() as session:
        revoked = act.revoke(session, "reader-1", T0)
    clock.monotonic += 4.9
    assert authorizer.principal(metadata(reader), {}).role is Role.READER
    clock.monotonic += 0.2
    with pytest.raises(Refusal, match="the token reader-1 is revoked") as refused:
        authorizer.principal(metadata(reader), {})
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED

    # Revoked on this collector (the admin servicer forgets the entry): at once.
    authorizer.principal(metadata(admin), {})
    with sessions.begin() as session:
        revoked = act.revoke(session, "admin-1", T0)
    assert revoked.record is not None
    cache.forget(revoked.record.lookup_id)
    with pytest.raises(Refusal, match="the token admin-1 is revoked"):
        authorizer.principal(metadata(admin), {})


def test_expired_malformed_and_forged_tokens_are_refused(sessions: sessionmaker[Session]) -> None:
    clock = Clock()
    authorizer = Authorizer(TokenCache(sessions), clock, anonymous_reads=True)
    token = make(sessions, "short", expires_in=timedelta(minutes=5))
    assert authorizer.principal(metadata(token), {}).role is Role.READER
    clock.now = T0 + timedelta(minutes=5)
    with pytest.raises(Refusal, match="the token short expired at 2026-12-01T12:05:00Z"):
        authorizer.principal(metadata(token), {})
    for header in (f"Bearer {token[:-1]}A", "Bearer rmsfleet_nonsense", f"Basic {token}", "Bearer "):
        with pytest.raises(Refusal) as refused:
            authorizer.principal([("authorization", header)], {})
        assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert token not in str(refused.value)
    with pytest.raises(Refusal, match="expected one authorization header"):
        authorizer.principal([("authorization", f"Bearer {token}")] * 2, {})
    # No credential: a query is allowed only where anonymous reads are, an admin call never.
    anonymous = authorizer.principal([], {})
    assert authorizer.check(Scope.QUERY, anonymous) == anonymous
    with pytest.raises(Refusal, match="needs a credential for admin calls"):
        authorizer.check(Scope.ADMIN, anonymous)


def test_audit_rows_list_newest_first_in_pages_and_are_bounded(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for index in range(5):
            entry = AuditEntry(f"token:t{index}", "RevokeHost", f"host h{index}", "ipv4:127.0.0.1:5", OK)
            record(session, entry, T0 + timedelta(seconds=index))
        record(
            session,
            AuditEntry("anonymous", "AddExemption", "x" * 10_000, "p" * 1000, REFUSED, "UNAUTHENTICATED", "why"),
            T0,
        )
    with sessions() as session:
        first = list_audit(session, None, 4)
        rest = list_audit(session, first[-1].id, 4)
    assert [r.entry.actor for r in first + rest] == ["anonymous", *(f"token:t{i}" for i in range(4, -1, -1))]
    assert len(first[0].entry.target) == 4000 and len(first[0].entry.peer) == 255
    assert first[1].at == T0 + timedelta(seconds=4)


def test_an_action_and_its_audit_row_commit_or_roll_back_together(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(act.NotFound), sessions.begin() as session:
        done = act.add_exemption(session, act.exemption("stale-agent", "host", "ws1", "kiosk", None, T0), T0)
        act.audit_ok(session, "token:ops", "AddExemption", done, "local", T0)
        act.remove_exemption(session, 999, T0)
    with sessions() as session:
        assert list_audit(session, None, 10) == []
        from rmsfleet.collector.store.queries import list_exemptions

        assert list_exemptions(session, None, 10) == []


def test_two_operators_allowing_one_host_at_once_both_succeed(sessions: sessionmaker[Session]) -> None:
    """Found by the fuzzer through the admin API on PostgreSQL: concurrent AllowReenroll calls for
    one host failed on the allowance's primary key (UNAVAILABLE)."""
    import threading

    from rmsfleet.collector.store.identity_sql import allowance_until

    start = threading.Barrier(6)
    failures: list[BaseException] = []

    def allow(index: int) -> None:
        try:
            start.wait(10)
            with sessions.begin() as session:
                act.allow_reenroll(session, "ws-1", timedelta(hours=1 + index), T0)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=allow, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    with sessions() as session:
        until = allowance_until(session, "ws-1", T0)
    assert until is not None and T0 + timedelta(hours=1) <= until <= T0 + timedelta(hours=6)
