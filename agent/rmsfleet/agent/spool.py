"""The spool folder: facts files dropped by anything (a logon script, a software distribution
tool, a scanner on an isolated network) become reports of their hosts.

The contract with writers (docs/agent.md, "The spool"):
- one host's facts per file, the facts file JSON (design.md, contract 1), named `*.json`;
- write it as `NAME.tmp` (any name not ending in `.json`) in the same folder and rename it to
  `NAME.json` when complete: a rename within a folder is atomic, so the agent never sees half a
  file. Writers that cannot rename are covered by a wait: a file is taken only once its size and
  modification time stayed the same for `settle_seconds` (measured on this host's clock, so a
  file server's clock does not matter) and it can be opened (Windows refuses files still open
  for writing);
- UTF-8 (with or without a byte order mark) or UTF-16 with a byte order mark; at most 1 MiB.

What happens to a file, in this order, so that a crash at any point loses nothing:
1. read and checked against the contract (the same one-line messages as `--facts`);
2. valid: put into its host's durable outbox (multihost.py: fsynced before `put` returns), with
   the file's modification time as `observed_at` (when the facts were written, not when they
   were found); only then removed, or moved to `done/` with `keep_done`. A crash between the two
   leaves the file, which is taken again after the restart: the same facts again, which the
   outbox coalesces into a heartbeat and the collector stores once;
3. invalid: `NAME.json.reason` is written into `rejected/` (the one-line message), then the file
   is moved beside it. A crash between the two only rejects the file again.

Bounded: every pass looks at the names in the folder (a `stat` each) but reads, parses and
stores at most `batch_size` files, oldest first; the rest wait for the next pass.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rmsfleet.agent.multihost import HostOutboxes
from rmsfleet.agent.outbox import OutboxError
from rmsfleet.contract.facts import FactsFileError, HostFacts, InvalidFacts, facts_from_json

log = logging.getLogger("rmsfleet.agent")

REJECTED_DIR = "rejected"
DONE_DIR = "done"
REASON_SUFFIX = ".reason"
MAX_FILE_BYTES = 1024 * 1024


def parse_facts(path: Path, data: bytes) -> HostFacts:
    """The facts in a spool file's bytes. Raises FactsFileError with one line in the form
    `--facts` uses: `FILE:LINE:COL: not valid JSON: ...` or `FILE: FIELD: expected ...`."""
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            # What Windows PowerShell 5 and VBScript's Unicode mode write.
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FactsFileError(
            f"{path}: not UTF-8 text (byte {exc.start + 1} is {data[exc.start : exc.start + 1]!r}): "
            "write the file as UTF-8, ASCII or UTF-16 with a byte order mark"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsFileError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise FactsFileError(f"{path}: not a facts file: JSON nested too deeply") from None
    try:
        return facts_from_json(document)
    except InvalidFacts as exc:
        raise FactsFileError(f"{path}: {exc.field}: expected {exc.reason}") from None


@dataclass(frozen=True, slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time this size and mtime were first seen


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass over the folder did."""

    taken: int = 0  # files put into their host's outbox (and removed or moved to done/)
    rejected: int = 0  # files moved to rejected/
    waiting: int = 0  # `*.json` files not taken yet: still settling, or beyond this pass's batch
    more: bool = False  # settled files were left for the next pass (the batch was full)
    store_failed: bool = False  # the outbox could not be written; the file stays for later


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SpoolFolder:
    def __init__(
        self,
        directory: Path,
        hosts: HostOutboxes,
        *,
        settle_seconds: float = 2.0,
        batch_size: int = 200,
        keep_done: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.directory = directory
        self.hosts = hosts
        self.settle_seconds = settle_seconds
        self.batch_size = batch_size
        self.keep_done = keep_done
        self._monotonic = monotonic
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._failed_removal: set[str] = set()

    @property
    def rejected_dir(self) -> Path:
        return self.directory / REJECTED_DIR

    @property
    def done_dir(self) -> Path:
        return self.directory / DONE_DIR

    # --- looking --------------------------------------------------------------------------------

    def look(self) -> list[str]:
        """Look at the folder once; return the names of the files that have settled (unchanged
        size and modification time for `settle_seconds`), oldest first. Raises OSError when the
        folder cannot be listed."""
        now = self._monotonic()
        current: dict[str, _Seen] = {}
        settled: list[tuple[int, str]] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if not name.lower().endswith(".json") or name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    stat = entry.stat()
                except OSError:
                    continue  # removed while listing
                earlier = self._seen.get(name)
                if earlier is not None and (earlier.size, earlier.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                    seen = earlier
                else:
                    seen = _Seen(stat.st_size, stat.st_mtime_ns, now)
                current[name] = seen
                if now - seen.since >= self.settle_seconds:
                    settled.append((seen.mtime_ns, name))
        # Only names still in the folder are remembered: the memory follows the folder.
        self._seen = current
        return [name for _mtime, name in sorted(settled)]

    # --- taking ---------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        """Look once and take at most `batch_size` settled files. Raises OSError when the folder
        cannot be listed."""
        settled = self.look()
        batch = settled[: self.batch_size]
        taken = rejected = 0
        store_failed = False
        for name in batch:
            outcome = self._take(name)
            if outcome == "taken":
                taken += 1
            elif outcome == "rejected":
                rejected += 1
            elif outcome == "store-failed":
                store_failed = True
                break  # the outbox is unusable now: the next files would fail alike
        # Taken and rejected files left `_seen`; what remains is still in the folder.
        return PassResult(taken, rejected, len(self._seen), len(settled) > len(batch), store_failed)

    def _take(self, name: str) -> str:
        path = self.directory / name
        seen = self._seen.get(name)
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if seen is None or (stat.st_size, stat.st_mtime_ns) != (seen.size, seen.mtime_ns):
                    return "changed"  # written to since the last look: wait for it to settle
                data = b"" if stat.st_size > MAX_FILE_BYTES else handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            self._seen.pop(name, None)
            return "gone"
        except OSError as exc:
            # Windows: still open for writing by its writer (a sharing violation). Try later.
            log.debug("cannot open %s yet: %s", path, exc.strerror or exc)
            return "busy"
        if stat.st_size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
            return self._reject(path, f"{path}: larger than {MAX_FILE_BYTES} bytes: not a facts file")
        try:
            facts = parse_facts(path, data)
        except FactsFileError as exc:
            return self._reject(path, str(exc))
        observed_at = min(datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC), self._clock())
        try:
            entry = self.hosts.put(facts, observed_at)
        except (OutboxError, sqlite3.Error, OSError) as exc:
            log.error(
                "cannot store %s in the outbox of host %s: %s; the file stays and is tried again",
                path,
                facts.host_id,
                exc,
            )
            return "store-failed"
        # The report is on disk in the outbox: the file may go. A crash before this line only
        # means the same facts are taken again after the restart.
        self._finish(path)
        log.info("spooled %s as host %s (report %d)", name, facts.host_id, entry.sequence)
        return "taken"

    def _finish(self, path: Path) -> None:
        name = path.name
        try:
            if self.keep_done:
                self.done_dir.mkdir(exist_ok=True)
                path.replace(self.done_dir / name)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Taken again next pass (the same facts coalesce in the outbox); say so once.
            if name not in self._failed_removal:
                log.warning(
                    "cannot remove %s after storing its report: %s; it is taken again until it can be removed",
                    path,
                    exc.strerror or exc,
                )
                self._failed_removal.add(name)
            return
        self._failed_removal.discard(name)
        self._seen.pop(name, None)

    def _reject(self, path: Path, reason: str) -> str:
        try:
            self.rejected_dir.mkdir(exist_ok=True)
            target = self._free_name(path.name)
            reason_file = target.with_name(target.name + REASON_SUFFIX)
            temporary = reason_file.with_name(reason_file.name + ".tmp")
            temporary.write_text(reason + "\n", encoding="utf-8")
            temporary.replace(reason_file)
            path.replace(target)
        except OSError as exc:
            log.error("%s; and it cannot be moved to %s: %s", reason, self.rejected_dir, exc.strerror or exc)
            return "busy"
        self._seen.pop(path.name, None)
        log.warning("rejected %s: %s (moved to %s)", path.name, reason, target)
        return "rejected"

    def _free_name(self, name: str) -> Path:
        """`rejected/NAME`, or `rejected/STEM-<UTC time>[-N].json` when NAME was rejected before:
        the earlier file and its reason stay for the operator."""
        target = self.rejected_dir / name
        if not target.exists():
            return target
        stem, suffix = Path(name).stem, Path(name).suffix
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        for number in range(1, 10_000):
            candidate = self.rejected_dir / f"{stem}-{stamp}{'' if number == 1 else f'-{number}'}{suffix}"
            if not candidate.exists():
                return candidate
        raise OSError(f"too many rejected files named {name}")
