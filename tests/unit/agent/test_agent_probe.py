"""Probe selection, the file probe, and the RMS client API off Windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmsfleet.agent.config import load_config
from rmsfleet.agent.probe import FileProbe, MsdrmClientApi, ProbeError, WindowsProbe, select_probe
from rmsfleet.agent.probe.rms_client import DrmClientVersionInfo
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


def test_without_msdrm_dll_there_is_no_client_and_no_activation_answer() -> None:
    api = MsdrmClientApi()
    assert api.client_version() is None
    assert api.is_activated() is None


def test_the_client_version_structure_has_the_documented_layout() -> None:
    # UINT + DWORD[4] + 3 x WCHAR[256]; WCHAR is 2 bytes on Windows, where the call is made.
    wchar = 2 if DrmClientVersionInfo.wszHierarchy.size == 512 else 4
    assert DrmClientVersionInfo.dwVersion.offset == 4
    assert DrmClientVersionInfo.wszHierarchy.offset == 20
    assert DrmClientVersionInfo.wszProductId.offset == 20 + 256 * wchar
