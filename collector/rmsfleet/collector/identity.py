"""Host identity: who may enroll as a host id, and which host ids a client certificate names
(docs/security.md, "Host identity").

- A host id that holds a valid (unrevoked) node key is not enrolled again, so an enrollment
  secret (which sits on every host) does not let its holder take over hosts that already report.
  Admitted: the first enrollment of a host id, one after `hosts revoke`, one an operator allowed
  (`hosts allow-reenroll`, expiring, used once), or any when the collector runs with
  `--enroll-replaces-keys` (the behaviour before this rule, and what it gives away).
- With mutual TLS and `--bind-host-id-to-certificate`, the host id of an Enroll or a Report must
  be a DNS name in the client certificate's subjectAltName or its common name.

No grpc here: the servicer passes the call's auth context (a mapping of gRPC's auth properties)
and maps the exceptions to status codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector.clock import Clock
from rmsfleet.collector.enrollment import SecretFile, hash_node_key, new_node_key
from rmsfleet.collector.metrics import CollectorMetrics
from rmsfleet.collector.store.audit_sql import OK, AuditEntry, record
from rmsfleet.collector.store.identity_sql import EnrollOutcome, enroll_host
from rmsfleet.collector.store.ingest_writes import restart_sequence
from rmsfleet.contract.text import shown

log = logging.getLogger(__name__)

# gRPC's auth context properties (grpc_security_constants.h): the certificate's common name, and
# its subjectAltName DNS entries (IP, URI and e-mail entries have their own properties).
COMMON_NAME = "x509_common_name"
DNS_NAMES = "peer_dns"
# What ServicerContext.auth_context() returns: property name -> list of values (bytes). The type
# stubs say one bytes value per name; both are read.
AuthContext = Mapping[str, object]


class IdentityRefused(Exception):
    """The caller may not speak for this host id (PERMISSION_DENIED); the message names the host
    and says what would admit it."""


class SecretNotAccepted(Exception):
    """The enrollment secret is not one of the collector's (UNAUTHENTICATED)."""


class EnrollmentUnavailable(Exception):
    """The database could not be reached (UNAVAILABLE); the agent retries."""


def _canonical(name: str) -> str:
    # DNS names compare without case and without the root's trailing dot.
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """The names a verified client certificate carries."""

    common_name: str | None
    dns_names: tuple[str, ...]

    def permits(self, host_id: str) -> bool:
        """True when `host_id` is one of the names exactly (no wildcards: `*.corp.example` would
        let one certificate speak for every host of a domain)."""
        wanted = _canonical(host_id)
        names = [*self.dns_names, *([self.common_name] if self.common_name else [])]
        return any(_canonical(name) == wanted and "*" not in name for name in names)

    def describe(self) -> str:
        parts = [f"DNS {', '.join(self.dns_names)}"] if self.dns_names else []
        if self.common_name:
            parts.append(f"CN {self.common_name}")
        return "; ".join(parts) or "no DNS name and no CN"


def certificate_names(auth_context: AuthContext) -> CertificateNames | None:
    """The client certificate's names from a call's auth context; None when the connection
    presented no certificate (plaintext, or TLS without client certificates)."""
    if COMMON_NAME not in auth_context and DNS_NAMES not in auth_context and "x509_pem_cert" not in auth_context:
        return None
    common = _values(auth_context, COMMON_NAME)
    dns = tuple(_values(auth_context, DNS_NAMES))
    return CertificateNames(common[0] if common else None, dns)


def _values(auth_context: AuthContext, name: str) -> list[str]:
    found = auth_context.get(name, ())
    values = [found] if isinstance(found, bytes) else found if isinstance(found, list | tuple) else []
    return [value.decode("utf-8", "replace") for value in values if isinstance(value, bytes)]


class CertificateBinding:
    """`--bind-host-id-to-certificate`: the host id must be a name of the client certificate."""

    def check(self, host_id: str, auth_context: AuthContext) -> None:
        """Raise IdentityRefused when the connection's client certificate does not name `host_id`."""
        names = certificate_names(auth_context)
        host = shown(host_id)
        if names is None:
            raise IdentityRefused(
                f"host {host}: this collector binds host ids to client certificates and the connection "
                "presented none (mutual TLS: --tls-cert and --tls-key on the agent)"
            )
        if not names.permits(host_id):
            raise IdentityRefused(
                f"host {host} is not named by the client certificate ({shown(names.describe(), 300)}): the host id "
                f"must be a DNS name of its subjectAltName or its CN; give this host a certificate for {host}, or "
                "report under a name the certificate carries ([host] host_id)"
            )


