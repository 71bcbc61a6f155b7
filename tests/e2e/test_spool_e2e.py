"""The spool end to end: a real `rmsfleet-agent spool` process watching a folder and a real
collector. Files dropped are reported as their hosts; a bad file lands in rejected/ beside its
reason and stops nothing; a file still being written, or not yet renamed from `.tmp`, is left
alone; an agent SIGKILLed after taking files loses nothing, and taking the same file twice
stores the host once."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import Collector, command, run_agent, start_collector, wait_for

pytestmark = pytest.mark.e2e


def host(host_id: str, version: str = "SP2") -> dict[str, Any]:
    return {
        "host_id": host_id,
        "hostname": f"{host_id}.corp.example",
        "forest": "corp.example",
        "client": {"version": version, "activation": "self", "cluster": None, "activated_users": 2},
    }


def drop(folder: Path, name: str, document: dict[str, Any]) -> Path:
    """As the writers are told to: NAME.tmp, then rename to NAME.json."""
    temporary = folder / f"{name}.tmp"
    temporary.write_text(json.dumps(document))
    return temporary.replace(folder / f"{name}.json")


def stored(db: Path) -> dict[str, tuple[str, int]]:
    """host id -> (client version, rows in its history), as the collector stored them."""
    try:
        with sqlite3.connect(db) as connection:
            rows = connection.execute(
                "SELECT h.host_id, h.client_version, (SELECT COUNT(*) FROM host_history x WHERE x.host_id = h.host_id) "
                "FROM hosts h"
            ).fetchall()
    except sqlite3.OperationalError:
        return {}  # not migrated yet
    return {row[0]: (row[1], int(row[2])) for row in rows}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Spooler:
    """One `rmsfleet-agent spool` process, its log in a file."""

    def __init__(self, tmp: Path, address: str, folder: Path, state: Path, settle: float = 0.5) -> None:
        self.log_path = tmp / f"spool-{len(list(tmp.glob('spool-*.log')))}.log"
        config = tmp / "agent.toml"
        config.write_text(
            f"""
[agent]
collectors = ["{address}"]
state_dir = "{state}"
jitter = 0

[sender]
initial_backoff = 0.2
max_backoff = 0.5
rpc_deadline_seconds = 2

