"""Replies about host identity stay small whatever the host id (found by bench/fuzz_collector.py):
a 255-character host id of four-byte characters is named by its start and length, so the second
enrollment of it is answered PERMISSION_DENIED with the reason, not cut off by the client's 8 KiB
trailer limit as RESOURCE_EXHAUSTED. A real collector in this process, over loopback gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from live_collector import live_collector

from rmsfleet.v1 import inventory_pb2


def test_the_refusal_of_a_long_unicode_host_id_reaches_the_caller(db_url: str, tmp_path: Path) -> None:
    secrets = tmp_path / "enroll.secrets"
    secrets.write_text("fleet-secret\n")
    secrets.chmod(0o600)
    host_id = "😀" * 255
    with live_collector(db_url, enroll_secret_file=secrets) as live:
        enroll = inventory_pb2.EnrollRequest(host_id=host_id, enroll_secret="fleet-secret")
        assert live.inventory.Enroll(enroll, timeout=30).node_key
        with pytest.raises(grpc.RpcError) as refused:
            live.inventory.Enroll(enroll, timeout=30)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        details = refused.value.details() or ""
        assert details.startswith("host " + "😀" * 40 + "... (255 characters) already holds a valid node key")
