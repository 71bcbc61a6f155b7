"""The query service's edge (proto/rmsfleet/v1/query.proto), both ways, in one module:

- the servicer's side: request messages to validated filters (a bad field raises BadRequest
  naming it), and read results to response messages;
- the CLI's side: options to request messages, and response messages to the plain dicts it
  prints as JSON (design.md, contract 3).

A query field is declared in the .proto and converted here, nowhere else. Enum names come from
the contract's tables (rmsfleet.contract.wire), never from a copy.

The CLI imports this module, so the store (and with it SQLAlchemy) is imported only where a
filter is built, on the servicer's side."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.collector import paging
from rmsfleet.collector.watermark import NOT_EVALUATED, EvaluationMark
from rmsfleet.contract.facts import MAX_ID_LENGTH, MAX_URL_LENGTH, InvalidFacts, Version, facts_to_json
from rmsfleet.contract.wire import (
    KIND_FROM_PB,
    KIND_TO_PB,
    VERSION_FROM_PB,
    VERSION_TO_PB,
    datetime_to_timestamp,
    facts_from_pb,
    facts_to_pb,
    timestamp_to_datetime,
)
from rmsfleet.v1 import facts_pb2, query_pb2

if TYPE_CHECKING:
    from rmsfleet.collector.domain.capabilities import ClusterCapabilities
    from rmsfleet.collector.domain.model import FactChange
    from rmsfleet.collector.domain.plan_pages import PlanPage
    from rmsfleet.collector.domain.planner import Unplanned, Wave
    from rmsfleet.collector.store.queries import ExemptionView, HostFilter, HostView, ViolationFilter, ViolationView

T = TypeVar("T")

ROLES = ("server", "client")
STATES = ("open", "resolved", "all")
SEVERITIES = ("warning", "critical")
# The query filters take what the contract lets a report carry (facts.MAX_*_LENGTH).
MAX_POLICY_LENGTH = 64
# A query that asks to wait for evaluation waits this long unless it says otherwise, and never
# longer than the cap. A duration past MAX_EVALUATION_WAIT_SECONDS (or negative) is refused: the
# cap would shorten it anyway, so such a value is a mistake, not a wish.
DEFAULT_EVALUATION_WAIT = 30.0
MAX_EVALUATION_WAIT = 300.0
MAX_EVALUATION_WAIT_SECONDS = 86_400
# The plan pages host entries (domain/plan_pages.py). A page of 5000 host ids with their
# unplanned reasons stays far under the 4 MiB message limit even at the longest ids; 0 asks for
# the whole plan, as clients before paging did, up to PLAN_UNPAGED_LIMIT entries.
PLAN_MAX_PAGE_SIZE = 5000
PLAN_UNPAGED_LIMIT = 50_000
_PLAN_TOKEN_EXPECTED = "a token from a previous response with the same forest and max_unavailable"


class BadRequest(ValueError):
    """A request field outside the contract: INVALID_ARGUMENT `field: expected reason`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: expected {reason}")
        self.field = field


# --- requests, on the servicer's side ------------------------------------------------------------


def page_of(request: Any, numeric: bool = False) -> tuple[int, Any]:
    """(page size, the key after which the page starts) of a list request."""
    try:
        limit = paging.page_size(request.page_size)
        after = paging.decode_id_token(request.page_token) if numeric else paging.decode_token(request.page_token)
    except paging.BadPageToken as exc:
        raise BadRequest(exc.field, exc.reason) from None
    return limit, after


def _text(field: str, value: str, max_length: int) -> str | None:
    """An optional text filter: None when empty; bounded and free of control characters (a NUL
    cannot reach PostgreSQL, and a megabyte of filter cannot reach a log line)."""
    if not value:
        return None
    if len(value) > max_length:
        raise BadRequest(field, f"at most {max_length} characters, got {len(value)}")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise BadRequest(field, "no control characters")
    return value


