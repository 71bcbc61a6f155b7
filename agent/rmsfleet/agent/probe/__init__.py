"""Where host facts come from: a facts file, or this Windows host read through the one mapping
from documented facts (documented.py) that the agentless scanner shares.

`select_probe(config, platform)` picks one from the agent configuration; the run loop then only
calls `probe.read()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmsfleet.agent.probe.base import Probe, ProbeAccessDenied, ProbeError
from rmsfleet.agent.probe.documented import (
    ClusterKey,
    ClusterUrls,
    DocumentedHost,
    DocumentedSettings,
    HostIdentity,
    HostSources,
    HostStatus,
    NoteLog,
    WindowsPaths,
    read_documented_host,
)
from rmsfleet.agent.probe.file_probe import FileProbe
from rmsfleet.agent.probe.files import FileAccessDenied, FileReader
from rmsfleet.agent.probe.local_files import LocalFileReader
from rmsfleet.agent.probe.recorded import RecordedFiles, RecordedHost
from rmsfleet.agent.probe.registry import RecordedRegistry, RegistryAccessDenied, RegistryReader, WinRegReader
from rmsfleet.agent.probe.rms_client import MsdrmClientApi, RecordedRmsClient, RmsClientApi, RmsClientError
from rmsfleet.agent.probe.version_map import VersionMap
from rmsfleet.agent.probe.version_resource import RecordedVersions, VersionResourceReader, Win32VersionReader
from rmsfleet.agent.probe.windows_probe import HostOverrides, WindowsProbe, local_sources

if TYPE_CHECKING:
    # Only for the annotation: config imports this package's settings types, not the reverse.
    from rmsfleet.agent.config import AgentConfig

__all__ = [
    "ClusterKey",
    "ClusterUrls",
    "DocumentedHost",
    "DocumentedSettings",
    "FileAccessDenied",
    "FileProbe",
    "FileReader",
    "HostIdentity",
    "HostOverrides",
    "HostSources",
    "HostStatus",
    "LocalFileReader",
    "MsdrmClientApi",
    "NoteLog",
    "Probe",
    "ProbeAccessDenied",
    "ProbeError",
    "RecordedFiles",
    "RecordedHost",
    "RecordedRegistry",
    "RecordedRmsClient",
    "RecordedVersions",
    "RegistryAccessDenied",
    "RegistryReader",
    "RmsClientApi",
    "RmsClientError",
    "VersionMap",
    "VersionResourceReader",
    "Win32VersionReader",
    "WinRegReader",
    "WindowsPaths",
    "WindowsProbe",
    "local_sources",
    "read_documented_host",
    "select_probe",
]


def select_probe(config: AgentConfig, platform: str) -> Probe:
    """The probe the configuration asks for. `platform` is `sys.platform`, passed in so the choice
    is testable. `probe = "auto"`: the facts file when one is given, else the Windows probe on
    Windows; `"file"` and `"windows"` force one. Raises ProbeError when the choice cannot work."""
    kind = config.probe
    if kind == "file" or (kind == "auto" and config.facts_file is not None):
        if config.facts_file is None:
            raise ProbeError("probe = file needs a facts file: pass --facts FILE (or set facts_file)")
        return FileProbe(config.facts_file)
    if platform != "win32":
        if kind == "windows":
            raise ProbeError(f"the Windows probe runs only on Windows (this is {platform}): use --facts FILE")
        raise ProbeError(f"no facts file given: on {platform} the agent reads its facts from --facts FILE")
    return WindowsProbe(local_sources(), settings=config.documented_settings(), overrides=config.host)
