"""Files and version resources over the administrative shares (ADMIN$, C$) of a real Samba,
on SMB1 and on SMB3."""

from __future__ import annotations

import pytest

from rmsfleet.agent.probe.files import FileAccessDenied
from rmsfleet.agent.scanner.pe_version import RemoteVersionReader
from rmsfleet.agent.scanner.remote import RemoteHost
from rmsfleet.agent.scanner.shares import ShareNotFound

from .conftest import ALICE, BOB, MSDRM, MSDRM_VERSION, PLUGIN, README, README_TEXT
from .fake_hosts import SERVER_SP1, WINDOWS_2003

DRM_CERT = "Local Settings\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm"


def test_the_kernel_version_is_read_over_admin_share(opened: RemoteHost) -> None:
    assert opened.versions.file_version("%SystemRoot%\\system32\\ntoskrnl.exe") == WINDOWS_2003


def test_admin_share_and_system_drive_reach_the_same_file(opened: RemoteHost) -> None:
    assert opened.versions.file_version("C:\\WINDOWS\\System32\\NTOSKRNL.EXE") == WINDOWS_2003
    assert opened.versions.file_version("%SystemDrive%\\WINDOWS\\system32\\ntoskrnl.exe") == WINDOWS_2003


def test_versions_of_the_rms_files(opened: RemoteHost) -> None:
    assert opened.versions.file_version(PLUGIN) == SERVER_SP1
    assert opened.versions.file_version(MSDRM) == MSDRM_VERSION


def test_a_missing_file_has_no_version(opened: RemoteHost) -> None:
    assert opened.versions.file_version("%SystemRoot%\\system32\\nosuch.dll") is None
    assert opened.versions.file_version("%SystemRoot%\\nosuchfolder\\nosuch.dll") is None
    assert opened.files.read_bytes("%SystemDrive%\\nosuch.txt", 100) is None


def test_a_file_that_is_no_pe_image_has_no_version(opened: RemoteHost) -> None:
    assert opened.versions.file_version(README) is None


def test_a_version_resource_beyond_the_read_limit_is_not_guessed(opened: RemoteHost) -> None:
    short = RemoteVersionReader(opened.files, max_bytes=512)
    assert short.file_version("%SystemRoot%\\system32\\ntoskrnl.exe") is None


def test_read_bytes_reads_at_most_the_limit(opened: RemoteHost) -> None:
    assert opened.files.read_bytes(README, 1_000_000) == README_TEXT
    assert opened.files.read_bytes(README, 10) == README_TEXT[:10]


def test_profiles_and_their_machine_certificates(opened: RemoteHost) -> None:
    files = opened.files
    assert files.list_dir("%SystemDrive%\\Documents and Settings") == ["alice", "bob"]
    assert files.exists(f"{ALICE.image_path}\\{DRM_CERT}")
    assert not files.exists(f"{BOB.image_path}\\{DRM_CERT}")
    assert files.exists(BOB.image_path)  # a folder exists too
    assert files.list_dir(f"{BOB.image_path}\\Local Settings\\Application Data\\Microsoft\\DRM") == []
    assert files.list_dir(f"{ALICE.image_path}\\Local Settings\\Application Data\\Microsoft\\DRM") == [
        "CERT-Machine.drm"
    ]
    assert files.list_dir("%SystemDrive%\\No Such Folder") == []


def test_the_windows_folder_is_listed_over_admin_share(opened: RemoteHost) -> None:
    names = opened.files.list_dir("%SystemRoot%\\system32")
    assert {"ntoskrnl.exe", "msdrm.dll"} <= set(names)
    assert opened.files.exists("%SystemRoot%")


def test_a_file_the_account_may_not_read_is_access_denied(opened_limited: RemoteHost) -> None:
    with pytest.raises(FileAccessDenied) as raised:
        opened_limited.versions.file_version(MSDRM)
    assert raised.value.path == MSDRM
    assert MSDRM in str(raised.value)
    # What is not denied reads as usual for that account.
    assert opened_limited.versions.file_version("%SystemRoot%\\system32\\ntoskrnl.exe") == WINDOWS_2003


def test_a_drive_without_a_share_is_not_reported_as_a_missing_file(opened: RemoteHost) -> None:
    with pytest.raises(ShareNotFound, match=r"D\$"):
        opened.files.exists("D:\\Program Files\\x.dll")
    with pytest.raises(ShareNotFound):
        opened.files.read_bytes("D:\\x.dll", 10)
