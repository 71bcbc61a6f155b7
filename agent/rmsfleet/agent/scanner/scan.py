"""One scan: read every target (at most `concurrency` at a time), put each one's facts into its own
outbox, then send them with the agent's multi-host sender.

Reading a target is the scanner's only own work: open it remotely (remote.py: SMB, MS-RRP, the
admin shares), read it with the ONE mapping the local probe uses too
(probe/documented.py: `read_documented_host`), and turn what went wrong into an Outcome the
summary counts. Everything after that (durable outbox, sequence numbers, enrollment and node
keys per host, retries, fail-over, refusals) is the agent's code through multihost.py, not a
copy of it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from rmsfleet.agent.config import AgentConfig
from rmsfleet.agent.multihost import DrainResult, HostOutboxes, HostStatus
from rmsfleet.agent.outbox import OutboxError
from rmsfleet.agent.probe.base import ProbeAccessDenied, ProbeError
from rmsfleet.agent.probe.documented import DocumentedHost, HostIdentity, HostSources, read_documented_host
from rmsfleet.agent.probe.documented import HostStatus as MappingStatus
from rmsfleet.agent.probe.files import FileReader
from rmsfleet.agent.probe.registry import RegistryReader
from rmsfleet.agent.probe.version_resource import VersionResourceReader
from rmsfleet.agent.scanner.remote import Credentials, RemoteOptions, ScanFailure, ScanReason, Target
from rmsfleet.agent.scanner.settings import TargetSettings
from rmsfleet.agent.scanner.targets import ListedTarget
from rmsfleet.agent.transport import Link
from rmsfleet.contract.facts import HostFacts, InvalidFacts

log = logging.getLogger("rmsfleet.scan")


class Outcome(enum.Enum):
    """What reading one target gave. Stable values: printed, counted, in --json."""

    REPORTED = "reported"  # facts, every version mapped
    VERSION_UNKNOWN = "version-unknown"  # facts reported, but a version no rule maps (a note says which rule to add)
    RMS_NOT_FOUND = "rms-not-found"  # no RMS server or client: counted, nothing reported
    CLUSTER_UNKNOWN = "cluster-unknown"  # an RMS server whose cluster nothing names: not reported
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    ACCESS_DENIED = "access-denied"
    GUEST_ONLY = "guest-only"
    REMOTE_REGISTRY_OFF = "remote-registry-off"
    SMB1_ONLY = "smb1-only"
    PROTOCOL = "protocol"
    UNREADABLE = "unreadable"  # a documented value the mapping cannot use (malformed)
    ERROR = "error"  # anything else (a bug): one line, the traceback only at --log-level DEBUG

    @property
    def has_facts(self) -> bool:
        return self in (Outcome.REPORTED, Outcome.VERSION_UNKNOWN)

    @property
    def is_failure(self) -> bool:
        """A target that needs the operator: not read, or read with a gap (exit code 1)."""
        return self not in (Outcome.REPORTED, Outcome.RMS_NOT_FOUND)


_FROM_REASON = {
    ScanReason.UNREACHABLE: Outcome.UNREACHABLE,
    ScanReason.TIMEOUT: Outcome.TIMEOUT,
    ScanReason.ACCESS_DENIED: Outcome.ACCESS_DENIED,
    ScanReason.GUEST_ONLY: Outcome.GUEST_ONLY,
    ScanReason.REMOTE_REGISTRY_OFF: Outcome.REMOTE_REGISTRY_OFF,
    ScanReason.SMB1_ONLY: Outcome.SMB1_ONLY,
    ScanReason.PROTOCOL: Outcome.PROTOCOL,
}
_FROM_MAPPING = {
    MappingStatus.REPORTED: Outcome.REPORTED,
    MappingStatus.VERSION_UNKNOWN: Outcome.VERSION_UNKNOWN,
    MappingStatus.RMS_NOT_FOUND: Outcome.RMS_NOT_FOUND,
    MappingStatus.CLUSTER_UNKNOWN: Outcome.CLUSTER_UNKNOWN,
}


class Delivery(enum.Enum):
    """What became of a target's report after the scan."""

    DELIVERED = "delivered"  # the collector acknowledged it
    QUEUED = "queued"  # kept in the target's outbox: sent by the next run
    REFUSED = "refused"  # the collector refused it for good (set aside in the outbox)


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: ListedTarget
    outcome: Outcome
    message: str | None = None
    notes: tuple[str, ...] = ()
    readings: tuple[tuple[str, str], ...] = ()
    facts: HostFacts | None = None
    dialect: str | None = None
    seconds: float = 0.0
    delivery: Delivery | None = None
    delivery_message: str | None = None


class RemoteSources(Protocol):
    """What an opened host offers (remote.RemoteHost)."""

    registry: RegistryReader
    files: FileReader
    versions: VersionResourceReader

    @property
    def dialect(self) -> str: ...


# Opens a target (remote.open_remote_host); the seam a test replaces with recorded sources.
Opener = Callable[[Target, Credentials, RemoteOptions], AbstractContextManager[Any]]


def remote_options(settings: TargetSettings) -> RemoteOptions:
    return RemoteOptions(
        timeout=settings.timeout,
        smb1_allowed=settings.smb.allow_smb1,
        start_remote_registry=settings.smb.start_remote_registry,
        system_drive_share=settings.smb.system_drive_share,
    )


def identity_of(target: ListedTarget, settings: TargetSettings) -> HostIdentity:
    """The host is who it was listed as (never what SMB or the registry claim: a Samba, a clone or
    a renamed host would say otherwise). The forest is configured (checked before scanning)."""
    assert settings.forest is not None
    return HostIdentity(host_id=target.name, hostname=target.name.lower(), forest=settings.forest)


