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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.probe.files import FileAccessDenied, FileReader
from rmsfleet.agent.probe.registry import RegistryReader, RegistryValue, display_path
from rmsfleet.agent.probe.rms_client import RmsClientApi, RmsClientError
from rmsfleet.agent.probe.version_map import Role, VersionMap, dotted, parse_dotted
from rmsfleet.agent.probe.version_resource import VersionResourceReader
from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    InvalidFacts,
    ServerFacts,
    Version,
    validate,
)

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

    def __post_init__(self) -> None:
        # Normalised here, so a key built anywhere (the scanner's settings too) matches.
        object.__setattr__(self, "name", self.name.strip().lower())

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
    return _Mapping(sources, settings).read(identity)


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


# --- cluster names ---------------------------------------------------------------------------------

URN_PREFIX = "urn:rmsfleet:cluster:"

_KEY_PROTECTION_VALUE = re.compile(
    r"^PASSWORDDERIVEDKEY_(?P<database>.+)_DRMS_CONFIG_(?P<name>.+)_(?P<port>\d{1,5})$", re.IGNORECASE
)
_LOGGING_SERVICE = re.compile(r"^DRMS_Logging_(?P<name>.+)_(?P<port>\d{1,5})$", re.IGNORECASE)


def cluster_key_from_key_protection(value_name: str) -> ClusterKey | None:
    """`PASSWORDDERIVEDKEY_<database server>_DRMS_CONFIG_<cluster name>_<port>` -> the cluster."""
    return _cluster_key(_KEY_PROTECTION_VALUE.match(value_name.strip()))


def cluster_key_from_logging_service(service_name: str) -> ClusterKey | None:
    """`DRMS_Logging_<cluster name>_<port>` (a service key name) -> the cluster."""
    return _cluster_key(_LOGGING_SERVICE.match(service_name.strip()))


def _cluster_key(match: re.Match[str] | None) -> ClusterKey | None:
    if match is None:
        return None
    port = int(match.group("port"))
    name = match.group("name").strip().lower()
    if not 1 <= port <= 65535 or not name:
        return None
    return ClusterKey(name, port)


def cluster_urn(key: ClusterKey) -> str:
    """The identity of a cluster whose URL is not configured: its documented name and port."""
    return f"{URN_PREFIX}{key.name}:{key.port}"


def parse_cluster_key(text: str) -> ClusterKey:
    """`"<cluster name>:<port>"` (a `[clusters]` key) -> ClusterKey. Raises ValueError."""
    name, sep, port = text.strip().rpartition(":")
    if not sep or not name.strip() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f'expected "<cluster name>:<port>" as in DRMS_Config_<cluster name>_<port>, got {text!r}')
    return ClusterKey(name.strip().lower(), int(port))


_HOST = re.compile(
    r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*"
)  # a DNS name or IP (urlsplit lower-cases)


def normalize_cluster_url(text: str) -> str:
    """The cluster's identity as a URL: lower-case scheme and host, no default port, no trailing
    slash, and no `/_wmcs/...` service path (so a licensing server's `SubEnrollmentURL`
    `.../_wmcs/certification/subenrollservice.asmx` and a client's `.../_wmcs/licensing` name
    the same clusters as the configuration does). A URL without a scheme is taken as http, RMS's
    default. Raises ValueError when there is no host."""
    value = text.strip()
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not _HOST.fullmatch(host):
        raise ValueError(f"not an http(s) URL: {text!r}")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in {("http", 80), ("https", 443)} else f"{host}:{port}"
    path = parts.path
    service = path.lower().find("/_wmcs")
    if service >= 0:
        path = path[:service]
    return f"{scheme}://{netloc}{path.rstrip('/')}"


# --- the mapping -----------------------------------------------------------------------------------


class _ClusterUnknown(Exception):
    """An RMS server whose cluster nothing names (raised inside the mapping only)."""


def _text(value: RegistryValue) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _join(folder: str, name: str) -> str:
    return folder.rstrip("\\") + "\\" + name.lstrip("\\")


