"""Protobuf stops here: wire messages to domain types and back, with the field-naming errors
the servicers turn into INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.agent.facts import (
    ClientFacts,
    HostFacts,
    InvalidFacts,
    ServerFacts,
    validate,
)
from rmsfleet.agent.wire import (
    ACTIVATION_FROM_PB,
    ACTIVATION_TO_PB,
    ENROLLMENT_FROM_PB,
    ENROLLMENT_TO_PB,
    KIND_FROM_PB,
    KIND_TO_PB,
    VERSION_FROM_PB,
    VERSION_TO_PB,
    facts_to_pb,
)
from rmsfleet.v1 import facts_pb2, inventory_pb2

__all__ = [
    "ACTIVATION_TO_PB",
    "ENROLLMENT_TO_PB",
    "KIND_TO_PB",
    "VERSION_TO_PB",
    "facts_from_pb",
    "facts_to_pb",
    "report_fields_from_pb",
]

MAX_AGENT_VERSION = 64
T = TypeVar("T")


def _enum(table: Mapping[Any, T], value: int, field: str, name: str) -> T:
    try:
        return table[value]
    except KeyError:
        raise InvalidFacts(field, f"a known {name} (got enum value {value})") from None


def facts_from_pb(message: facts_pb2.HostFacts) -> HostFacts:
    """Raise InvalidFacts naming the wire field (e.g. `facts.server.version`)."""
    server = None
    if message.HasField("server"):
        s = message.server
        server = ServerFacts(
            version=_enum(VERSION_FROM_PB, s.version, "server.version", "version (RTM, SP1, SP2, UNKNOWN)"),
            cluster=s.cluster,
            cluster_kind=_enum(KIND_FROM_PB, s.cluster_kind, "server.cluster_kind", "cluster kind"),
            root_cluster=s.root_cluster or None,
            enrollment=_enum(ENROLLMENT_FROM_PB, s.enrollment, "server.enrollment", "enrollment (offline, online)"),
        )
    client = None
    if message.HasField("client"):
        c = message.client
        client = ClientFacts(
            version=_enum(VERSION_FROM_PB, c.version, "client.version", "version (RTM, SP1, SP2, UNKNOWN)"),
            activation=_enum(
                ACTIVATION_FROM_PB, c.activation, "client.activation", "activation (self, internet, none)"
            ),
            cluster=c.cluster or None,
        )
    facts = HostFacts(
        host_id=message.host_id, hostname=message.hostname, forest=message.forest, server=server, client=client
    )
    validate(facts)
    return facts


def report_fields_from_pb(request: inventory_pb2.ReportRequest) -> tuple[HostFacts, datetime, int, str]:
    """Validate a report; InvalidFacts names the field with its `facts.` prefix where it has one."""
    if not request.HasField("facts"):
        raise InvalidFacts("facts", "the host facts (the field is missing)")
    try:
        facts = facts_from_pb(request.facts)
    except InvalidFacts as exc:
        raise InvalidFacts(f"facts.{exc.field}", exc.reason) from None
    if not request.HasField("observed_at"):
        raise InvalidFacts("observed_at", "the time the facts were read (the field is missing)")
    if request.sequence == 0:
        raise InvalidFacts("sequence", "a per-host sequence number > 0")
    if len(request.agent_version) > MAX_AGENT_VERSION:
        raise InvalidFacts("agent_version", f"at most {MAX_AGENT_VERSION} characters")
    return facts, timestamp_to_datetime(request.observed_at), request.sequence, request.agent_version


def timestamp_to_datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def datetime_to_timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp
