"""`serve()` only wires: engine, schema check, writer, evaluator, gRPC server, /metrics."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, disable_created_metrics
from sqlalchemy.orm import Session, sessionmaker

from rmsfleet.collector import __version__
from rmsfleet.collector.admin_convert import target_of
from rmsfleet.collector.admin_servicer import AdminServicer
from rmsfleet.collector.audit import Auditor
from rmsfleet.collector.authz import TOKEN_CACHE_SECONDS, AccessControl, Authorizer, TokenCache, current_principal
from rmsfleet.collector.certificate_roles import CertificateRoles, CertificateRolesError, load_certificate_roles
from rmsfleet.collector.clock import Clock, system_clock
from rmsfleet.collector.config import ConfigError, ServeConfig, split_host_port
from rmsfleet.collector.decode_guard import DecodeGuard
from rmsfleet.collector.domain.policies import POLICIES
from rmsfleet.collector.enrollment import SecretFile, file_is_private
from rmsfleet.collector.evaluator import Evaluator
from rmsfleet.collector.health_listener import start_health_listener
from rmsfleet.collector.identity import CertificateBinding, Enroller
from rmsfleet.collector.ingest import GroupCommitWriter
from rmsfleet.collector.leadership import EvaluationLeadership
from rmsfleet.collector.limits import PeerLimits
from rmsfleet.collector.liveness import DEFAULT_STALL_AFTER, HealthWatch
from rmsfleet.collector.metrics import AggregatesHolder, CollectorMetrics, FleetStateCollector
from rmsfleet.collector.metrics_http import start_metrics_server
from rmsfleet.collector.servicers import InventoryServicer, QueryServicer
from rmsfleet.collector.store.database import create_db_engine, prepare_for_serving
from rmsfleet.collector.tls import ReloadingServerCredentials, TlsFileError, TlsFiles, describe_certificate
from rmsfleet.collector.tokens import Role
from rmsfleet.collector.watermark import EvaluationWatermark
from rmsfleet.contract.address import is_loopback_host
from rmsfleet.contract.stop_signals import stop_on_signals
from rmsfleet.v1 import admin_pb2, admin_pb2_grpc, inventory_pb2, inventory_pb2_grpc, query_pb2, query_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Connections (docs/limits.md): a connection with no call for this long is closed (clients
# reconnect by themselves); every connection is closed after its age, its calls given the grace
# to finish, which bounds how long a stalled stream can hold its caller's slot; keepalive pings
# find dead peers, and a client pinging more often than gRPC's enforcement allows is dropped.
MAX_CONNECTION_IDLE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_MS = 30 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000
KEEPALIVE_TIME_MS = 60 * 1000
KEEPALIVE_TIMEOUT_MS = 20 * 1000
MIN_CLIENT_PING_INTERVAL_MS = 5 * 60 * 1000
SERVICE_NAMES = (
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass
class RunningCollector:
    server: grpc.Server
    grpc_port: int
    metrics_port: int
    writer: GroupCommitWriter
    evaluator: Evaluator
    health: health.HealthServicer
    registry: CollectorRegistry
    metrics_server: object
    health_watch: HealthWatch
    # The plaintext health-only listener (--health-listen), if any.
    health_server: grpc.Server | None = None
    health_port: int = 0

    def stop(self, grace: float) -> None:
        """Graceful stop: health turns NOT_SERVING, in-flight reports finish (committed or
        refused, never half-written), the queue drains, then evaluation stops."""
        self.health.enter_graceful_shutdown()
        self.health_watch.stop()
        self.server.stop(grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        self.writer.stop()
        self.evaluator.stop()
        shutdown = getattr(self.metrics_server, "shutdown", None)
        if shutdown is not None:
            shutdown()


def open_secrets(config: ServeConfig) -> SecretFile | None:
    """The enrollment secret file, or None (no enrollment). Raises ConfigError (one line)."""
    if config.enroll_secret_file is None:
        log.warning(
            "enrollment is off (no --enroll-secret-file): reports are accepted without a node key, so any "
            "client that reaches this port can report as any host"
        )
        return None
    path = config.enroll_secret_file
    try:
        secrets = SecretFile(path)
        private = file_is_private(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--enroll-secret-file {path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not private:
        log.warning("enrollment secret file %s is readable by other users: chmod 600 it", path)
    log.info("enrollment is on: secrets from %s; every report must carry its host's node key", secrets.describe())
    return secrets


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext. Raises ConfigError (one line)."""
    if config.tls_cert is None or config.tls_key is None:
        host, _port = split_host_port(config.listen, "--listen")
        if is_loopback_host(host):
            log.info("plaintext gRPC on loopback %s (TLS is needed only for other hosts)", config.listen)
        else:
            log.warning(
                "plaintext gRPC on %s (--insecure): reports and node keys cross the network unencrypted", config.listen
            )
        return None
    files = TlsFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
    try:
        reloading = ReloadingServerCredentials(files)
    except TlsFileError as exc:
        raise ConfigError(str(exc)) from None
    log.info("TLS on %s: serving %s", config.listen, describe_certificate(files.cert))
    if files.client_ca is not None:
        log.info("mutual TLS: clients must present a certificate signed by a CA in %s", files.client_ca)
    return reloading.credentials()


