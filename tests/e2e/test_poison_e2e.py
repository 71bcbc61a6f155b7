"""Issue 13's headline on real processes: poison reports sent to a running collector (a sequence
the column cannot hold, invalid UTF-8, NUL in text, a time beyond what datetime holds) are each
INVALID_ARGUMENT, and afterwards real agents report as ever: every one is acknowledged and stored,
the loops are healthy, nothing counts as a database error, and the log holds no traceback."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from processes import metric_value, report_facts, start_collector, wait_serving, write_facts

from rmsfleet.v1 import facts_pb2, inventory_pb2, inventory_pb2_grpc

pytestmark = pytest.mark.e2e


def honest_request(host_id: str) -> inventory_pb2.ReportRequest:
    return inventory_pb2.ReportRequest(
        facts=facts_pb2.HostFacts(
            host_id=host_id,
            hostname=f"{host_id}.corp.example",
            forest="corp.example",
            client=facts_pb2.ClientFacts(version=facts_pb2.VERSION_SP2, activation=facts_pb2.ACTIVATION_SELF),
        ),
        agent_version="poison-test",
        observed_at=Timestamp(seconds=int(time.time())),
        sequence=int(time.time() * 1_000_000),
    )


def poison_requests() -> list[tuple[str, bytes]]:
    """(the field the refusal names, the request's bytes as a broken or hostile client sends them)"""
    top = honest_request("poison-1")
    top.sequence = 2**64 - 1
    nul = honest_request("poison-2")
    nul.agent_version = "1.0\x00"
    far = honest_request("poison-3")
    far.observed_at.seconds = 2**62
    utf8 = honest_request("poison-\u00e9").SerializeToString().replace("\u00e9".encode(), b"\xc3(")
    return [
        ("sequence", top.SerializeToString()),
        ("agent_version", nul.SerializeToString()),
        ("observed_at", far.SerializeToString()),
        ("facts.host_id", utf8),
    ]


def test_poison_reports_are_refused_and_real_agents_report_as_ever(tmp_path: Path, db_url: str) -> None:
    collector = start_collector(tmp_path, db_url)
    try:
        with grpc.insecure_channel(collector.address) as channel:
            send = channel.unary_unary(
                "/rmsfleet.v1.InventoryService/Report",
                request_serializer=lambda b: b,
                response_deserializer=inventory_pb2.ReportResponse.FromString,
            )
            for field, data in poison_requests():
                with pytest.raises(grpc.RpcError) as refused:
                    send(data, timeout=10)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
                assert (refused.value.details() or "").startswith(f"{field}: expected"), refused.value.details()
            # The same honest report from a client that sent poison before is still applied.
            assert (
                inventory_pb2_grpc.InventoryServiceStub(channel).Report(honest_request("ws-direct"), timeout=10).applied
            )
        files = [
            write_facts(
                tmp_path / f"ws-{i}.json",
                host_id=f"ws-{i}",
                hostname=f"ws-{i}.corp.example",
                forest="corp.example",
                client={"version": "SP2", "activation": "self", "cluster": None},
            )
            for i in range(3)
        ]
        report_facts(collector, *files)
        assert sorted(h["host_id"] for h in collector.cli_json("hosts")) == [
            "ws-0",
            "ws-1",
            "ws-2",
            "ws-direct",
        ]
        wait_serving(collector.address)  # health is SERVING: the loops make progress
        metrics = collector.metrics()
        assert metric_value(metrics, "rmsfleet_reports_total", outcome="invalid") == 4
        assert metric_value(metrics, "rmsfleet_database_errors_total", operation="ingest") == 0
        assert metric_value(metrics, "rmsfleet_loop_healthy", loop="writer") == 1
        assert metric_value(metrics, "rmsfleet_loop_healthy", loop="evaluator") == 1
    finally:
        collector.stop()
    assert "Traceback" not in collector.log()
