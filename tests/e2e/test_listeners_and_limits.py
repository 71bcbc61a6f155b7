"""Listeners and per-address limits with a real collector process: the plaintext health-only
listener beside a TLS report port (what the Kubernetes probes use), /metrics over TLS with the
gRPC port's certificate and under the same loopback rule, Enroll limited per address per minute."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import make_pki, start_tls_collector
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import command, metric_value, run_agent, start_collector, write_facts

from rmsfleet.v1 import inventory_pb2, inventory_pb2_grpc, query_pb2, query_pb2_grpc

pytestmark = pytest.mark.e2e

HEALTH = re.compile(r"gRPC health service alone, plaintext, on \S+ \(port (\d+)\)")


def test_the_health_listener_answers_probes_in_plaintext_and_serves_nothing_else(
    tmp_path: Path, sqlite_url: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, sqlite_url, pki, ["--health-listen", "127.0.0.1:0"])
    try:
        match = HEALTH.search(collector.log())
        assert match, collector.log()
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            for service in ("", "rmsfleet.v1.InventoryService"):
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            for call in (
                lambda: query_pb2_grpc.QueryServiceStub(channel).ListHosts(query_pb2.ListHostsRequest(), timeout=5),
                lambda: inventory_pb2_grpc.InventoryServiceStub(channel).Enroll(
                    inventory_pb2.EnrollRequest(host_id="x", enroll_secret="y"), timeout=5
                ),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
        # The report port itself speaks TLS only: a plaintext client gets nowhere.
        with grpc.insecure_channel(collector.address) as plain:
            with pytest.raises(grpc.RpcError) as failed:
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=3)  # type: ignore[attr-defined]
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        assert collector.stop() == 0, collector.log()


def test_metrics_are_served_over_tls_with_the_grpc_certificate(tmp_path: Path, sqlite_url: str) -> None:
    pki = make_pki(tmp_path / "pki")
    collector = start_tls_collector(tmp_path, sqlite_url, pki)
    try:
        assert collector.metrics_url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(pki.ca.cert))
        trusted.check_hostname = False  # the test certificate names localhost and 127.0.0.1 as an IP SAN
        with urllib.request.urlopen(collector.metrics_url, timeout=10, context=trusted) as response:
            assert b"rmsfleet_build_info" in response.read()
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # the TLS port closes a plaintext request
            urllib.request.urlopen(collector.metrics_url.replace("https://", "http://"), timeout=10)
    finally:
        assert collector.stop() == 0, collector.log()


def test_plaintext_metrics_off_loopback_need_insecure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            command("rmsfleet-collector"),
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "0.0.0.0:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "RMSFLEET_INSECURE"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "rmsfleet-collector: --metrics-listen 0.0.0.0:0: refusing plaintext /metrics on an address other hosts can reach"
    )
    assert not (tmp_path / "x.db").exists()


def test_enrollments_are_limited_per_address_per_minute(tmp_path: Path, sqlite_url: str) -> None:
    secret = tmp_path / "enroll.secret"
    secret.write_text("fleet-secret\n")
    secret.chmod(0o600)
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secret), "--enroll-per-minute", "2"])
    try:
        codes: list[grpc.StatusCode] = []
        details: list[str] = []
        with grpc.insecure_channel(collector.address) as channel:
            enroll = inventory_pb2_grpc.InventoryServiceStub(channel).Enroll
            for n in range(5):
                try:
                    enroll(inventory_pb2.EnrollRequest(host_id=f"g{n}", enroll_secret="wrong"), timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
                    details.append(exc.details() or "")
        # Two a minute: the first two are judged (a wrong secret costs a token too), the rest wait.
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert details[2].startswith("too many enrollments from ipv4:127.0.0.1: at most 2 a minute; try again in")
        assert metric_value(collector.metrics(), "rmsfleet_limited_calls_total", limit="enroll-rate") == 3
        assert collector.log().count("too many enrollments from ipv4:127.0.0.1") == 1, "logged once a minute"
        # A real agent that meets the limit keeps its report and says why.
        facts = write_facts(
            tmp_path / "ws.json",
            host_id="ws-9.corp.example",
            hostname="ws-9.corp.example",
            forest="corp.example",
            client={"version": "SP2", "activation": "self", "cluster": None},
        )
        # Busy until the deadline (one minute refills the limit; the deadline is 2 s): exit 3.
        done = run_agent(
            "--collector",
            collector.address,
            "--facts",
            str(facts),
            "--once",
            "--enroll-secret-file",
            str(secret),
            "--deadline",
            "2",
        )
        assert done.returncode == 3, done.stderr
        assert "RESOURCE_EXHAUSTED: too many enrollments from ipv4:127.0.0.1" in done.stderr
    finally:
        assert collector.stop() == 0, collector.log()


def test_an_agent_once_waits_out_a_busy_collector_within_its_deadline(tmp_path: Path, sqlite_url: str) -> None:
    """RESOURCE_EXHAUSTED means the collector is up and asks to retry later: `--once` backs off
    and tries again until its deadline, saying so in one line per wait, instead of exiting 3."""
    secret = tmp_path / "enroll.secret"
    secret.write_text("fleet-secret\n")
    secret.chmod(0o600)
    # 20 a minute: a burst of 20, then one more every 3 s.
    collector = start_collector(
        tmp_path, sqlite_url, ["--enroll-secret-file", str(secret), "--enroll-per-minute", "20"]
    )
    try:
        with grpc.insecure_channel(collector.address) as channel:
            enroll = inventory_pb2_grpc.InventoryServiceStub(channel).Enroll
            for n in range(21):
                with pytest.raises(grpc.RpcError):
                    enroll(inventory_pb2.EnrollRequest(host_id=f"g{n}", enroll_secret="wrong"), timeout=5)
        config = tmp_path / "agent.toml"
        config.write_text("[sender]\ninitial_backoff = 1\nmax_backoff = 2\n")
        facts = write_facts(
            tmp_path / "ws.json",
            host_id="ws-busy.corp.example",
            hostname="ws-busy.corp.example",
            forest="corp.example",
            client={"version": "SP2", "activation": "self", "cluster": None},
        )
        done = run_agent(
            "--config",
            str(config),
            "--collector",
            collector.address,
            "--facts",
            str(facts),
            "--once",
            "--enroll-secret-file",
            str(secret),
            "--deadline",
            "30",
        )
        assert done.returncode == 0, done.stderr
        busy = [line for line in done.stderr.splitlines() if "the collector is busy: trying again in" in line]
        assert busy and "RESOURCE_EXHAUSTED: too many enrollments" in busy[0]
        with grpc.insecure_channel(collector.address) as channel:
            host = query_pb2_grpc.QueryServiceStub(channel).GetHost(
                query_pb2.GetHostRequest(host_id="ws-busy.corp.example"), timeout=5
            )
        assert host.host.facts.host_id == "ws-busy.corp.example"
    finally:
        assert collector.stop() == 0, collector.log()
