"""The spool folder in process (spool.py): real files and real outboxes, a fake monotonic clock
(the settle wait) as the only seam. The agent process against a real collector is
tests/e2e/test_spool.py."""

from __future__ import annotations

import codecs
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rmsfleet.agent.multihost import HostOutboxes, host_directory
from rmsfleet.agent.outbox import Outbox, OutboxEntry
from rmsfleet.agent.spool import MAX_FILE_BYTES, SpoolFolder, parse_facts
from rmsfleet.contract.facts import FactsFileError, Version

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def document(host_id: str, version: str = "SP2") -> dict[str, Any]:
    return {
        "host_id": host_id,
        "hostname": f"{host_id}.corp.example",
        "forest": "corp.example",
        "client": {"version": version, "activation": "self", "cluster": None},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, **options: Any) -> tuple[SpoolFolder, HostOutboxes, Path]:
    folder = tmp_path / "spool"
    folder.mkdir(exist_ok=True)
    hosts = HostOutboxes(tmp_path / "state")
    spool = SpoolFolder(folder, hosts, settle_seconds=2.0, monotonic=clock, clock=lambda: NOW, **options)
    return spool, hosts, folder


def pending(tmp_path: Path, host_id: str) -> list[OutboxEntry]:
    """The host's outbox as a restarted agent would find it."""
    with Outbox(tmp_path / "state" / "hosts" / host_directory(host_id) / "outbox.sqlite3") as outbox:
        return outbox.pending()


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def test_a_file_is_taken_only_after_it_stayed_unchanged_for_the_settle_time(tmp_path: Path) -> None:
    clock = Clock()
    spool, hosts, folder = make(tmp_path, clock)
    path = write(folder, "a.json", document("ws-01"))
    assert spool.run_pass().taken == 0, "first sight: not settled"
    clock.now += 1.5
    with path.open("a") as handle:
        handle.write("  ")  # still being written: the settle time starts again
    assert spool.run_pass().taken == 0
    clock.now += 1.5
    assert spool.run_pass().taken == 0 and path.exists()
    clock.now += 1.0
    result = spool.run_pass()
    assert result.taken == 1 and not path.exists()
    assert hosts.pending_count("ws-01") == 1


def test_names_outside_the_contract_are_never_taken(tmp_path: Path) -> None:
    clock = Clock()
    spool, hosts, folder = make(tmp_path, clock)
    write(folder, "a.json.tmp", document("ws-01"))
    write(folder, "b.tmp", document("ws-02"))
    write(folder, ".c.json", document("ws-03"))
    (folder / "d.json").mkdir()
    spool.run_pass()
    clock.now += 10
    assert spool.run_pass().taken == 0
    assert hosts.directories() == []


def test_a_batch_is_bounded_and_the_oldest_files_go_first(tmp_path: Path) -> None:
    clock = Clock()
    spool, hosts, folder = make(tmp_path, clock, batch_size=4)
    for number in range(10):
        path = write(folder, f"{9 - number}.json", document(f"ws-{number:02d}"))
        os.utime(path, ns=(1_700_000_000_000_000_000 + number, 1_700_000_000_000_000_000 + number))
    spool.run_pass()
    clock.now += 2
    first = spool.run_pass()
    assert (first.taken, first.more, first.waiting) == (4, True, 6)
    assert {d.rsplit("-", 1)[0] for d in hosts.directories()} == {"ws-00", "ws-01", "ws-02", "ws-03"}
    assert spool.run_pass().taken == 4
    last = spool.run_pass()
    assert (last.taken, last.more, last.waiting) == (2, False, 0)


def test_observed_at_is_when_the_file_was_written(tmp_path: Path) -> None:
    clock = Clock()
    spool, _hosts, folder = make(tmp_path, clock)
    written = datetime(2024, 4, 30, 8, 0, tzinfo=UTC)
    path = write(folder, "a.json", document("ws-01"))
    os.utime(path, (written.timestamp(), written.timestamp()))
    future = write(folder, "b.json", document("ws-02"))
    os.utime(future, (NOW.timestamp() + 86400, NOW.timestamp() + 86400))
    spool.run_pass()
    clock.now += 2
    spool.run_pass()
    assert pending(tmp_path, "ws-01")[0].observed_at == written
    assert pending(tmp_path, "ws-02")[0].observed_at == NOW, "a file from the future is capped at now"


