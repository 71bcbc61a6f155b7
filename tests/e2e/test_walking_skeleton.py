"""End to end on real parts: agent processes -> gRPC on loopback -> collector process ->
SQLite or PostgreSQL -> violations (JSON contract) and /metrics."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from processes import (
    FLEET,
    metric_value,
    report_facts,
    run_agent,
    start_collector,
    wait_for,
    write_facts,
)

from rmsfleet.contract.facts import SERVER_EXCLUDED_VERSIONS, Version
from rmsfleet.v1 import facts_pb2, inventory_pb2, inventory_pb2_grpc

pytestmark = pytest.mark.e2e

ROOT_CLUSTER = "https://rms.corp.example"


def server_host(
    host_id: str, version: str, cluster: str = ROOT_CLUSTER, client: str | None = None
) -> dict[str, object]:
    document: dict[str, object] = {
        "host_id": host_id,
        "hostname": f"{host_id}.corp.example",
        "forest": "corp.example",
        "server": {
            "version": version,
            "cluster": cluster,
            "cluster_kind": "root-certification",
            "root_cluster": None,
            "enrollment": "online" if version == "RTM" else "offline",
        },
    }
    if client:
        document["client"] = {
            "version": client,
            "activation": "internet" if client == "RTM" else "self",
            "cluster": cluster,
        }
    return document


def test_sample_fleet_violations_json_and_metrics(tmp_path: Path, db_url: str) -> None:
    """The demo fleet through real agents: the violations JSON follows design.md's contract and
    /metrics counts what the CLI reports, with no per-host label."""
    collector = start_collector(tmp_path, db_url)
    try:
        files = sorted(FLEET.glob("*.json"))
        report_facts(collector, *files)
        # Every agent was acknowledged: the answer covers all their reports, whichever pass
        # evaluated them (no polling: one pass may open some violations and a later one the rest).
        violations = collector.cli_json("violations", "--wait-for-evaluation")
        for violation in violations:
            assert set(violation) >= {"policy", "subject_kind", "subject", "severity", "since", "detail"}
            assert violation["subject_kind"] in {"cluster", "host", "forest"}
            assert str(violation["since"]).endswith("Z")
            assert violation["severity"] in {"warning", "critical"}
        by_policy = {(v["policy"], v["subject"]) for v in violations}
        # D5, D8: the corp root cluster runs SP1 and SP2 servers.
        assert ("mixed-version-cluster", ROOT_CLUSTER) in by_policy
        # D10: every RTM client in the sample is flagged, and no other client.
        rtm_clients = sorted(
            json.loads(f.read_text())["host_id"]
            for f in files
            if (json.loads(f.read_text()).get("client") or {}).get("version") == "RTM"
        )
        assert sorted(s for p, s in by_policy if p == "client-not-self-activating") == rtm_clients
        # D18: the RTM client nobody activated can never be: critical.
        critical = sorted(
            v["subject"]
            for v in violations
            if v["policy"] == "client-not-self-activating" and v["severity"] == "critical"
        )
        assert critical == ["ber-ws-006"]
        # D15: the Windows 7 desktops' built-in client is never flagged.
        assert not [s for _, s in by_policy if s in {"ams-ws-007", "ber-ws-007"}]
        # The partner forest's clusters all run SP2: never mixed.
        assert ("mixed-version-cluster", "https://rms.partner.example") not in by_policy

        hosts = collector.cli_json("hosts")
        assert len(hosts) == len(files)

        def scraped() -> str | None:
            text = collector.metrics()
            return text if metric_value(text, "rmsfleet_fleet_hosts") == len(files) else None

        text = wait_for(scraped, what="/metrics to show the whole fleet")
        servers = [json.loads(f.read_text()) for f in files if json.loads(f.read_text()).get("server")]
        for version in ("RTM", "SP1", "SP2"):
            expected = sum(1 for s in servers if s["server"]["version"] == version)
            assert metric_value(text, "rmsfleet_hosts", role="server", version=version) == expected
        assert metric_value(text, "rmsfleet_policy_violations", policy="client-not-self-activating") == len(rtm_clients)
        assert metric_value(text, "rmsfleet_reports_total", outcome="applied") == len(files)
        assert metric_value(text, "rmsfleet_clients", version="RTM", activation="internet") == len(rtm_clients) - 1
        assert metric_value(text, "rmsfleet_clients", version="RTM", activation="none") == 1
        assert metric_value(text, "rmsfleet_clients", version="BUILTIN", activation="unknown") == 2
        assert "rmsfleet_ingest_batch_size_bucket" in text
        assert "rmsfleet_ingest_commit_duration_seconds_bucket" in text
        # No label may carry a host id: the series count must not grow with the fleet.
        host_ids = {json.loads(f.read_text())["host_id"] for f in files}
        assert not [line for line in text.splitlines() if any(f'"{h}"' in line for h in host_ids)]
    finally:
        assert collector.stop() == 0, collector.log()


def test_violation_resolves_when_the_cluster_is_upgraded(tmp_path: Path, sqlite_url: str) -> None:
    """D5: a mixed cluster's violation closes (resolved_at set, since kept) once every server runs one version."""
    collector = start_collector(tmp_path, sqlite_url)
    try:
        a = write_facts(tmp_path / "a.json", **server_host("srv-a", "SP1"))
        b = write_facts(tmp_path / "b.json", **server_host("srv-b", "SP2"))
        report_facts(collector, a, b)
        opened = collector.cli_json("violations", "--policy", "mixed-version-cluster", "--wait-for-evaluation")
        assert [v["subject"] for v in opened] == [ROOT_CLUSTER]
        write_facts(a, **server_host("srv-a", "SP2"))
        report_facts(collector, a)
        assert collector.cli_json("violations", "--policy", "mixed-version-cluster", "--wait-for-evaluation") == []
        resolved = collector.cli_json("violations", "--policy", "mixed-version-cluster", "--state", "resolved")
        assert len(resolved) == 1
        assert resolved[0]["since"] == opened[0]["since"]
        assert resolved[0]["resolved_at"] >= resolved[0]["since"]
        show = collector.cli_json("hosts", "show", "srv-a")
        assert [h["server"]["version"] for h in show["history"]] == ["SP1", "SP2"]
    finally:
        collector.stop()


