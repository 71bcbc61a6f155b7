"""The scanner's remote seam without a network: what an operator sees of its types and paths."""

from __future__ import annotations

import logging

import pytest

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.scanner.remote import Credentials, ScanFailure, ScanReason, Target
from rmsfleet.agent.scanner.shares import split_path


def test_credentials_never_show_their_secrets(caplog: pytest.LogCaptureFixture) -> None:
    credentials = Credentials("scan", password="hunter2-secret", domain="CORP", nthash="0123456789abcdef" * 2)
    logging.getLogger("test").warning("scanning with %s / %r / %s", credentials, credentials, [credentials])
    for text in (repr(credentials), str(credentials), f"{credentials}", caplog.text):
        assert "hunter2-secret" not in text
        assert "0123456789abcdef" not in text
    assert "scan" in repr(credentials)
    assert "CORP" in repr(credentials)
    assert "password" in repr(credentials)  # that a secret is set, not what it is


def test_credentials_without_secrets_say_so() -> None:
    assert "secrets" not in repr(Credentials("scan", use_kerberos=True))


def test_a_failure_is_one_line_whatever_the_library_said() -> None:
    failure = ScanFailure(ScanReason.PROTOCOL, "first line\n  second line\tand more  ")
    assert str(failure) == "first line second line and more"
    assert failure.reason is ScanReason.PROTOCOL
    assert "\n" not in repr(failure)


def test_the_reasons_the_scanner_counts_are_stable() -> None:
    assert {reason.value for reason in ScanReason} == {
        "unreachable",
        "timeout",
        "access-denied",
        "guest-only",
        "remote-registry-off",
        "smb1-only",
        "protocol",
    }


def test_a_target_connects_to_its_name_unless_given_an_address() -> None:
    assert Target("rms01.corp.example").connect_address == "rms01.corp.example"
    assert Target("rms01.corp.example").port == 445
    assert Target("rms01", "10.0.0.5", 4445).connect_address == "10.0.0.5"


@pytest.mark.parametrize(
    ("path", "share", "inner"),
    [
        ("%SystemRoot%\\system32\\ntoskrnl.exe", "ADMIN$", "system32\\ntoskrnl.exe"),
        ("%systemroot%\\System32\\msdrm.dll", "ADMIN$", "System32\\msdrm.dll"),
        ("%SystemDrive%\\Documents and Settings\\alice", "C$", "Documents and Settings\\alice"),
        ("C:\\Program Files\\x.dll", "C$", "Program Files\\x.dll"),
        ("d:\\data\\x", "D$", "data\\x"),
        ("%SystemRoot%", "ADMIN$", ""),
    ],
)
def test_windows_paths_map_to_administrative_shares(path: str, share: str, inner: str) -> None:
    assert split_path(path) == (share, inner)


def test_the_system_drive_share_is_configurable() -> None:
    assert split_path("%SystemDrive%\\x", system_drive_share="SYS$") == ("SYS$", "x")
    assert split_path("C:\\x", system_drive_share="SYS$") == ("C$", "x")


@pytest.mark.parametrize("path", ["\\\\server\\share\\x", "relative\\x", "%USERPROFILE%\\x", ""])
def test_a_path_no_share_reaches_is_a_clear_error(path: str) -> None:
    with pytest.raises(ProbeError, match="only %SystemRoot%"):
        split_path(path)
