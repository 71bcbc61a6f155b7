"""The CLI's side of the query service: pages through lists and turns messages into plain
dicts (the JSON contracts in design.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any, Protocol, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.contract.wire import ACTIVATION_TO_PB, ENROLLMENT_TO_PB, KIND_TO_PB, VERSION_TO_PB
from rmsfleet.v1 import facts_pb2, query_pb2

M = TypeVar("M")

# Wire enum values to the contract's names (the JSON the CLI prints).
VERSION = {pb: v.value for v, pb in VERSION_TO_PB.items()}
KIND = {pb: k.value for k, pb in KIND_TO_PB.items()}
ENROLLMENT = {pb: e.value for e, pb in ENROLLMENT_TO_PB.items()}
ACTIVATION = {pb: a.value for a, pb in ACTIVATION_TO_PB.items()}


class PagedResponse(Protocol):
    @property
    def next_page_token(self) -> str: ...


def pages(fetch: Callable[[str], Any], items: Callable[[Any], list[M]]) -> Iterator[M]:
    """Yield every item of a paged list, one request per page."""
    token = ""
    while True:
        response = fetch(token)
        yield from items(response)
        token = response.next_page_token
        if not token:
            return


def iso(stamp: Timestamp, present: bool = True) -> str | None:
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def facts_dict(facts: facts_pb2.HostFacts) -> dict[str, Any]:
    server = None
    if facts.HasField("server"):
        s = facts.server
        server = {
            "version": VERSION.get(s.version, "UNKNOWN"),
            "cluster": s.cluster,
            "cluster_kind": KIND.get(s.cluster_kind),
            "root_cluster": s.root_cluster or None,
            "enrollment": ENROLLMENT.get(s.enrollment),
        }
    client = None
    if facts.HasField("client"):
        c = facts.client
        client = {
            "version": VERSION.get(c.version, "UNKNOWN"),
            "activation": ACTIVATION.get(c.activation),
            "cluster": c.cluster or None,
            # D17: user profiles holding a machine certificate; null when not read.
            "activated_users": c.activated_users if c.HasField("activated_users") else None,
        }
    return {
        "host_id": facts.host_id,
        "hostname": facts.hostname,
        "forest": facts.forest,
        "server": server,
        "client": client,
    }


def host_dict(host: query_pb2.Host) -> dict[str, Any]:
    return {
        **facts_dict(host.facts),
        "first_seen": iso(host.first_seen),
        "last_seen": iso(host.last_seen),
        "observed_at": iso(host.observed_at),
        "last_sequence": host.last_sequence,
        "agent_version": host.agent_version,
        "stale": host.stale,
    }


def violation_dict(v: query_pb2.Violation) -> dict[str, Any]:
    return {
        "policy": v.policy,
        "subject_kind": v.subject_kind,
        "subject": v.subject,
        "severity": v.severity,
        "since": iso(v.since),
        "resolved_at": iso(v.resolved_at, v.HasField("resolved_at")),
        "detail": v.detail,
    }


def cluster_dict(c: query_pb2.Cluster) -> dict[str, Any]:
    return {
        "url": c.url,
        "kind": KIND.get(c.kind),
        "root_cluster": c.root_cluster or None,
        "forest": c.forest,
        "server_versions": {VERSION[v.version]: v.count for v in c.server_versions},
        "client_versions": {VERSION[v.version]: v.count for v in c.client_versions},
        "offline_enrollment": c.offline_enrollment,
        "self_activating_clients": c.self_activating_clients,
        "server_lockbox": c.server_lockbox,
        "sql_server_2005_by_default": c.sql_server_2005_by_default,
    }


def exemption_dict(e: query_pb2.Exemption) -> dict[str, Any]:
    return {
        "id": e.id,
        "policy": e.policy,
        "subject_kind": e.subject_kind,
        "subject": e.subject,
        "reason": e.reason,
        "created_at": iso(e.created_at),
        "expires_at": iso(e.expires_at, e.HasField("expires_at")),
    }
