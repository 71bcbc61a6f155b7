"""The protobuf edge of the host facts contract, both ways: domain facts to wire messages for the
agent, wire messages to validated domain facts for the collector. The enum tables here are the
only ones; every name mapping of the contract lives in this module."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    InvalidFacts,
    ServerFacts,
    Version,
    validate,
)
from rmsfleet.contract.text import unsafe_reason
from rmsfleet.v1 import facts_pb2, inventory_pb2

VERSION_TO_PB = {
    Version.RTM: facts_pb2.VERSION_RTM,
    Version.SP1: facts_pb2.VERSION_SP1,
    Version.SP2: facts_pb2.VERSION_SP2,
    Version.UNKNOWN: facts_pb2.VERSION_UNKNOWN,
    Version.BUILTIN: facts_pb2.VERSION_BUILTIN,
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
    Activation.UNKNOWN: facts_pb2.ACTIVATION_UNKNOWN,
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
                activated_users=client.activated_users,
            )
        )
    return message


def report_request(
    facts: HostFacts, observed_at: datetime, sequence: int, agent_version: str, node_key: str = ""
) -> inventory_pb2.ReportRequest:
    return inventory_pb2.ReportRequest(
        facts=facts_to_pb(facts),
        agent_version=agent_version,
        observed_at=datetime_to_timestamp(observed_at),
        sequence=sequence,
        node_key=node_key,
    )


# --- wire to domain (the collector's edge) ----------------------------------------------------

MAX_AGENT_VERSION = 64
# A node key is 43 characters (enrollment.new_node_key); anything far longer is not one.
MAX_NODE_KEY = 256
# The `sequence` column is a signed 64-bit integer; the wire field is uint64.
MAX_SEQUENCE = 2**63 - 1
# observed_at: no RMS host read its facts before RMS 1.0 shipped (2003), so an earlier time is a
# broken clock or a forged report; a time ahead of the collector's clock by more than a day is too
# (Kerberos already fails past five minutes of skew in an AD forest).
MIN_OBSERVED_AT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CLOCK_AHEAD = timedelta(days=1)
# How much of a refused value an error message may quote: a reply must not grow with the input.
QUOTE_LIMIT = 40
T = TypeVar("T")


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`value` for an error message: repr'd, cut to `limit` characters with its length said."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_wire_text(field: str, value: str, max_length: int, *, required: bool = False) -> None:
    """A free-text wire field: bounded, and without control characters (PostgreSQL refuses NUL
    in text, and a line break would forge log lines). Raises InvalidFacts naming the field."""
    if required and not value.strip():
        raise InvalidFacts(field, "a non-empty string")
    if len(value) > max_length:
        raise InvalidFacts(field, f"at most {max_length} characters, got {len(value)}")
    unsafe = unsafe_reason(value)
    if unsafe is not None:
        raise InvalidFacts(field, unsafe)


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
            version=_enum(VERSION_FROM_PB, c.version, "client.version", "version (RTM, SP1, SP2, UNKNOWN, BUILTIN)"),
            activation=_enum(
                ACTIVATION_FROM_PB, c.activation, "client.activation", "activation (self, internet, none, unknown)"
            ),
            cluster=c.cluster or None,
            activated_users=c.activated_users if c.HasField("activated_users") else None,
        )
    facts = HostFacts(
        host_id=message.host_id, hostname=message.hostname, forest=message.forest, server=server, client=client
    )
    validate(facts)
    return facts


def report_fields_from_pb(request: inventory_pb2.ReportRequest, now: datetime) -> tuple[HostFacts, datetime, int, str]:
    """Validate a report against every bound of the contract (`now` is the collector's clock, for
    the bound on observed_at); InvalidFacts names the field, with its `facts.` prefix where it has
    one. A report that passes fits the database's columns."""
    if not request.HasField("facts"):
        raise InvalidFacts("facts", "the host facts (the field is missing)")
    try:
        facts = facts_from_pb(request.facts)
    except InvalidFacts as exc:
        raise InvalidFacts(f"facts.{exc.field}", exc.reason) from None
    if not request.HasField("observed_at"):
        raise InvalidFacts("observed_at", "the time the facts were read (the field is missing)")
    observed_at = bounded_time("observed_at", request.observed_at, MIN_OBSERVED_AT, now + MAX_CLOCK_AHEAD)
    if not 0 < request.sequence <= MAX_SEQUENCE:
        raise InvalidFacts(
            "sequence", f"a per-host sequence number > 0 and at most {MAX_SEQUENCE} (2^63-1), got {request.sequence}"
        )
    check_wire_text("agent_version", request.agent_version, MAX_AGENT_VERSION)
    check_wire_text("node_key", request.node_key, MAX_NODE_KEY)
    return facts, observed_at, request.sequence, request.agent_version


def bounded_time(field: str, stamp: Timestamp, earliest: datetime, latest: datetime) -> datetime:
    """A wire timestamp as an aware datetime, refused (InvalidFacts) outside [earliest, latest]."""
    moment = checked_timestamp(field, stamp)
    if not earliest <= moment <= latest:
        raise InvalidFacts(
            field, f"a time from {earliest.isoformat()} to {latest.isoformat()}, got {moment.isoformat()}"
        )
    return moment


def checked_timestamp(field: str, stamp: Timestamp) -> datetime:
    """A wire timestamp as an aware datetime; InvalidFacts when it is not a valid Timestamp (the
    range years 1 to 9999 and nanos below one second, which datetime and both databases hold)."""
    try:
        return timestamp_to_datetime(stamp)
    except (ValueError, OverflowError):
        raise InvalidFacts(
            field,
            "a valid timestamp (0001-01-01 to 9999-12-31, nanos from 0 to 999999999), "
            f"got seconds={stamp.seconds} nanos={stamp.nanos}",
        ) from None


def timestamp_to_datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def datetime_to_timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp
