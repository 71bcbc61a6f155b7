"""Bounds on the query side's wire fields: each function checks one request and raises
InvalidFacts naming the field and the bound, before anything reaches the database (PostgreSQL
refuses NUL in text, and a filter value the store does not know must not be silently ignored).

Page tokens: what the collector hands out is the base64 of the last key of a page, a host id,
a cluster URL or a row id; the longest (a URL of MAX_URL_LENGTH characters, up to 4 bytes each
in UTF-8) encodes to under 11 000 characters."""

from __future__ import annotations

from rmsfleet.collector.paging import BadPageToken, decode_token
from rmsfleet.contract.facts import MAX_ID_LENGTH, MAX_URL_LENGTH, InvalidFacts
from rmsfleet.contract.wire import VERSION_FROM_PB, check_wire_text, checked_timestamp
from rmsfleet.v1 import query_pb2

MAX_PAGE_TOKEN = 11_000
# The longest wait for evaluation a query may ask for (the servicer waits at most 300 s anyway;
# this only refuses durations that are not durations).
MAX_EVALUATION_WAIT_SECONDS = 86_400
# Policy ids are short names (domain.md); the column holds 64 characters.
MAX_POLICY_ID = 64


def check_page_token(token: str) -> None:
    """A token too long to be one of ours, or one that decodes to a key with control characters,
    is refused here; decode_token refuses the rest (not base64, empty)."""
    if len(token) > MAX_PAGE_TOKEN:
        raise InvalidFacts(
            "page_token", f"a token from a previous response (at most {MAX_PAGE_TOKEN} characters, got {len(token)})"
        )
    try:
        key = decode_token(token)
    except BadPageToken:
        return
    if key is not None:
        try:
            check_wire_text("page_token", key, MAX_URL_LENGTH)
        except InvalidFacts:
            raise InvalidFacts("page_token", "a token from a previous response") from None


def check_evaluation_wait(
    request: query_pb2.ListHostsRequest | query_pb2.GetHostRequest | query_pb2.ListViolationsRequest,
) -> None:
    if not request.HasField("wait_for_evaluation"):
        return
    timeout = request.wait_for_evaluation.timeout
    if not 0 <= timeout.seconds <= MAX_EVALUATION_WAIT_SECONDS or not 0 <= timeout.nanos < 1_000_000_000:
        raise InvalidFacts(
            "wait_for_evaluation.timeout",
            f"a duration from 0 to {MAX_EVALUATION_WAIT_SECONDS} s (got seconds={timeout.seconds} nanos={timeout.nanos})",
        )


def check_list_hosts(request: query_pb2.ListHostsRequest) -> None:
    check_page_token(request.page_token)
    check_evaluation_wait(request)
    if request.version and request.version not in VERSION_FROM_PB:
        known = ", ".join(f"{v.value} ({pb})" for pb, v in sorted(VERSION_FROM_PB.items()))
        raise InvalidFacts("version", f"one of {known}, or 0 for any (got {request.version})")
    check_wire_text("cluster", request.cluster, MAX_URL_LENGTH)
    check_wire_text("forest", request.forest, MAX_ID_LENGTH)
    check_wire_text("role", request.role, MAX_ID_LENGTH)


def check_get_host(request: query_pb2.GetHostRequest) -> None:
    check_wire_text("host_id", request.host_id, MAX_ID_LENGTH, required=True)
    check_evaluation_wait(request)


def check_list_violations(request: query_pb2.ListViolationsRequest) -> None:
    check_page_token(request.page_token)
    check_evaluation_wait(request)
    check_wire_text("policy", request.policy, MAX_POLICY_ID)
    check_wire_text("severity", request.severity, MAX_ID_LENGTH)
    check_wire_text("state", request.state, MAX_ID_LENGTH)
    if request.HasField("since"):
        checked_timestamp("since", request.since)


def check_paged(request: query_pb2.ListClustersRequest | query_pb2.ListExemptionsRequest) -> None:
    check_page_token(request.page_token)


def check_get_plan(request: query_pb2.GetPlanRequest) -> None:
    check_wire_text("forest", request.forest, MAX_ID_LENGTH)
