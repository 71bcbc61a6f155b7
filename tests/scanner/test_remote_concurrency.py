"""Several scans reading the same host at once (the scanner's concurrency, a host listed under
two names, a user opening the same file meanwhile). Over SMB1, impacket's own open asks for a
batch oplock and cannot take the break the server sends when another client opens the file: the
reader asks for no oplock (shares.py), which this test pins (it fails with "Got 36, Expected 46"
without it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from rmsfleet.agent.scanner.remote import RemoteOptions, open_remote_host

from .conftest import StartHost
from .fake_hosts import SERVER_SP2, WINDOWS_2003, FakeWindowsHost

ASSEMBLY = "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\bin\\Plugin.DirectoryServices.dll"
KERNEL = "%SystemRoot%\\system32\\ntoskrnl.exe"


@pytest.mark.parametrize("smb1_only", [True, False])
def test_eight_scans_of_one_host_at_once_all_read_the_same_versions(fake_host: StartHost, smb1_only: bool) -> None:
    running = fake_host(
        FakeWindowsHost("BUSY01", windows_version=WINDOWS_2003, smb1_only=smb1_only, files={ASSEMBLY: SERVER_SP2})
    )

    def scan(index: int) -> list[object]:
        read: list[object] = []
        with open_remote_host(running.target(f"busy-{index}"), running.credentials, RemoteOptions(timeout=30)) as host:
            for _ in range(5):
                read.append(host.versions.file_version(KERNEL))
                read.append(host.versions.file_version(ASSEMBLY))
        return read

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(scan, range(8)))
    assert results == [[WINDOWS_2003, SERVER_SP2] * 5] * 8
