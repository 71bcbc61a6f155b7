"""Naming the field of an undecodable request: the wire walker finds the first string field that
is not UTF-8, nested messages included, and says nothing about bytes it cannot walk."""

from __future__ import annotations

from rmsfleet.collector.decode_guard import bad_utf8_field, explain
from rmsfleet.v1 import facts_pb2, inventory_pb2, query_pb2

MARK = "\u00e9"  # 0xC3 0xA9 in UTF-8


def broken(message: inventory_pb2.ReportRequest | query_pb2.ListHostsRequest) -> bytes:
    data = message.SerializeToString()
    assert data.count(MARK.encode()) == 1
    return data.replace(MARK.encode(), b"\xc3(")


def test_the_field_is_named_with_its_path() -> None:
    nested = inventory_pb2.ReportRequest(
        facts=facts_pb2.HostFacts(host_id="ws", server=facts_pb2.ServerFacts(cluster=f"https://{MARK}")),
        sequence=7,
    )
    assert bad_utf8_field(inventory_pb2.ReportRequest.DESCRIPTOR, broken(nested)) == "facts.server.cluster"
    flat = inventory_pb2.ReportRequest(agent_version=f"v{MARK}", sequence=2**64 - 1)
    assert bad_utf8_field(inventory_pb2.ReportRequest.DESCRIPTOR, broken(flat)) == "agent_version"
    query = query_pb2.ListHostsRequest(page_size=5, cluster=f"c{MARK}", stale_only=True)
    assert explain(query_pb2.ListHostsRequest, broken(query)) == "cluster: expected valid UTF-8 text"


def test_bytes_that_cannot_be_walked_name_no_field() -> None:
    good = inventory_pb2.ReportRequest(agent_version="v", sequence=3).SerializeToString()
    assert bad_utf8_field(inventory_pb2.ReportRequest.DESCRIPTOR, good) is None
    assert bad_utf8_field(inventory_pb2.ReportRequest.DESCRIPTOR, good[:-1] + b"\xff") is None
    assert bad_utf8_field(inventory_pb2.ReportRequest.DESCRIPTOR, b"\xff" * 20) is None
    assert (
        explain(inventory_pb2.ReportRequest, b"\x12\x05ab")
        == "the request is not a valid rmsfleet.v1.ReportRequest message"
    )