def _choice(field: str, value: str, allowed: Sequence[str]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise BadRequest(field, f"one of {', '.join(repr(a) for a in allowed)} or empty, got {value[:40]!r}")
    return value


def _version_name(field: str, value: facts_pb2.Version.ValueType) -> str | None:
    if value == facts_pb2.VERSION_UNSPECIFIED:
        return None
    version = VERSION_FROM_PB.get(value)
    if version is None:
        known = ", ".join(v.value for v in VERSION_TO_PB)
        raise BadRequest(field, f"a known version ({known}) or unspecified, got enum value {value}")
    return version.value


def _moment(field: str, stamp: Timestamp) -> datetime:
    try:
        return timestamp_to_datetime(stamp)
    except (ValueError, OverflowError):
        raise BadRequest(field, "a time from year 1 to 9999") from None


def hosts_filter(request: query_pb2.ListHostsRequest) -> HostFilter:
    from rmsfleet.collector.store.queries import HostFilter

    return HostFilter(
        role=_choice("role", request.role, ROLES),
        version=_version_name("version", request.version),
        cluster=_text("cluster", request.cluster, MAX_URL_LENGTH),
        forest=_text("forest", request.forest, MAX_ID_LENGTH),
        stale_only=request.stale_only,
    )


def host_id_of(request: query_pb2.GetHostRequest) -> str:
    host_id = _text("host_id", request.host_id, MAX_ID_LENGTH)
    if host_id is None:
        raise BadRequest("host_id", "a host id")
    return host_id


def violations_filter(request: query_pb2.ListViolationsRequest) -> ViolationFilter:
    from rmsfleet.collector.store.queries import ViolationFilter

    return ViolationFilter(
        policy=_text("policy", request.policy, MAX_POLICY_LENGTH),
        severity=_choice("severity", request.severity, SEVERITIES),
        state=_choice("state", request.state, STATES) or "open",
        since=_moment("since", request.since) if request.HasField("since") else None,
    )


def evaluation_wait_of(
    request: query_pb2.ListHostsRequest | query_pb2.GetHostRequest | query_pb2.ListViolationsRequest,
) -> float | None:
    """Seconds to wait for evaluation before answering (unset or zero: the default; at most the
    cap), or None when the request does not ask to wait."""
    if not request.HasField("wait_for_evaluation"):
        return None
    timeout = request.wait_for_evaluation.timeout
    if not 0 <= timeout.seconds <= MAX_EVALUATION_WAIT_SECONDS or not 0 <= timeout.nanos < 1_000_000_000:
        raise BadRequest(
            "wait_for_evaluation.timeout",
            f"a duration from 0 to {MAX_EVALUATION_WAIT_SECONDS} s (got seconds={timeout.seconds} nanos={timeout.nanos})",
        )
    asked = timeout.seconds + timeout.nanos / 1e9
    return min(asked or DEFAULT_EVALUATION_WAIT, MAX_EVALUATION_WAIT)


def plan_share(request: query_pb2.GetPlanRequest, default: float) -> float:
    """D5: the share of a cluster's servers one wave takes down; 0 asks for the default."""
    share = request.max_unavailable or default
    if not 0 < share <= 1:  # also refuses NaN
        raise BadRequest("max_unavailable", f"a share in (0, 1], got {share}")
    return share


def plan_forest(request: query_pb2.GetPlanRequest) -> str | None:
    return _text("forest", request.forest, MAX_ID_LENGTH)


def plan_page_size(request: query_pb2.GetPlanRequest) -> int | None:
    """Host entries per page; None for the whole plan (page_size 0 and no token)."""
    if request.page_size < 0:
        raise BadRequest("page_size", "a number >= 0")
    if request.page_size == 0:
        return PLAN_MAX_PAGE_SIZE if request.page_token else None
    return min(request.page_size, PLAN_MAX_PAGE_SIZE)


def plan_position(request: query_pb2.GetPlanRequest) -> tuple[int, str, int] | None:
    """(facts generation, plan id, first entry) a page token names; None for the first page.
    The token is checked for its form here; that it belongs to this question (forest, share)
    is checked against the plan id by the servicer."""
    try:
        key = paging.decode_token(request.page_token)
    except paging.BadPageToken as exc:
        raise BadRequest(exc.field, _PLAN_TOKEN_EXPECTED) from None
    if key is None:
        return None
    parts = key.split(":")
    numbers = (parts[0], parts[2]) if len(parts) == 3 else ()
    if not numbers or not all(p.isascii() and p.isdigit() and int(p) <= paging.MAX_ID for p in numbers):
        raise BadRequest("page_token", _PLAN_TOKEN_EXPECTED)
    plan_id = parts[1]
    if len(plan_id) != 16 or any(ch not in "0123456789abcdef" for ch in plan_id):
        raise BadRequest("page_token", _PLAN_TOKEN_EXPECTED)
    return int(parts[0]), plan_id, int(parts[2])


def bad_plan_token() -> BadRequest:
    return BadRequest("page_token", _PLAN_TOKEN_EXPECTED)


def plan_token(generation: int, plan_id: str, start: int) -> str:
    return paging.encode_token(f"{generation}:{plan_id}:{start}")


# --- responses, on the servicer's side -----------------------------------------------------------


def _stamp(moment: datetime | None) -> Timestamp | None:
    return None if moment is None else datetime_to_timestamp(moment)


def _next_token(items: Sequence[T], limit: int, key: Callable[[T], object]) -> str:
    """A token for the page after a full one; empty after the last page."""
    return paging.encode_token(str(key(items[-1]))) if items and len(items) == limit else ""


def watermark_pb(mark: EvaluationMark) -> query_pb2.EvaluationWatermark:
    return query_pb2.EvaluationWatermark(
        collector_id=mark.collector_id,
        reports_committed=mark.reports_committed,
        reports_evaluated=mark.reports_evaluated,
        evaluated_at=_stamp(mark.evaluated_at),
        oldest_pending_at=_stamp(mark.oldest_pending_at),
    )


def not_evaluated_message(mark: EvaluationMark, waited: float) -> str:
    """Why a query that asked to wait for evaluation got no answer: how far evaluation got."""
    last = mark.evaluated_at.isoformat().replace("+00:00", "Z") if mark.evaluated_at else "none yet"
    return (
        f"{NOT_EVALUATED} within {waited:g} s: {mark.reports_evaluated} of {mark.reports_committed} "
        f"reports evaluated, last pass {last}; the collector's log and rmsfleet_evaluation_lag_seconds tell why"
    )


def host_pb(host: HostView) -> query_pb2.Host:
    return query_pb2.Host(
        facts=facts_to_pb(host.facts),
        first_seen=_stamp(host.first_seen),
        last_seen=_stamp(host.last_seen),
        observed_at=_stamp(host.observed_at),
        last_sequence=host.last_sequence,
        agent_version=host.agent_version,
        stale=host.stale,
    )


def hosts_response(hosts: Sequence[HostView], limit: int, evaluation: EvaluationMark) -> query_pb2.ListHostsResponse:
    return query_pb2.ListHostsResponse(
        hosts=[host_pb(h) for h in hosts],
        next_page_token=_next_token(hosts, limit, lambda h: h.facts.host_id),
        evaluation=watermark_pb(evaluation),
    )


def host_response(
    host: HostView, history: Iterable[FactChange], evaluation: EvaluationMark
) -> query_pb2.GetHostResponse:
    return query_pb2.GetHostResponse(
        host=host_pb(host),
        history=[query_pb2.HostChange(changed_at=_stamp(c.changed_at), facts=facts_to_pb(c.facts)) for c in history],
        evaluation=watermark_pb(evaluation),
    )


def violations_response(
    rows: Sequence[ViolationView], limit: int, evaluation: EvaluationMark
) -> query_pb2.ListViolationsResponse:
    return query_pb2.ListViolationsResponse(
        evaluation=watermark_pb(evaluation),
        violations=[
            query_pb2.Violation(
                policy=v.policy,
                subject_kind=v.subject_kind,
                subject=v.subject,
                severity=v.severity,
                since=_stamp(v.since),
                resolved_at=_stamp(v.resolved_at),
                detail=v.detail,
            )
            for v in rows
        ],
        next_page_token=_next_token(rows, limit, lambda v: v.id),
    )


def _version_counts(counts: Mapping[str, int]) -> list[query_pb2.ClusterVersionCount]:
    return [
        query_pb2.ClusterVersionCount(version=VERSION_TO_PB[Version(name)], count=n)
        for name, n in sorted(counts.items())
        if n
    ]


def clusters_response(summaries: Sequence[ClusterCapabilities], limit: int) -> query_pb2.ListClustersResponse:
    return query_pb2.ListClustersResponse(
        clusters=[
            query_pb2.Cluster(
                url=s.url,
                kind=KIND_TO_PB[s.kind],
                root_cluster=s.root_cluster or "",
                forest=s.forest,
                server_versions=_version_counts(s.server_versions.as_dict()),
                client_versions=_version_counts(s.client_versions.as_dict()),
                offline_enrollment=s.offline_enrollment,
                self_activating_clients=s.self_activating_clients.value,
                server_lockbox=s.server_lockbox,
                sql_server_2005_by_default=s.sql_server_2005_by_default,
            )
            for s in summaries
        ],
        next_page_token=_next_token(summaries, limit, lambda s: s.url),
    )


def exemptions_response(rows: Sequence[ExemptionView], limit: int) -> query_pb2.ListExemptionsResponse:
    return query_pb2.ListExemptionsResponse(
        exemptions=[
            query_pb2.Exemption(
                id=e.id,
                policy=e.policy,
                subject_kind=e.subject_kind,
                subject=e.subject,
                reason=e.reason,
                created_at=_stamp(e.created_at),
                expires_at=_stamp(e.expires_at),
            )
            for e in rows
        ],
        next_page_token=_next_token(rows, limit, lambda e: e.id),
    )


def plan_response(page: PlanPage, next_page_token: str) -> query_pb2.GetPlanResponse:
    return _plan_response(page.waves, page.unplanned, next_page_token)


def _plan_response(
    waves: Sequence[Wave], unplanned: Sequence[Unplanned], next_page_token: str
) -> query_pb2.GetPlanResponse:
    return query_pb2.GetPlanResponse(
        next_page_token=next_page_token,
        waves=[
            query_pb2.PlanWave(
                number=wave.number,
                steps=[
                    query_pb2.PlanStep(
                        forest=step.forest,
                        cluster=step.cluster or "",
                        role=step.role,
                        hosts=list(step.hosts),
                        from_version=VERSION_TO_PB[step.from_version],
                        to_version=VERSION_TO_PB[step.to_version],
                    )
                    for step in wave.steps
                ],
                checklist=[
                    query_pb2.ChecklistItem(forest=item.forest, cluster=item.cluster, action=item.action)
                    for item in wave.checklist
                ],
            )
            for wave in waves
        ],
        unplanned=[
            query_pb2.UnplannedHost(host_id=u.host_id, role=u.role, version=VERSION_TO_PB[u.version], reason=u.reason)
            for u in unplanned
        ],
    )


# --- requests, on the CLI's side -----------------------------------------------------------------

VERSION_CHOICES = tuple(v.value for v in VERSION_TO_PB)


def hosts_request(
    role: str | None, version: str | None, cluster: str | None, forest: str | None, stale_only: bool
) -> query_pb2.ListHostsRequest:
    return query_pb2.ListHostsRequest(
        role=role or "",
        version=VERSION_TO_PB[Version(version)] if version else facts_pb2.VERSION_UNSPECIFIED,
        cluster=cluster or "",
        forest=forest or "",
        stale_only=stale_only,
    )


def violations_request(
    policy: str | None, severity: str | None, state: str, since: datetime | None
) -> query_pb2.ListViolationsRequest:
    return query_pb2.ListViolationsRequest(
        policy=policy or "", severity=severity or "", state=state, since=_stamp(since)
    )


def ask_to_wait(
    request: query_pb2.ListHostsRequest | query_pb2.GetHostRequest | query_pb2.ListViolationsRequest,
    seconds: float | None,
) -> None:
    """Ask the collector to wait, at most `seconds`, for evaluation to cover every report it
    committed before the call (None: do not wait)."""
    if seconds is None:
        request.ClearField("wait_for_evaluation")
    else:
        request.wait_for_evaluation.timeout.FromTimedelta(timedelta(seconds=seconds))


def plan_request(
    max_unavailable: float | None, forest: str | None, page_size: int = PLAN_MAX_PAGE_SIZE
) -> query_pb2.GetPlanRequest:
    return query_pb2.GetPlanRequest(max_unavailable=max_unavailable or 0.0, forest=forest or "", page_size=page_size)


# --- responses, on the CLI's side: the JSON contracts --------------------------------------------


class UnreadableAnswer(ValueError):
    """A response this CLI cannot read (a collector of another release); one line."""


def iso(stamp: Timestamp, present: bool = True) -> str | None:
    if not present:
        return None
    return timestamp_to_datetime(stamp).isoformat().replace("+00:00", "Z")


def _version(value: facts_pb2.Version.ValueType) -> str:
    version = VERSION_FROM_PB.get(value)
    if version is None:
        raise UnreadableAnswer(f"the collector sent version enum value {value}, unknown to this CLI")
    return version.value


def facts_dict(message: facts_pb2.HostFacts) -> dict[str, Any]:
    """The facts-file JSON form (contract 1) of wire facts, through the contract's own
    conversions, so a facts field added there shows here without a change."""
    try:
        return facts_to_json(facts_from_pb(message))
    except InvalidFacts as exc:
        raise UnreadableAnswer(
            f"the collector sent facts of host {message.host_id[:80]!r} this CLI cannot read: {exc}"
        ) from None


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


def host_detail_dict(response: query_pb2.GetHostResponse) -> dict[str, Any]:
    return {
        "host": host_dict(response.host),
        "history": [{"changed_at": iso(c.changed_at), **facts_dict(c.facts)} for c in response.history],
    }


def evaluation_dict(mark: query_pb2.EvaluationWatermark) -> dict[str, Any]:
    """How far evaluation had got when the collector answered (the watermark)."""
    return {
        "collector_id": mark.collector_id,
        "reports_committed": mark.reports_committed,
        "reports_evaluated": mark.reports_evaluated,
        "evaluated_at": iso(mark.evaluated_at, mark.HasField("evaluated_at")),
        "oldest_pending_at": iso(mark.oldest_pending_at, mark.HasField("oldest_pending_at")),
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
    kind = KIND_FROM_PB.get(c.kind)
    return {
        "url": c.url,
        "kind": None if kind is None else kind.value,
        "root_cluster": c.root_cluster or None,
        "forest": c.forest,
        "server_versions": {_version(v.version): v.count for v in c.server_versions},
        "client_versions": {_version(v.version): v.count for v in c.client_versions},
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


def plan_dict(response: query_pb2.GetPlanResponse) -> dict[str, Any]:
    return {
        "waves": [
            {
                "wave": w.number,
                "checklist": [{"forest": c.forest, "cluster": c.cluster, "action": c.action} for c in w.checklist],
                "steps": [
                    {
                        "forest": s.forest,
                        "cluster": s.cluster or None,
                        "role": s.role,
                        "hosts": list(s.hosts),
                        "from": _version(s.from_version),
                        "to": _version(s.to_version),
                    }
                    for s in w.steps
                ],
            }
            for w in response.waves
        ],
        "unplanned": [
            {"host_id": u.host_id, "role": u.role, "version": _version(u.version), "reason": u.reason}
            for u in response.unplanned
        ],
    }


def merge_plan_pages(pages: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The plan_dicts of a walk's pages as the one plan_dict of the whole plan: a wave cut by a
    page end continues on the next page under the same number, and its steps under the same
    (forest, cluster, role, from, to) (domain/plan_pages.py)."""
    waves: list[dict[str, Any]] = []
    unplanned: list[dict[str, Any]] = []
    for page in pages:
        for wave in page["waves"]:
            if not waves or waves[-1]["wave"] != wave["wave"]:
                waves.append({"wave": wave["wave"], "checklist": [], "steps": []})
            merged = waves[-1]
            merged["checklist"].extend(wave["checklist"])
            for step in wave["steps"]:
                last = merged["steps"][-1] if merged["steps"] else None
                if last is not None and _step_key(last) == _step_key(step):
                    last["hosts"].extend(step["hosts"])
                else:
                    merged["steps"].append({**step, "hosts": list(step["hosts"])})
        unplanned.extend(page["unplanned"])
    return {"waves": waves, "unplanned": unplanned}


def _step_key(step: Mapping[str, Any]) -> tuple[Any, ...]:
    return (step["forest"], step["cluster"], step["role"], step["from"], step["to"])
