"""The agent's protobuf edge: domain facts to the report message."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.agent.facts import Activation, ClusterKind, Enrollment, HostFacts, Version
from rmsfleet.v1 import facts_pb2, inventory_pb2

_VERSION = {
    Version.RTM: facts_pb2.VERSION_RTM,
    Version.SP1: facts_pb2.VERSION_SP1,
    Version.SP2: facts_pb2.VERSION_SP2,
    Version.UNKNOWN: facts_pb2.VERSION_UNKNOWN,
}
_KIND = {
    ClusterKind.ROOT_CERTIFICATION: facts_pb2.CLUSTER_KIND_ROOT_CERTIFICATION,
    ClusterKind.LICENSING: facts_pb2.CLUSTER_KIND_LICENSING,
}
_ENROLLMENT = {Enrollment.OFFLINE: facts_pb2.ENROLLMENT_OFFLINE, Enrollment.ONLINE: facts_pb2.ENROLLMENT_ONLINE}
_ACTIVATION = {
    Activation.SELF: facts_pb2.ACTIVATION_SELF,
    Activation.INTERNET: facts_pb2.ACTIVATION_INTERNET,
    Activation.NONE: facts_pb2.ACTIVATION_NONE,
}


def report_request(
    facts: HostFacts, observed_at: datetime, sequence: int, agent_version: str, node_key: str = ""
) -> inventory_pb2.ReportRequest:
    message = facts_pb2.HostFacts(host_id=facts.host_id, hostname=facts.hostname, forest=facts.forest)
    if facts.server is not None:
        server = facts.server
        message.server.CopyFrom(
            facts_pb2.ServerFacts(
                version=_VERSION[server.version],
                cluster=server.cluster,
                cluster_kind=_KIND[server.cluster_kind],
                root_cluster=server.root_cluster or "",
                enrollment=_ENROLLMENT[server.enrollment],
            )
        )
    if facts.client is not None:
        client = facts.client
        message.client.CopyFrom(
            facts_pb2.ClientFacts(
                version=_VERSION[client.version],
                activation=_ACTIVATION[client.activation],
                cluster=client.cluster or "",
            )
        )
    stamp = Timestamp()
    stamp.FromDatetime(observed_at.astimezone(UTC))
    return inventory_pb2.ReportRequest(
        facts=message, agent_version=agent_version, observed_at=stamp, sequence=sequence, node_key=node_key
    )
