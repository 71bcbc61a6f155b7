"""The query commands' side of the query service: the channel (the loopback rule of
docs/security.md), paging through lists, and the answers as the plain dicts of query_convert,
hosts and violations with how far evaluation had got (the watermark)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from rmsfleet.collector import query_convert as qv
from rmsfleet.contract.address import AddressError, is_loopback_host, parse_address
from rmsfleet.v1 import query_pb2, query_pb2_grpc

M = TypeVar("M")
T = TypeVar("T")


class ChannelError(ValueError):
    """The options cannot make a channel; one line naming the option."""


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    address: str
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False


def open_channel(options: ChannelOptions) -> grpc.Channel:
    """Plaintext to a loopback collector unless TLS files are given; TLS to any other unless
    `insecure` (the collector's loopback rule, docs/security.md)."""
    tls_files = (options.tls_ca, options.tls_cert, options.tls_key)
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ChannelError("--tls-cert and --tls-key go together")
    if options.insecure and any(tls_files):
        raise ChannelError("--insecure turns TLS off, but --tls-ca/--tls-cert/--tls-key are also given")
    try:
        host = parse_address(options.address).host
    except AddressError as exc:
        raise ChannelError(f"--collector: expected {exc}, got {options.address[:80]!r}") from None
    if options.insecure or (not any(tls_files) and is_loopback_host(host)):
        return grpc.insecure_channel(options.address)

    def read(path: str | None, flag: str) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ChannelError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(options.tls_ca, "--tls-ca"),
        private_key=read(options.tls_key, "--tls-key"),
        certificate_chain=read(options.tls_cert, "--tls-cert"),
    )
    return grpc.secure_channel(options.address, credentials)


def pages(fetch: Callable[[str], Any], items: Callable[[Any], list[M]]) -> Iterator[M]:
    """Yield every item of a paged list, one request per page."""
    token = ""
    while True:
        response = fetch(token)
        yield from items(response)
        token = response.next_page_token
        if not token:
            return


def _responses(fetch: Callable[[str], Any]) -> Iterator[Any]:
    """Every response of a paged list, one request per page."""
    token = ""
    while True:
        response = fetch(token)
        yield response
        token = response.next_page_token
        if not token:
            return


# Walks of the plan's pages started before giving up on a fleet whose facts keep changing.
PLAN_WALKS = 3


@dataclass(frozen=True, slots=True)
class Evaluated(Generic[T]):
    """An answer and how far evaluation had got when the collector gave it
    (query_convert.evaluation_dict). For a paged list it is the first page's mark: the later
    pages were read after it, so the whole answer reflects at least that much."""

    answer: T
    evaluation: dict[str, Any]


class QueryClient:
    """Each method asks the collector and returns the JSON form of the answer; gRPC errors
    (grpc.RpcError) and answers this release cannot read (query_convert.UnreadableAnswer) pass up."""

    def __init__(self, channel: grpc.Channel, timeout: float) -> None:
        self.stub = query_pb2_grpc.QueryServiceStub(channel)
        self.timeout = timeout

    def _deadline(self, wait: float | None) -> float:
        """A call that asks the collector to wait for evaluation may take that much longer."""
        return self.timeout + (wait or 0.0)

    def _evaluated_pages(
        self, request: Any, call: Callable[..., Any], items: Callable[[Any], list[M]], wait: float | None
    ) -> Evaluated[list[M]]:
        """Every item of a paged hosts or violations list; only the first page asks to wait for
        evaluation (`wait` seconds at most, None: not at all), and its watermark is the answer's."""
        qv.ask_to_wait(request, wait)
        marks: list[query_pb2.EvaluationWatermark] = []

        def fetch(token: str) -> Any:
            request.page_token = token
            response = call(request, timeout=self._deadline(None if marks else wait))
            if not marks:
                marks.append(response.evaluation)
                qv.ask_to_wait(request, None)
            return response

        found = list(pages(fetch, items))
        return Evaluated(found, qv.evaluation_dict(marks[0]))

    def hosts(
        self,
        role: str | None,
        version: str | None,
        cluster: str | None,
        forest: str | None,
        stale_only: bool,
        wait: float | None = None,
    ) -> Evaluated[list[dict[str, Any]]]:
        """`wait`: seconds the collector may first wait for evaluation to cover every report it
        committed before the call (None: answer at once)."""
        request = qv.hosts_request(role, version, cluster, forest, stale_only)
        found = self._evaluated_pages(request, self.stub.ListHosts, lambda r: list(r.hosts), wait)
        return Evaluated([qv.host_dict(h) for h in found.answer], found.evaluation)

    def host(self, host_id: str, wait: float | None = None) -> Evaluated[dict[str, Any]]:
        request = query_pb2.GetHostRequest(host_id=host_id)
        qv.ask_to_wait(request, wait)
        response = self.stub.GetHost(request, timeout=self._deadline(wait))
        return Evaluated(qv.host_detail_dict(response), qv.evaluation_dict(response.evaluation))

    def violations(
        self, policy: str | None, severity: str | None, state: str, since: datetime | None, wait: float | None = None
    ) -> Evaluated[list[dict[str, Any]]]:
        request = qv.violations_request(policy, severity, state, since)
        found = self._evaluated_pages(request, self.stub.ListViolations, lambda r: list(r.violations), wait)
        return Evaluated([qv.violation_dict(v) for v in found.answer], found.evaluation)

    def clusters(self) -> list[dict[str, Any]]:
        request = query_pb2.ListClustersRequest()

        def fetch(token: str) -> query_pb2.ListClustersResponse:
            request.page_token = token
            return self.stub.ListClusters(request, timeout=self.timeout)

        return [qv.cluster_dict(c) for c in pages(fetch, lambda r: list(r.clusters))]

    def exemptions(self) -> list[dict[str, Any]]:
        request = query_pb2.ListExemptionsRequest()

        def fetch(token: str) -> query_pb2.ListExemptionsResponse:
            request.page_token = token
            return self.stub.ListExemptions(request, timeout=self.timeout)

        return [qv.exemption_dict(e) for e in pages(fetch, lambda r: list(r.exemptions))]

    def plan(
        self, max_unavailable: float | None, forest: str | None, page_size: int = qv.PLAN_MAX_PAGE_SIZE
    ) -> dict[str, Any]:
        """The whole plan, page after page. Every page of a walk comes from one plan; when the
        fleet's facts changed mid-walk the collector no longer has it (ABORTED) and the walk
        starts again, at most PLAN_WALKS times."""
        request = qv.plan_request(max_unavailable, forest, page_size)

        def fetch(token: str) -> query_pb2.GetPlanResponse:
            request.page_token = token
            return self.stub.GetPlan(request, timeout=self.timeout)

        for walk in range(1, PLAN_WALKS + 1):
            try:
                return qv.merge_plan_pages(qv.plan_dict(page) for page in _responses(fetch))
            except grpc.RpcError as exc:
                if walk == PLAN_WALKS or exc.code() is not grpc.StatusCode.ABORTED:
                    raise
        raise AssertionError("unreachable")
