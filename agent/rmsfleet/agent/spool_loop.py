"""`rmsfleet-agent spool`: passes over the spool folder (spool.py) alternating with drains of
the host outboxes (multihost.py), with the single agent's backoff, exit codes and log lines.

- The service (`run_forever`): every `poll_seconds` a pass takes settled files into their
  outboxes, then pending reports are sent. Taking files goes on while the collector is away
  (the outboxes are as durable as the folder); only sending backs off, as the agent does:
  `Backoff` while unreachable, `max_backoff` while enrollment needs the operator. A full batch
  is followed by the next pass at once. SIGTERM: exit 0, unsent reports stay in the outboxes.
- `--once` (`run_once`): look, wait `settle_seconds`, take every file that settled meanwhile
  (batch by batch, each followed by a drain), and exit with the agent's codes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from rmsfleet.agent import __version__
from rmsfleet.agent.backoff import Backoff
from rmsfleet.agent.config import AgentConfig
from rmsfleet.agent.multihost import DrainResult, HostOutboxes, HostStatus
from rmsfleet.agent.runner import EXIT_CONFIG, EXIT_IDENTITY, EXIT_OK, EXIT_REFUSED, EXIT_STOPPED, Problem
from rmsfleet.agent.spool import PassResult, SpoolFolder
from rmsfleet.agent.transport import Link

log = logging.getLogger("rmsfleet.agent")


class SpoolRunner:
    def __init__(
        self,
        config: AgentConfig,
        folder: SpoolFolder,
        hosts: HostOutboxes,
        links: Sequence[Link],
        stop: threading.Event,
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.folder = folder
        self.hosts = hosts
        self.links = list(links)
        self.stop = stop
        self._monotonic = monotonic
        self.backoff = Backoff(
            config.sender.initial_backoff,
            config.sender.max_backoff,
            config.sender.backoff_multiplier,
            config.jitter,
            rng if rng is not None else random.Random(),
        )

    def _drain(self) -> DrainResult:
        return self.hosts.drain(self.config, self.links, self.stop, concurrency=self.config.spool.concurrency)

    def _sleep(self, seconds: float) -> None:
        """Wait until `seconds` passed or `stop` is set, waking twice a second (a signal handler
        runs only when the main thread gets control)."""
        deadline = self._monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - self._monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, 0.5))

    def _pass(self) -> PassResult | None:
        try:
            return self.folder.run_pass()
        except OSError as exc:
            log.error("cannot list the spool folder %s: %s", self.folder.directory, exc.strerror or exc)
            return None

    # --- once -------------------------------------------------------------------------------------

    def run_once(self) -> tuple[int, str | None]:
        """Take what is in the folder now, send everything pending. Returns (exit code, the line
        to print on failure): 1 stopped; 3 unreachable or 5 enrollment (taken files' reports stay
        in the outboxes, untaken files in the folder); 4 a report refused; 2 a file rejected or
        the outbox unusable; else 0."""
        try:
            self.folder.look()
        except OSError as exc:
            return EXIT_CONFIG, f"cannot list the spool folder {self.folder.directory}: {exc.strerror or exc}"
        self._sleep(self.folder.settle_seconds)
        taken = rejected = 0
        refusals: list[str] = []
        # Hosts whose id the collector refuses to us: set aside for this drain only (multihost).
        identities: dict[str, str] = {}
        while not self.stop.is_set():
            result = self._pass()
            if result is None:
                return EXIT_CONFIG, f"cannot list the spool folder {self.folder.directory} (see the log)"
            taken += result.taken
            rejected += result.rejected
            if result.store_failed:
                return EXIT_CONFIG, f"cannot store the facts of the spool folder in {self.hosts.root} (see the log)"
            drained = self._drain()
            refusals += [
                refusal.reason
                for outcome in drained.outcomes
                if outcome.status is HostStatus.REFUSED
                for refusal in outcome.refusals
            ]
            identities.update(
                (outcome.directory, outcome.message or "")
                for outcome in drained.outcomes
                if outcome.status is HostStatus.IDENTITY
            )
            if drained.stopped:
                break
            if drained.failure is not None:
                return drained.failure.exit_code, (
                    f"{drained.failure.message}; {drained.pending} report(s) kept in the outboxes under {self.hosts.root}"
                )
            if not result.more:
                log.info(
                    "spool %s: %d file(s) taken, %d rejected, %d not settled yet",
                    self.folder.directory,
                    taken,
                    rejected,
                    result.waiting,
                )
                break
        if self.stop.is_set():
            return EXIT_STOPPED, "stopped before every report was acknowledged (they stay in the outboxes)"
        if identities:
            first = next(iter(identities.values()))
            return EXIT_IDENTITY, (
                f"the collector refuses {len(identities)} host id(s) to this agent, their reports are kept: {first}"
            )
        if refusals:
            return EXIT_REFUSED, f"the collector refused {len(refusals)} report(s): {refusals[0]}"
        if rejected:
            return EXIT_CONFIG, f"rejected {rejected} file(s): moved to {self.folder.rejected_dir} beside their reasons"
        return EXIT_OK, None

    # --- the service ------------------------------------------------------------------------------

    def run_forever(self) -> int:
        spool = self.config.spool
        log.info(
            "rmsfleet-agent %s: spooling %s to %s; host outboxes in %s",
            __version__,
            self.folder.directory,
            ", ".join(link.address for link in self.links),
            self.hosts.root,
        )
        next_drain = self._monotonic()
        pending = 0
        while not self.stop.is_set():
            result = self._pass()
            if self._monotonic() >= next_drain and not self.stop.is_set():
                drained = self._drain()
                pending = drained.pending
                failure = drained.failure
                if failure is None:
                    self.backoff.reset()
                else:
                    if failure.problem is Problem.UNREACHABLE:
                        delay = self.backoff.next_delay()
                        level = logging.WARNING
                    else:
                        # Enrollment needs an operator; retry slowly (the secret file is read again).
                        delay = self.config.sender.max_backoff
                        level = logging.ERROR
                    log.log(
                        level,
                        "%s; %d report(s) kept in the outboxes, next attempt in %.1f s",
                        failure.message,
                        drained.pending,
                        delay,
                    )
                    next_drain = self._monotonic() + delay
            if result is not None and result.more and not result.store_failed:
                continue
            failed = result is None or result.store_failed
            self._sleep(self.config.sender.max_backoff if failed else spool.poll_seconds)
        log.info("stopped%s", f"; {pending} report(s) kept in the outboxes for the next start" if pending else "")
        return EXIT_OK
