"""The Windows probe: host facts from the registry and the RMS client API (domain.md, "Where the
facts live on a Windows host").

Everything Windows-specific is behind two small interfaces, a RegistryReader and an RmsClientApi,
so this module is plain Python and is tested on Linux against hosts recorded in
tests/fixtures/windows_hosts/. Which registry values hold what is not fully documented, so the
value names are settings (WindowsProbeSettings, `[windows]` in the agent config) and the
version numbers go through the version map; docs/agent.md lists every default and marks the
assumptions.

What it reports:
- server: present when HKLM\\SOFTWARE\\Microsoft\\DRMS\\1.0 exists (native or WOW6432Node view).
  Its version comes from the first of `server_version_values` that is set, mapped through the
  version map. The cluster is the intranet licensing URL (`cluster_url_values`) or, failing that,
  derived from the configuration database name `DRMS_Config_<intranet URL>_<port>`. A server
  whose DRMS key names a parent (root) cluster URL (`parent_cluster_values`) belongs to a
  licensing-only cluster subenrolled under that root (D6); otherwise to a root certification
  cluster. Enrollment follows D9: an RTM server enrolls online, SP1 and later support offline
  enrollment (an UNKNOWN version claims no capability: online).
- client: present when msdrm.dll answers DRMGetClientVersion. Activation: `none` when the
  machine is not activated, else `self` for SP1 and later and `internet` for RTM (D10); an
  UNKNOWN client is reported `none`, because calling it self-activating would be a guess. The
  client's cluster is its service location override (EnterprisePublishing, then Activation),
  or none when the client finds its cluster through Active Directory.
- identity: host id, host name and forest are injected (HostIdentity) or read from the TCP/IP
  parameters (Hostname, Domain); the forest is taken to be the machine's DNS domain unless
  configured, which is wrong in a child domain: set `[host] forest` there.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.probe.registry import RecordedRegistry, RegistryReader, display_path
from rmsfleet.agent.probe.rms_client import RecordedRmsClient, RmsClientApi, RmsClientError
from rmsfleet.agent.probe.version_map import Role, VersionMap, dotted
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

DRMS_KEY = "SOFTWARE\\Microsoft\\DRMS\\1.0"
SERVICE_LOCATION_KEY = "SOFTWARE\\Microsoft\\MSDRM\\ServiceLocation"
TCPIP_PARAMETERS_KEY = "SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters"

# The configuration database is named DRMS_Config_<intranet URL>_<port> (domain.md). The URL's
# dots are assumed to appear as underscores (a database name allows no dots in practice).
_CONFIG_DATABASE = re.compile(r"DRMS_Config_(?P<host>[A-Za-z0-9._-]+?)_(?P<port>\d{1,5})(?![A-Za-z0-9])")


@dataclass(frozen=True, slots=True)
class HostIdentity:
    host_id: str
    hostname: str
    forest: str


@dataclass(frozen=True, slots=True)
class HostOverrides:
    """`[host]` in the agent config: each set field replaces what the probe would read."""

    host_id: str | None = None
    hostname: str | None = None
    forest: str | None = None


@dataclass(frozen=True, slots=True)
class WindowsProbeSettings:
    """`[windows]` in the agent config. Value names are tried in order; the first that is set wins.
    The defaults other than the key paths are assumptions (docs/agent.md, ASSUMPTIONS)."""

    drms_key: str = DRMS_KEY
    server_version_values: tuple[str, ...] = ("ProductVersion", "Version")
    cluster_url_values: tuple[str, ...] = ("IntranetLicensingUrl", "ClusterUrl")
    config_database_values: tuple[str, ...] = ("ConfigDatabase", "ConfigDatabaseConnectionString")
    parent_cluster_values: tuple[str, ...] = ("EnrollmentParentUrl", "RootClusterUrl")
    service_location_key: str = SERVICE_LOCATION_KEY


def normalize_cluster_url(text: str) -> str:
    """The cluster's identity as a URL: lower-case scheme and host, no default port, no trailing
    slash, and no `/_wmcs/...` service path (so a client's `.../_wmcs/licensing` override names
    the same cluster as the servers). A URL without a scheme is taken as http, RMS's default.
    Raises ValueError when there is no host."""
    value = text.strip()
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"not a URL: {text!r}")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in {("http", 80), ("https", 443)} else f"{host}:{port}"
    path = parts.path
    service = path.lower().find("/_wmcs")
    if service >= 0:
        path = path[:service]
    return f"{scheme}://{netloc}{path.rstrip('/')}"


def cluster_from_config_database(text: str) -> str | None:
    """The cluster URL a `DRMS_Config_<intranet URL>_<port>` name (or a connection string
    holding one) stands for, or None when there is no such name in `text`."""
    match = _CONFIG_DATABASE.search(text)
    if match is None:
        return None
    host = match.group("host")
    if "." not in host:
        host = host.replace("_", ".")
    port = int(match.group("port"))
    scheme = "https" if port == 443 else "http"
    return normalize_cluster_url(f"{scheme}://{host}:{port}")


def read_identity(registry: RegistryReader, overrides: HostOverrides = HostOverrides()) -> HostIdentity:
    """Host id, host name and forest from the TCP/IP parameters, with the configured overrides."""
    short = _text(registry.read_value(TCPIP_PARAMETERS_KEY, "Hostname"))
    domain = _text(registry.read_value(TCPIP_PARAMETERS_KEY, "Domain")) or _text(
        registry.read_value(TCPIP_PARAMETERS_KEY, "NV Domain")
    )
    where = f"{display_path(TCPIP_PARAMETERS_KEY)}"
    if overrides.host_id is None and overrides.hostname is None and not short:
        raise ProbeError(f"cannot tell the host name: {where} has no Hostname value; set [host] host_id and hostname")
    if overrides.forest is None and not domain:
        raise ProbeError(
            f"cannot tell the forest: the host has no DNS domain ({where} Domain is empty); set [host] forest"
        )
    short_name = (short or "").lower()
    domain_name = (domain or "").lower().strip(".")
    fqdn = f"{short_name}.{domain_name}" if short_name and domain_name else short_name
    return HostIdentity(
        host_id=overrides.host_id or short_name or (overrides.hostname or "").split(".", 1)[0],
        hostname=overrides.hostname or fqdn,
        forest=overrides.forest or domain_name,
    )


class WindowsProbe:
    def __init__(
        self,
        registry: RegistryReader,
        client: RmsClientApi,
        *,
        settings: WindowsProbeSettings = WindowsProbeSettings(),
        version_map: VersionMap | None = None,
        identity: HostIdentity | None = None,
        overrides: HostOverrides = HostOverrides(),
    ) -> None:
        self._registry = registry
        self._client = client
        self._settings = settings
        self._versions = version_map if version_map is not None else VersionMap.with_defaults()
        self._identity = identity
        self._overrides = overrides
        self._warned: set[tuple[str, str]] = set()

    def read(self) -> HostFacts:
        identity = self._identity or read_identity(self._registry, self._overrides)
        server = self._server()
        client = self._client_facts()
        if server is None and client is None:
            raise ProbeError(
                f"no RMS server ({display_path(self._settings.drms_key)} does not exist) and no RMS client "
                "(msdrm.dll is not installed) on this host: nothing to report"
            )
        facts = HostFacts(
            host_id=identity.host_id,
            hostname=identity.hostname,
            forest=identity.forest,
            server=server,
            client=client,
        )
        try:
            validate(facts)
        except InvalidFacts as exc:
            raise ProbeError(f"the facts read from this host are not valid: {exc}") from exc
        return facts

    # --- server --------------------------------------------------------------------------------

    def _server(self) -> ServerFacts | None:
        key = self._settings.drms_key
        if not self._registry.key_exists(key):
            return None
        version = self._server_version(key)
        cluster = self._server_cluster(key)
        parent = self._first_url(key, self._settings.parent_cluster_values)
        if parent is not None and parent != cluster:
            kind, root = ClusterKind.LICENSING, parent
        else:
            kind, root = ClusterKind.ROOT_CERTIFICATION, None
        # D9: only SP1 and later enroll offline. UNKNOWN claims no capability it cannot confirm.
        enrollment = Enrollment.OFFLINE if version in (Version.SP1, Version.SP2) else Enrollment.ONLINE
        return ServerFacts(
            version=version, cluster=cluster, cluster_kind=kind, root_cluster=root, enrollment=enrollment
        )

    def _server_version(self, key: str) -> Version:
        for name in self._settings.server_version_values:
            raw = self._registry.read_value(key, name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            return self._map(Role.SERVER, str(raw).strip(), f"{display_path(key)} {name}")
        self._warn_once(
            ("server-no-version", key),
            "RMS server found but none of the values %s under %s is set: server version reported as UNKNOWN; "
            "set [windows] server_version_values",
            ", ".join(self._settings.server_version_values),
            display_path(key),
        )
        return Version.UNKNOWN

    def _server_cluster(self, key: str) -> str:
        url = self._first_url(key, self._settings.cluster_url_values)
        if url is not None:
            return url
        for name in self._settings.config_database_values:
            raw = self._registry.read_value(key, name)
            if isinstance(raw, str):
                derived = cluster_from_config_database(raw)
                if derived is not None:
                    return derived
        tried = ", ".join((*self._settings.cluster_url_values, *self._settings.config_database_values))
        raise ProbeError(
            f"RMS server found but its cluster is unknown: none of the values {tried} under {display_path(key)} "
            "holds the intranet licensing URL or a DRMS_Config_<URL>_<port> database name; "
            "set [windows] cluster_url_values"
        )

    def _first_url(self, key: str, names: tuple[str, ...]) -> str | None:
        for name in names:
            raw = self._registry.read_value(key, name)
            if isinstance(raw, str) and raw.strip():
                try:
                    return normalize_cluster_url(raw)
                except ValueError as exc:
                    raise ProbeError(f"{display_path(key)} {name}: expected a URL, got {raw!r}") from exc
        return None

    # --- client --------------------------------------------------------------------------------

    def _client_facts(self) -> ClientFacts | None:
        try:
            raw = self._client.client_version()
        except RmsClientError as exc:
            # msdrm.dll is there, so a client is installed; what it is cannot be told.
            self._warn_once(("client-error", str(exc)), "RMS client version unreadable (%s): reported as UNKNOWN", exc)
            version = Version.UNKNOWN
        else:
            if raw is None:
                return None
            version = self._map(Role.CLIENT, dotted(raw), "DRMGetClientVersion")
        activated = self._client.is_activated()
        if activated is False:
            activation = Activation.NONE
        elif version in (Version.SP1, Version.SP2):
            activation = Activation.SELF
        elif version is Version.RTM:
            activation = Activation.INTERNET
        else:
            activation = Activation.NONE
        return ClientFacts(version=version, activation=activation, cluster=self._client_cluster())

    def _client_cluster(self) -> str | None:
        key = self._settings.service_location_key
        # Documented as subkeys whose (Default) value holds the URL; a plain value of the same
        # name is accepted too, as some deployments set it that way.
        for name in ("EnterprisePublishing", "Activation"):
            for path, value_name in ((f"{key}\\{name}", ""), (key, name)):
                raw = self._registry.read_value(path, value_name)
                if isinstance(raw, str) and raw.strip():
                    try:
                        return normalize_cluster_url(raw)
                    except ValueError as exc:
                        shown = f"{display_path(path)} {value_name or '(Default)'}"
                        raise ProbeError(f"{shown}: expected a URL, got {raw!r}") from exc
        return None

    # --- shared --------------------------------------------------------------------------------

    def _map(self, role: Role, raw: str, where: str) -> Version:
        release = self._versions.release(role, raw)
        if release is Version.UNKNOWN:
            self._warn_once(
                (role.value, raw),
                "%s version %s (%s) is not in the version map: reported as UNKNOWN; "
                "if you know its release, add it under [version_map.%s]",
                role.value,
                raw,
                where,
                role.value,
            )
        return release

    def _warn_once(self, key: tuple[str, str], message: str, *args: object) -> None:
        # The probe runs every interval; one warning per distinct problem keeps the log readable.
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


def _text(value: str | int | None) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class RecordedHost:
    """A host recorded as JSON (tests/fixtures/windows_hosts/): `registry` ({"keys": {path: {name:
    value}}, "denied": [path]}) and `rms_client` (null when no client, else {"version": [a, b, c,
    d], "activated": bool|null, "error": str|null})."""

    registry: RecordedRegistry
    client: RecordedRmsClient

    @classmethod
    def load(cls, path: Path) -> RecordedHost:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            client_doc = document.get("rms_client")
            if client_doc is None:
                client = RecordedRmsClient(version=None)
            else:
                raw = client_doc.get("version")
                version = None if raw is None else (int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))
                client = RecordedRmsClient(version, client_doc.get("activated"), client_doc.get("error"))
            return cls(RecordedRegistry.from_json(document.get("registry", {})), client)
        except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise ProbeError(f"{path}: not a recorded host: {exc}") from exc
