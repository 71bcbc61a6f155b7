"""Who may call what, decided in one place (docs/security.md, "Roles and the admin API").

The AccessControl interceptor runs before the query and admin servicers (and before Enroll when
the call carries a token): it finds the caller's credential, a token in the `authorization:
Bearer TOKEN` metadata or a client certificate named in --certificate-roles, and refuses

- a credential that is malformed, unknown, expired or revoked: UNAUTHENTICATED;
- no credential, where one is needed: UNAUTHENTICATED (on a loopback listener without
  --require-credentials, queries are allowed without one, for the demo; the start log says so);
- a role too small for the call: PERMISSION_DENIED.

Every refusal of an admin call, and every refused credential on any call, is written to the
audit trail. The servicer reads who is calling with `current_principal()`.

A token is found with one indexed read of `api_tokens` by its lookup id, then kept for
TOKEN_CACHE_SECONDS: a token revoked on this collector stops working at once (the cache entry is
dropped); on another replica of a shared database within TOKEN_CACHE_SECONDS."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.audit import Auditor
from rmsfleet.collector.certificate_roles import CertificateRoles
from rmsfleet.collector.clock import Clock
from rmsfleet.collector.identity import AuthContext, certificate_names
from rmsfleet.collector.store.tokens_sql import TokenRecord, find_token
from rmsfleet.collector.tokens import ALLOWED, Role, Scope, lookup_id_of, matches

log = logging.getLogger(__name__)

TOKEN_CACHE_SECONDS = 5.0
# A bound on the cache (one entry per token in use): past it, the cache starts again empty.
TOKEN_CACHE_ENTRIES = 10_000
QUERY_SERVICE = "/rmsfleet.v1.QueryService/"
ADMIN_SERVICE = "/rmsfleet.v1.AdminService/"
ENROLL_METHOD = "/rmsfleet.v1.InventoryService/Enroll"
ANONYMOUS_ACTOR = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `token:NAME`, `certificate:NAME` or `anonymous` (role None)."""

    actor: str
    role: Role | None


