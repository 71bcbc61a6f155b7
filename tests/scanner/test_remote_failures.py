"""What keeps the scanner from reading a host, each as its own reason with one line for the
operator, against real Samba servers (and real sockets for the network failures)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from rmsfleet.agent.scanner.remote import (
    Credentials,
    RemoteOptions,
    ScanFailure,
    ScanReason,
    Target,
    open_remote_host,
)

from .conftest import StartHost
from .fake_hosts import WINDOWS_7, WINDOWS_XP, FakeWindowsHost, RunningFakeHost
from .samba import free_port


def scan_failure(target: Target, credentials: Credentials, options: RemoteOptions) -> ScanFailure:
    with pytest.raises(ScanFailure) as raised, open_remote_host(target, credentials, options):
        pass
    failure = raised.value
    # One line, no traceback, naming the host as it was listed.
    assert "\n" not in str(failure)
    assert "Traceback" not in str(failure)
    assert target.name in str(failure)
    return failure


@pytest.fixture
def windows7(fake_host: StartHost) -> RunningFakeHost:
    return fake_host(FakeWindowsHost("WIN7", windows_version=WINDOWS_7))


@pytest.mark.parametrize("smb1_allowed", [True, False])
def test_a_wrong_password_is_access_denied(windows7: RunningFakeHost, smb1_allowed: bool) -> None:
    wrong = Credentials(windows7.credentials.username, "not-the-password")
    failure = scan_failure(windows7.target(), wrong, RemoteOptions(timeout=10, smb1_allowed=smb1_allowed))
    assert failure.reason is ScanReason.ACCESS_DENIED
    assert "STATUS_LOGON_FAILURE" in failure.message
    assert "not-the-password" not in failure.message


def test_an_unknown_account_is_access_denied(windows7: RunningFakeHost) -> None:
    failure = scan_failure(windows7.target(), Credentials("nobody-here", "x"), RemoteOptions(timeout=10))
    assert failure.reason is ScanReason.ACCESS_DENIED


def test_a_closed_port_is_unreachable() -> None:
    failure = scan_failure(
        Target("closed-host", "127.0.0.1", free_port()), Credentials("a", "b"), RemoteOptions(timeout=10)
    )
    assert failure.reason is ScanReason.UNREACHABLE
    assert "refused" in failure.message


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    failure = scan_failure(Target("no-such-host.invalid"), Credentials("a", "b"), RemoteOptions(timeout=10))
    assert failure.reason is ScanReason.UNREACHABLE
    assert "does not resolve" in failure.message


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("smb1_allowed", [True, False])
def test_a_host_that_never_answers_times_out(silent_port: int, smb1_allowed: bool) -> None:
    target = Target("silent-host", "127.0.0.1", silent_port)
    failure = scan_failure(target, Credentials("a", "b"), RemoteOptions(timeout=1, smb1_allowed=smb1_allowed))
    assert failure.reason is ScanReason.TIMEOUT


def test_an_smb1_only_host_while_smb1_is_off(fake_host: StartHost) -> None:
    xp = fake_host(FakeWindowsHost("XP01", windows_version=WINDOWS_XP, smb1_only=True))
    failure = scan_failure(xp.target(), xp.credentials, RemoteOptions(timeout=10, smb1_allowed=False))
    assert failure.reason is ScanReason.SMB1_ONLY
    # With SMB1 allowed, the same host is read over NT LM 0.12.
    with open_remote_host(xp.target(), xp.credentials, RemoteOptions(timeout=10, smb1_allowed=True)) as host:
        assert host.dialect == "NT LM 0.12"
        assert host.versions.file_version("%SystemRoot%\\system32\\ntoskrnl.exe") == WINDOWS_XP


def test_smb1_off_still_reads_a_host_that_speaks_smb2(windows7: RunningFakeHost) -> None:
    options = RemoteOptions(timeout=10, smb1_allowed=False)
    with open_remote_host(windows7.target(), windows7.credentials, options) as host:
        assert host.dialect.startswith("SMB 3.")
        assert host.versions.file_version("%SystemRoot%\\system32\\ntoskrnl.exe") == WINDOWS_7


@pytest.mark.parametrize("smb1_only", [True, False])
def test_a_logon_mapped_to_guest_is_guest_only(fake_host: StartHost, smb1_only: bool) -> None:
    xp = fake_host(FakeWindowsHost("XPHOME", windows_version=WINDOWS_XP, smb1_only=smb1_only, force_guest=True))
    failure = scan_failure(xp.target(), xp.credentials, RemoteOptions(timeout=10))
    assert failure.reason is ScanReason.GUEST_ONLY
    assert "Guest" in failure.message


def test_a_stopped_remote_registry_is_remote_registry_off(fake_host: StartHost) -> None:
    host = fake_host(FakeWindowsHost("WIN7OFF", windows_version=WINDOWS_7, remote_registry=False))
    failure = scan_failure(host.target(), host.credentials, RemoteOptions(timeout=10))
    assert failure.reason is ScanReason.REMOTE_REGISTRY_OFF
    assert "Remote Registry" in failure.message


@pytest.mark.parametrize("smb1_only", [True, False])
def test_a_host_that_goes_away_mid_scan_is_a_scan_failure(fake_host: StartHost, smb1_only: bool) -> None:
    running = fake_host(FakeWindowsHost("GONE01", windows_version=WINDOWS_XP, smb1_only=smb1_only))
    with open_remote_host(running.target(), running.credentials, RemoteOptions(timeout=5)) as host:
        assert host.registry.key_exists("SOFTWARE\\Microsoft")
        running.server.stop()
        with pytest.raises(ScanFailure) as raised:
            host.registry.read_value("SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion", "CurrentVersion")
        with pytest.raises(ScanFailure):
            host.files.list_dir("%SystemRoot%\\system32")
    # Leaving the block closed what was left without raising.
    assert raised.value.reason in (ScanReason.UNREACHABLE, ScanReason.PROTOCOL)
    assert "\n" not in str(raised.value)