@dataclass(frozen=True, slots=True)
class Enrolled:
    node_key: str
    outcome: EnrollOutcome


class Enroller:
    """The Enroll use case: secret, certificate binding, identity rule, new key, one transaction."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        secrets: SecretFile,
        clock: Clock,
        *,
        replace_valid_keys: bool = False,
        binding: CertificateBinding | None = None,
        metrics: CollectorMetrics | None = None,
        scanner_of: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.metrics = metrics
        # The scanner credential (a token or certificate with the scanner role, authz.py) the
        # current call carries, which stands in for the enrollment secret; None without one.
        self.scanner_of = scanner_of
        self.sessions = sessions
        self.secrets = secrets
        self.clock = clock
        self.replace_valid_keys = replace_valid_keys
        self.binding = binding

    def enroll(self, host_id: str, secret: str, peer: str, auth_context: AuthContext) -> Enrolled:
        """A new node key for `host_id`, or IdentityRefused / SecretNotAccepted /
        EnrollmentUnavailable. `host_id` is already checked against the contract's bounds."""
        if self.binding is not None:
            try:
                self.binding.check(host_id, auth_context)
            except IdentityRefused as refused:
                self._count("refused-certificate")
                log.warning("refused the enrollment of host %s from %s: %s", host_id, peer, refused)
                raise
        scanner = self.scanner_of()
        if scanner is None and not self.secrets.accepts(secret):
            log.warning(
                "refused the enrollment of host %s from %s: the enrollment secret is not one of those in %s",
                host_id,
                peer,
                self.secrets.path,
            )
            self._count("refused-secret")
            raise SecretNotAccepted("the enrollment secret is not accepted by this collector")
        key = new_node_key()
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                result = enroll_host(
                    session, host_id, hash_node_key(key), now, replace_valid_keys=self.replace_valid_keys
                )
                if result.outcome.admitted:
                    # The old key (if any) stops working with this commit, so the host may start a
                    # new sequence (a new outbox, or one a bad report pushed too far ahead).
                    restart_sequence(session, host_id)
                    if scanner is not None:
                        # Which credential enrolled the host, with the enrollment (docs/security.md).
                        entry = AuditEntry(scanner, "Enroll", f"host {shown(host_id)}", peer, OK)
                        record(session, entry, now)
        except SQLAlchemyError as exc:
            log.error("enrollment of host %s failed: %s", host_id, str(exc).splitlines()[0])
            raise EnrollmentUnavailable("the database is not available") from None
        if not result.outcome.admitted:
            since = _iso(result.previous.created_at) if result.previous is not None else "just now"
            # Each mention is bounded (shown): the reply must not grow with the host id.
            host = shown(host_id)
            message = (
                f"host {host} already holds a valid node key (enrolled {since}): enrolling again would take it "
                f"over. If this machine is {host} (reinstalled, state directory lost), an operator allows one more "
                f"enrollment: rmsfleet-collector hosts allow-reenroll {host}; a different machine needs a host id "
                "of its own"
            )
            self._count("refused-identity")
            log.warning("refused the enrollment of host %s from %s: it holds a valid node key", host_id, peer)
            raise IdentityRefused(message)
        self._count(result.outcome.value)
        log.info(
            "enrolled host %s from %s%s (%s; the host may start a new sequence)",
            host_id,
            peer,
            "" if scanner is None else f" by {scanner}",
            _DESCRIBE[result.outcome],
        )
        return Enrolled(key, result.outcome)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.enrollments.labels(outcome=outcome).inc()


_DESCRIBE = {
    EnrollOutcome.NEW: "first enrollment",
    EnrollOutcome.AFTER_REVOCATION: "its revoked key replaced",
    EnrollOutcome.ALLOWED: "its valid key replaced under an operator's re-enrollment allowance, now used up",
    EnrollOutcome.REPLACED: "its valid key replaced: --enroll-replaces-keys",
}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