class _Mapping:
    """One read of one host: collects notes and readings while it maps."""

    def __init__(self, sources: HostSources, settings: DocumentedSettings) -> None:
        self.registry = sources.registry
        self.files = sources.files
        self.versions = sources.versions
        self.client_api = sources.client_api
        self.paths = settings.paths
        self.version_map = settings.versions
        self.clusters = settings.clusters
        self.notes: list[str] = []
        self.readings: list[tuple[str, str]] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def reading(self, what: str, value: str) -> None:
        self.readings.append((what, value))

    def answer(self, facts: HostFacts | None, status: HostStatus) -> DocumentedHost:
        return DocumentedHost(facts, status, tuple(self.notes), tuple(self.readings))

    def read(self, identity: HostIdentity) -> DocumentedHost:
        windows = self.windows_version()
        try:
            server = self.server()
        except _ClusterUnknown:
            return self.answer(None, HostStatus.CLUSTER_UNKNOWN)
        client = self.client(windows)
        self.pre_production(server is not None)
        if server is None and client is None:
            self.note(
                f"no RMS server ({display_path(self.paths.drms_key)} does not exist) and no RMS client "
                f"(no {self.paths.msdrm}, no Uninstall entry {SP2_CLIENT_PRODUCT!r}): nothing to report"
            )
            return self.answer(None, HostStatus.RMS_NOT_FOUND)
        facts = HostFacts(
            host_id=identity.host_id, hostname=identity.hostname, forest=identity.forest, server=server, client=client
        )
        try:
            validate(facts)
        except InvalidFacts as exc:
            raise ProbeError(f"the facts read from this host are not valid: {exc}") from exc
        unknown = (server is not None and server.version is Version.UNKNOWN) or (
            client is not None and client.version is Version.UNKNOWN
        )
        return self.answer(facts, HostStatus.VERSION_UNKNOWN if unknown else HostStatus.REPORTED)

    # --- Windows ---------------------------------------------------------------------------------

    def windows_version(self) -> tuple[int, ...] | None:
        kernel = self.paths.kernel
        version = self.versions.file_version(kernel)
        if version is not None:
            self.reading("windows", f"{kernel} {dotted(version)}")
            return version
        raw = _text(self.registry.read_value(WINDOWS_NT_KEY, "CurrentVersion"))
        parts = None if raw is None else parse_dotted(raw)
        if parts is not None:
            self.reading("windows", f"{display_path(WINDOWS_NT_KEY)} CurrentVersion {raw}")
            return parts
        self.note(
            f"the Windows version cannot be read (no version resource in {kernel}, no "
            f"{display_path(WINDOWS_NT_KEY)} CurrentVersion): the RMS client is looked for as on Windows before Vista"
        )
        return None

    def pre_production(self, server_found: bool) -> None:
        where: list[str] = []
        if server_found and self.registry.read_value(self.paths.drms_key, "UddiProvider") not in (None, ""):
            where.append(f"{display_path(self.paths.drms_key)} UddiProvider is set")
        hierarchy = self.registry.read_value(UDRM_KEY, "Hierarchy")
        if hierarchy == 1 or (isinstance(hierarchy, str) and hierarchy.strip() == "1"):
            where.append(f"{display_path(UDRM_KEY)} Hierarchy = 1")
        if where:
            self.note(f"pre-production hierarchy ({'; '.join(where)}): these facts describe a test deployment")

    # --- server ----------------------------------------------------------------------------------

    def server(self) -> ServerFacts | None:
        key = self.paths.drms_key
        if not self.registry.key_exists(key):
            return None
        version = self.server_version()
        root: str | None = None
        kind = ClusterKind.ROOT_CERTIFICATION
        sub_enrollment = _text(self.registry.read_value(key, "SubEnrollmentURL"))
        if sub_enrollment is not None:
            # D16: a licensing-only server names its root certification cluster here.
            try:
                root = normalize_cluster_url(sub_enrollment)
            except ValueError as exc:
                raise ProbeError(
                    f"{display_path(key)} SubEnrollmentURL: expected a URL, got {sub_enrollment!r}"
                ) from exc
            kind = ClusterKind.LICENSING
            self.reading("root cluster", f"{display_path(key)} SubEnrollmentURL {sub_enrollment}")
        cluster = self.server_cluster(key)
        if root is not None and root == cluster:
            raise ProbeError(
                f"{display_path(key)} SubEnrollmentURL names {root}, which is this server's own cluster: "
                "check [clusters] and [host] server_cluster"
            )
        # D9: only SP1 and later enroll offline. UNKNOWN claims no capability it cannot confirm.
        enrollment = Enrollment.OFFLINE if version in (Version.SP1, Version.SP2) else Enrollment.ONLINE
        return ServerFacts(
            version=version, cluster=cluster, cluster_kind=kind, root_cluster=root, enrollment=enrollment
        )

    def server_version(self) -> Version:
        suffix = self.paths.server_assembly_suffix
        found = self.server_assemblies()
        if not found:
            folders = ", ".join(self.paths.server_assembly_folders)
            self.note(
                f"RMS server found but no file ending in {suffix} in {folders}: server version UNKNOWN; "
                "add the folder that holds it to [windows] server_assembly_folders"
            )
            return Version.UNKNOWN
        versioned = [(path, version) for path in found if (version := self.versions.file_version(path)) is not None]
        if not versioned:
            self.note(f"{found[0]} has no version resource: server version UNKNOWN")
            return Version.UNKNOWN
        for path, version in versioned:
            self.reading("server assembly", f"{path} {dotted(version)}")
        if len({version for _, version in versioned}) > 1:
            # Which copy the server loads is not documented: picking one would be a guess.
            self.note(
                f"several versions of {suffix} ("
                + ", ".join(f"{p} {dotted(v)}" for p, v in versioned)
                + "): server version UNKNOWN; narrow [windows] server_assembly_folders to the folder the server uses"
            )
            return Version.UNKNOWN
        path, version = versioned[0]
        text = dotted(version)
        rule = self.version_map.rule_for(Role.SERVER, text)
        if rule is None:
            self.note(
                f"server assembly {path} has file version {text}, which no rule maps: server version UNKNOWN; "
                f'if you know its release, add [versions.server] "{text}" = "RTM|SP1|SP2"'
            )
            return Version.UNKNOWN
        return rule.release

    def server_assemblies(self) -> list[str]:
        """Files ending in the assembly suffix in the first configured folder that has one."""
        suffix = self.paths.server_assembly_suffix.lower()
        for pattern in self.paths.server_assembly_folders:
            found: list[str] = []
            for folder in self.expand(pattern):
                names = sorted(self.files.list_dir(folder), key=str.lower)
                found.extend(_join(folder, name) for name in names if name.lower().endswith(suffix))
            if found:
                return found
        return []

    def expand(self, pattern: str) -> list[str]:
        """A folder pattern's folders: each `*` segment stands for every entry of its parent."""
        folders = [""]
        for segment in pattern.strip("\\").split("\\"):
            if segment == "*":
                folders = [_join(folder, name) for folder in folders for name in self.files.list_dir(folder)]
            else:
                folders = [_join(folder, segment) if folder else segment for folder in folders]
        return folders

    def server_cluster(self, key: str) -> str:
        configured = self.clusters.server
        if configured is not None:
            self.reading("cluster", f"{configured} (configured for this host)")
            return self.configured_url(configured, "[host] server_cluster")
        names = self.cluster_keys(key)
        if not names:
            self.note(
                f"RMS server found but its cluster cannot be told: {display_path(key)}\\{KEY_PROTECTION_SUBKEY} holds "
                "no PASSWORDDERIVEDKEY_<database server>_DRMS_CONFIG_<cluster name>_<port> value and there is no "
                "DRMS_Logging_<cluster name>_<port> service; set [host] server_cluster to its URL"
            )
            raise _ClusterUnknown
        if len(names) > 1:
            listed = ", ".join(str(name) for name in names)
            self.note(
                f"RMS server found but the registry names several clusters ({listed}): "
                "set [host] server_cluster to the URL of the one this server belongs to"
            )
            raise _ClusterUnknown
        name = names[0]
        url = self.clusters.url_for(name)
        if url is not None:
            self.reading("cluster", f"{name} -> {url} (configured)")
            return self.configured_url(url, f'[clusters] "{name}"')
        urn = cluster_urn(name)
        self.reading("cluster", f"{name} (no URL configured)")
        self.note(
            f'cluster "{name.name}" port {name.port} is reported as {urn}: no registry value holds its URL; '
            f'add [clusters] "{name}" = "https://..." to name it by its URL'
        )
        return urn

    def cluster_keys(self, key: str) -> list[ClusterKey]:
        """The clusters the registry names: the KeyProtection value names, else the logging
        service keys (enumerating the services is the slower read, so it comes second)."""
        protection = f"{key}\\{KEY_PROTECTION_SUBKEY}"
        names = {
            found
            for value in self.registry.value_names(protection)
            if (found := cluster_key_from_key_protection(value)) is not None
        }
        if names:
            self.reading("cluster name", f"{display_path(protection)} " + ", ".join(map(str, sorted(names))))
            return sorted(names)
        names = {
            found
            for service in self.registry.subkeys(SERVICES_KEY)
            if (found := cluster_key_from_logging_service(service)) is not None
        }
        if names:
            self.reading(
                "cluster name", f"{display_path(SERVICES_KEY)} DRMS_Logging_* " + ", ".join(map(str, sorted(names)))
            )
        return sorted(names)

    @staticmethod
    def configured_url(url: str, where: str) -> str:
        try:
            return normalize_cluster_url(url)
        except ValueError as exc:
            raise ProbeError(f"{where}: expected a URL, got {url!r}") from exc

    # --- client ----------------------------------------------------------------------------------

    def client(self, windows: tuple[int, ...] | None) -> ClientFacts | None:
        if windows is not None and windows[0] >= 6:
            return self.builtin_client(windows)
        msdrm = self.paths.msdrm
        present = self.files.exists(msdrm)
        raw = self.versions.file_version(msdrm) if present else None
        source = msdrm
        if raw is None and self.client_api is not None:
            try:
                from_api = self.client_api.client_version()
            except RmsClientError as exc:
                self.note(f"the RMS client's version cannot be read ({exc})")
                present = True
                from_api = None
            if from_api is not None:
                raw, source, present = from_api, "DRMGetClientVersion", True
        if raw is not None:
            self.reading("client", f"{source} {dotted(raw)}")
        rule = None if raw is None else self.version_map.rule_for(Role.CLIENT, dotted(raw))
        version: Version
        if rule is not None and rule.release is not Version.UNKNOWN:
            # The operator confirmed this version's release: the Uninstall entries (hundreds of
            # keys on a desktop, each a round trip for the scanner) need not be read.
            version = rule.release
        else:
            product = self.sp2_product()
            if not present and product is None:
                return None
            version = self.unruled_client_version(raw, source, product)
        users = self.activated_users(self.paths.profile_certificate)
        return ClientFacts(
            version=version,
            activation=self.activation(version, users),
            cluster=self.client_cluster(),
            activated_users=users,
        )

    def unruled_client_version(self, raw: tuple[int, ...] | None, source: str, product: str | None) -> Version:
        """The client's version when no configured rule maps its version numbers."""
        if product is not None:
            # Cc747749: the SP2 client installs as this Windows Installer product.
            self.reading("client", f"{display_path(product)} DisplayName {SP2_CLIENT_PRODUCT!r}")
            return Version.SP2
        if raw is None:
            self.note(f"RMS client found but {source} has no version resource: client version UNKNOWN")
            return Version.UNKNOWN
        text = dotted(raw)
        # No client version is published (domain.md): only the operator can map it.
        self.note(
            f"msdrm.dll {text} ({source}) maps to no release: client version UNKNOWN; once you know its "
            f'release, add [versions.client] "{text}" = "RTM|SP1|SP2"'
        )
        return Version.UNKNOWN

    def sp2_product(self) -> str | None:
        """The Uninstall key of the SP2 client product, in either registry view, or None."""
        for base in (UNINSTALL_KEY, "SOFTWARE\\WOW6432Node\\" + UNINSTALL_KEY[len("SOFTWARE\\") :]):
            for name in self.registry.subkeys(base):
                path = f"{base}\\{name}"
                shown = _text(self.registry.read_value(path, "DisplayName"))
                if shown is not None and shown.casefold() == SP2_CLIENT_PRODUCT.casefold():
                    return path
        return None

    def builtin_client(self, windows: tuple[int, ...]) -> ClientFacts:
        # D15: from Vista on Windows ships its own RMS client, none of RTM/SP1/SP2, self-activating.
        self.reading("client", f"built into Windows {dotted(windows[:2])}")
        users = self.activated_users(self.paths.builtin_profile_certificate)
        return ClientFacts(
            version=Version.BUILTIN,
            activation=self.activation(Version.BUILTIN, users),
            cluster=self.client_cluster(),
            activated_users=users,
        )

    def activation(self, version: Version, users: int | None) -> Activation:
        if users is None or version is Version.UNKNOWN:
            return Activation.UNKNOWN
        if version in (Version.SP1, Version.SP2, Version.BUILTIN):
            return Activation.SELF if users > 0 else Activation.NONE  # D10, D15, D17
        if users > 0:
            return Activation.INTERNET  # D10: an RTM client activated over the internet
        # D17: per user only from SP1 on; an RTM client's machine certificate is per machine.
        machine = self.paths.rtm_machine_certificate
        if machine is None:
            self.note(
                "RTM client with no per-user machine certificate: an RTM client's is per machine "
                "(D17: per user from SP1 on) and where it lies is not documented, so activation is unknown; "
                "set [windows] rtm_machine_certificate to its path once confirmed on an RTM client"
            )
            return Activation.UNKNOWN
        try:
            found = self.files.exists(machine)
        except FileAccessDenied:
            self.note(f"cannot read {machine}: activation unknown")
            return Activation.UNKNOWN
        self.reading("rtm machine certificate", f"{machine} {'exists' if found else 'missing'}")
        return Activation.INTERNET if found else Activation.NONE

    def activated_users(self, certificate: str) -> int | None:
        """How many user profiles hold `certificate` (relative to the profile), or None when the
        profiles cannot be read."""
        sids = [sid for sid in self.registry.subkeys(PROFILE_LIST_KEY) if sid.upper() not in SERVICE_ACCOUNT_SIDS]
        if not self.registry.key_exists(PROFILE_LIST_KEY):
            self.note(f"{display_path(PROFILE_LIST_KEY)} does not exist: activation unknown")
            return None
        count = 0
        profiles = 0
        denied: list[str] = []
        for sid in sids:
            profile = _text(self.registry.read_value(f"{PROFILE_LIST_KEY}\\{sid}", "ProfileImagePath"))
            if profile is None:
                continue
            profiles += 1
            try:
                if self.files.exists(_join(profile, certificate)):
                    count += 1
            except FileAccessDenied:
                denied.append(profile)
        if denied:
            self.note(
                f"cannot read {certificate} in {len(denied)} user profile(s) ({', '.join(denied)}): activation unknown; "
                "grant the account read access to the profiles"
            )
            return None
        self.reading("activated users", f"{count} of {profiles} profiles hold {certificate}")
        return count

    def client_cluster(self) -> str | None:
        path = f"{self.paths.service_location_key}\\EnterprisePublishing"
        raw = _text(self.registry.read_value(path, ""))
        if raw is not None:
            try:
                url = normalize_cluster_url(raw)
            except ValueError as exc:
                raise ProbeError(f"{display_path(path)} (Default): expected a URL, got {raw!r}") from exc
            self.reading("client cluster", f"{display_path(path)} {raw}")
            return url
        if self.clusters.client is not None:
            self.reading("client cluster", f"{self.clusters.client} (configured for this host)")
            return self.configured_url(self.clusters.client, "[host] client_cluster")
        return None
