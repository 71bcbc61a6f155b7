"""AdminService: validate (admin_convert), act and write the audit row in one transaction
(admin_actions), answer. Who may call it is decided before (authz.AccessControl); the caller's
name comes from authz.current_principal()."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector import admin_actions as act
from rmsfleet.collector import admin_convert as ac
from rmsfleet.collector import query_convert as qv
from rmsfleet.collector.audit import Auditor
from rmsfleet.collector.authz import TokenCache, current_principal
from rmsfleet.collector.clock import Clock
from rmsfleet.collector.query_convert import BadRequest
from rmsfleet.collector.store.audit_sql import list_audit
from rmsfleet.collector.store.tokens_sql import list_tokens
from rmsfleet.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger(__name__)
R = TypeVar("R")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, sessions: sessionmaker[Session], clock: Clock, auditor: Auditor, tokens: TokenCache) -> None:
        self.sessions = sessions
        self.clock = clock
        self.auditor = auditor
        self.tokens = tokens

    def _refuse(
        self, context: grpc.ServicerContext, action: str, target: str, code: grpc.StatusCode, reason: str
    ) -> NoReturn:
        actor = current_principal().actor
        log.warning("refused %s by %s from %s: %s: %s", action, actor, context.peer(), code.name, reason)
        self.auditor.refused(actor, action, target, context.peer(), code, reason)
        context.abort(code, reason)

    def _valid(self, context: grpc.ServicerContext, action: str, request: object, check: Callable[[], R]) -> R:
        try:
            return check()
        except BadRequest as exc:
            self._refuse(context, action, ac.target_of(action, request), grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _act(
        self, context: grpc.ServicerContext, action: str, request: object, change: Callable[[Session], act.Done]
    ) -> act.Done:
        """Run `change` and write its audit row in one transaction; a refusal is audited apart."""
        principal = current_principal()
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                done = change(session)
                act.audit_ok(session, principal.actor, action, done, context.peer(), now)
        except act.NotFound as exc:
            self._refuse(context, action, ac.target_of(action, request), grpc.StatusCode.NOT_FOUND, str(exc))
        except act.AlreadyExists as exc:
            self._refuse(context, action, ac.target_of(action, request), grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except SQLAlchemyError as exc:
            self._unavailable(context, action, exc)
        log.info("%s by %s from %s: %s", action, principal.actor, context.peer(), done.target)
        self.auditor.count(action, None)
        return done

    def _unavailable(self, context: grpc.ServicerContext, action: str, exc: SQLAlchemyError) -> NoReturn:
        self.auditor.metrics.database_errors.labels(operation="admin").inc()
        self.auditor.count(action, grpc.StatusCode.UNAVAILABLE)
        log.error("%s failed: %s", action, str(exc).splitlines()[0])
        context.abort(grpc.StatusCode.UNAVAILABLE, "the database is not available")

    def AddExemption(
        self, request: admin_pb2.AddExemptionRequest, context: grpc.ServicerContext
    ) -> admin_pb2.AddExemptionResponse:
        wanted = self._valid(context, "AddExemption", request, lambda: ac.exemption_of(request, self.clock()))
        done = self._act(context, "AddExemption", request, lambda s: act.add_exemption(s, wanted, self.clock()))
        return admin_pb2.AddExemptionResponse(message=done.message)

    def RemoveExemption(
        self, request: admin_pb2.RemoveExemptionRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RemoveExemptionResponse:
        wanted = self._valid(context, "RemoveExemption", request, lambda: act.exemption_id(request.id))
        done = self._act(context, "RemoveExemption", request, lambda s: act.remove_exemption(s, wanted, self.clock()))
        return admin_pb2.RemoveExemptionResponse(message=done.message)

    def RevokeHost(
        self, request: admin_pb2.RevokeHostRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeHostResponse:
        host = self._valid(context, "RevokeHost", request, lambda: act.host_id(request.host_id))
        done = self._act(context, "RevokeHost", request, lambda s: act.revoke_host(s, host, self.clock()))
        return admin_pb2.RevokeHostResponse(message=done.message)

    def AllowReenroll(
        self, request: admin_pb2.AllowReenrollRequest, context: grpc.ServicerContext
    ) -> admin_pb2.AllowReenrollResponse:
        host, lasting = self._valid(context, "AllowReenroll", request, lambda: ac.allowance_of(request))
        done = self._act(
            context, "AllowReenroll", request, lambda s: act.allow_reenroll(s, host, lasting, self.clock())
        )
        return admin_pb2.AllowReenrollResponse(until=ac.stamp(done.until), message=done.message)

    def CreateToken(
        self, request: admin_pb2.CreateTokenRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateTokenResponse:
        wanted = self._valid(context, "CreateToken", request, lambda: ac.token_wanted_of(request))
        actor = current_principal().actor
        done = self._act(context, "CreateToken", request, lambda s: act.create(s, wanted, actor, self.clock()))
        assert done.record is not None
        return admin_pb2.CreateTokenResponse(token=done.token, info=ac.token_pb(done.record))

    def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeTokenResponse:
        name = self._valid(context, "RevokeToken", request, lambda: act.name("name", request.name))
        done = self._act(context, "RevokeToken", request, lambda s: act.revoke(s, name, self.clock()))
        assert done.record is not None
        # Prompt on this collector: the next call with the token reads its row again.
        self.tokens.forget(done.record.lookup_id)
        return admin_pb2.RevokeTokenResponse(token=ac.token_pb(done.record))

    def _read(self, context: grpc.ServicerContext, action: str, query: Callable[[Session], R]) -> R:
        try:
            with self.sessions() as session:
                found = query(session)
        except SQLAlchemyError as exc:
            self._unavailable(context, action, exc)
        self.auditor.count(action, None)
        return found

    def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListTokensResponse:
        limit, after = self._valid(context, "ListTokens", request, lambda: qv.page_of(request, numeric=True))
        rows = self._read(context, "ListTokens", lambda s: list_tokens(s, after, limit))
        return admin_pb2.ListTokensResponse(
            tokens=[ac.token_pb(r) for r in rows], next_page_token=ac.next_token([r.id for r in rows], limit)
        )

    def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListAuditResponse:
        limit, before = self._valid(context, "ListAudit", request, lambda: qv.page_of(request, numeric=True))
        rows = self._read(context, "ListAudit", lambda s: list_audit(s, before, limit))
        return admin_pb2.ListAuditResponse(
            entries=[ac.audit_pb(r) for r in rows], next_page_token=ac.next_token([r.id for r in rows], limit)
        )