def connection_options(max_streams: int) -> list[tuple[str, int]]:
    """gRPC server options bounding each connection (streams at once, idle time, age, pings)."""
    return [
        ("grpc.max_concurrent_streams", max_streams),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def scanner_actor() -> str | None:
    """Who enrolls with a scanner credential in place of the enrollment secret (authz.py)."""
    principal = current_principal()
    return principal.actor if principal.role is Role.SCANNER else None


def open_certificate_roles(config: ServeConfig) -> CertificateRoles | None:
    if config.certificate_roles is None:
        return None
    try:
        roles = load_certificate_roles(config.certificate_roles)
    except CertificateRolesError as exc:
        raise ConfigError(str(exc)) from None
    log.info("client certificates with a role: %d, from %s", len(roles.roles), config.certificate_roles)
    return roles


def log_access_rule(config: ServeConfig) -> None:
    """Say at start who may query and administer (docs/security.md, roles)."""
    if config.anonymous_reads:
        log.warning(
            "queries without a credential are allowed on this loopback listener %s (for the demo; "
            "--require-credentials turns that off); admin calls need a token or certificate with the admin role",
            config.listen,
        )
    else:
        log.info(
            "every query needs a credential with the reader or admin role, every admin call one with the admin "
            "role (tokens are cached %gs: a token revoked on another replica stops working within that)",
            TOKEN_CACHE_SECONDS,
        )


def log_identity_rule(config: ServeConfig, secrets: SecretFile | None) -> None:
    """Say at start what decides who may report as a host (docs/security.md)."""
    if secrets is not None:
        if config.enroll_replaces_keys:
            log.warning(
                "--enroll-replaces-keys: an enrollment replaces a host's valid node key, so whoever holds an "
                "enrollment secret can take over any host id"
            )
        else:
            log.info(
                "a host id that holds a valid node key is not enrolled again unless its key was revoked or an "
                "operator allowed it (rmsfleet-collector hosts allow-reenroll)"
            )
    if config.bind_host_id_to_certificate:
        log.info(
            "host ids are bound to client certificates: a report's or enrollment's host id must be a SAN DNS "
            "name or the CN of the caller's certificate"
        )


def start(
    config: ServeConfig,
    clock: Clock = system_clock,
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    health_interval: float = 1.0,
) -> RunningCollector:
    """Start everything; `stall_after` is how long a loop may have work without progress before
    health turns NOT_SERVING (liveness.py), checked every `health_interval` seconds."""
    # Files first: a bad secret or certificate file stops the start before anything listens.
    secrets = open_secrets(config)
    certificate_roles = open_certificate_roles(config)
    credentials = server_credentials(config)
    engine = create_db_engine(config.db_url, pool_size=max(4, config.workers // 8))
    log.info("database %s: %s", engine.url.render_as_string(hide_password=True), prepare_for_serving(engine))
    sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)

    # The *_created series double the exposition size for no alerting value.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, __version__)
    aggregates = AggregatesHolder()
    registry.register(
        FleetStateCollector(aggregates, lambda: [p.id for p in POLICIES], clock, config.metrics_max_clusters)
    )
    watermark = EvaluationWatermark(clock)
    metrics.track_evaluation(watermark, clock)
    # Replicas share a PostgreSQL database: one of them evaluates (docs/deploy.md, "Replicas").
    leadership = EvaluationLeadership(engine) if engine.dialect.name == "postgresql" else None
    evaluator = Evaluator(
        sessions,
        config.policy,
        clock,
        metrics,
        aggregates,
        refresh_interval=config.refresh_interval,
        full_pass_interval=config.full_pass_interval,
        full_pass_range=config.full_pass_range,
        stall_after=stall_after,
        watermark=watermark,
        leadership=leadership,
    )
    writer = GroupCommitWriter(
        sessions,
        metrics,
        evaluator.on_committed,
        max_batch=config.max_batch,
        max_queue=config.max_queue,
        require_node_keys=secrets is not None,
        stall_after=stall_after,
        record_changes=evaluator.record_changes,
    )

    # Outermost first: the per-address limits decide before a request is received (limits.py),
    # then who may call what (authz.py), then the lenient decoding (decode_guard.py).
    limits = PeerLimits(metrics, max_calls=config.max_calls_per_peer, enroll_per_minute=config.enroll_per_minute)
    auditor = Auditor(sessions, clock, metrics)
    token_cache = TokenCache(sessions)
    authorizer = Authorizer(
        token_cache, clock, anonymous_reads=config.anonymous_reads, certificate_roles=certificate_roles
    )
    access = AccessControl(authorizer, auditor, target_of)
    options = connection_options(config.max_calls_per_peer)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        interceptors=[limits, access, DecodeGuard(metrics)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *options,
        ],
    )
    log_identity_rule(config, secrets)
    log_access_rule(config)
    binding = CertificateBinding() if config.bind_host_id_to_certificate else None
    enroller = (
        None
        if secrets is None
        else Enroller(
            sessions,
            secrets,
            clock,
            replace_valid_keys=config.enroll_replaces_keys,
            binding=binding,
            metrics=metrics,
            scanner_of=scanner_actor,
        )
    )
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        InventoryServicer(writer, metrics, clock, secrets, sessions, enroller=enroller, binding=binding), server
    )
    query_pb2_grpc.add_QueryServiceServicer_to_server(
        QueryServicer(sessions, config, metrics, clock, watermark), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(sessions, clock, auditor, token_cache), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if credentials is None:
        grpc_port = server.add_insecure_port(config.listen)
    else:
        grpc_port = server.add_secure_port(config.listen, credentials)
    if grpc_port == 0:
        raise OSError(f"cannot listen on {config.listen} (in use, or not an address of this host)")

    health_server, health_port = None, 0
    if config.health_listen is not None:
        health_server, health_port = start_health_listener(config.health_listen, health_servicer, limits, options)

    metrics_host, metrics_port = split_host_port(config.metrics_listen, "--metrics-listen")
    metrics_tls = (
        None
        if config.tls_cert is None or config.tls_key is None
        else TlsFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
    )
    try:
        metrics_server, bound_metrics_port = start_metrics_server(metrics_host, metrics_port, registry, metrics_tls)
    except TlsFileError as exc:
        raise ConfigError(str(exc)) from None

    writer.start()
    evaluator.evaluate_once()  # /metrics and queries have data from the first second
    evaluator.start()
    server.start()
    # Liveness ("") follows both loops, reports (InventoryService) the writer; queries need neither.
    health_watch = HealthWatch(
        health_servicer,
        {
            "": [writer.progress, evaluator.progress],
            SERVICE_NAMES[0]: [writer.progress],
            SERVICE_NAMES[1]: [],
            SERVICE_NAMES[2]: [],
        },
        interval=health_interval,
    )
    health_watch.start()
    return RunningCollector(
        server,
        grpc_port,
        bound_metrics_port,
        writer,
        evaluator,
        health_servicer,
        registry,
        metrics_server,
        health_watch,
        health_server,
        health_port,
    )


def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or Ctrl-C, then stop gracefully."""
    running = start(config)
    log.info(
        "rmsfleet collector %s: gRPC on %s (port %d), metrics on %s://%s/metrics",
        __version__,
        config.listen,
        running.grpc_port,
        "https" if config.tls else "http",
        f"{split_host_port(config.metrics_listen, 'metrics')[0]}:{running.metrics_port}",
    )
    stop = stop_on_signals(log, "received %s, stopping gracefully")
    # Wake up now and then: a signal that the kernel hands to another thread runs its Python
    # handler only when the main thread next gets control, which an endless wait() never gives.
    while not stop.wait(0.5):
        pass
    running.stop(config.grace_seconds)
    log.info("stopped")
