"""The collector's configuration, read once from flags and RMSFLEET_* variables into a frozen
dataclass and passed down. Flags win over the environment, which wins over the defaults."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from rmsfleet.collector.domain.model import PolicyConfig
from rmsfleet.collector.domain.policies import POLICIES, unknown_policy_ids
from rmsfleet.contract.address import AddressError, is_loopback_host, parse_address

DEFAULT_DB = "sqlite:///rmsfleet.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServeConfig:
    db_url: str = DEFAULT_DB
    listen: str = DEFAULT_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    workers: int = 64
    max_concurrent_rpcs: int = 2000
    max_batch: int = 1000
    max_queue: int = 20000
    refresh_interval: float = 5.0
    # Time-based rules (stale agents, grace periods) and anything an incremental pass cannot see.
    full_pass_interval: float = 60.0
    # Hosts per step of a full pass, each step its own transaction (evaluator.FULL_PASS_RANGE).
    full_pass_range: int = 20000
    grace_seconds: float = 10.0
    # D5: the share of a cluster's servers the planner takes down in one wave.
    plan_max_unavailable: float = 0.34
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Enrollment (docs/security.md): None runs without it (reports need no node key).
    enroll_secret_file: Path | None = None
    # TLS: certificate chain and key served to agents; with client_ca, clients must present a
    # certificate it signed (mTLS). Plaintext is allowed on loopback, elsewhere only with insecure.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False
    # Host identity (identity.py, docs/security.md): an enrollment may replace a valid node key
    # (the behaviour before the identity rule), and host ids must match the client certificate.
    enroll_replaces_keys: bool = False
    bind_host_id_to_certificate: bool = False
    # Limits (limits.py, docs/limits.md): calls in flight per client address, enrollments per
    # client address per minute, clusters exported with their own metric label.
    max_calls_per_peer: int = 16
    enroll_per_minute: int = 30
    metrics_max_clusters: int = 500
    # Upgrade plans computed at once (plan_cache.py); more callers wait, then RESOURCE_EXHAUSTED.
    max_concurrent_plans: int = 2
    # A plaintext listener that serves only the gRPC health service (health_listener.py).
    health_listen: str | None = None
    # Roles (authz.py, docs/security.md): queries need a credential too (they always do off
    # loopback), and client-certificate names mapped to roles.
    require_credentials: bool = False
    certificate_roles: Path | None = None

    @property
    def anonymous_reads(self) -> bool:
        """Queries without a credential: only on a loopback listener, unless turned off."""
        host, _port = split_host_port(self.listen, "--listen")
        return not self.require_credentials and is_loopback_host(host)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def check_transport(config: ServeConfig) -> None:
    """The TLS settings that only make sense together, and the loopback rule: plaintext gRPC on
    an address other hosts can reach needs --insecure (reports name hosts and carry node keys)."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together (RMSFLEET_TLS_CERT, RMSFLEET_TLS_KEY)")
    if config.tls_client_ca is not None and not config.tls:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: client certificates need TLS")
    if config.insecure and config.tls:
        raise ConfigError("--insecure turns TLS off, but --tls-cert/--tls-key are also set: remove one")
    host, _port = split_host_port(config.listen, "--listen")
    if not config.tls and not config.insecure and not is_loopback_host(host):
        raise ConfigError(
            f"--listen {config.listen}: refusing plaintext gRPC on an address other hosts can reach; "
            "serve TLS with --tls-cert and --tls-key, or pass --insecure (RMSFLEET_INSECURE=1) to accept plaintext"
        )
    # /metrics follows the same rule: TLS with the same files, plaintext only on loopback or with
    # --insecure (it names clusters and versions; a scrape is not a secret, but not everyone's).
    metrics_host, _port = split_host_port(config.metrics_listen, "--metrics-listen")
    if not config.tls and not config.insecure and not is_loopback_host(metrics_host):
        raise ConfigError(
            f"--metrics-listen {config.metrics_listen}: refusing plaintext /metrics on an address other hosts can "
            "reach; serve TLS with --tls-cert and --tls-key (used for /metrics too), or pass --insecure "
            "(RMSFLEET_INSECURE=1) to accept plaintext"
        )
    if config.bind_host_id_to_certificate and config.tls_client_ca is None:
        raise ConfigError(
            "--bind-host-id-to-certificate needs client certificates: mutual TLS with --tls-client-ca "
            "(and --tls-cert, --tls-key)"
        )
    if config.health_listen is not None:
        split_host_port(config.health_listen, "--health-listen")
    if config.certificate_roles is not None and config.tls_client_ca is None:
        raise ConfigError(
            "--certificate-roles needs client certificates: mutual TLS with --tls-client-ca (and --tls-cert, --tls-key)"
        )