def read_target(
    target: ListedTarget, settings: TargetSettings, credentials: Credentials, opener: Opener
) -> TargetResult:
    """Read one target. Never raises: every failure is an Outcome with a one-line message."""
    started = time.monotonic()

    def result(outcome: Outcome, message: str | None = None, **more: Any) -> TargetResult:
        return TargetResult(target, outcome, message, seconds=time.monotonic() - started, **more)

    remote = Target(target.name, target.address, target.port)
    try:
        with opener(remote, credentials, remote_options(settings)) as host:
            sources = HostSources(registry=host.registry, files=host.files, versions=host.versions)
            documented: DocumentedHost = read_documented_host(
                sources, settings.documented, identity_of(target, settings)
            )
            dialect = str(host.dialect)
    except ScanFailure as failure:
        return result(_FROM_REASON.get(failure.reason, Outcome.PROTOCOL), failure.message)
    except ProbeAccessDenied as exc:
        return result(Outcome.ACCESS_DENIED, str(exc))
    except (ProbeError, InvalidFacts) as exc:
        return result(Outcome.UNREADABLE, str(exc))
    except Exception as exc:
        # A bug or a library error nobody mapped: one line for the operator, the traceback for
        # whoever debugs it.
        log.debug("reading %s failed", target.name, exc_info=True)
        text = " ".join(str(exc).split()) or "no details"
        return result(Outcome.ERROR, f"{type(exc).__name__}: {text}")
    outcome = _FROM_MAPPING.get(documented.status, Outcome.ERROR)
    message = documented.notes[0] if documented.notes and outcome is not Outcome.REPORTED else None
    return result(
        outcome,
        message,
        notes=documented.notes,
        readings=documented.readings,
        facts=documented.facts if outcome.has_facts else None,
        dialect=dialect,
    )


@dataclass
class ScanRun:
    """The results of one scan, in the order the targets were listed."""

    results: list[TargetResult] = field(default_factory=list)
    drain: DrainResult | None = None
    stopped: bool = False
    outbox_error: str | None = None


Progress = Callable[[int, int, TargetResult], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def scan(
    targets: Sequence[tuple[ListedTarget, TargetSettings]],
    credentials: Credentials,
    outboxes: HostOutboxes,
    *,
    opener: Opener,
    concurrency: int,
    stop: threading.Event,
    progress: Progress | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> ScanRun:
    """Read every target, at most `concurrency` at a time; queue each one's facts in its outbox as
    soon as they are read (durable before the next target is counted). Returns when every target
    was read or `stop` was set (targets not started then are left out)."""
    run = ScanRun()
    by_index: dict[int, TargetResult] = {}
    lock = threading.Lock()
    total = len(targets)

    def one(index: int) -> None:
        target, settings = targets[index]
        if stop.is_set():
            return
        outcome = read_target(target, settings, credentials, opener)
        if outcome.facts is not None:
            try:
                outboxes.put(outcome.facts, clock())
            except (OutboxError, InvalidFacts) as exc:
                outcome = TargetResult(
                    target, Outcome.ERROR, f"cannot queue the report: {exc}", seconds=outcome.seconds
                )
        _log_result(outcome)
        with lock:
            by_index[index] = outcome
            done = len(by_index)
        if progress is not None:
            progress(done, total, outcome)

    workers = max(1, min(concurrency, total))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        pending: set[Future[None]] = set()
        queue = iter(range(total))
        # Submit as slots free up rather than all at once: a stop then leaves the rest unstarted.
        for index in _take(queue, workers):
            pending.add(pool.submit(one, index))
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()
                if not stop.is_set():
                    for index in _take(queue, 1):
                        pending.add(pool.submit(one, index))
    run.results = [by_index[index] for index in sorted(by_index)]
    run.stopped = stop.is_set() and len(by_index) < total
    return run


def _take(queue: Iterable[int], count: int) -> list[int]:
    taken: list[int] = []
    for index in queue:
        taken.append(index)
        if len(taken) == count:
            break
    return taken


def _log_result(result: TargetResult) -> None:
    name = result.target.describe()
    if result.outcome is Outcome.REPORTED:
        log.info("%s: read (%s, %.1f s)", name, result.dialect, result.seconds)
    elif result.outcome is Outcome.RMS_NOT_FOUND:
        log.info("%s: no RMS server or client", name)
    else:
        message = result.message or ""
        if not message.startswith(result.target.name):
            message = f"{name}: {message}"
        log.warning("%s: %s", result.outcome.value, message)
    for note in result.notes:
        log.info("%s: %s", name, note)


def deliver(
    run: ScanRun,
    outboxes: HostOutboxes,
    config: AgentConfig,
    links: Sequence[Link],
    stop: threading.Event,
    *,
    concurrency: int,
) -> None:
    """Send every pending report (this scan's and any an earlier run left) with the agent's
    multi-host sender, and note on each result what became of its report."""
    drain = outboxes.drain(config, links, stop, concurrency=concurrency)
    run.drain = drain
    by_host = {outcome.host_id: outcome for outcome in drain.outcomes if outcome.host_id is not None}
    for position, result in enumerate(run.results):
        if result.facts is None:
            continue
        outcome = by_host.get(result.facts.host_id)
        if outcome is None:
            delivery, message = Delivery.QUEUED, "not sent in this run"
        elif outcome.status is HostStatus.DELIVERED:
            delivery, message = Delivery.DELIVERED, None
        elif outcome.status is HostStatus.REFUSED:
            reasons = "; ".join(refusal.reason for refusal in outcome.refusals)
            delivery, message = Delivery.REFUSED, reasons or outcome.message
        else:
            delivery, message = Delivery.QUEUED, outcome.message
        run.results[position] = replace(result, delivery=delivery, delivery_message=message)