def test_heartbeats_do_not_grow_history_and_retries_apply_once(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        facts = write_facts(tmp_path / "h.json", **server_host("srv-h", "SP2"))
        for _ in range(3):
            report_facts(collector, facts)
        show = collector.cli_json("hosts", "show", "srv-h")
        assert len(show["history"]) == 1

        request = inventory_pb2.ReportRequest(
            facts=facts_pb2.HostFacts(
                host_id="srv-r",
                hostname="srv-r.corp.example",
                forest="corp.example",
                client=facts_pb2.ClientFacts(version=facts_pb2.VERSION_SP2, activation=facts_pb2.ACTIVATION_SELF),
            ),
            agent_version="test",
            observed_at=Timestamp(seconds=1_790_000_000),
            sequence=42,
        )
        with grpc.insecure_channel(collector.address) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            first = stub.Report(request, timeout=10)
            retry = stub.Report(request, timeout=10)
        assert first.applied and not retry.applied
        assert retry.acknowledged_sequence == 42
        assert metric_value(collector.metrics(), "rmsfleet_reports_total", outcome="duplicate") == 1
    finally:
        collector.stop()


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda r: r.facts.ClearField("host_id"), "facts.host_id", "non-empty"),
        (lambda r: setattr(r.facts.server, "version", 99), "facts.server.version", "known version"),
        (lambda r: (r.facts.ClearField("server"), r.facts.ClearField("client")), "facts.server", "server part"),
        (
            lambda r: setattr(r.facts.server, "cluster_kind", facts_pb2.CLUSTER_KIND_LICENSING),
            "facts.server.root_cluster",
            "names its root",
        ),
        (lambda r: setattr(r, "sequence", 0), "sequence", "> 0"),
        (lambda r: r.ClearField("observed_at"), "observed_at", "missing"),
    ],
)
def test_bad_report_is_invalid_argument_naming_the_field_and_changes_nothing(
    tmp_path: Path, sqlite_url: str, mutate: object, field: str, reason: str
) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        request = inventory_pb2.ReportRequest(
            facts=facts_pb2.HostFacts(
                host_id="srv-bad",
                hostname="srv-bad.corp.example",
                forest="corp.example",
                server=facts_pb2.ServerFacts(
                    version=facts_pb2.VERSION_SP1,
                    cluster=ROOT_CLUSTER,
                    cluster_kind=facts_pb2.CLUSTER_KIND_ROOT_CERTIFICATION,
                    enrollment=facts_pb2.ENROLLMENT_OFFLINE,
                ),
            ),
            observed_at=Timestamp(seconds=1_790_000_000),
            sequence=7,
        )
        mutate(request)  # type: ignore[operator]
        with grpc.insecure_channel(collector.address) as channel, pytest.raises(grpc.RpcError) as raised:
            inventory_pb2_grpc.InventoryServiceStub(channel).Report(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = raised.value.details() or ""
        assert details.startswith(f"{field}:")
        assert reason in details
        assert collector.cli_json("hosts") == []
        assert metric_value(collector.metrics(), "rmsfleet_reports_total", outcome="invalid") == 1
    finally:
        collector.stop()


def test_agent_rejects_a_bad_facts_file_with_one_line_and_sends_nothing(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        cases = {
            "broken.json": ("{not json", "not valid JSON"),
            "missing.json": (json.dumps({"host_id": "x", "hostname": "x", "server": None, "client": None}), "forest"),
            "badversion.json": (
                json.dumps({**server_host("srv-x", "SP3")}),
                # Every server version the contract knows; BUILTIN is a client only (D15).
                "server.version: expected one of "
                f"{', '.join(repr(v.value) for v in Version if v not in SERVER_EXCLUDED_VERSIONS)}, got 'SP3'",
            ),
        }
        for name, (content, expected) in cases.items():
            path = tmp_path / name
            path.write_text(content)
            done = run_agent("--collector", collector.address, "--facts", str(path), "--once")
            assert done.returncode != 0
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, done.stderr
            assert str(path) in lines[0] and expected in lines[0], lines[0]
            assert "Traceback" not in done.stderr
        assert collector.cli_json("hosts") == []
    finally:
        collector.stop()


def test_agent_reports_a_clear_error_when_the_collector_is_unreachable(tmp_path: Path) -> None:
    facts = write_facts(tmp_path / "f.json", **server_host("srv-u", "SP2"))
    done = run_agent("--collector", "127.0.0.1:9", "--facts", str(facts), "--once", "--deadline", "2")
    assert done.returncode != 0
    assert "cannot reach the collector at 127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_reports_an_unreachable_collector_without_a_traceback() -> None:
    import subprocess

    from processes import command

    done = subprocess.run(
        [command("rmsfleet-collector"), "violations", "--collector", "127.0.0.1:9", "--timeout", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert "cannot reach the collector at 127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_agent_without_once_keeps_reporting_until_sigterm(tmp_path: Path, sqlite_url: str) -> None:
    import subprocess

    from processes import command

    collector = start_collector(tmp_path, sqlite_url)
    try:
        facts = write_facts(tmp_path / "loop.json", **server_host("srv-loop", "SP2"))
        agent = subprocess.Popen(
            [
                command("rmsfleet-agent"),
                "--collector",
                collector.address,
                "--facts",
                str(facts),
                "--state-dir",
                str(tmp_path / "agent-state"),
                "--interval",
                "0.2",
                "--jitter",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(
            lambda: (metric_value(collector.metrics(), "rmsfleet_reports_total", outcome="applied") or 0) >= 3,
            what="three reports from the looping agent",
        )
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=20)
        assert agent.returncode == 0, err
        assert "Traceback" not in err
    finally:
        collector.stop()


def test_sigterm_stops_the_collector_gracefully_with_every_acknowledged_report_stored(tmp_path: Path) -> None:
    db = tmp_path / "graceful.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}")
    files = sorted(FLEET.glob("*.json"))
    report_facts(collector, *files)
    assert collector.stop(signal.SIGTERM) == 0
    assert "stopping gracefully" in collector.log()
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM hosts").fetchone()[0] == len(files)


def test_query_lists_are_paged_and_a_bad_page_token_is_invalid_argument(tmp_path: Path, sqlite_url: str) -> None:
    from rmsfleet.v1 import query_pb2, query_pb2_grpc

    collector = start_collector(tmp_path, sqlite_url)
    try:
        files = sorted(FLEET.glob("*.json"))[:5]
        report_facts(collector, *files)
        with grpc.insecure_channel(collector.address) as channel:
            stub = query_pb2_grpc.QueryServiceStub(channel)
            seen: list[str] = []
            token = ""
            pages = 0
            while True:
                page = stub.ListHosts(query_pb2.ListHostsRequest(page_size=2, page_token=token), timeout=10)
                assert len(page.hosts) <= 2
                seen.extend(h.facts.host_id for h in page.hosts)
                pages += 1
                token = page.next_page_token
                if not token:
                    break
            assert seen == sorted(json.loads(f.read_text())["host_id"] for f in files)
            assert pages == 3
            calls: list[Callable[[], object]] = [
                lambda: stub.ListHosts(query_pb2.ListHostsRequest(page_token="%%%"), timeout=10),
                lambda: stub.ListViolations(query_pb2.ListViolationsRequest(page_token="bm90LWEtbnVtYmVy"), timeout=10),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as raised:
                    call()
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert (raised.value.details() or "").startswith("page_token:")
    finally:
        collector.stop()
