"""The remote registry (MS-RRP over `\\winreg`) against a real Samba, on SMB1 and on SMB3."""

from __future__ import annotations

import pytest

from rmsfleet.agent.probe.registry import RegistryAccessDenied
from rmsfleet.agent.scanner.remote import RemoteHost

from .conftest import ALICE, BOB, DRMS, KEY_PROTECTION_VALUE, LOGGING_PARAMS, SERVICE_LOCATION, TYPES
from .fake_hosts import RunningFakeHost

PROFILE_LIST = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"


def test_the_session_speaks_the_dialect_the_host_offers(rms_host: RunningFakeHost, opened: RemoteHost) -> None:
    if rms_host.host.smb1_only:
        assert opened.dialect == "NT LM 0.12"
    else:
        assert opened.dialect.startswith("SMB 3.")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sz", "plain string"),
        ("expand", "%SystemRoot%\\system32"),  # unexpanded, as winreg returns REG_EXPAND_SZ
        ("multi", "first"),  # the first string of a REG_MULTI_SZ
        ("dword", 0xFFFFFFFF),
        ("qword", 2**40 + 5),
        ("binary", None),  # no string or number: not a value the probe can use
        ("missing", None),
    ],
)
def test_values_read_as_the_local_reader_reads_them(opened: RemoteHost, name: str, expected: str | int | None) -> None:
    assert opened.registry.read_value(TYPES, name) == expected


def test_names_and_paths_are_case_insensitive(opened: RemoteHost) -> None:
    assert opened.registry.read_value(TYPES.upper(), "SZ") == "plain string"


def test_a_missing_key_reads_as_nothing(opened: RemoteHost) -> None:
    registry = opened.registry
    assert registry.read_value("SOFTWARE\\Microsoft\\NoSuchProduct", "x") is None
    assert registry.subkeys("SOFTWARE\\Microsoft\\NoSuchProduct") == []
    assert registry.value_names("SOFTWARE\\Microsoft\\NoSuchProduct") == []
    assert not registry.key_exists("SOFTWARE\\Microsoft\\NoSuchProduct")


def test_subkeys_and_value_names_of_the_rms_server_key(opened: RemoteHost) -> None:
    registry = opened.registry
    assert {"KeyProtection", "DirectoryServices"} <= set(registry.subkeys(DRMS))
    assert registry.value_names(DRMS) == ["GicURL"]
    assert sorted(registry.value_names(TYPES)) == ["binary", "dword", "expand", "multi", "qword", "sz"]
    assert registry.key_exists(DRMS + "\\DirectoryServices")


def test_the_logging_service_key_gives_cluster_and_port(opened: RemoteHost) -> None:
    services = opened.registry.subkeys("SYSTEM\\CurrentControlSet\\Services")
    assert "DRMS_Logging_RMS01_443" in services
    assert opened.registry.read_value(LOGGING_PARAMS, "ConnectionString") == (
        "Data Source=SQL01;Initial Catalog=DRMS_Logging_RMS01_443"
    )


def test_software_paths_fall_back_to_the_32_bit_view(opened: RemoteHost) -> None:
    registry = opened.registry
    # A value only in WOW6432Node, beside a native key that lacks it.
    assert registry.read_value(DRMS, "SubEnrollmentURL") == "https://root.corp.example/_wmcs"
    # A key only in WOW6432Node, read through its native path, (Default) value included.
    location = SERVICE_LOCATION + "\\EnterprisePublishing"
    assert registry.key_exists(location)
    assert registry.read_value(location, "") == "https://rms01.corp.example/_wmcs/licensing"
    assert registry.value_names(location) == [""]
    assert registry.subkeys(SERVICE_LOCATION) == ["EnterprisePublishing"]
    # In both views, the native one wins.
    assert registry.read_value("SOFTWARE\\Microsoft\\uDRM", "Hierarchy") == 1


def test_profiles_written_below_current_version_read_back(opened: RemoteHost) -> None:
    registry = opened.registry
    assert {ALICE.sid, BOB.sid} <= set(registry.subkeys(PROFILE_LIST))
    assert registry.read_value(f"{PROFILE_LIST}\\{ALICE.sid}", "ProfileImagePath") == (
        "%SystemDrive%\\Documents and Settings\\alice"
    )


def test_a_key_the_account_may_not_read_is_access_denied(opened_limited: RemoteHost, opened: RemoteHost) -> None:
    denied = DRMS + "\\KeyProtection"
    with pytest.raises(RegistryAccessDenied) as raised:
        opened_limited.registry.value_names(denied)
    assert raised.value.path.lower() == denied.lower()
    assert "HKLM\\SOFTWARE\\Microsoft\\DRMS\\1.0\\KeyProtection" in str(raised.value)
    with pytest.raises(RegistryAccessDenied):
        opened_limited.registry.read_value(denied, KEY_PROTECTION_VALUE)
    # The same account reads what is not denied; the administrator reads it all.
    assert opened_limited.registry.read_value(DRMS, "GicURL") == "https://rms01.corp.example/_wmcs/certification"
    assert opened.registry.value_names(denied) == [KEY_PROTECTION_VALUE]