ANONYMOUS = Principal(ANONYMOUS_ACTOR, None)
_CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("rmsfleet_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """The caller of the RPC this thread is serving (set by AccessControl)."""
    return _CURRENT.get()


class Refusal(Exception):
    """A refused call: the status code and one line without any secret in it."""

    def __init__(self, code: grpc.StatusCode, message: str, actor: str, presented: bool) -> None:
        super().__init__(message)
        self.code = code
        self.actor = actor
        # A credential was presented (and refused, or too small): worth an audit row on any call.
        self.presented = presented


class TokenCache:
    """Token records by lookup id, each kept `ttl` seconds (monotonic time)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl: float = TOKEN_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.monotonic = monotonic
        self._entries: dict[str, tuple[TokenRecord, float]] = {}
        self._lock = threading.Lock()

    def get(self, lookup_id: str) -> TokenRecord | None:
        """The record, from the cache or one indexed read; SQLAlchemyError passes up."""
        now = self.monotonic()
        with self._lock:
            cached = self._entries.get(lookup_id)
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        with self.sessions() as session:
            found = find_token(session, lookup_id)
        with self._lock:
            if found is None:
                self._entries.pop(lookup_id, None)
            else:
                if len(self._entries) >= TOKEN_CACHE_ENTRIES:
                    self._entries.clear()
                self._entries[lookup_id] = (found, now)
        return found

    def forget(self, lookup_id: str) -> None:
        with self._lock:
            self._entries.pop(lookup_id, None)


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the `authorization` metadata, None without one; Refusal when malformed."""
    values = [value for key, value in (metadata or ()) if key == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "expected one authorization header", ANONYMOUS_ACTOR, True)
    value = values[0] if isinstance(values[0], str) else ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "the authorization header must be `Bearer TOKEN`",
            ANONYMOUS_ACTOR,
            True,
        )
    return token.strip()


class Authorizer:
    def __init__(
        self,
        tokens: TokenCache,
        clock: Clock,
        *,
        anonymous_reads: bool,
        certificate_roles: CertificateRoles | None = None,
    ) -> None:
        self.tokens = tokens
        self.clock = clock
        self.anonymous_reads = anonymous_reads
        self.certificate_roles = certificate_roles

    def principal(self, metadata: Iterable[tuple[str, Any]] | None, auth_context: AuthContext) -> Principal:
        """Who the credential says is calling (ANONYMOUS without one); Refusal when a token is
        presented and not valid. SQLAlchemyError passes up."""
        token = _bearer(metadata)
        if token is not None:
            return self._token_principal(token)
        if self.certificate_roles is not None:
            names = certificate_names(auth_context)
            found = None if names is None else self.certificate_roles.match(names)
            if found is not None:
                return Principal(f"certificate:{found[0]}", found[1])
        return ANONYMOUS

    def _token_principal(self, token: str) -> Principal:
        invalid = Refusal(
            grpc.StatusCode.UNAUTHENTICATED, "the token is not valid on this collector", ANONYMOUS_ACTOR, True
        )
        lookup = lookup_id_of(token)
        if lookup is None:
            raise invalid
        record = self.tokens.get(lookup)
        if record is None or not matches(record.secret_hash, token):
            raise invalid
        actor = f"token:{record.name}"
        now = self.clock()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, f"the token {record.name} is revoked", actor, True)
        if record.expires_at is not None and record.expires_at <= now:
            stamp = record.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z")
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, f"the token {record.name} expired at {stamp}", actor, True)
        try:
            role = Role(record.role)
        except ValueError:
            raise invalid from None
        return Principal(actor, role)

    def check(self, scope: Scope, principal: Principal) -> Principal:
        """The principal if it may make a call of `scope`, else Refusal."""
        if principal.role is None:
            if scope is Scope.QUERY and self.anonymous_reads:
                return principal
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this collector needs a credential for {'queries' if scope is Scope.QUERY else 'admin calls'}: "
                "a token (the CLI reads it from --token-file or RMSFLEET_TOKEN) or a client certificate named "
                "in --certificate-roles",
                principal.actor,
                False,
            )
        if principal.role not in ALLOWED[scope]:
            needs = " or ".join(sorted(role.value for role in ALLOWED[scope]))
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal.actor} has the role {principal.role.value}; this call needs {needs}",
                principal.actor,
                True,
            )
        return principal


def scope_of(method: str) -> Scope | None:
    if method.startswith(QUERY_SERVICE):
        return Scope.QUERY
    if method.startswith(ADMIN_SERVICE):
        return Scope.ADMIN
    if method == ENROLL_METHOD:
        return Scope.ENROLL
    return None


TargetOf = Callable[[str, Any], str]


class AccessControl(grpc.ServerInterceptor):
    """Wraps the query, admin and Enroll handlers with the check above."""

    def __init__(self, authorizer: Authorizer, auditor: Auditor, target_of: TargetOf) -> None:
        self.authorizer = authorizer
        self.auditor = auditor
        # What an admin request is about (admin_convert.target_of), for refusals' audit rows.
        self.target_of = target_of
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        scope = scope_of(method)
        if scope is None:
            return continuation(details)
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = self._wrap(method, scope, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(
        self, method: str, scope: Scope, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        behaviour = handler.unary_unary
        assert behaviour is not None
        name = method.rsplit("/", 1)[-1]

        rpcs = self.auditor.metrics.rpcs

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._admit(scope, name, request, context)
            token = _CURRENT.set(principal)
            try:
                response = behaviour(request, context)
            except Exception:
                if scope is Scope.ADMIN:  # the query and inventory servicers count their own calls
                    code = context.code() if hasattr(context, "code") else None
                    rpcs.labels(method=name, code=(code or grpc.StatusCode.UNKNOWN).name).inc()
                raise
            finally:
                _CURRENT.reset(token)
            if scope is Scope.ADMIN:
                rpcs.labels(method=name, code="OK").inc()
            return response

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admit(self, scope: Scope, name: str, request: Any, context: grpc.ServicerContext) -> Principal:
        try:
            principal = self.authorizer.principal(context.invocation_metadata(), context.auth_context())
            if scope is Scope.ENROLL and principal.role is not Role.SCANNER:
                if principal.actor.startswith("token:"):
                    return self.authorizer.check(scope, principal)
                # Without a scanner token, Enroll takes the enrollment secret (identity.py).
                return ANONYMOUS
            return self.authorizer.check(scope, principal)
        except Refusal as refusal:
            # Counted here: a refused call never reaches the servicer that counts the others.
            self.auditor.metrics.rpcs.labels(method=name, code=refusal.code.name).inc()
            peer = context.peer()
            log.warning("refused %s from %s (%s): %s: %s", name, peer, refusal.actor, refusal.code.name, refusal)
            if scope is Scope.ADMIN or refusal.presented:
                self.auditor.refused(refusal.actor, name, self._target(name, request), peer, refusal.code, str(refusal))
            context.abort(refusal.code, str(refusal))
        except SQLAlchemyError as exc:
            self.auditor.metrics.database_errors.labels(operation="authorize").inc()
            log.error("could not check the credential of a %s call: %s", name, str(exc).splitlines()[0])
            context.abort(grpc.StatusCode.UNAVAILABLE, "the database is not available")

    def _target(self, name: str, request: Any) -> str:
        try:
            return self.target_of(name, request)
        except Exception:  # an undecodable request (decode_guard.Undecodable) names nothing
            return ""
