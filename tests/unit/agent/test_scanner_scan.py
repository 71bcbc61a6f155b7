"""One scan's orchestration with recorded hosts at the probe-source seam (the real mapping reads
them): bounded concurrency, every failure an outcome with one line, stop leaves the rest
unstarted, facts queued in each target's own outbox, and the exit code a scheduled task sees."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rmsfleet.agent.multihost import HostOutboxes
from rmsfleet.agent.probe.recorded import RecordedHost
from rmsfleet.agent.scanner.remote import Credentials, RemoteOptions, ScanFailure, ScanReason, Target
from rmsfleet.agent.scanner.scan import Outcome, ScanRun, scan
from rmsfleet.agent.scanner.settings import ScanFlags, TargetSettings, load_scan_config
from rmsfleet.agent.scanner.summary import exit_code, render_summary
from rmsfleet.agent.scanner.targets import ListedTarget

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "windows_hosts"
CREDENTIALS = Credentials("rmsscan", "secret")


class Opened:
    """What remote.open_remote_host gives, over a recording."""

    def __init__(self, recording: RecordedHost) -> None:
        self.registry = recording.registry
        self.files = recording.files
        self.versions = recording.versions
        self.dialect = "SMB 3.1.1"


def settings(tmp_path: Path) -> TargetSettings:
    config = tmp_path / "scan.toml"
    config.write_text(
        '[scan]\nforest = "corp.example"\n[clusters]\n"rms_corp_example:443" = "https://rms.corp.example"\n'
    )
    return load_scan_config({}, ScanFlags(), {}, config, platform="linux").for_target("x", None)


def listed(name: str) -> ListedTarget:
    return ListedTarget(name, "127.0.0.1", 445, None, "test")


def run_scan(
    tmp_path: Path, opener: Any, names: list[str], *, concurrency: int = 4, stop: threading.Event | None = None
) -> tuple[ScanRun, HostOutboxes]:
    outboxes = HostOutboxes(tmp_path / "state")
    target_settings = settings(tmp_path)
    run = scan(
        [(listed(name), target_settings) for name in names],
        CREDENTIALS,
        outboxes,
        opener=opener,
        concurrency=concurrency,
        stop=stop or threading.Event(),
        clock=lambda: datetime(2026, 12, 2, tzinfo=UTC),
    )
    return run, outboxes


def test_each_target_is_read_by_the_shared_mapping_and_queued_in_its_own_outbox(tmp_path: Path) -> None:
    recordings = {
        "rms01": RecordedHost.load(FIXTURES / "sp1_root_server.json"),
        "xp07": RecordedHost.load(FIXTURES / "sp2_client_two_users.json"),
        "files01": RecordedHost.load(FIXTURES / "nothing_installed.json"),
    }

    @contextlib.contextmanager
    def opener(target: Target, credentials: Credentials, options: RemoteOptions) -> Iterator[Opened]:
        assert credentials is CREDENTIALS and options.timeout == 30.0 and options.smb1_allowed
        yield Opened(recordings[target.name])

    run, outboxes = run_scan(tmp_path, opener, list(recordings))
    with outboxes:
        outcomes = {result.target.name: result.outcome for result in run.results}
        assert outcomes == {"rms01": Outcome.REPORTED, "xp07": Outcome.REPORTED, "files01": Outcome.RMS_NOT_FOUND}
        assert [result.target.name for result in run.results] == ["rms01", "xp07", "files01"], "listed order"
        facts = {r.target.name: r.facts for r in run.results}
        assert facts["rms01"] is not None and facts["rms01"].host_id == "rms01"  # the name listed, not the host's
        assert facts["files01"] is None
        assert (outboxes.pending_count("rms01"), outboxes.pending_count("xp07"), outboxes.pending_count("files01")) == (
            1,
            1,
            0,
        )


def test_failures_become_outcomes_with_one_line_never_exceptions(tmp_path: Path) -> None:
    denied = RecordedHost.load(FIXTURES / "access_denied.json")

    @contextlib.contextmanager
    def opener(target: Target, credentials: Credentials, options: RemoteOptions) -> Iterator[Opened]:
        if target.name == "slow":
            raise ScanFailure(ScanReason.TIMEOUT, "slow (127.0.0.1:445): no answer within 30 s")
        if target.name == "buggy":
            raise RuntimeError("something\nnobody mapped")
        yield Opened(denied)

    run, outboxes = run_scan(tmp_path, opener, ["slow", "buggy", "locked"])
    outboxes.close()
    by_name = {result.target.name: result for result in run.results}
    assert by_name["slow"].outcome is Outcome.TIMEOUT
    assert by_name["buggy"].outcome is Outcome.ERROR
    assert by_name["buggy"].message == "RuntimeError: something nobody mapped"
    assert by_name["locked"].outcome is Outcome.ACCESS_DENIED
    assert by_name["locked"].message is not None and "access denied reading" in by_name["locked"].message
    assert exit_code(run) == 1
    summary = render_summary(run, 1.0)
    assert "timeout" in summary and "access denied" in summary and "error" in summary


def test_no_more_targets_than_the_concurrency_are_open_at_once(tmp_path: Path) -> None:
    """With concurrency 3, three targets are open together (a barrier of three is passed) and
    never a fourth."""
    recording = RecordedHost.load(FIXTURES / "windows7_builtin_client.json")
    lock = threading.Lock()
    open_now = 0
    most = 0
    barrier = threading.Barrier(3, timeout=30)

    @contextlib.contextmanager
    def opener(target: Target, credentials: Credentials, options: RemoteOptions) -> Iterator[Opened]:
        nonlocal open_now, most
        with lock:
            open_now += 1
            most = max(most, open_now)
        try:
            if target.name in ("t0", "t1", "t2"):
                barrier.wait()
            yield Opened(recording)
        finally:
            with lock:
                open_now -= 1

    run, outboxes = run_scan(tmp_path, opener, [f"t{i}" for i in range(9)], concurrency=3)
    outboxes.close()
    assert [result.outcome for result in run.results] == [Outcome.REPORTED] * 9
    assert most == 3


def test_stopping_leaves_the_targets_not_started_yet(tmp_path: Path) -> None:
    recording = RecordedHost.load(FIXTURES / "windows7_builtin_client.json")
    stop = threading.Event()

    @contextlib.contextmanager
    def opener(target: Target, credentials: Credentials, options: RemoteOptions) -> Iterator[Opened]:
        stop.set()  # SIGTERM arrives while the first target is read
        yield Opened(recording)

    run, outboxes = run_scan(tmp_path, opener, [f"t{i}" for i in range(6)], concurrency=1, stop=stop)
    outboxes.close()
    assert [result.target.name for result in run.results] == ["t0"]
    assert run.stopped
    assert exit_code(run) == 1
    assert "(stopped early)" in render_summary(run, 1.0)


def test_a_version_no_rule_maps_is_reported_with_the_key_to_add(tmp_path: Path) -> None:
    recording = RecordedHost.load(FIXTURES / "unmapped_versions.json")

    @contextlib.contextmanager
    def opener(target: Target, credentials: Credentials, options: RemoteOptions) -> Iterator[Opened]:
        yield Opened(recording)

    run, outboxes = run_scan(tmp_path, opener, ["odd"])
    outboxes.close()
    (result,) = run.results
    assert result.outcome is Outcome.VERSION_UNKNOWN
    assert result.facts is not None, "reported, as UNKNOWN"
    assert result.message is not None and "[versions." in result.message
