"""The local Windows probe: this host's facts through the one shared mapping (documented.py).

The mapping reads through three small interfaces; here they are the local ones: the registry
(WinRegReader, `winreg`), the disk (LocalFileReader, `%SystemRoot%` and `%SystemDrive%` from
the environment) and version resources (Win32VersionReader, `GetFileVersionInfoW`), plus
msdrm.dll's DRMGetClientVersion. All are loaded on first use, so this module imports, and is
tested, on Linux against recorded hosts (tests/fixtures/windows_hosts/).

The host's identity is not an RMS fact: it is injected (HostIdentity), or read from the TCP/IP
parameters (`Hostname`, `Domain`) with the `[host]` overrides; the host id is the FQDN, which is
unique in the fleet where the short name is not. The forest is taken to be the
machine's DNS domain unless configured, which is wrong in a child domain: set `[host] forest`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.probe.documented import (
    DocumentedSettings,
    HostIdentity,
    HostSources,
    NoteLog,
    normalize_cluster_url,
    read_documented_host,
)
from rmsfleet.agent.probe.local_files import LocalFileReader
from rmsfleet.agent.probe.registry import RegistryReader, WinRegReader, display_path
from rmsfleet.agent.probe.rms_client import MsdrmClientApi
from rmsfleet.agent.probe.version_resource import Win32VersionReader
from rmsfleet.contract.facts import HostFacts

__all__ = [
    "HostIdentity",
    "HostOverrides",
    "WindowsProbe",
    "local_sources",
    "normalize_cluster_url",
    "read_identity",
]

TCPIP_PARAMETERS_KEY = "SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters"


@dataclass(frozen=True, slots=True)
class HostOverrides:
    """`[host]` identity keys in the agent config: each set field replaces what the probe reads."""

    host_id: str | None = None
    hostname: str | None = None
    forest: str | None = None


def read_identity(registry: RegistryReader, overrides: HostOverrides = HostOverrides()) -> HostIdentity:
    """Host id (the FQDN, lower-cased), host name and forest from the TCP/IP parameters, with the
    configured overrides."""
    short = _text(registry.read_value(TCPIP_PARAMETERS_KEY, "Hostname"))
    domain = _text(registry.read_value(TCPIP_PARAMETERS_KEY, "Domain")) or _text(
        registry.read_value(TCPIP_PARAMETERS_KEY, "NV Domain")
    )
    where = display_path(TCPIP_PARAMETERS_KEY)
    if overrides.host_id is None and overrides.hostname is None and not short:
        raise ProbeError(f"cannot tell the host name: {where} has no Hostname value; set [host] host_id and hostname")
    if overrides.forest is None and not domain:
        raise ProbeError(
            f"cannot tell the forest: the host has no DNS domain ({where} Domain is empty); set [host] forest"
        )
    short_name = (short or "").lower()
    domain_name = (domain or "").lower().strip(".")
    fqdn = f"{short_name}.{domain_name}" if short_name and domain_name else short_name
    # The host id is the FQDN, unique in the fleet: two forests may each have a WS-1, and short
    # names made them one host (and, with enrollment, the second one locked out). `[host] host_id`
    # keeps another id, e.g. the short names a fleet reported under before.
    return HostIdentity(
        host_id=overrides.host_id or (fqdn or overrides.hostname or "").lower(),
        hostname=overrides.hostname or fqdn,
        forest=overrides.forest or domain_name,
    )


def local_sources(environ: Mapping[str, str] | None = None) -> HostSources:
    """This Windows host: its registry, its disk, its version resources and msdrm.dll."""
    files = LocalFileReader(environ)
    return HostSources(WinRegReader(), files, Win32VersionReader(files.local_path), MsdrmClientApi())


class WindowsProbe:
    def __init__(
        self,
        sources: HostSources,
        *,
        settings: DocumentedSettings | None = None,
        identity: HostIdentity | None = None,
        overrides: HostOverrides = HostOverrides(),
    ) -> None:
        self._sources = sources
        self._settings = settings if settings is not None else DocumentedSettings()
        self._identity = identity
        self._overrides = overrides
        # The probe runs every interval; each distinct note is logged once, not every read.
        self._notes = NoteLog()

    @property
    def settings(self) -> DocumentedSettings:
        return self._settings

    def read(self) -> HostFacts:
        identity = self._identity or read_identity(self._sources.registry, self._overrides)
        host = read_documented_host(self._sources, self._settings, identity)
        if host.facts is None:
            # Nothing to report is the probe's failure here: say why, on one line.
            raise ProbeError("; ".join(host.notes) or f"no facts: {host.status.value}")
        self._notes.log(host.notes)
        return host.facts


def _text(value: str | int | None) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