def split_host_port(value: str, what: str, *, any_port: bool = True) -> tuple[str, int]:
    """HOST:PORT (rmsfleet.contract.address) or a ConfigError naming the option. Port 0 (the
    system picks one) is allowed unless `any_port` is False: listeners may, clients may not."""
    try:
        address = parse_address(value, any_port=any_port)
    except AddressError as exc:
        raise ConfigError(f"{what}: expected {exc}, got {bounded(value)}") from None
    return address.host, address.port


def database_url(flag: str | None, environ: Mapping[str, str]) -> str:
    """The database every command uses: --db, else RMSFLEET_DB, else the SQLite default."""
    return flag or environ.get("RMSFLEET_DB") or DEFAULT_DB


def bounded(value: str, limit: int = 80) -> str:
    """`value` quoted for a message, cut to `limit` characters: input never floods an error."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help=f"database URL (RMSFLEET_DB; default {DEFAULT_DB})")
    parser.add_argument("--listen", help=f"gRPC listen address (RMSFLEET_LISTEN; default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--metrics-listen", help=f"/metrics listen address (RMSFLEET_METRICS_LISTEN; default {DEFAULT_METRICS_LISTEN})"
    )
    parser.add_argument("--workers", type=int, help="gRPC worker threads (RMSFLEET_WORKERS; default 64)")
    parser.add_argument(
        "--refresh-interval",
        type=float,
        help="seconds between refreshes of the fleet-state metrics when no report changed anything "
        "(RMSFLEET_REFRESH_INTERVAL; default 5)",
    )
    parser.add_argument(
        "--full-pass-interval",
        type=float,
        help="seconds between full evaluation passes, for the time-based rules (stale agents, grace periods); "
        "changed hosts are evaluated as their reports arrive (RMSFLEET_FULL_PASS_INTERVAL; default 60)",
    )
    parser.add_argument(
        "--full-pass-range",
        type=int,
        help="hosts per step of a full pass, each step a transaction of its own: bounds what a full pass "
        "holds in memory and how long changes wait behind it (RMSFLEET_FULL_PASS_RANGE; default 20000)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        help="seconds of silence before a host is a stale agent (RMSFLEET_STALE_AFTER; default 900)",
    )
    parser.add_argument(
        "--mixed-cluster-grace",
        type=float,
        help="seconds a cluster may stay mixed before the violation turns critical, D5 "
        "(RMSFLEET_MIXED_CLUSTER_GRACE; default 604800 = 7 days)",
    )
    parser.add_argument(
        "--enroll-secret-file",
        help="file of enrollment secrets, one per line; agents must enroll and send node keys "
        "(RMSFLEET_ENROLL_SECRET_FILE; default: no enrollment)",
    )
    parser.add_argument("--tls-cert", help="serve TLS with this certificate chain, PEM (RMSFLEET_TLS_CERT)")
    parser.add_argument("--tls-key", help="private key of --tls-cert, PEM (RMSFLEET_TLS_KEY)")
    parser.add_argument(
        "--tls-client-ca",
        help="require client certificates signed by these CAs, PEM: mutual TLS (RMSFLEET_TLS_CLIENT_CA)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow plaintext gRPC on a non-loopback --listen address (RMSFLEET_INSECURE=1)",
    )
    parser.add_argument(
        "--enroll-replaces-keys",
        action="store_true",
        default=None,
        help="let any enrollment replace a host's valid node key: whoever holds an enrollment secret can take over "
        "any host id (RMSFLEET_ENROLL_REPLACES_KEYS=1; default off, docs/security.md)",
    )
    parser.add_argument(
        "--bind-host-id-to-certificate",
        action="store_true",
        default=None,
        help="with mutual TLS: a host id must be a SAN DNS name or the CN of the client certificate, for Report and "
        "Enroll (RMSFLEET_BIND_HOST_ID_TO_CERTIFICATE=1)",
    )
    parser.add_argument(
        "--health-listen",
        help="also serve the gRPC health service alone, in plaintext, on HOST:PORT, for probes that cannot speak "
        "TLS (RMSFLEET_HEALTH_LISTEN; default: none)",
    )
    parser.add_argument(
        "--require-credentials",
        action="store_true",
        default=None,
        help="queries need a token or a client certificate with a role, on loopback too (RMSFLEET_REQUIRE_CREDENTIALS=1; "
        "always so on other addresses)",
    )
    parser.add_argument(
        "--certificate-roles",
        help="file of `NAME ROLE` lines giving client certificates (SAN DNS name or CN) a role: reader, admin or "
        "scanner (RMSFLEET_CERTIFICATE_ROLES)",
    )
    parser.add_argument(
        "--max-calls-per-peer",
        type=int,
        help="calls in flight from one client address; more are refused with RESOURCE_EXHAUSTED "
        "(RMSFLEET_MAX_CALLS_PER_PEER; default 16)",
    )
    parser.add_argument(
        "--enroll-per-minute",
        type=int,
        help="Enroll calls per client address per minute (RMSFLEET_ENROLL_PER_MINUTE; default 30)",
    )
    parser.add_argument(
        "--metrics-max-clusters",
        type=int,
        help="clusters exported with their own `cluster` label; the rest are summed in one overflow series "
        "(RMSFLEET_METRICS_MAX_CLUSTERS; default 500)",
    )
    parser.add_argument(
        "--max-concurrent-plans",
        type=int,
        help="upgrade plans computed at once; callers beyond wait, then get RESOURCE_EXHAUSTED "
        "(RMSFLEET_MAX_CONCURRENT_PLANS; default 2)",
    )
    parser.add_argument(
        "--disable-policy",
        action="append",
        default=None,
        help="switch a policy off (repeatable; RMSFLEET_DISABLE_POLICIES, comma-separated)",
    )


def serve_config(args: argparse.Namespace, environ: Mapping[str, str]) -> ServeConfig:
    def pick(flag: object, env: str, default: str) -> str:
        if flag is not None:
            return str(flag)
        return environ.get(env) or default

    def number(flag: object, env: str, default: float, what: str) -> float:
        raw = pick(flag, env, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{what} ({env}): expected a number, got {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{what} ({env}): expected a number > 0, got {raw!r}")
        return value

    def path(flag: object, env: str) -> Path | None:
        raw = pick(flag, env, "")
        return Path(raw) if raw.strip() else None

    def flag_on(flag: object, env: str) -> bool:
        if flag:
            return True
        raw = environ.get(env, "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return False
        if raw in ("1", "true", "yes", "on"):
            return True
        raise ConfigError(f"{env}: expected 1/true/yes/on or 0/false/no/off, got {raw!r}")

    defaults = ServeConfig()
    disabled = args.disable_policy or [p for p in environ.get("RMSFLEET_DISABLE_POLICIES", "").split(",") if p.strip()]
    unknown = unknown_policy_ids(p.strip() for p in disabled)
    if unknown:
        known = ", ".join(p.id for p in POLICIES)
        raise ConfigError(
            f"--disable-policy (RMSFLEET_DISABLE_POLICIES): no policy {', '.join(unknown)}; known: {known}"
        )
    config = ServeConfig(
        db_url=database_url(args.db, environ),
        listen=pick(args.listen, "RMSFLEET_LISTEN", DEFAULT_LISTEN),
        metrics_listen=pick(args.metrics_listen, "RMSFLEET_METRICS_LISTEN", DEFAULT_METRICS_LISTEN),
        workers=int(number(args.workers, "RMSFLEET_WORKERS", defaults.workers, "--workers")),
        refresh_interval=number(
            args.refresh_interval, "RMSFLEET_REFRESH_INTERVAL", defaults.refresh_interval, "--refresh-interval"
        ),
        full_pass_interval=number(
            args.full_pass_interval, "RMSFLEET_FULL_PASS_INTERVAL", defaults.full_pass_interval, "--full-pass-interval"
        ),
        full_pass_range=int(
            number(
                getattr(args, "full_pass_range", None),
                "RMSFLEET_FULL_PASS_RANGE",
                defaults.full_pass_range,
                "--full-pass-range",
            )
        ),
        policy=PolicyConfig(
            stale_after=timedelta(
                seconds=number(
                    args.stale_after,
                    "RMSFLEET_STALE_AFTER",
                    defaults.policy.stale_after.total_seconds(),
                    "--stale-after",
                )
            ),
            mixed_cluster_grace=timedelta(
                seconds=number(
                    args.mixed_cluster_grace,
                    "RMSFLEET_MIXED_CLUSTER_GRACE",
                    defaults.policy.mixed_cluster_grace.total_seconds(),
                    "--mixed-cluster-grace",
                )
            ),
            disabled=frozenset(p.strip() for p in disabled),
        ),
        enroll_secret_file=path(getattr(args, "enroll_secret_file", None), "RMSFLEET_ENROLL_SECRET_FILE"),
        tls_cert=path(getattr(args, "tls_cert", None), "RMSFLEET_TLS_CERT"),
        tls_key=path(getattr(args, "tls_key", None), "RMSFLEET_TLS_KEY"),
        tls_client_ca=path(getattr(args, "tls_client_ca", None), "RMSFLEET_TLS_CLIENT_CA"),
        insecure=flag_on(getattr(args, "insecure", None), "RMSFLEET_INSECURE"),
        enroll_replaces_keys=flag_on(getattr(args, "enroll_replaces_keys", None), "RMSFLEET_ENROLL_REPLACES_KEYS"),
        bind_host_id_to_certificate=flag_on(
            getattr(args, "bind_host_id_to_certificate", None), "RMSFLEET_BIND_HOST_ID_TO_CERTIFICATE"
        ),
        max_calls_per_peer=int(
            number(
                getattr(args, "max_calls_per_peer", None),
                "RMSFLEET_MAX_CALLS_PER_PEER",
                defaults.max_calls_per_peer,
                "--max-calls-per-peer",
            )
        ),
        enroll_per_minute=int(
            number(
                getattr(args, "enroll_per_minute", None),
                "RMSFLEET_ENROLL_PER_MINUTE",
                defaults.enroll_per_minute,
                "--enroll-per-minute",
            )
        ),
        metrics_max_clusters=int(
            number(
                getattr(args, "metrics_max_clusters", None),
                "RMSFLEET_METRICS_MAX_CLUSTERS",
                defaults.metrics_max_clusters,
                "--metrics-max-clusters",
            )
        ),
        max_concurrent_plans=int(
            number(
                getattr(args, "max_concurrent_plans", None),
                "RMSFLEET_MAX_CONCURRENT_PLANS",
                defaults.max_concurrent_plans,
                "--max-concurrent-plans",
            )
        ),
        health_listen=pick(getattr(args, "health_listen", None), "RMSFLEET_HEALTH_LISTEN", "") or None,
        require_credentials=flag_on(getattr(args, "require_credentials", None), "RMSFLEET_REQUIRE_CREDENTIALS"),
        certificate_roles=path(getattr(args, "certificate_roles", None), "RMSFLEET_CERTIFICATE_ROLES"),
    )
    split_host_port(config.listen, "--listen")
    split_host_port(config.metrics_listen, "--metrics-listen")
    check_transport(config)
    return config
