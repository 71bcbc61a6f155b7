"""What a scan tells its operator: the progress line, the summary, the `--json` document and the
exit code a scheduled task acts on.

Exit codes (docs/scanner.md):

| code | meaning |
|---|---|
| 0 | every target was read and reported (or has no RMS), and the collector acknowledged every report |
| 1 | some targets failed (unreachable, access denied, ..., version UNKNOWN): see the summary |
| 2 | bad configuration, targets file or credentials: nothing was scanned |
| 3 | no collector reachable: the reports wait in the outboxes for the next run |
| 4 | the collector refused a report (set aside in the target's outbox) |
| 5 | enrollment failed (no enrollment secret or token, or one the collector refuses) |
| 6 | the collector refuses one or more host ids to this scanner (PERMISSION_DENIED: the host id holds
      another machine's valid key, or the enrollment token's role is not scanner); reports kept |

A collector problem (3, 5) outranks a refused host id (6), which outranks a refused report (4),
which outranks failed targets (1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rmsfleet.agent.multihost import HostOutcome, HostStatus
from rmsfleet.agent.runner import (
    EXIT_CONFIG,
    EXIT_ENROLLMENT,
    EXIT_IDENTITY,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Problem,
)
from rmsfleet.agent.scanner.scan import Delivery, Outcome, ScanRun, TargetResult
from rmsfleet.contract.facts import facts_to_json

EXIT_TARGETS_FAILED = 1
__all__ = [
    "EXIT_CONFIG",
    "EXIT_ENROLLMENT",
    "EXIT_IDENTITY",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TARGETS_FAILED",
    "EXIT_UNREACHABLE",
]

LABELS: dict[Outcome, str] = {
    Outcome.REPORTED: "read",
    Outcome.VERSION_UNKNOWN: "version UNKNOWN",
    Outcome.RMS_NOT_FOUND: "RMS not found",
    Outcome.CLUSTER_UNKNOWN: "cluster unknown",
    Outcome.UNREACHABLE: "unreachable",
    Outcome.TIMEOUT: "timeout",
    Outcome.ACCESS_DENIED: "access denied",
    Outcome.GUEST_ONLY: "access denied as guest",
    Outcome.REMOTE_REGISTRY_OFF: "remote registry off",
    Outcome.SMB1_ONLY: "SMB1 only",
    Outcome.PROTOCOL: "SMB/RPC error",
    Outcome.UNREADABLE: "unreadable value",
    Outcome.ERROR: "error",
}
# Always shown, even at zero: the counts an operator looks for first.
ALWAYS = (
    Outcome.VERSION_UNKNOWN,
    Outcome.RMS_NOT_FOUND,
    Outcome.UNREACHABLE,
    Outcome.ACCESS_DENIED,
)
HINTS: dict[Outcome, str] = {
    Outcome.VERSION_UNKNOWN: "read, the version reported as UNKNOWN: add the rule the note names",
    Outcome.RMS_NOT_FOUND: "not reported",
    Outcome.CLUSTER_UNKNOWN: "not reported; set the cluster's URL in [clusters]",
    Outcome.TIMEOUT: "raise --timeout or check the network path",
    Outcome.GUEST_ONLY: "XP ForceGuest: use a domain account or turn simple file sharing off",
    Outcome.REMOTE_REGISTRY_OFF: "start the Remote Registry service, or --start-remote-registry",
    Outcome.SMB1_ONLY: "the host speaks only SMB1: --allow-smb1",
}


def outcome_counts(results: Sequence[TargetResult]) -> Counter[Outcome]:
    return Counter(result.outcome for result in results)


def delivery_counts(results: Sequence[TargetResult]) -> Counter[Delivery]:
    return Counter(result.delivery for result in results if result.delivery is not None)


def exit_code(run: ScanRun) -> int:
    if run.outbox_error is not None:
        return EXIT_CONFIG
    drain = run.drain
    if drain is not None and drain.failure is not None:
        return EXIT_ENROLLMENT if drain.failure.problem is not Problem.UNREACHABLE else EXIT_UNREACHABLE
    if drain is not None and _identity_refusals(run):
        # Not "unreachable" (3): the collector answered, and an operator must settle it.
        return EXIT_IDENTITY
    if drain is not None and any(outcome.status is HostStatus.REFUSED for outcome in drain.outcomes):
        return EXIT_REFUSED
    if any(result.delivery is Delivery.QUEUED for result in run.results):
        return EXIT_UNREACHABLE
    if run.stopped or any(result.outcome.is_failure for result in run.results):
        return EXIT_TARGETS_FAILED
    return EXIT_OK


def _identity_refusals(run: ScanRun) -> list[HostOutcome]:
    """The hosts whose id the collector refused to this scanner in the drain (PERMISSION_DENIED)."""
    if run.drain is None:
        return []
    return [outcome for outcome in run.drain.outcomes if outcome.status is HostStatus.IDENTITY]


def render_summary(run: ScanRun, seconds: float) -> str:
    """`reported` counts the targets whose report the collector acknowledged; every other line
    counts targets by what reading them gave (version UNKNOWN ones are reported too)."""
    counts = outcome_counts(run.results)
    deliveries = delivery_counts(run.results)
    lines = [f"scanned {len(run.results)} target(s) in {seconds:.1f} s" + (" (stopped early)" if run.stopped else "")]
    width = max(len(label) for label in (*LABELS.values(), "kept for the next run"))

    def add(label: str, count: int, hint: str | None = None) -> None:
        lines.append(f"  {label:<{width}}  {count:>5}" + (f"   ({hint})" if hint and count else ""))

    add("reported", deliveries.get(Delivery.DELIVERED, 0), "acknowledged by the collector")
    for outcome, label in LABELS.items():
        count = counts.get(outcome, 0)
        if outcome is Outcome.REPORTED or (count == 0 and outcome not in ALWAYS):
            continue
        add(label, count, HINTS.get(outcome))
    if deliveries.get(Delivery.QUEUED, 0):
        add("kept for the next run", deliveries[Delivery.QUEUED], "read, but the collector did not acknowledge them")
    if deliveries.get(Delivery.REFUSED, 0):
        add("refused", deliveries[Delivery.REFUSED], "the collector refused the report")
    if run.drain is not None:
        earlier = sum(outcome.delivered for outcome in run.drain.outcomes) - deliveries.get(Delivery.DELIVERED, 0)
        if earlier > 0:
            lines.append(f"collector: also sent {earlier} report(s) an earlier run had left")
        if run.drain.failure is not None:
            lines.append(f"collector: {run.drain.failure.message}")
        refused = _identity_refusals(run)
        if refused:
            lines.append(
                f"collector: refuses {len(refused)} host id(s) to this scanner, their reports are kept: "
                f"{refused[0].message}"
            )
    if run.outbox_error is not None:
        lines.append(f"outbox: {run.outbox_error}")
    return "\n".join(lines) + "\n"


def progress_line(done: int, total: int, result: TargetResult, counts: Counter[Outcome]) -> str:
    """One line, rewritten in place on a terminal: how far, and the failures so far."""
    failed = sum(count for outcome, count in counts.items() if outcome.is_failure)
    return (
        f"[{done}/{total}] {counts.get(Outcome.REPORTED, 0)} read, {failed} failed; "
        f"{result.target.name}: {LABELS[result.outcome]}"
    )


def result_json(result: TargetResult) -> dict[str, Any]:
    target = result.target
    return {
        "name": target.name,
        "address": target.connect_address,
        "port": target.port,
        "group": target.group,
        "outcome": result.outcome.value,
        "message": result.message,
        "notes": list(result.notes),
        "readings": [{"what": what, "value": value} for what, value in result.readings],
        "dialect": result.dialect,
        "seconds": round(result.seconds, 3),
        "facts": None if result.facts is None else facts_to_json(result.facts),
        "delivery": None if result.delivery is None else result.delivery.value,
        "delivery_message": result.delivery_message,
    }


def run_json(run: ScanRun, seconds: float, code: int) -> dict[str, Any]:
    counts = outcome_counts(run.results)
    deliveries = delivery_counts(run.results)
    return {
        "targets": [result_json(result) for result in run.results],
        "summary": {
            "scanned": len(run.results),
            "reported": deliveries.get(Delivery.DELIVERED, 0),
            "queued": deliveries.get(Delivery.QUEUED, 0),
            "refused": deliveries.get(Delivery.REFUSED, 0),
            "outcomes": {outcome.value: counts.get(outcome, 0) for outcome in Outcome},
            "seconds": round(seconds, 3),
            "stopped": run.stopped,
            "collector_failure": None if run.drain is None or run.drain.failure is None else run.drain.failure.message,
        },
        "exit_code": code,
    }
