"""One process reporting many hosts (the spool, the agentless scanner), each host through the
agent's own outbox and run-loop code, so idempotency, retries, fail-over and enrollment are the
same code as for a single agent, not a copy.

Layout: every host has its own outbox in `state_dir/hosts/<host directory>/outbox.sqlite3`, so
its own sequence numbers (the collector applies a sequence once per host) and, with enrollment
on, its own node key. `host_directory(host_id)` names the folder: a readable part of the host id
plus a hash of the exact id, so two ids never share a folder, also on a case-insensitive file
system, and no id can escape `hosts/` or hit a reserved Windows name.

    hosts = HostOutboxes(state_dir, max_changes=config.outbox_max_changes)
    hosts.put(facts, observed_at)          # durable (fsynced) when it returns
    result = hosts.drain(config, links, stop, concurrency=16)
    for outcome in result.outcomes: ...    # per host: delivered, refused, unreachable, ...
    hosts.close()

`drain` sends every host's pending reports, oldest first, with `Runner.drain` (one Runner per
host over the shared collector links): at most `concurrency` hosts at a time. When a host cannot
be served for a reason that is not its own (every collector address failed, or enrollment needs
the operator), the hosts not started yet are left for the next drain (`SKIPPED`) instead of each
waiting out its own deadlines against a collector that is down. A refusal that concerns one host
alone (`Failure.this_host_only`: the collector refuses that host id to us) sets that host aside
for this drain, loudly, and the others carry on; it is tried again on the next drain. Waiting between drains (the
backoff) is the caller's: `DrainResult.failure` says whether to back off.

Thread-safe: `put` may be called from several threads, also while a drain runs; a host's
outbox is open once at a time in this process, and closed when no one uses it (a scanner of
thousands of hosts keeps at most `concurrency` files open).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rmsfleet.agent.config import AgentConfig
from rmsfleet.agent.outbox import OUTBOX_FILE, Outbox, OutboxEntry, OutboxError
from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.runner import (
    EXIT_CONFIG,
    EXIT_ENROLLMENT,
    EXIT_IDENTITY,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STOPPED,
    EXIT_UNREACHABLE,
    Failure,
    Problem,
    Refusal,
    Runner,
)
from rmsfleet.agent.transport import Link, Stopped
from rmsfleet.contract.facts import HostFacts, validate

log = logging.getLogger("rmsfleet.agent")

HOSTS_DIR = "hosts"
DEFAULT_CONCURRENCY = 16
# The readable part of a host folder's name; the hash after it is what makes it unique.
_READABLE_CHARS = 40
_HASH_CHARS = 24  # 96 bits of SHA-256: no two host ids of any real estate share a folder
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def host_directory(host_id: str) -> str:
    """The folder name of `host_id`'s outbox: `<readable part>-<hash>`. The readable part keeps
    only `a-z 0-9 _ -` (lower-cased, anything else becomes `_`), so it is safe on every file
    system, cannot be `..` and (having no dot) is never a reserved Windows device name such as
    `CON.x`; the hash of the exact id makes names collision-free, including ids that differ only
    in case or in characters the readable part replaces."""
    if not host_id:
        raise ValueError("an empty host id")
    readable = _UNSAFE.sub("_", host_id.lower()).strip("_")[:_READABLE_CHARS] or "host"
    digest = hashlib.sha256(host_id.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{readable}-{digest}"


class HostStatus(enum.Enum):
    DELIVERED = "delivered"  # every pending report left the outbox, none refused
    REFUSED = "refused"  # the collector refused at least one report for good (set aside)
    UNREACHABLE = "unreachable"  # no collector address answered; reports kept
    ENROLLMENT = "enrollment"  # enrollment needs the operator (no secret or token, or it was refused); kept
    # The collector refuses this host id to us (PERMISSION_DENIED: another machine holds it, or
    # the certificate does not name it): this host's reports are kept and retried next drain,
    # the other hosts go on.
    IDENTITY = "identity"
    SKIPPED = "skipped"  # not tried in this drain: an earlier host found the collector unusable
    STOPPED = "stopped"  # the stop event was set; reports kept
    ERROR = "error"  # the host's outbox cannot be opened; reports (if any) stay on disk


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """What one drain did for one host. `host_id` is None only for a host whose outbox could not
    be read (its folder is in `directory`)."""

    host_id: str | None
    directory: str
    status: HostStatus
    delivered: int = 0
    refusals: tuple[Refusal, ...] = ()
    pending: int = 0  # reports still in the host's outbox afterwards
    message: str | None = None  # why, for every status but DELIVERED


@dataclass(frozen=True, slots=True)
class DrainResult:
    outcomes: tuple[HostOutcome, ...] = ()
    # The failure that made the drain leave hosts for later (UNREACHABLE or enrollment), if any:
    # the caller backs off before the next drain.
    failure: Failure | None = None
    stopped: bool = False

    def count(self, status: HostStatus) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status is status)

    @property
    def delivered(self) -> int:
        """Reports acknowledged in this drain, all hosts together."""
        return sum(outcome.delivered for outcome in self.outcomes)

    @property
    def pending(self) -> int:
        """Reports still waiting, all hosts that were looked at together."""
        return sum(outcome.pending for outcome in self.outcomes)

    @property
    def exit_code(self) -> int:
        """The agent's exit codes (docs/agent.md) for a run that drains once: 1 stopped, 3 no
        collector reachable, 5 enrollment, 4 a report refused, 2 an outbox unusable, else 0."""
        if self.stopped:
            return EXIT_STOPPED
        if self.failure is not None:
            return self.failure.exit_code
        if any(outcome.status is HostStatus.IDENTITY for outcome in self.outcomes):
            return EXIT_IDENTITY
        if any(outcome.status is HostStatus.REFUSED for outcome in self.outcomes):
            return EXIT_REFUSED
        if any(outcome.status is HostStatus.ERROR for outcome in self.outcomes):
            return EXIT_CONFIG
        return EXIT_OK


@dataclass
class _Open:
    outbox: Outbox
    users: int = 0


@dataclass
class _Progress:
    """Shared by the workers of one drain."""

    halt: threading.Event = field(default_factory=threading.Event)
    failure: Failure | None = None
    link_index: int = 0


class _FactsArriveByPut:
    """The Runner wants a probe; a host of many gets its facts through `put`, never by probing."""

    def read(self) -> HostFacts:
        raise ProbeError("this host's facts arrive through HostOutboxes.put, not a probe")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HostOutboxes:
    """The outboxes of many hosts under `state_dir/hosts/`."""

    def __init__(self, state_dir: Path, *, max_changes: int = 1000, clock: Callable[[], datetime] = _utc_now) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        self.state_dir = state_dir
        self.root = state_dir / HOSTS_DIR
        self.max_changes = max_changes
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        # Host folders that may hold pending reports. Filled by `put`; the first drain also looks
        # at every folder on disk (reports an earlier process left).
        self._dirty: set[str] = set()
        self._looked_on_disk = False
        self._link_index = 0
        try:
            for folder in (state_dir, self.root):
                # 0o700: the outboxes hold node keys, credentials.
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"{self.root}: cannot create the state directory: {exc.strerror or exc}") from exc

    # --- opening --------------------------------------------------------------------------------

    @contextmanager
    def _outbox(self, directory: str) -> Iterator[Outbox]:
        """The host's outbox, opened once however many threads use it; closed after the last."""
        with self._lock:
            handle = self._open.get(directory)
            if handle is None:
                handle = _Open(self._create(directory))
                self._open[directory] = handle
            handle.users += 1
        try:
            yield handle.outbox
        finally:
            with self._lock:
                handle.users -= 1
                if handle.users == 0:
                    del self._open[directory]
                    handle.outbox.close()

    def _create(self, directory: str) -> Outbox:
        folder = self.root / directory
        new = not folder.exists()
        outbox = Outbox.in_state_dir(folder, self.max_changes)
        if new:
            # A crash right after put() returned must not lose the new folder's entry in hosts/:
            # SQLite fsyncs the file, not the directories that name it.
            _fsync_directory(folder)
            _fsync_directory(self.root)
        return outbox

    # --- reports --------------------------------------------------------------------------------

    def put(self, facts: HostFacts, observed_at: datetime) -> OutboxEntry:
        """Store a report in the host's outbox (validated first: InvalidFacts changes nothing).
        On disk and fsynced when this returns; identical facts coalesce into a heartbeat, as in
        the single-host outbox. Raises OutboxError when the outbox cannot be written."""
        validate(facts)
        directory = host_directory(facts.host_id)
        with self._outbox(directory) as outbox:
            entry = outbox.put(facts, observed_at)
        with self._lock:
            self._dirty.add(directory)
        return entry

    def directories(self) -> list[str]:
        """Every host folder on disk, sorted."""
        try:
            return sorted(p.name for p in self.root.iterdir() if (p / OUTBOX_FILE).exists())
        except OSError as exc:
            raise OutboxError(f"{self.root}: cannot list the host outboxes: {exc.strerror or exc}") from exc

    def _may_have_pending(self, directory: str) -> bool:
        """A quick read-only look (no fsync, unlike opening an Outbox): False only when the file
        surely holds no pending report. Anything unusual (a -wal file left by a crash, a damaged
        file) says True, and the drain opens it properly."""
        path = self.root / directory / OUTBOX_FILE
        if path.with_name(OUTBOX_FILE + "-wal").exists():
            return True
        try:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1)
            try:
                row = db.execute("SELECT EXISTS (SELECT 1 FROM pending)").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return True
        return bool(row and row[0])

    def pending_count(self, host_id: str) -> int:
        directory = host_directory(host_id)
        if not (self.root / directory / OUTBOX_FILE).exists():
            return 0
        with self._outbox(directory) as outbox:
            return outbox.pending_count()

    def node_key(self, host_id: str) -> str | None:
        """The node key stored for `host_id` (None before it enrolled)."""
        directory = host_directory(host_id)
        if not (self.root / directory / OUTBOX_FILE).exists():
            return None
        with self._outbox(directory) as outbox:
            return outbox.node_key()

    # --- sending --------------------------------------------------------------------------------

    def drain(
        self,
        config: AgentConfig,
        links: Sequence[Link],
        stop: threading.Event,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> DrainResult:
        """Send every host's pending reports (at most `concurrency` hosts at a time) with the
        single agent's Runner: backoff settings, deadlines, fail-over over `links`, enrollment
        with `config.enroll_secret_file` or `config.enroll_token_file`, refusals set aside.
        Returns each host's outcome; hosts with nothing pending are not listed. Never raises for
        a host's failure."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not links:
            raise ValueError("drain needs at least one collector link")
        with self._lock:
            looked = self._looked_on_disk
            self._looked_on_disk = True
        if not looked:
            found = [directory for directory in self.directories() if self._may_have_pending(directory)]
            with self._lock:
                self._dirty.update(found)
        with self._lock:
            candidates = sorted(self._dirty)
            progress = _Progress(link_index=self._link_index)

        def one(directory: str) -> HostOutcome | None:
            return self._drain_host(directory, config, links, stop, progress)

        if len(candidates) <= 1 or concurrency == 1:
            results = [one(directory) for directory in candidates]
        else:
            with ThreadPoolExecutor(max_workers=min(concurrency, len(candidates)), thread_name_prefix="drain") as pool:
                results = list(pool.map(one, candidates))
        with self._lock:
            self._link_index = progress.link_index
        outcomes = tuple(outcome for outcome in results if outcome is not None)
        return DrainResult(
            outcomes=outcomes,
            failure=progress.failure,
            stopped=any(outcome.status is HostStatus.STOPPED for outcome in outcomes),
        )

    def _drain_host(
        self,
        directory: str,
        config: AgentConfig,
        links: Sequence[Link],
        stop: threading.Event,
        progress: _Progress,
    ) -> HostOutcome | None:
        with self._lock:
            # Taken off first: a put() while this host drains adds it back, so nothing is missed.
            self._dirty.discard(directory)
        try:
            with self._outbox(directory) as outbox:
                return self._send(directory, outbox, config, links, stop, progress)
        except OutboxError as exc:
            with self._lock:
                self._dirty.add(directory)
            log.error("%s", exc)
            return HostOutcome(None, directory, HostStatus.ERROR, message=str(exc))

    def _send(
        self,
        directory: str,
        outbox: Outbox,
        config: AgentConfig,
        links: Sequence[Link],
        stop: threading.Event,
        progress: _Progress,
    ) -> HostOutcome | None:
        pending = outbox.pending()
        if not pending:
            return None
        host_id = pending[-1].facts.host_id
        before = len(pending)

        def outcome(status: HostStatus, message: str | None, runner: Runner | None = None) -> HostOutcome:
            left = outbox.pending_count()
            if left:
                with self._lock:
                    self._dirty.add(directory)
            refusals = tuple(runner.refusals) if runner is not None else ()
            return HostOutcome(
                host_id=host_id,
                directory=directory,
                status=status,
                delivered=max(0, before - left - len(refusals)),
                refusals=refusals,
                pending=left,
                message=message,
            )

        if stop.is_set():
            return outcome(HostStatus.STOPPED, "stopped before this host was sent")
        if progress.halt.is_set():
            reason = progress.failure.message if progress.failure is not None else "an earlier host failed"
            return outcome(HostStatus.SKIPPED, f"left for the next attempt: {reason}")
        runner = Runner(
            config, _FactsArriveByPut(), outbox, links, stop, clock=self._clock, start_at=progress.link_index
        )
        try:
            failure = runner.drain()
        except Stopped:
            return outcome(HostStatus.STOPPED, "stopped before the collector acknowledged", runner)
        # The next hosts start where this one found a collector that answers.
        progress.link_index = runner.link_index
        if failure is not None and failure.this_host_only:
            left = outbox.pending_count()
            log.error(
                "%s; %d report(s) of host %s kept and tried again on the next drain", failure.message, left, host_id
            )
            return outcome(HostStatus.IDENTITY, failure.message, runner)
        if failure is not None:
            if not progress.halt.is_set():
                progress.failure = failure
                progress.halt.set()
            status = HostStatus.UNREACHABLE if failure.problem is Problem.UNREACHABLE else HostStatus.ENROLLMENT
            return outcome(status, failure.message, runner)
        if runner.refusals:
            reasons = "; ".join(refusal.reason for refusal in runner.refusals)
            return outcome(
                HostStatus.REFUSED, f"the collector refused {len(runner.refusals)} report(s): {reasons}", runner
            )
        return outcome(HostStatus.DELIVERED, None, runner)

    def close(self) -> None:
        """Close outboxes still open (only while a put or drain runs in another thread)."""
        with self._lock:
            for handle in self._open.values():
                handle.outbox.close()
            self._open.clear()

    def __enter__(self) -> HostOutboxes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_directory(path: Path) -> None:
    if os.name != "posix":
        # NTFS journals its metadata; Windows cannot open a directory for fsync.
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


__all__ = [
    "DEFAULT_CONCURRENCY",
    "EXIT_ENROLLMENT",
    "EXIT_UNREACHABLE",
    "DrainResult",
    "HostOutboxes",
    "HostOutcome",
    "HostStatus",
    "host_directory",
]
