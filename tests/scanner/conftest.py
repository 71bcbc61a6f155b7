"""Fixtures for fake Windows hosts (see fake_hosts.py): `fake_host(FakeWindowsHost(...))` starts one
for the test and stops it afterwards; `samba_tools` and `pe_cache` are shared by the session."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rmsfleet.agent.scanner.remote import RemoteHost, RemoteOptions, open_remote_host

from .fake_hosts import (
    SERVER_SP1,
    WINDOWS_2003,
    FakeWindowsHost,
    Profile,
    RegValue,
    RunningFakeHost,
    running_fake_host,
)
from .pe_fixture import PACKAGE, WINDRES, tools_available
from .samba import SambaTools, require_samba

StartHost = Callable[[FakeWindowsHost], RunningFakeHost]


@pytest.fixture(scope="session")
def samba_tools() -> SambaTools:
    return require_samba()


@pytest.fixture(scope="session")
def pe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not tools_available():
        from conftest import skip_or_fail

        skip_or_fail(f"`{WINDRES}` not found on PATH (install Debian's `{PACKAGE}` package)")
    return tmp_path_factory.mktemp("pe-cache")


@pytest.fixture
def fake_host(samba_tools: SambaTools, pe_cache: Path) -> Iterator[StartHost]:
    with contextlib.ExitStack() as stack:

        def start(host: FakeWindowsHost) -> RunningFakeHost:
            return stack.enter_context(running_fake_host(host, samba_tools, pe_cache))

        yield start


# --- one RMS server host, shared by a test module, on SMB1 (a Windows 2003 host) and SMB3 ---------

DRMS = "SOFTWARE\\Microsoft\\DRMS\\1.0"
KEY_PROTECTION_VALUE = "PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_RMS01_443"
TYPES = "SOFTWARE\\Fixture\\Types"
SERVICE_LOCATION = "SOFTWARE\\Microsoft\\MSDRM\\ServiceLocation"
LOGGING_PARAMS = "SYSTEM\\CurrentControlSet\\Services\\DRMS_Logging_RMS01_443\\Params"
PLUGIN = "C:\\Program Files\\RMS fixture\\bin\\Plugin.DirectoryServices.dll"
MSDRM = "%SystemRoot%\\system32\\msdrm.dll"
MSDRM_VERSION = (5, 2, 3790, 433)  # made up: no msdrm.dll version is published (domain.md)
ALICE = Profile("alice", "S-1-5-21-1004336348-1177238915-682003330-1003", activated=True)
BOB = Profile("bob", "S-1-5-21-1004336348-1177238915-682003330-1004", activated=False)
README = "%SystemDrive%\\readme.txt"
README_TEXT = b"fixture file on the system drive\r\n" * 10


def rms_server(smb1_only: bool) -> FakeWindowsHost:
    return FakeWindowsHost(
        netbios_name="RMS01" if smb1_only else "RMS01X",
        windows_version=WINDOWS_2003,
        smb1_only=smb1_only,
        registry={
            DRMS: {"GicURL": "https://rms01.corp.example/_wmcs/certification"},
            DRMS + "\\KeyProtection": {KEY_PROTECTION_VALUE: RegValue.binary(bytes(range(256)) * 3)},
            DRMS + "\\DirectoryServices": {},
            TYPES: {
                "sz": "plain string",
                "expand": RegValue.expand("%SystemRoot%\\system32"),
                "multi": RegValue.multi(["first", "second"]),
                "dword": 0xFFFFFFFF,
                "qword": RegValue.qword(2**40 + 5),
                "binary": RegValue.binary(b"\x00\x01\x02"),
            },
            # Only in the 32-bit view, as a 32-bit installer on x64 writes it.
            "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0": {"SubEnrollmentURL": "https://root.corp.example/_wmcs"},
            "SOFTWARE\\WOW6432Node\\Microsoft\\MSDRM\\ServiceLocation\\EnterprisePublishing": {
                "": "https://rms01.corp.example/_wmcs/licensing"
            },
            # In both views: the native one wins.
            "SOFTWARE\\Microsoft\\uDRM": {"Hierarchy": 1},
            "SOFTWARE\\WOW6432Node\\Microsoft\\uDRM": {"Hierarchy": 0},
            LOGGING_PARAMS: {"ConnectionString": "Data Source=SQL01;Initial Catalog=DRMS_Logging_RMS01_443"},
        },
        files={PLUGIN: SERVER_SP1, MSDRM: MSDRM_VERSION, README: README_TEXT},
        profiles=[ALICE, BOB],
        denied_keys=[DRMS + "\\KeyProtection"],
        denied_files=[MSDRM],
    )


@pytest.fixture(scope="module", params=["smb1", "smb3"])
def rms_host(request: pytest.FixtureRequest, samba_tools: SambaTools, pe_cache: Path) -> Iterator[RunningFakeHost]:
    """An RMS server host: SMB1 only (as Windows 2003), or speaking SMB3 too."""
    with running_fake_host(rms_server(smb1_only=request.param == "smb1"), samba_tools, pe_cache) as running:
        yield running


@pytest.fixture
def opened(rms_host: RunningFakeHost) -> Iterator[RemoteHost]:
    with open_remote_host(rms_host.target(), rms_host.credentials, RemoteOptions(timeout=30)) as host:
        yield host


@pytest.fixture
def opened_limited(rms_host: RunningFakeHost) -> Iterator[RemoteHost]:
    with open_remote_host(rms_host.target(), rms_host.limited_credentials, RemoteOptions(timeout=30)) as host:
        yield host