[spool]
dir = "{folder}"
settle_seconds = {settle}
poll_seconds = 0.2
batch_size = 3
"""
        )
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [command("rmsfleet-agent"), "spool", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
        """wait_for, with this agent's log in the failure."""
        try:
            wait_for(predicate, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nspool log:\n{self.log()[-4000:]}") from None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    running = start_collector(tmp_path, f"sqlite:///{tmp_path / 'rmsfleet.db'}")
    yield running
    assert running.stop() == 0, running.log()


def test_dropped_files_become_their_hosts_and_a_bad_file_is_set_aside_with_its_reason(
    tmp_path: Path, collector: Collector
) -> None:
    db = tmp_path / "rmsfleet.db"
    folder = tmp_path / "spool"
    folder.mkdir()
    for number in range(7):
        drop(folder, f"ws-{number:02d}", host(f"ws-{number:02d}"))
    (folder / "broken.json").write_text('{"host_id": "ws-99",\n "hostname": }')
    drop(folder, "wrong", {**host("ws-98"), "client": {"version": "SP3", "activation": "self", "cluster": None}})
    spooler = Spooler(tmp_path, collector.address, folder, tmp_path / "state")
    try:
        spooler.wait(lambda: len(stored(db)) == 7, "seven hosts stored")
        spooler.wait(lambda: not list(folder.glob("*.json")), "the folder emptied")
        # More files while it runs: a changed host and a new one.
        drop(folder, "ws-00-later", host("ws-00", "SP1"))
        drop(folder, "ws-07", host("ws-07"))
        spooler.wait(lambda: stored(db).get("ws-00", ("", 0))[0] == "SP1" and "ws-07" in stored(db), "new files")
    finally:
        assert spooler.stop() == 0, spooler.log()
    assert set(stored(db)) == {f"ws-{number:02d}" for number in range(8)}
    rejected = folder / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [
        "broken.json",
        "broken.json.reason",
        "wrong.json",
        "wrong.json.reason",
    ]
    assert (
        rejected / "broken.json.reason"
    ).read_text() == f"{folder / 'broken.json'}:2:14: not valid JSON: Expecting value\n"
    assert (
        (rejected / "wrong.json.reason")
        .read_text()
        .startswith(f"{folder / 'wrong.json'}: client.version: expected one of")
    )
    assert "SP3" in (rejected / "wrong.json.reason").read_text()
    log = spooler.log()
    assert "rejected broken.json" in log and "Traceback" not in log


def test_a_file_still_being_written_or_not_renamed_is_left_alone(tmp_path: Path, collector: Collector) -> None:
    db = tmp_path / "rmsfleet.db"
    folder = tmp_path / "spool"
    folder.mkdir()
    # A writer that does not use rename, slowly: half a document that grows in bursts, each
    # pause (0.3 s) longer than a pass (0.2 s) and far shorter than the settle time (5 s, so a
    # busy machine's stalls do not end the file early); told to, it writes the rest at once.
    half = folder / "slow.json"
    head = '{"host_id": "slow-01",'
    done = threading.Event()

    def slow_writer() -> None:
        with half.open("w") as handle:
            handle.write(head)
            while not done.is_set():
                handle.write(" ")
                handle.flush()
                # Sleeps 0.3 s, or less once told to finish (waiting on a set event returns at once).
                done.wait(0.3)
            handle.write(json.dumps(host("slow-01"))[len(head) :])

    writer = threading.Thread(target=slow_writer)
    writer.start()
    # And one that follows the contract but has not renamed yet.
    pending_rename = folder / "later.tmp"
    pending_rename.write_text(json.dumps(host("later-01")))
    spooler = Spooler(tmp_path, collector.address, folder, tmp_path / "state", settle=5.0)
    try:
        # Two complete files, one after the other: each waits out the settle time, and the half
        # file was looked at in every pass meanwhile.
        drop(folder, "marker-1", host("marker-01"))
        spooler.wait(lambda: "marker-01" in stored(db), "a complete file taken")
        drop(folder, "marker-2", host("marker-02"))
        spooler.wait(lambda: "marker-02" in stored(db), "a second complete file taken")
        assert half.exists() and not (folder / "rejected").exists(), spooler.log()
        assert pending_rename.exists()
        assert set(stored(db)) == {"marker-01", "marker-02"}
        done.set()
        writer.join()
        pending_rename.replace(folder / "later.json")
        spooler.wait(lambda: {"slow-01", "later-01"} <= set(stored(db)), "both files once complete")
    finally:
        done.set()
        writer.join()
        assert spooler.stop() == 0, spooler.log()
    assert not (folder / "rejected").exists(), "a half-written file was judged"


def test_an_agent_killed_after_taking_files_loses_nothing_and_stores_each_host_once(tmp_path: Path) -> None:
    db = tmp_path / "rmsfleet.db"
    folder = tmp_path / "spool"
    folder.mkdir()
    state = tmp_path / "state"
    hosts = [f"kill-{number:02d}" for number in range(6)]
    for host_id in hosts:
        drop(folder, host_id, host(host_id))
    # No collector yet: the agent takes the files into its outboxes and cannot send them.
    nowhere = f"127.0.0.1:{free_port()}"
    first = Spooler(tmp_path, nowhere, folder, state)
    try:
        first.wait(lambda: not list(folder.glob("*.json")), "every file taken")
        first.wait(lambda: "cannot reach the collector" in first.log(), "a failed send")
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    # As if the kill had come between storing a report and removing its file: the file is back.
    drop(folder, "kill-00", host("kill-00"))

    collector = start_collector(tmp_path, f"sqlite:///{db}")
    second = Spooler(tmp_path, collector.address, folder, state)
    try:
        second.wait(lambda: set(stored(db)) == set(hosts), "every host after the restart")
        second.wait(lambda: not list(folder.glob("*.json")), "the returned file taken")
        second.wait(lambda: "reported kill-00" in second.log() and "spooled kill-00.json" in second.log(), "resend")
    finally:
        assert second.stop() == 0, second.log()
        assert collector.stop() == 0, collector.log()
    # Each host once: one row, one history entry (the second kill-00 was a heartbeat).
    assert stored(db) == dict.fromkeys(hosts, ("SP2", 1))
    assert "Traceback" not in first.log() + second.log()


def test_once_takes_what_is_there_and_exits_with_the_agents_codes(tmp_path: Path, collector: Collector) -> None:
    db = tmp_path / "rmsfleet.db"
    folder = tmp_path / "spool"
    folder.mkdir()
    drop(folder, "one", host("once-01"))
    drop(folder, "two", host("once-02"))
    args = ["--collector", collector.address, "--spool-dir", str(folder), "--state-dir", str(tmp_path / "state")]
    done = run_agent("spool", *args, "--once")
    assert done.returncode == 0, done.stderr
    assert set(stored(db)) == {"once-01", "once-02"} and not list(folder.glob("*.json"))

    (folder / "bad.json").write_text("[]")
    done = run_agent("spool", *args, "--once")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"rmsfleet-agent: rejected 1 file(s): moved to {folder / 'rejected'} beside their reasons"
    )
    assert (
        folder / "rejected" / "bad.json.reason"
    ).read_text() == f"{folder / 'bad.json'}: (top level): expected a JSON object\n"

    drop(folder, "three", host("once-03"))
    unreachable = [
        "--collector",
        f"127.0.0.1:{free_port()}",
        "--spool-dir",
        str(folder),
        "--state-dir",
        str(tmp_path / "s2"),
    ]
    done = run_agent("spool", *unreachable, "--once", "--deadline", "2")
    assert done.returncode == 3, done.stderr
    assert "cannot reach the collector" in done.stderr and "1 report(s) kept in the outboxes" in done.stderr
    assert not list(folder.glob("*.json")), "taken into the outbox even so"


def test_configuration_problems_are_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_agent("spool", "--collector", "127.0.0.1:1", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "rmsfleet-agent: no spool folder: pass --spool-dir DIR, set RMSFLEET_SPOOL_DIR or [spool] dir"
    )
    missing = tmp_path / "nowhere"
    done = run_agent("spool", "--collector", "127.0.0.1:1", "--spool-dir", str(missing), "--state-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"rmsfleet-agent: spool folder {missing} (flag --spool-dir): does not exist; "
        "create it where the writers drop their files"
    )
