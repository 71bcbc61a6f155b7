"""The protobuf edge of the host facts contract: domain facts to wire messages. The enum tables
here are the only ones; the collector's conversion module builds on them."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.agent.facts import Activation, ClusterKind, Enrollment, HostFacts, Version
from rmsfleet.v1 import facts_pb2, inventory_pb2

VERSION_TO_PB = {
    Version.RTM: facts_pb2.VERSION_RTM,
    Version.SP1: facts_pb2.VERSION_SP1,
    Version.SP2: facts_pb2.VERSION_SP2,
    Version.UNKNOWN: facts_pb2.VERSION_UNKNOWN,
}
KIND_TO_PB = {
    ClusterKind.ROOT_CERTIFICATION: facts_pb2.CLUSTER_KIND_ROOT_CERTIFICATION,
    ClusterKind.LICENSING: facts_pb2.CLUSTER_KIND_LICENSING,
}
ENROLLMENT_TO_PB = {Enrollment.OFFLINE: facts_pb2.ENROLLMENT_OFFLINE, Enrollment.ONLINE: facts_pb2.ENROLLMENT_ONLINE}
ACTIVATION_TO_PB = {
    Activation.SELF: facts_pb2.ACTIVATION_SELF,
    Activation.INTERNET: facts_pb2.ACTIVATION_INTERNET,
    Activation.NONE: facts_pb2.ACTIVATION_NONE,
}
VERSION_FROM_PB = {pb: v for v, pb in VERSION_TO_PB.items()}
KIND_FROM_PB = {pb: k for k, pb in KIND_TO_PB.items()}
ENROLLMENT_FROM_PB = {pb: e for e, pb in ENROLLMENT_TO_PB.items()}
ACTIVATION_FROM_PB = {pb: a for a, pb in ACTIVATION_TO_PB.items()}


def facts_to_pb(facts: HostFacts) -> facts_pb2.HostFacts:
    message = facts_pb2.HostFacts(host_id=facts.host_id, hostname=facts.hostname, forest=facts.forest)
    if facts.server is not None:
        server = facts.server
        message.server.CopyFrom(
            facts_pb2.ServerFacts(
                version=VERSION_TO_PB[server.version],
                cluster=server.cluster,
                cluster_kind=KIND_TO_PB[server.cluster_kind],
                root_cluster=server.root_cluster or "",
                enrollment=ENROLLMENT_TO_PB[server.enrollment],
            )
        )
    if facts.client is not None:
        client = facts.client
        message.client.CopyFrom(
            facts_pb2.ClientFacts(
                version=VERSION_TO_PB[client.version],
                activation=ACTIVATION_TO_PB[client.activation],
                cluster=client.cluster or "",
            )
        )
    return message


def report_request(
    facts: HostFacts, observed_at: datetime, sequence: int, agent_version: str, node_key: str = ""
) -> inventory_pb2.ReportRequest:
    stamp = Timestamp()
    stamp.FromDatetime(observed_at.astimezone(UTC))
    return inventory_pb2.ReportRequest(
        facts=facts_to_pb(facts), agent_version=agent_version, observed_at=stamp, sequence=sequence, node_key=node_key
    )
