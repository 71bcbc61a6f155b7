"""The ONE mapping from what a Windows host documents to HostFacts, shared by the local Windows
probe and the agentless scanner (domain.md, "Versions as a probe can read them" and "Where the
facts live on a Windows host").

`read_documented_host(sources, settings, identity)` reads a host through three small interfaces
(HostSources: a RegistryReader, a FileReader, a VersionResourceReader, and locally the msdrm.dll
API) and returns a DocumentedHost: the facts (None when no RMS is found), a status the scanner
can count, and notes, one line each, naming the configuration key that settles what the host
does not document. Access problems raise ProbeAccessDenied (RegistryAccessDenied,
FileAccessDenied); the function itself never logs (NoteLog logs each distinct note once).

It reads only documented facts; where none gives a fact, the operator's configuration does,
never a guess:

- server: the key `HKLM\\SOFTWARE\\Microsoft\\DRMS\\1.0` exists (the readers also try
  `WOW6432Node`: the server is 32-bit, D15). Its version is the file version of the server
  assembly `Plugin.DirectoryServices` through the version map, whose built-in rules are the three
  versions [MS-RMPRS] 2.3.1.2 names (1.0.3246.0 RTM, 5.2.3790.134 SP1, 5.2.3790.300 SP2). Where
  the assembly lies on disk is not documented: a configurable list of folders (assumptions).
- cluster: licensing-only when `SubEnrollmentURL` is set (its root is that URL, D16), else root
  certification. Its name and port come from the `KeyProtection` value name
  `PASSWORDDERIVEDKEY_<database server>_DRMS_CONFIG_<cluster name>_<port>` or the logging
  service key `DRMS_Logging_<cluster name>_<port>`. No registry value holds the cluster's URL, so
  the URL comes from the configuration (`[clusters] "<name>:<port>"`, or this host's
  `server_cluster`); unconfigured, the cluster is named `urn:rmsfleet:cluster:<name>:<port>`
  (so cluster rules work at once) with a note naming the key that maps it to its URL.
- enrollment: D9 from the version (SP1 and SP2 offline; RTM and UNKNOWN online).
- pre-production: `UddiProvider` under DRMS\\1.0, or `SOFTWARE\\Microsoft\\uDRM` `Hierarchy` = 1:
  a note (the facts are still reported).
- Windows version: the kernel's file version (`%SystemRoot%\\system32\\ntoskrnl.exe`), else
  `Windows NT\\CurrentVersion` `CurrentVersion`. From 6 (Vista) on the client is BUILTIN (D15).
- client before Vista: `msdrm.dll` exists, or the Uninstall entry "Windows Rights Management
  Client with Service Pack 2" (Cc747749: SP2). Otherwise msdrm.dll's file version maps through
  the configured client rules only (no client version is published).
- activation (D17): user profiles from `ProfileList` (not the service accounts S-1-5-18/19/20)
  whose `CERT-Machine.drm` exists, counted; never DRMIsActivated as the agent's account, never
  DRMActivate.
- client cluster: `MSDRM\\ServiceLocation\\EnterprisePublishing` (Default), else the configured
  `client_cluster`, else none (the client finds it in Active Directory).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from rmsfleet.agent.probe.files import FileReader
from rmsfleet.agent.probe.registry import RegistryReader
from rmsfleet.agent.probe.rms_client import RmsClientApi
from rmsfleet.agent.probe.version_map import VersionMap
from rmsfleet.agent.probe.version_resource import VersionResourceReader
from rmsfleet.contract.facts import HostFacts

log = logging.getLogger(__name__)

# --- documented locations (domain.md, "Where the facts live on a Windows host") -------------------

DRMS_KEY = "SOFTWARE\\Microsoft\\DRMS\\1.0"
KEY_PROTECTION_SUBKEY = "KeyProtection"
SERVICES_KEY = "SYSTEM\\CurrentControlSet\\Services"
UDRM_KEY = "SOFTWARE\\Microsoft\\uDRM"
SERVICE_LOCATION_KEY = "SOFTWARE\\Microsoft\\MSDRM\\ServiceLocation"
WINDOWS_NT_KEY = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
PROFILE_LIST_KEY = WINDOWS_NT_KEY + "\\ProfileList"
UNINSTALL_KEY = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
SP2_CLIENT_PRODUCT = "Windows Rights Management Client with Service Pack 2"  # Cc747749 (KB917275)
SERVICE_ACCOUNT_SIDS = frozenset({"S-1-5-18", "S-1-5-19", "S-1-5-20"})  # LocalSystem, LocalService, NetworkService

# Where the server assembly lies is not documented: these folders are ASSUMPTIONS (docs/agent.md).
# Cc720291 documents the RMS web folder `<system drive>:\<web root>\_wmcs` (default web root
# `Inetpub\wwwroot`); ASP.NET loads an application's private assemblies from its `bin`; a
# strong-named assembly (Plugin.DirectoryServices has public key token 31bf3856ad364e35,
# [MS-RMPRS] 2.3.1.2) may instead be in the .NET 1.1 global assembly cache, one folder per
# version. A `*` segment stands for every subfolder.
DEFAULT_SERVER_ASSEMBLY_FOLDERS: tuple[str, ...] = (
    "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\bin",
    "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\licensing\\bin",
    "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\certification\\bin",
    "%SystemRoot%\\assembly\\GAC\\Plugin.DirectoryServices\\*",
)
SERVER_ASSEMBLY_SUFFIX = "Plugin.DirectoryServices.dll"


@dataclass(frozen=True, slots=True)
class WindowsPaths:
    """Where the mapping looks (`[windows]` in the agent config). The registry keys, the kernel,
    msdrm.dll and the per-user certificate are documented; `server_assembly_folders` is an
    assumption and `rtm_machine_certificate` is unset until an operator confirms it."""

    drms_key: str = DRMS_KEY
    service_location_key: str = SERVICE_LOCATION_KEY
    server_assembly_folders: tuple[str, ...] = DEFAULT_SERVER_ASSEMBLY_FOLDERS
    server_assembly_suffix: str = SERVER_ASSEMBLY_SUFFIX
    kernel: str = "%SystemRoot%\\system32\\ntoskrnl.exe"
    msdrm: str = "%SystemRoot%\\system32\\msdrm.dll"
    # D17 (Cc720182): relative to each user profile, clients before Vista.
    profile_certificate: str = "Local Settings\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm"
    # The Windows Vista and later client keeps all its certificates, the machine certificate
    # included, in %USERPROFILE%\AppData\Local\Microsoft\DRM (AD RMS SDK, "License Management").
    builtin_profile_certificate: str = "AppData\\Local\\Microsoft\\DRM\\CERT-Machine.drm"
    # An RTM client's machine certificate is not per user (D17: per user from SP1 on), and where
    # it lies is not documented: unset, an RTM client without per-user certificates reports
    # activation `unknown`. Set it to the path confirmed on one RTM client.
    rtm_machine_certificate: str | None = None


@dataclass(frozen=True, slots=True, order=True)
class ClusterKey:
    """A cluster as the registry names it: `DRMS_Config_<name>_<port>`. `name` is lower-cased
    (Windows compares these names without case)."""

    name: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClusterUrls:
    """Cluster URLs from the operator (no registry value holds them): `by_name` from
    `[clusters] "<name>:<port>" = URL`; `server` and `client` for this host alone
    (`[host] server_cluster`, `[host] client_cluster`), each winning over what the mapping
    would otherwise report."""

    by_name: tuple[tuple[ClusterKey, str], ...] = ()
    server: str | None = None
    client: str | None = None

    def url_for(self, key: ClusterKey) -> str | None:
        for known, url in self.by_name:
            if known == key:
                return url
        return None


@dataclass(frozen=True, slots=True)
class DocumentedSettings:
    """The operator's configuration the mapping uses: paths, the version map (built-in known
    rules plus configured ones) and cluster URLs."""

    paths: WindowsPaths = field(default_factory=WindowsPaths)
    versions: VersionMap = field(default_factory=VersionMap.with_defaults)
    clusters: ClusterUrls = field(default_factory=ClusterUrls)


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """Who the host is. Not read by the mapping: the local probe reads it from Tcpip\\Parameters
    (or the configuration), the scanner uses the name the target was listed under."""

    host_id: str
    hostname: str
    forest: str


@dataclass(frozen=True, slots=True)
class HostSources:
    """Where the mapping reads a host. `client_api` (msdrm.dll's DRMGetClientVersion) exists
    only locally; it supplies the client's version numbers when msdrm.dll's file version
    cannot be read."""

    registry: RegistryReader
    files: FileReader
    versions: VersionResourceReader
    client_api: RmsClientApi | None = None


class HostStatus(enum.Enum):
    """What became of one host, for counting (the scanner's summary)."""

    REPORTED = "reported"  # facts, every version mapped
    VERSION_UNKNOWN = "version-unknown"  # facts, but a server or client version is UNKNOWN
    RMS_NOT_FOUND = "rms-not-found"  # no facts: neither an RMS server nor an RMS client
    CLUSTER_UNKNOWN = "cluster-unknown"  # no facts: an RMS server whose cluster nothing names


@dataclass(frozen=True, slots=True)
class DocumentedHost:
    """The mapping's answer. `facts` is None exactly when status is RMS_NOT_FOUND or
    CLUSTER_UNKNOWN. `notes` are one line each, for the operator, naming the configuration key
    that settles what the host does not document. `readings` are the raw values read
    (`("server assembly", "C:\\...\\Plugin.DirectoryServices.dll 5.2.3790.134")`, ...), for
    --json output and support."""

    facts: HostFacts | None
    status: HostStatus
    notes: tuple[str, ...] = ()
    readings: tuple[tuple[str, str], ...] = ()


def read_documented_host(sources: HostSources, settings: DocumentedSettings, identity: HostIdentity) -> DocumentedHost:
    """Read one host's documented facts (see the module docstring for every rule).

    Raises ProbeAccessDenied (RegistryAccessDenied, FileAccessDenied) when a key or file it
    needs may not be read, and ProbeError when a documented value is malformed (a
    `SubEnrollmentURL` that is no URL, a configured URL that is none). A user profile whose
    certificate folder may not be read is not an error: activation becomes `unknown`, with a
    note. The facts returned pass the contract's `validate`."""
    raise NotImplementedError


class NoteLog:
    """Logs each distinct note once (at WARNING) for a long-lived caller: the agent reads its
    host every interval, and one line per problem keeps the log readable."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def log(self, notes: Iterable[str], prefix: str = "") -> None:
        for note in notes:
            if note not in self._seen:
                self._seen.add(note)
                self._logger.warning("%s%s", prefix, note)
