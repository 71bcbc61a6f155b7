"""`rmsfleet-scan` as a real process: what it refuses before touching the network, an unreachable
target (nothing listens on its port), and where the password may never appear."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from processes import command, start_collector
from scanner_run import PASSWORD, run_scan, tree_text

pytestmark = pytest.mark.e2e


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["10.0.0.0/24"], "argument 1 ('10.0.0.0/24'): '10.0.0.0/24' is a network range"),
        (["rms01"], "rms01: no forest configured (the scanner never guesses it)"),
        (["--forest", "corp.example", "rms01", "RMS01"], "RMS01 is already listed at argument 1"),
        (["--forest", "corp.example", "rms01 group=ams"], "group 'ams' has no [groups.ams] table"),
        (["--forest", "corp.example", "--concurrency", "0", "rms01"], "--concurrency: expected a whole number"),
        (["--forest", "corp.example"], "no targets"),
    ],
)
def test_bad_targets_or_settings_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_scan("--collector", "127.0.0.1:1", "--state-dir", str(tmp_path / "state"), *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_password_on_the_command_line_is_refused_without_echoing_it(tmp_path: Path) -> None:
    done = run_scan("--forest", "corp.example", "--password", PASSWORD, "rms01", password=None)
    assert done.returncode == 2
    assert "passwords are never taken on the command line" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_a_credentials_file_others_may_read_is_refused(tmp_path: Path) -> None:
    credentials = tmp_path / "scan.credentials"
    credentials.write_text(f'username = "rmsscan"\npassword = "{PASSWORD}"\n')
    credentials.chmod(0o644)
    done = run_scan(
        "--collector",
        "127.0.0.1:1",
        "--forest",
        "corp.example",
        "--credentials-file",
        str(credentials),
        "rms01",
        password=None,
    )
    assert done.returncode == 2
    assert f"credentials file {credentials}: readable by others than its owner (mode 0644)" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_a_closed_port_is_unreachable_and_nothing_reaches_the_collector(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    state = tmp_path / "state"
    try:
        port = closed_port()
        done = run_scan(
            "--collector",
            collector.address,
            "--state-dir",
            str(state),
            "--forest",
            "corp.example",
            "--timeout",
            "5",
            "--json",
            "--log-level",
            "DEBUG",
            f"xp-closed 127.0.0.1:{port}",
        )
        assert done.returncode == 1, done.stderr
        target = done.targets()["xp-closed"]
        assert target["outcome"] == "unreachable", target
        assert str(port) in target["message"]
        assert target["facts"] is None and target["delivery"] is None
        summary = done.document()["summary"]
        assert (summary["scanned"], summary["outcomes"]["unreachable"], summary["reported"]) == (1, 1, 0)
        assert "unreachable" in done.stderr and "Traceback" not in done.stderr
        # DEBUG logs everything the scanner and impacket say: still no password anywhere.
        assert PASSWORD not in done.stdout + done.stderr + tree_text(state)
        assert collector.cli_json("hosts") == []
    finally:
        collector.stop()


def test_the_progress_line_shows_only_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal stderr gets a progress line redrawn in place; piped, it gets none (a log
    file or a scheduled task's output must not fill with carriage returns)."""
    args = [
        command("rmsfleet-scan"),
        "--collector",
        "127.0.0.1:1",
        "--state-dir",
        str(tmp_path / "state"),
        "--forest",
        "corp.example",
        f"xp-a 127.0.0.1:{closed_port()}",
        f"xp-b 127.0.0.1:{closed_port()}",
    ]
    env = {**os.environ, "RMSFLEET_SCAN_USERNAME": "rmsscan", "RMSFLEET_SCAN_PASSWORD": PASSWORD}
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=follower, env=env, text=True)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = process.communicate(timeout=60)
    finally:
        os.close(leader)
    terminal = seen.decode("utf-8", errors="replace")
    assert process.returncode == 1
    assert "\r\x1b[K[2/2] 0 read, 2 failed" in terminal, terminal
    assert "scanned 2 target(s)" in stdout and "\r" not in stdout

    piped = run_scan(*args[1:])
    assert piped.returncode == 1
    assert "\r" not in piped.stderr and "[2/2]" not in piped.stderr


def test_interval_scans_again_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    """`--interval` keeps scanning (one JSON line per scan) until SIGTERM, then exits 0 like the
    agent's service mode."""
    env = {**os.environ, "RMSFLEET_SCAN_USERNAME": "rmsscan", "RMSFLEET_SCAN_PASSWORD": PASSWORD}
    process = subprocess.Popen(
        [
            command("rmsfleet-scan"),
            "--collector",
            "127.0.0.1:1",
            "--state-dir",
            str(tmp_path / "state"),
            "--forest",
            "corp.example",
            "--interval",
            "1",
            "--json",
            f"xp-a 127.0.0.1:{closed_port()}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        scans = [process.stdout.readline(), process.stdout.readline()]
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    for line in scans:
        document = json.loads(line)
        assert document["exit_code"] == 1
        assert document["targets"][0]["outcome"] == "unreachable"
    assert "received SIGTERM, stopping" in err


def test_without_the_scanner_extra_it_names_what_to_install(tmp_path: Path) -> None:
    """The plain agent install has no impacket or pefile: the scanner says how to get them."""
    code = f"""
import importlib.abc, importlib.util, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("impacket", "pefile"):
            raise ImportError("blocked: not installed")
        return None
sys.meta_path.insert(0, Blocker())
from rmsfleet.agent.scanner.cli import main
sys.exit(main(["--collector", "127.0.0.1:1", "--state-dir", {str(tmp_path / "state")!r}, "--forest", "corp.example", "rms01"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "RMSFLEET_SCAN_USERNAME": "u", "RMSFLEET_SCAN_PASSWORD": PASSWORD},
    )
    assert done.returncode == 2, done.stderr
    assert (
        "needs impacket and pefile, which come with the scanner extra: pip install 'rmsfleet[scanner]'" in done.stderr
    )
