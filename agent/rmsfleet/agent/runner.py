"""The agent's run loop: probe -> outbox -> collector, with enrollment, retries and fail-over.

Every report goes into the durable outbox before it is sent and leaves it only when a collector
acknowledges it (or refuses it for good: then it is set aside, never retried). Pending reports
go out oldest first, so the collector sees every change in order.

What each failure does (backoff.classify_status):
- RETRY (UNAVAILABLE, DEADLINE_EXCEEDED, ...): the report stays; the next collector address is
  tried at once; when every address failed in a row, wait Backoff.next_delay() and go round again.
- REENROLL (UNAUTHENTICATED): forget the node key, enroll again with the enrollment secret, send
  again. Without a secret the report stays and the agent says what to configure.
- IDENTITY (PERMISSION_DENIED): the collector does not let this agent speak for the host id
  (another machine holds it, or the client certificate does not name it). The report stays; the
  agent tries to enroll (when it has a secret; the key it has is kept unless a new one is issued),
  and otherwise logs one ERROR line saying why and what settles it, and retries with backoff.
  Never a silent set-aside: every later report of the host would go the same way.
- REFUSED (INVALID_ARGUMENT, FAILED_PRECONDITION, ...): set the report aside with the collector's
  reason, log it, go on with the next.

The outbox's own storage failing (locked by another process, disk full: OutboxStorageError) is
logged and retried with its own backoff; nothing is lost (a report acknowledged but not yet
removed is sent again and applied once). A drain reads the pending reports once and sends them
in order, removing each as it is acknowledged.

`run_once` makes one pass (each address at most once per report) and returns an exit code;
`run_forever` probes every interval until `stop` is set. Both leave unsent reports in the outbox.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rmsfleet.agent import __version__
from rmsfleet.agent.backoff import Backoff, Outcome, classify_status, jittered_interval
from rmsfleet.agent.config import AgentConfig
from rmsfleet.agent.enrollment import EnrollCredential, EnrollFileError, Kind, read_credential
from rmsfleet.agent.outbox import Outbox, OutboxEntry, OutboxStorageError
from rmsfleet.agent.probe import Probe, ProbeError
from rmsfleet.agent.transport import Link, RpcFailure, Stopped
from rmsfleet.contract.wire import report_request

log = logging.getLogger("rmsfleet.agent")

EXIT_OK = 0
EXIT_STOPPED = 1
EXIT_CONFIG = 2  # a bad facts file, probe or configuration, or an outbox that cannot be used
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4
EXIT_ENROLLMENT = 5
EXIT_IDENTITY = 6  # the collector refuses this host id to this agent (PERMISSION_DENIED)


class Problem(enum.Enum):
    UNREACHABLE = "unreachable"  # retryable: wait and try again
    NEEDS_ENROLLMENT = "needs-enrollment"  # the collector wants a node key and we cannot get one
    ENROLLMENT_REFUSED = "enrollment-refused"  # the collector refused the enrollment secret or token
    STORAGE = "storage"  # the outbox could not be read or written: wait and try again
    IDENTITY_REFUSED = "identity-refused"  # the collector refuses this host id to us: retry with backoff


@dataclass(frozen=True, slots=True)
class Failure:
    problem: Problem
    message: str
    # UNREACHABLE because the collector answered RESOURCE_EXHAUSTED (its per-address limit of
    # calls in flight, the Enroll rate limit, a full ingest queue): it is up, and asks to retry
    # later. `run_once` waits and retries such a failure within its deadline.
    busy: bool = False

    @property
    def exit_code(self) -> int:
        if self.problem is Problem.UNREACHABLE:
            return EXIT_UNREACHABLE
        if self.problem is Problem.STORAGE:
            return EXIT_CONFIG
        if self.problem is Problem.IDENTITY_REFUSED:
            return EXIT_IDENTITY
        return EXIT_ENROLLMENT

    @property
    def this_host_only(self) -> bool:
        """True when the failure concerns this host id alone (a sender of many hosts goes on with
        the others); False when it concerns the collector or the configuration."""
        return self.problem is Problem.IDENTITY_REFUSED


@dataclass(frozen=True, slots=True)
class Refusal:
    """A report the collector refused for good (set aside)."""

    sequence: int
    address: str
    reason: str


def _credential_refused(address: str, credential: EnrollCredential, failure: RpcFailure) -> str:
    """The one line for an UNAUTHENTICATED Enroll: the secret is not one of the collector's, or
    the token is unknown, expired or revoked (the collector's details say which)."""
    if credential.kind is Kind.TOKEN:
        return (
            f"the collector at {address} refused the enrollment token in {credential.file}: {failure.details} "
            "(put a valid token with the scanner role in that file: rmsfleet-collector tokens create NAME "
            "--role scanner)"
        )
    return (
        f"the collector at {address} refused the enrollment secret from {credential.file} ({failure}): "
        "put a secret the collector accepts in that file"
    )


def _busy(failure: RpcFailure) -> bool:
    return failure.code.upper().removeprefix("STATUSCODE.") == "RESOURCE_EXHAUSTED"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Runner:
    def __init__(
        self,
        config: AgentConfig,
        probe: Probe,
        outbox: Outbox,
        links: Sequence[Link],
        stop: threading.Event,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        start_at: int = 0,
    ) -> None:
        if not links:
            raise ValueError("the runner needs at least one collector link")
        self.config = config
        self.probe = probe
        self.outbox = outbox
        self.links = list(links)
        self.stop = stop
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._monotonic = monotonic
        # The first address is the preferred one; a retryable failure moves on to the next (round
        # robin), and the agent stays with whichever answers. To spread a fleet over replicas,
        # give hosts the addresses in different orders, or one address behind a load balancer.
        # `start_at` lets a sender of many hosts (multihost.py) begin where the last host's
        # runner found a collector that answers.
        self._index = start_at % len(self.links)
        self.backoff = Backoff(
            config.sender.initial_backoff,
            config.sender.max_backoff,
            config.sender.backoff_multiplier,
            config.jitter,
            self._rng,
        )
        # The outbox's storage failing is retried on its own schedule (same settings).
        self.storage_backoff = Backoff(
            config.sender.initial_backoff,
            config.sender.max_backoff,
            config.sender.backoff_multiplier,
            config.jitter,
            self._rng,
        )
        self.refusals: list[Refusal] = []
        self._without_enrollment_noted = False

    @property
    def link(self) -> Link:
        return self.links[self._index]

    @property
    def link_index(self) -> int:
        """The position in `links` of the address this runner sends to now."""
        return self._index

    def _fail_over(self) -> None:
        self._index = (self._index + 1) % len(self.links)

    # --- one report ---------------------------------------------------------------------------

    def observe(self) -> OutboxEntry:
        """Read the facts and put them in the outbox. Raises ProbeError."""
        facts = self.probe.read()
        before = self.outbox.pending_count()
        entry = self.outbox.put(facts, self._clock())
        if self.outbox.pending_count() > before:
            log.debug("queued report %d for %s", entry.sequence, facts.host_id)
        return entry

    def _node_key(self, host_id: str) -> str | Failure:
        """The node key to send for `host_id`: the stored one, or a fresh one from enrolling when
        an enrollment secret or token is configured and no key for this host is stored ("" = none)."""
        key = self.outbox.node_key()
        if not self.config.enrolls:
            return key or ""
        if key and self.outbox.node_key_host() in (None, host_id):
            return key
        return self._enroll(host_id)

    def _enroll(self, host_id: str) -> str | Failure:
        """Enroll `host_id` and keep the new key; on a refusal the key stored before (if any) is
        kept, so a refusal that an operator lifts later costs nothing ("" = no enrollment here)."""
        try:
            credential = read_credential(self.config.enroll_secret_file, self.config.enroll_token_file)
        except EnrollFileError as exc:
            return Failure(Problem.NEEDS_ENROLLMENT, str(exc))
        assert credential is not None, "_enroll runs only with a secret or token configured"
        link = self.link
        try:
            key = link.enroll(host_id, credential, self.stop)
        except RpcFailure as failure:
            if failure.code == "UNIMPLEMENTED":
                if not self._without_enrollment_noted:
                    log.info(
                        "the collector at %s runs without enrollment (%s): reporting without a node key",
                        link.address,
                        failure.details,
                    )
                    self._without_enrollment_noted = True
                return ""
            if failure.code == "UNAUTHENTICATED":
                return Failure(Problem.ENROLLMENT_REFUSED, _credential_refused(link.address, credential, failure))
            if failure.code == "PERMISSION_DENIED":
                # The host id already holds a key (the re-enrollment rule, also for a scanner's
                # hosts), the certificate does not name it, or the token's role is too small.
                what = (
                    f"this machine as host {host_id}"
                    if credential.kind is Kind.SECRET
                    else f"host {host_id} with {credential.describe()}"
                )
                return Failure(
                    Problem.IDENTITY_REFUSED,
                    f"the collector at {link.address} refused to enroll {what}: {failure.details}",
                )
            if classify_status(failure.code) is Outcome.RETRY:
                return Failure(
                    Problem.UNREACHABLE,
                    f"cannot reach the collector at {link.address} to enroll: {link.explain(failure)}",
                    busy=_busy(failure),
                )
            return Failure(
                Problem.ENROLLMENT_REFUSED,
                f"the collector at {link.address} refused to enroll host {host_id}: {failure}",
            )
        self.outbox.save_node_key(key, host_id)
        log.info("enrolled host %s with the collector at %s", host_id, link.address)
        return key

    def deliver(self, entry: OutboxEntry, *, reenrolled: bool = False) -> Failure | None:
        """Send one pending report. None: it left the outbox (acknowledged, or refused and set
        aside). A Failure: it stays. Raises Stopped."""
        host_id = entry.facts.host_id
        key = self._node_key(host_id)
        if isinstance(key, Failure):
            return key
        link = self.link
        request = report_request(entry.facts, entry.observed_at, entry.sequence, __version__, key)
        try:
            response = link.report(request, self.stop)
        except RpcFailure as failure:
            outcome = classify_status(failure.code)
            if outcome is Outcome.REENROLL:
                if not self.config.enrolls:
                    return Failure(
                        Problem.NEEDS_ENROLLMENT,
                        f"the collector at {link.address} requires enrollment ({failure}): configure the enrollment "
                        "secret (--enroll-secret-file FILE, or [enroll] secret_file) or, for a sender of many hosts, "
                        "a scanner token (--enroll-token-file FILE, or [enroll] token_file)",
                    )
                if reenrolled:
                    # A key fresh from enrolling was refused too: not something to loop on.
                    return Failure(
                        Problem.UNREACHABLE, f"the collector at {link.address} refused a fresh node key: {failure}"
                    )
                log.warning("the collector at %s refused the node key (%s): enrolling again", link.address, failure)
                self.outbox.clear_node_key()
                return self.deliver(entry, reenrolled=True)
            if outcome is Outcome.IDENTITY:
                if self.config.enrolls and not reenrolled:
                    # A new key settles it when an operator allowed this host to enroll again;
                    # otherwise the enrollment's refusal says why, and the old key is kept.
                    enrolled = self._enroll(host_id)
                    if isinstance(enrolled, Failure):
                        return enrolled
                    if enrolled:
                        return self.deliver(entry, reenrolled=True)
                return Failure(
                    Problem.IDENTITY_REFUSED,
                    f"the collector at {link.address} refused report {entry.sequence} of host {host_id}: "
                    f"{failure.details}",
                )
            if outcome is Outcome.REFUSED:
                reason = str(failure)
                log.error(
                    "the collector at %s refused report %d for host %s: %s; it is set aside and not sent again",
                    link.address,
                    entry.sequence,
                    host_id,
                    reason,
                )
                self.outbox.set_aside(entry.sequence, reason)
                self.refusals.append(Refusal(entry.sequence, link.address, reason))
                return None
            return Failure(
                Problem.UNREACHABLE,
                f"cannot reach the collector at {link.address}: {link.explain(failure)}",
                busy=_busy(failure),
            )
        self.outbox.ack(entry.sequence)
        self.backoff.reset()
        log.info(
            "reported %s (sequence %d) to %s: %s",
            host_id,
            entry.sequence,
            link.address,
            "applied" if response.applied else "already applied",
        )
        return None

    def drain(self) -> Failure | None:
        """Send pending reports, oldest first, until none is left (None) or one cannot be sent
        now (its Failure). The outbox is read once per pass, not once per report, and each report
        leaves it as soon as it is acknowledged. Retryable failures move to the next address at
        once; only when every address failed in a row does this give up. A failing outbox is a
        STORAGE failure. Raises Stopped."""
        failed_in_a_row = 0
        try:
            while True:
                # A pass sends everything read at its start; the next read finds only reports
                # queued meanwhile (none, when the run loop is the only writer).
                pending = self.outbox.pending()
                if not pending:
                    return None
                for entry in pending:
                    while True:
                        if self.stop.is_set():
                            raise Stopped()
                        failure = self.deliver(entry)
                        if failure is None:
                            failed_in_a_row = 0
                            break
                        if failure.problem is not Problem.UNREACHABLE:
                            return failure
                        failed_in_a_row += 1
                        self._fail_over()
                        if failed_in_a_row >= len(self.links):
                            return failure
                        log.warning("%s; trying %s", failure.message, self.link.address)
        except OutboxStorageError as exc:
            return Failure(Problem.STORAGE, str(exc))

    def _pending_count(self) -> str:
        """For log lines: the number of pending reports, or why it is not known."""
        try:
            return str(self.outbox.pending_count())
        except OutboxStorageError:
            return "an unknown number of"

    # --- the two modes ------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        """Wait until `seconds` passed or `stop` is set, waking twice a second: a signal the
        kernel hands to another thread runs its Python handler only when the main thread gets
        control again."""
        deadline = self._monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - self._monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, 0.5))

    def run_once(self) -> tuple[int, str | None]:
        """Read, queue, send everything pending. Returns (exit code, the one line to print on
        failure). The report made now must be acknowledged for exit 0."""
        try:
            entry = self.observe()
        except (ProbeError, OutboxStorageError) as exc:
            return EXIT_CONFIG, str(exc)
        try:
            failure = self._drain_within_deadline()
        except Stopped:
            return EXIT_STOPPED, "stopped before the collector acknowledged the report"
        if failure is not None:
            return failure.exit_code, failure.message
        for refusal in self.refusals:
            if refusal.sequence == entry.sequence:
                return EXIT_REFUSED, f"the collector at {refusal.address} refused the report: {refusal.reason}"
        return EXIT_OK, None

    def _drain_within_deadline(self) -> Failure | None:
        """drain(), again after a backoff while every address answered busy (RESOURCE_EXHAUSTED)
        and the sender's deadline (--deadline, counted from the first busy answer) is not over:
        a busy collector is up and asks to be retried, unlike one that does not answer."""
        failure = self.drain()
        until = self._monotonic() + self.config.sender.rpc_deadline_seconds
        while failure is not None and failure.busy:
            left = until - self._monotonic()
            if left <= 0:
                return failure
            delay = min(self.backoff.next_delay(), left)
            log.warning(
                "%s; the collector is busy: trying again in %.1f s (for at most %.1f s more)",
                failure.message,
                delay,
                left,
            )
            self._sleep(delay)
            if self.stop.is_set():
                raise Stopped()
            failure = self.drain()
        return failure

    def run_forever(self) -> int:
        """Probe every interval (jittered), send, back off on failures; until `stop` is set.
        Returns 0: stopping is not a failure, and unsent reports stay in the outbox."""
        next_probe = self._monotonic()
        interval = self.config.interval_seconds
        try:
            while not self.stop.is_set():
                if self._monotonic() >= next_probe:
                    try:
                        self.observe()
                        self.storage_backoff.reset()
                    except ProbeError as exc:
                        log.error("cannot read this host's facts: %s", exc)
                    except OutboxStorageError as exc:
                        # The probe runs again after the wait: the newest facts are what count.
                        delay = self.storage_backoff.next_delay()
                        log.error("cannot queue this host's report: %s; trying again in %.1f s", exc, delay)
                        self._sleep(delay)
                        continue
                    next_probe = self._monotonic() + jittered_interval(interval, self.config.jitter, self._rng)
                failure = self.drain()
                if failure is None:
                    self.storage_backoff.reset()
                    self._sleep(max(0.0, next_probe - self._monotonic()))
                    continue
                if failure.problem is Problem.STORAGE:
                    delay = self.storage_backoff.next_delay()
                    log.error(
                        "%s; reports stay in the outbox (one acknowledged meanwhile is sent again and applied once), "
                        "next attempt in %.1f s",
                        failure.message,
                        delay,
                    )
                elif failure.problem is Problem.IDENTITY_REFUSED:
                    # Loud (ERROR, every attempt) and retried: an operator settles it, and the
                    # reports wait for that instead of being set aside.
                    delay = self.backoff.next_delay()
                    log.error(
                        "%s; %s report(s) kept in the outbox, next attempt in %.1f s",
                        failure.message,
                        self._pending_count(),
                        delay,
                    )
                elif failure.problem is Problem.UNREACHABLE:
                    delay = self.backoff.next_delay()
                    log.warning(
                        "%s; %s report(s) kept in the outbox, next attempt in %.1f s",
                        failure.message,
                        self._pending_count(),
                        delay,
                    )
                else:
                    # Enrollment problems need an operator; retry slowly meanwhile (the secret
                    # file is read again on each attempt).
                    delay = self.config.sender.max_backoff
                    log.error(
                        "%s; %s report(s) kept in the outbox, next attempt in %.1f s",
                        failure.message,
                        self._pending_count(),
                        delay,
                    )
                self._sleep(delay)
        except Stopped:
            pass
        pending = self._pending_count()
        log.info("stopped%s", f"; {pending} report(s) kept in the outbox for the next start" if pending != "0" else "")
        return EXIT_OK
