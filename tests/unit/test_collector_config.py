"""The collector's configuration (collector/config.py): flags win over RMSFLEET_* variables,
which win over the defaults; every bad value is one line naming the flag and the variable."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from rmsfleet.collector.config import (
    DEFAULT_DB,
    DEFAULT_LISTEN,
    DEFAULT_METRICS_LISTEN,
    ConfigError,
    ServeConfig,
    add_serve_arguments,
    database_url,
    serve_config,
    split_host_port,
)


def config(*argv: str, env: Mapping[str, str] | None = None) -> ServeConfig:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return serve_config(parser.parse_args(list(argv)), env or {})


def test_defaults() -> None:
    defaults = config()
    assert (defaults.db_url, defaults.listen, defaults.metrics_listen) == (
        DEFAULT_DB,
        DEFAULT_LISTEN,
        DEFAULT_METRICS_LISTEN,
    )
    assert defaults.policy.stale_after == timedelta(seconds=900)
    assert defaults.policy.mixed_cluster_grace == timedelta(days=7)
    assert not defaults.tls and not defaults.insecure and defaults.enroll_secret_file is None


def test_flags_win_over_the_environment_which_wins_over_defaults() -> None:
    env = {"RMSFLEET_DB": "sqlite:///env.db", "RMSFLEET_WORKERS": "8", "RMSFLEET_STALE_AFTER": "60"}
    from_env = config(env=env)
    assert (from_env.db_url, from_env.workers, from_env.policy.stale_after) == (
        "sqlite:///env.db",
        8,
        timedelta(seconds=60),
    )
    from_flags = config("--db", "sqlite:///flag.db", "--workers", "4", env=env)
    assert (from_flags.db_url, from_flags.workers) == ("sqlite:///flag.db", 4)
    assert config().full_pass_range == 20000
    assert config(env={"RMSFLEET_FULL_PASS_RANGE": "200"}).full_pass_range == 200
    assert config("--full-pass-range", "50", env={"RMSFLEET_FULL_PASS_RANGE": "200"}).full_pass_range == 50


def test_one_database_url_resolution_for_every_command() -> None:
    assert database_url("sqlite:///flag.db", {"RMSFLEET_DB": "sqlite:///env.db"}) == "sqlite:///flag.db"
    assert database_url(None, {"RMSFLEET_DB": "sqlite:///env.db"}) == "sqlite:///env.db"
    assert database_url(None, {"RMSFLEET_DB": ""}) == DEFAULT_DB
    assert config(env={"RMSFLEET_DB": "sqlite:///env.db"}).db_url == database_url(
        None, {"RMSFLEET_DB": "sqlite:///env.db"}
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"RMSFLEET_WORKERS": "many"}, "--workers (RMSFLEET_WORKERS): expected a number, got 'many'"),
        ([], {"RMSFLEET_STALE_AFTER": "-5"}, "--stale-after (RMSFLEET_STALE_AFTER): expected a number > 0, got '-5'"),
        (
            ["--full-pass-range", "0"],
            {},
            "--full-pass-range (RMSFLEET_FULL_PASS_RANGE): expected a number > 0, got '0'",
        ),
        (
            ["--disable-policy", "no-such"],
            {},
            "--disable-policy (RMSFLEET_DISABLE_POLICIES): no policy no-such; known: ",
        ),
        ([], {"RMSFLEET_INSECURE": "perhaps"}, "RMSFLEET_INSECURE: expected 1/true/yes/on or 0/false/no/off"),
        (["--listen", "50051"], {}, "--listen: expected HOST:PORT"),
        (["--metrics-listen", "[::1]:99999"], {}, "--metrics-listen: expected HOST:PORT"),
        (["--tls-cert", "c.pem"], {}, "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], {}, "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", "c", "--tls-key", "k", "--insecure"], {}, "--insecure turns TLS off"),
    ],
)
def test_a_bad_value_is_one_line_naming_flag_and_variable(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config(*argv, env=env)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_plaintext_only_on_loopback_unless_insecure_or_tls() -> None:
    for listen in ("127.0.0.1:50051", "localhost:1", "[::1]:0"):
        assert config("--listen", listen).listen == listen
    for listen in ("0.0.0.0:50051", "[::]:50051", "collector.corp.example:50051", "10.1.2.3:50051"):
        with pytest.raises(ConfigError, match="refusing plaintext gRPC on an address other hosts can reach"):
            config("--listen", listen)
        assert config("--listen", listen, "--insecure").insecure
        assert config("--listen", listen, env={"RMSFLEET_INSECURE": "1"}).insecure
        assert config("--listen", listen, "--tls-cert", "c.pem", "--tls-key", "k.pem").tls


def test_paths_and_disabled_policies() -> None:
    parsed = config(
        "--enroll-secret-file",
        "/etc/rmsfleet/secrets",
        "--disable-policy",
        "stale-agent",
        env={"RMSFLEET_DISABLE_POLICIES": "mixed-version-cluster"},
    )
    assert parsed.enroll_secret_file == Path("/etc/rmsfleet/secrets")
    assert parsed.policy.disabled == frozenset({"stale-agent"}), "the flag replaces the variable"
    from_env = config(env={"RMSFLEET_DISABLE_POLICIES": "stale-agent, mixed-version-cluster"})
    assert from_env.policy.disabled == frozenset({"stale-agent", "mixed-version-cluster"})


def test_host_port_parsing_keeps_ipv6_hosts_and_bounds_the_echo() -> None:
    assert split_host_port("[::1]:50051", "--listen") == ("::1", 50051)
    assert split_host_port("127.0.0.1:0", "--listen") == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="port from 1 to 65535"):
        split_host_port("127.0.0.1:0", "--collector", any_port=False)
    with pytest.raises(ConfigError) as refused:
        split_host_port("x" * 100_000, "--listen")
    assert len(str(refused.value)) < 300


def test_queries_without_a_credential_only_on_loopback_unless_required() -> None:
    assert config().anonymous_reads
    assert not config("--require-credentials").anonymous_reads
    assert not config(env={"RMSFLEET_REQUIRE_CREDENTIALS": "1"}).anonymous_reads
    assert not config("--listen", "0.0.0.0:50051", "--insecure").anonymous_reads
    assert config("--listen", "[::1]:50051").anonymous_reads


def test_certificate_roles_need_client_certificates() -> None:
    with pytest.raises(ConfigError, match="--certificate-roles needs client certificates: mutual TLS"):
        config("--certificate-roles", "roles")
    mutual = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]
    assert config(*mutual, env={"RMSFLEET_CERTIFICATE_ROLES": "roles"}).certificate_roles == Path("roles")
