"""Probe selection, the file probe, and the local Windows readers off Windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmsfleet.agent.config import load_config
from rmsfleet.agent.probe import (
    FileProbe,
    LocalFileReader,
    MsdrmClientApi,
    ProbeError,
    RecordedVersions,
    Win32VersionReader,
    WindowsProbe,
    select_probe,
)
from rmsfleet.agent.probe.rms_client import DrmClientVersionInfo
from rmsfleet.agent.probe.version_resource import split_file_version
from rmsfleet.contract.facts import Version

FACTS = {
    "host_id": "ams-rms-01",
    "hostname": "ams-rms-01.corp.example",
    "forest": "corp.example",
    "server": {
        "version": "SP1",
        "cluster": "https://rms.corp.example",
        "cluster_kind": "root-certification",
        "root_cluster": None,
        "enrollment": "offline",
    },
    "client": None,
}


def facts_file(tmp_path: Path, document: object = FACTS) -> Path:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_file_probe_reads_the_facts_file_each_time(tmp_path: Path) -> None:
    path = facts_file(tmp_path)
    probe = FileProbe(path)
    facts = probe.read()
    assert facts.server is not None and facts.server.version is Version.SP1
    # D13: a version can go down between two reports; the next read sees the new file.
    path.write_text(json.dumps({**FACTS, "server": {**FACTS["server"], "version": "RTM"}}), encoding="utf-8")  # type: ignore[dict-item]
    again = probe.read()
    assert again.server is not None and again.server.version is Version.RTM


def test_file_probe_errors_are_one_line_naming_the_file_and_field(tmp_path: Path) -> None:
    path = facts_file(tmp_path, {**FACTS, "forest": ""})
    with pytest.raises(ProbeError) as caught:
        FileProbe(path).read()
    message = str(caught.value)
    assert str(path) in message and "forest" in message and "\n" not in message


def test_file_probe_on_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="cannot read"):
        FileProbe(tmp_path / "missing.json").read()


def test_a_facts_file_is_used_whenever_it_is_given(tmp_path: Path) -> None:
    path = facts_file(tmp_path)
    for platform in ("linux", "win32"):
        probe = select_probe(load_config({"facts_file": str(path)}, {}, None, platform="linux"), platform)
        assert isinstance(probe, FileProbe)
        assert probe.path == path


def test_on_windows_without_a_facts_file_the_windows_probe_is_used(tmp_path: Path) -> None:
    probe = select_probe(load_config({}, {}, None, platform="win32"), "win32")
    assert isinstance(probe, WindowsProbe)


def test_the_windows_probe_gets_the_configured_mapping_settings(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text('[clusters]\n"rms:443" = "https://rms.corp.example"\n', encoding="utf-8")
    probe = select_probe(load_config({}, {}, config_file, platform="win32"), "win32")
    assert isinstance(probe, WindowsProbe)
    assert probe.settings.clusters.by_name[0][1] == "https://rms.corp.example"


def test_probe_windows_forces_the_windows_probe_even_with_a_facts_file(tmp_path: Path) -> None:
    cfg = load_config({"facts_file": str(facts_file(tmp_path)), "probe": "windows"}, {}, None, platform="win32")
    assert isinstance(select_probe(cfg, "win32"), WindowsProbe)


def test_off_windows_without_a_facts_file_the_error_says_what_to_pass() -> None:
    with pytest.raises(ProbeError, match="--facts FILE"):
        select_probe(load_config({}, {}, None, platform="linux"), "linux")


def test_the_windows_probe_is_refused_off_windows() -> None:
    with pytest.raises(ProbeError, match="runs only on Windows"):
        select_probe(load_config({"probe": "windows"}, {}, None, platform="linux"), "linux")


def test_probe_file_without_a_facts_file_is_an_error() -> None:
    with pytest.raises(ProbeError, match="needs a facts file"):
        select_probe(load_config({"probe": "file"}, {}, None, platform="win32"), "win32")


def test_without_msdrm_dll_there_is_no_client_version() -> None:
    assert MsdrmClientApi().client_version() is None


def test_the_rms_client_api_cannot_ask_or_change_activation() -> None:
    # D17: DRMIsActivated answers for the agent's own account, not the users; DRMActivate
    # would replace the machine certificate. Neither is reachable through the API the probe has.
    assert not any("activat" in name.lower() for name in dir(MsdrmClientApi))


def test_the_local_file_reader_expands_the_windows_folders_from_the_environment(tmp_path: Path) -> None:
    windows = tmp_path / "WINDOWS"
    (windows / "system32").mkdir(parents=True)
    (windows / "system32" / "msdrm.dll").write_bytes(b"MZ" + bytes(100))
    profile = tmp_path / "Documents and Settings" / "alice" / "Local Settings"
    profile.mkdir(parents=True)
    files = LocalFileReader({"SystemRoot": str(windows), "SYSTEMDRIVE": str(tmp_path)}, redirected=False)
    assert files.exists("%SystemRoot%\\system32\\msdrm.dll")
    assert files.read_bytes("%systemroot%\\system32\\msdrm.dll", 2) == b"MZ"
    assert files.read_bytes("%SystemRoot%\\system32\\missing.dll", 2) is None
    assert files.list_dir("%SystemDrive%\\Documents and Settings") == ["alice"]
    assert files.list_dir("%SystemDrive%\\Nothing") == []
    assert not files.exists("%SystemDrive%\\Documents and Settings\\bob")


def test_a_32_bit_agent_on_64_bit_windows_reads_the_real_system32() -> None:
    files = LocalFileReader({"SystemRoot": "C:\\WINDOWS"}, redirected=True)
    assert files.local_path("%SystemRoot%\\system32\\ntoskrnl.exe").replace("/", "\\") == (
        "C:\\WINDOWS\\Sysnative\\ntoskrnl.exe"
    )


def test_an_unset_windows_folder_variable_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="%SystemRoot% is not set"):
        LocalFileReader({}, redirected=False).local_path("%SystemRoot%\\system32\\msdrm.dll")


def test_version_resources_are_read_on_windows_only() -> None:
    with pytest.raises(RuntimeError, match="runs only on Windows"):
        Win32VersionReader(lambda path: path).file_version("%SystemRoot%\\system32\\ntoskrnl.exe")


def test_the_fixed_file_info_version_is_split_into_four_numbers() -> None:
    # VS_FIXEDFILEINFO: dwFileVersionMS = major << 16 | minor, dwFileVersionLS = build << 16 | private.
    assert split_file_version((5 << 16) | 2, (3790 << 16) | 134) == (5, 2, 3790, 134)
    recorded = RecordedVersions({"%SystemRoot%\\System32\\MSDRM.dll": (6, 0, 6406, 0)})
    assert recorded.file_version("%systemroot%\\system32\\msdrm.dll") == (6, 0, 6406, 0)
    assert recorded.file_version("%SystemRoot%\\system32\\other.dll") is None


def test_the_client_version_structure_has_the_documented_layout() -> None:
    # UINT + DWORD[4] + 3 x WCHAR[256]; WCHAR is 2 bytes on Windows, where the call is made.
    wchar = 2 if DrmClientVersionInfo.wszHierarchy.size == 512 else 4
    assert DrmClientVersionInfo.dwVersion.offset == 4
    assert DrmClientVersionInfo.wszHierarchy.offset == 20
    assert DrmClientVersionInfo.wszProductId.offset == 20 + 256 * wchar