def test_taking_the_same_file_twice_queues_one_report(tmp_path: Path) -> None:
    # What a crash between storing and removing leaves: the file is taken again after the restart.
    clock = Clock()
    spool, hosts, folder = make(tmp_path, clock)
    for _attempt in range(2):
        write(folder, "a.json", document("ws-01"))
        spool.run_pass()
        clock.now += 2
        assert spool.run_pass().taken == 1
    assert hosts.pending_count("ws-01") == 1, "the same facts coalesce into one heartbeat"


def test_a_bad_file_moves_to_rejected_beside_its_reason_and_the_rest_go_on(tmp_path: Path) -> None:
    clock = Clock()
    spool, _hosts, folder = make(tmp_path, clock)
    (folder / "bad.json").write_text('{"host_id": "x",\n  "hostname": }')
    write(folder, "good.json", document("ws-01"))
    spool.run_pass()
    clock.now += 2
    result = spool.run_pass()
    assert (result.taken, result.rejected) == (1, 1)
    reason = (folder / "rejected" / "bad.json.reason").read_text()
    assert reason == f"{folder / 'bad.json'}:2:15: not valid JSON: Expecting value\n"
    assert (folder / "rejected" / "bad.json").read_text().startswith('{"host_id": "x"')
    # The same name rejected again keeps the first one and its reason.
    write(folder, "bad.json", {**document("ws-02"), "forest": ""})
    spool.run_pass()
    clock.now += 2
    assert spool.run_pass().rejected == 1
    names = sorted(p.name for p in (folder / "rejected").iterdir())
    assert names == ["bad-20240501T120000Z.json", "bad-20240501T120000Z.json.reason", "bad.json", "bad.json.reason"]
    assert (
        (folder / "rejected" / "bad-20240501T120000Z.json.reason")
        .read_text()
        .endswith("bad.json: forest: expected a non-empty string\n")
    )


def test_keep_done_moves_taken_files_to_done(tmp_path: Path) -> None:
    clock = Clock()
    spool, _hosts, folder = make(tmp_path, clock, keep_done=True)
    write(folder, "a.json", document("ws-01"))
    spool.run_pass()
    clock.now += 2
    spool.run_pass()
    assert json.loads((folder / "done" / "a.json").read_text())["host_id"] == "ws-01"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (codecs.BOM_UTF8 + json.dumps(document("ws-01")).encode(), "ws-01"),
        (json.dumps(document("ws-02")).encode("utf-16"), "ws-02"),  # with its byte order mark
        (json.dumps(document("wß-03"), ensure_ascii=False).encode(), "wß-03"),
    ],
)
def test_the_encodings_windows_tools_write_are_read(data: bytes, expected: str) -> None:
    assert parse_facts(Path("f.json"), data).host_id == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"host_id": "caf\xe9"}', "f.json: not UTF-8 text (byte 17 is b'\\xe9'): write the file as UTF-8, ASCII"),
        (b"[" * 100_000 + b"]" * 100_000, "f.json: not a facts file: JSON nested too deeply"),
        (b"", "f.json:1:1: not valid JSON: Expecting value"),
        (json.dumps(document("ws-01", "SP9")).encode(), "f.json: client.version: expected one of 'RTM'"),
    ],
)
def test_bad_bytes_are_one_line_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(FactsFileError) as caught:
        parse_facts(Path("f.json"), data)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_file_too_large_to_be_facts_is_rejected_unread(tmp_path: Path) -> None:
    clock = Clock()
    spool, _hosts, folder = make(tmp_path, clock)
    (folder / "huge.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    spool.run_pass()
    clock.now += 2
    assert spool.run_pass().rejected == 1
    assert "larger than 1048576 bytes" in (folder / "rejected" / "huge.json.reason").read_text()


def test_version_builtin_and_unknown_activation_pass_through(tmp_path: Path) -> None:
    clock = Clock()
    spool, _hosts, folder = make(tmp_path, clock)
    write(
        folder,
        "w7.json",
        {**document("w7-01"), "client": {"version": "BUILTIN", "activation": "unknown", "cluster": None}},
    )
    spool.run_pass()
    clock.now += 2
    spool.run_pass()
    client = pending(tmp_path, "w7-01")[0].facts.client
    assert client is not None and client.version is Version.BUILTIN
