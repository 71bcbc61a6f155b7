"""The scanner's configuration: one TOML file (`--config`, `RMSFLEET_SCAN_CONFIG`), flags and
the environment, read once into a frozen ScanConfig.

The file shares the agent's sections, read by the agent's own loader (so they mean, and are
checked, exactly as in agent.toml): for reaching the collector `[agent]` (only `collectors` and
`state_dir`), `[sender]`, `[tls]`, `[enroll]`, `[outbox]`; for reading hosts, the mapping's
`[clusters]`, `[versions.server]`/`[versions.client]` and `[windows]` (paths). The scanner's own
sections are `[scan]`, `[smb]`, `[groups.NAME]` and `[hosts."NAME"]`:

    [scan]
    targets_file = "targets.txt"       # relative paths are relative to this file
    credentials_file = "scan.credentials"
    concurrency = 32                   # targets read at the same time
    timeout = 30                       # seconds per network exchange with one target
    interval = 3600                    # scan again every interval; absent: scan once
    forest = "corp.example"            # the AD forest of the targets (no default: never guessed)

    [smb]
    allow_smb1 = true                  # Windows 2000/XP/2003 (every RMS 1.0 host, D15) speak only SMB1
    start_remote_registry = false      # start a stopped Remote Registry over SVCCTL and put it back
    system_drive_share = "C$"

    [clusters]                         # no registry value holds a cluster's URL (domain.md)
    "rms_corp_example:443" = "https://rms.corp.example"

    [versions.client]                  # msdrm.dll file versions confirmed on one host per release
    "5.2.3790.100" = "SP1"

    [groups.amsterdam]                 # hosts listed with group=amsterdam
    forest = "ams.corp.example"
    timeout = 60
    clusters = { "rms_ams:443" = "https://rms.ams.corp.example" }
    smb = { allow_smb1 = false }
    versions = { client = { "5.2.3790.200" = "SP2" } }

    [hosts."rms01.corp.example"]       # one host, by the name it is listed under
    server_cluster = "https://rms.corp.example"
    client_cluster = "https://rms.corp.example"

A host's settings are the file's top-level ones, then its group's, then its own, each level
replacing single values and adding to (or replacing entries of) the cluster and version tables.

Every error is one line naming the file and line (`scan.toml:12: [groups.ams] timeout: expected a
number of seconds > 0, got "x"`), or the flag or variable.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rmsfleet.agent.config import AgentConfig, ConfigError, load_config
from rmsfleet.agent.probe.documented import (
    ClusterKey,
    ClusterUrls,
    DocumentedSettings,
    normalize_cluster_url,
    parse_cluster_key,
)
from rmsfleet.agent.probe.version_map import Role, VersionMap, VersionRule, configured_rule

SCANNER_SECTIONS = ("scan", "smb", "groups", "hosts")
CONFIG_ENV = "RMSFLEET_SCAN_CONFIG"
DEFAULT_CONCURRENCY = 32
DEFAULT_TIMEOUT = 30.0
RELEASES = ("RTM", "SP1", "SP2", "UNKNOWN")
# The agent settings that mean something to the scanner; any other agent key in the scanner's
# file is refused, so that nobody sets `[agent] interval_seconds` believing it schedules scans.
AGENT_SETTINGS_USED = frozenset(
    {
        "collectors",
        "state_dir",
        "jitter",
        "sender.initial_backoff",
        "sender.max_backoff",
        "sender.backoff_multiplier",
        "sender.rpc_deadline_seconds",
        "tls.ca_file",
        "tls.cert_file",
        "tls.key_file",
        "tls.insecure",
        "enroll_secret_file",
        "enroll_token_file",
        "outbox_max_changes",
        "windows.drms_key",
        "windows.service_location_key",
        "windows.server_assembly_folders",
        "windows.server_assembly_suffix",
        "windows.kernel",
        "windows.msdrm",
        "windows.profile_certificate",
        "windows.builtin_profile_certificate",
        "windows.rtm_machine_certificate",
    }
)
_SCOPE_KEYS = ("forest", "timeout", "server_cluster", "client_cluster", "clusters", "versions", "smb")
_SCAN_KEYS = ("targets_file", "credentials_file", "concurrency", "timeout", "interval", "forest")
_SMB_KEYS = ("allow_smb1", "start_remote_registry", "system_drive_share")
_SHARE = re.compile(r"^[A-Za-z0-9_$.-]{1,80}$")


@dataclass(frozen=True, slots=True)
class SmbSettings:
    allow_smb1: bool = True
    start_remote_registry: bool = False
    system_drive_share: str = "C$"


@dataclass(frozen=True, slots=True)
class Scope:
    """Settings of one level (the whole scan, a group, a host); None/empty: not set here."""

    forest: str | None = None
    timeout: float | None = None
    server_cluster: str | None = None
    client_cluster: str | None = None
    clusters: tuple[tuple[ClusterKey, str], ...] = ()
    versions: tuple[VersionRule, ...] = ()
    smb: tuple[tuple[str, object], ...] = ()  # (SmbSettings field, value)


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """Everything that decides how one target is read, after merging its levels."""

    forest: str | None
    timeout: float
    smb: SmbSettings
    documented: DocumentedSettings  # what the mapping (probe/documented.py) needs


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanConfig:
    agent: AgentConfig  # collectors, TLS, enrollment, sender, outbox, state directory
    state_dir_explicit: bool
    targets_file: Path | None = None
    credentials_file: Path | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    interval: float | None = None
    top: Scope = Scope()
    smb: SmbSettings = SmbSettings()
    groups: Mapping[str, Scope] = field(default_factory=dict)
    hosts: Mapping[str, Scope] = field(default_factory=dict)  # keyed by lower-cased name
    config_file: Path | None = None

    def for_target(self, name: str, group: str | None) -> TargetSettings:
        """The merged settings of the target listed as `name` in `group` (a known group)."""
        levels = [self.top]
        if group is not None:
            levels.append(self.groups[group])
        host = self.hosts.get(name.lower())
        if host is not None:
            levels.append(host)
        base = self.agent.documented_settings()
        forest: str | None = None
        timeout: float | None = None
        server_cluster = base.clusters.server
        client_cluster = base.clusters.client
        clusters = dict(base.clusters.by_name)
        rules = {(rule.role, rule.prefix): rule for rule in self.agent.version_map.overrides}
        smb = self.smb
        for level in levels:
            forest = level.forest or forest
            timeout = level.timeout or timeout
            server_cluster = level.server_cluster or server_cluster
            client_cluster = level.client_cluster or client_cluster
            clusters.update(level.clusters)
            rules.update({(rule.role, rule.prefix): rule for rule in level.versions})
            smb = replace(smb, **dict(level.smb))  # type: ignore[arg-type]
        return TargetSettings(
            forest=forest,
            timeout=timeout or DEFAULT_TIMEOUT,
            smb=smb,
            documented=DocumentedSettings(
                paths=base.paths,
                versions=VersionMap.with_defaults(rules.values()),
                clusters=ClusterUrls(
                    by_name=tuple(sorted(clusters.items())), server=server_cluster, client=client_cluster
                ),
            ),
        )


def default_scan_state_dir(platform: str, environ: Mapping[str, str]) -> Path:
    if platform == "win32":
        return Path(environ.get("ProgramData") or "C:\\ProgramData") / "rmsfleet-scan"
    # systemd's StateDirectory= sets STATE_DIRECTORY (rmsfleet-scan.service).
    state_directory = environ.get("STATE_DIRECTORY")
    if state_directory:
        return Path(state_directory.split(":", 1)[0])
    return Path("/var/lib/rmsfleet-scan")


# --- values ----------------------------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, expected: str, got: object) -> None:
        super().__init__(expected)
        self.expected = expected
        self.got = got


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Bad("a number of seconds > 0", value)
    try:
        number = float(value)
    except ValueError:
        raise _Bad("a number of seconds > 0", value) from None
    if not 0 < number < float("inf"):
        raise _Bad("a number of seconds > 0", value)
    return number


def _count(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise _Bad("a whole number from 1 to 1024", value)
    return value


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Bad("true or false", value)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\r\n\t\x00"):
        raise _Bad("a non-empty string on one line", value)
    return value.strip()


def _url(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad("an http:// or https:// URL", value)
    try:
        normalize_cluster_url(_text(value))
    except ValueError:
        raise _Bad("an http:// or https:// URL", value) from None
    return value.strip()


def _path(value: object, base: Path) -> Path:
    path = Path(_text(value))
    return path if path.is_absolute() else base / path


def _share(value: object) -> str:
    text = _text(value)
    if not _SHARE.match(text):
        raise _Bad("a share name such as C$", value)
    return text


# --- the file --------------------------------------------------------------------------------------


class _File:
    """The scanner's sections of one file, with line numbers for messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def at(self, section: str, key: str | None = None) -> str:
        """`FILE:LINE: ` of `key` in `[section]` (a dotted table path), or of the header."""
        line = self._line_of(section, key)
        return f"{self.path}:{line}: " if line is not None else f"{self.path}: "

    def _line_of(self, section: str, key: str | None) -> int | None:
        """A plain scan that knows table headers and (quoted) keys: the key's line in its table,
        else the line where an enclosing table names the rest inline (`clusters = {...}` in
        `[groups.ams]`), else the table's header. None when it cannot tell."""
        wanted = [part.lower() for part in _split_dotted(section)]
        if key is not None:
            wanted.append(key.strip('"').lower())
        best: int | None = None
        current: list[str] = []
        for number, raw in enumerate(self.lines, start=1):
            line = raw.strip()
            if line.startswith("[") and not line.startswith("[["):
                current = [part.lower() for part in _split_dotted(line.split("#", 1)[0].strip().strip("[]"))]
                if current == wanted:
                    return number
                if current == wanted[: len(current)]:
                    best = number
                continue
            if not current or wanted[: len(current)] != current or len(current) >= len(wanted):
                continue
            name = wanted[len(current)]
            left = line.split("=", 1)[0].strip()
            first = _split_dotted(left)[0].lower() if left else ""
            if "=" in line and first == name:
                return number
        return best

    def fail(self, section: str, key: str | None, message: str) -> ConfigError:
        shown = f"[{section}]" + (f" {key}" if key is not None else "")
        return ConfigError(f"{self.at(section, key)}{shown}: {message}")


def _split_dotted(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quote: str | None = None
    for char in text:
        if quote:
            if char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def _value(file: _File, section: str, key: str, parse: Any, raw: object) -> Any:
    try:
        return parse(raw)
    except _Bad as bad:
        raise file.fail(section, key, f"expected {bad.expected}, got {_show(bad.got)}") from None


def _table(file: _File, section: str, key: str | None, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        where = f"[{section}]" + (f" {key}" if key else "")
        raise ConfigError(f"{file.at(section, key)}{where}: expected a table")
    return raw


def _clusters(file: _File, section: str, raw: object) -> tuple[tuple[ClusterKey, str], ...]:
    found: list[tuple[ClusterKey, str]] = []
    for key, url in _table(file, section, None, raw).items():
        try:
            cluster = parse_cluster_key(key)
        except ValueError as exc:
            raise file.fail(section, json.dumps(key), str(exc)) from None
        found.append((cluster, _value(file, section, key, _url, url)))
    return tuple(found)


def _versions(file: _File, section: str, raw: object) -> tuple[VersionRule, ...]:
    found: list[VersionRule] = []
    for role, rules in _table(file, section, None, raw).items():
        if role not in ("server", "client"):
            raise file.fail(section, role, "unknown role; expected server or client")
        sub = f"{section}.{role}"
        for prefix, release in _table(file, sub, None, rules).items():
            if not isinstance(release, str):
                raise file.fail(sub, json.dumps(prefix), f"expected one of {', '.join(RELEASES)}, got {_show(release)}")
            try:
                found.append(configured_rule(Role(role), prefix, release))
            except ValueError as exc:
                raise file.fail(sub, json.dumps(prefix), str(exc)) from None
    return tuple(found)


def _smb(file: _File, section: str, raw: object) -> tuple[tuple[str, object], ...]:
    parsers = {"allow_smb1": _bool, "start_remote_registry": _bool, "system_drive_share": _share}
    found: list[tuple[str, object]] = []
    for key, value in _table(file, section, None, raw).items():
        if key not in parsers:
            raise file.fail(section, key, f"unknown key; known keys: {', '.join(_SMB_KEYS)}")
        found.append((key, _value(file, section, key, parsers[key], value)))
    return tuple(found)


def _scope(file: _File, section: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> Scope:
    for key in table:
        if key not in allowed:
            raise file.fail(section, key, f"unknown key; known keys: {', '.join(allowed)}")
    get = table.get
    return Scope(
        forest=None if get("forest") is None else _value(file, section, "forest", _text, get("forest")),
        timeout=None if get("timeout") is None else _value(file, section, "timeout", _seconds, get("timeout")),
        server_cluster=None
        if get("server_cluster") is None
        else _value(file, section, "server_cluster", _url, get("server_cluster")),
        client_cluster=None
        if get("client_cluster") is None
        else _value(file, section, "client_cluster", _url, get("client_cluster")),
        clusters=() if get("clusters") is None else _clusters(file, f"{section}.clusters", get("clusters")),
        versions=() if get("versions") is None else _versions(file, f"{section}.versions", get("versions")),
        smb=() if get("smb") is None else _smb(file, f"{section}.smb", get("smb")),
    )


@dataclass(frozen=True, slots=True)
class _Scanner:
    targets_file: Path | None = None
    credentials_file: Path | None = None
    concurrency: int | None = None
    interval: float | None = None
    top: Scope = Scope()
    smb: SmbSettings = SmbSettings()
    groups: Mapping[str, Scope] = field(default_factory=dict)
    hosts: Mapping[str, Scope] = field(default_factory=dict)


def _read_scanner_sections(path: Path) -> _Scanner:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    file = _File(path, text)
    base = path.parent
    scan = _table(file, "scan", None, document.get("scan", {}))
    for key in scan:
        if key not in _SCAN_KEYS:
            raise file.fail("scan", key, f"unknown key; known keys: {', '.join(_SCAN_KEYS)}")
    get = scan.get
    # [clusters] and [versions] at the top are the agent's (read by its loader); [scan] adds
    # forest and timeout to them.
    top = _scope(file, "scan", {k: v for k, v in scan.items() if k in ("forest", "timeout")}, _SCOPE_KEYS)
    smb = SmbSettings(**dict(_smb(file, "smb", document.get("smb", {}))))  # type: ignore[arg-type]
    groups: dict[str, Scope] = {}
    for name, table in _table(file, "groups", None, document.get("groups", {})).items():
        section = f"groups.{name}"
        groups[name] = _scope(file, section, _table(file, section, None, table), _SCOPE_KEYS)
    hosts: dict[str, Scope] = {}
    for name, table in _table(file, "hosts", None, document.get("hosts", {})).items():
        section = f"hosts.{json.dumps(name)}"
        hosts[name.lower()] = _scope(file, section, _table(file, section, None, table), _SCOPE_KEYS)
    return _Scanner(
        targets_file=None
        if get("targets_file") is None
        else _value(file, "scan", "targets_file", lambda v: _path(v, base), get("targets_file")),
        credentials_file=None
        if get("credentials_file") is None
        else _value(file, "scan", "credentials_file", lambda v: _path(v, base), get("credentials_file")),
        concurrency=None
        if get("concurrency") is None
        else _value(file, "scan", "concurrency", _count, get("concurrency")),
        interval=None if get("interval") is None else _value(file, "scan", "interval", _seconds, get("interval")),
        top=top,
        smb=smb,
        groups=groups,
        hosts=hosts,
    )


@dataclass(frozen=True, slots=True)
class ScanFlags:
    """The scanner's own flags (None: not given)."""

    targets_file: Path | None = None
    credentials_file: Path | None = None
    concurrency: str | None = None
    timeout: str | None = None
    interval: str | None = None
    forest: str | None = None
    allow_smb1: bool | None = None
    start_remote_registry: bool | None = None


def _flag(name: str, parse: Any, raw: object) -> Any:
    try:
        return parse(raw)
    except _Bad as bad:
        raise ConfigError(f"{name}: expected {bad.expected}, got {_show(bad.got)}") from None


def load_scan_config(
    agent_flags: Mapping[str, object],
    flags: ScanFlags,
    environ: Mapping[str, str],
    file: Path | None,
    *,
    platform: str | None = None,
) -> ScanConfig:
    """Merge defaults, the file, the environment and the flags. `agent_flags` are the agent
    settings given as flags (load_config's argv_values). Raises ConfigError."""
    platform = platform or sys.platform
    agent = load_config(agent_flags, environ, file, platform=platform, other_sections=SCANNER_SECTIONS)
    for name, source in agent.sources:
        if name not in AGENT_SETTINGS_USED and not source.startswith(("env ", "flag ")):
            raise ConfigError(
                f"{source}: {name}: an agent setting the scanner does not use (it reads [agent] collectors and "
                "state_dir, [sender], [tls], [enroll], [outbox]; its own settings are in [scan])"
            )
    explicit = agent.source_of("state_dir") != "default"
    if not explicit:
        agent = replace(agent, state_dir=default_scan_state_dir(platform, environ))
    scanner = _read_scanner_sections(file) if file is not None else _Scanner()
    env_concurrency = environ.get("RMSFLEET_SCAN_CONCURRENCY", "").strip() or None
    env_timeout = environ.get("RMSFLEET_SCAN_TIMEOUT", "").strip() or None
    env_interval = environ.get("RMSFLEET_SCAN_INTERVAL", "").strip() or None
    concurrency = scanner.concurrency or DEFAULT_CONCURRENCY
    if env_concurrency is not None:
        concurrency = _flag("RMSFLEET_SCAN_CONCURRENCY", _count, env_concurrency)
    if flags.concurrency is not None:
        concurrency = _flag("--concurrency", _count, flags.concurrency)
    interval = scanner.interval
    if env_interval is not None:
        interval = _flag("RMSFLEET_SCAN_INTERVAL", _seconds, env_interval)
    if flags.interval is not None:
        interval = _flag("--interval", _seconds, flags.interval)
    top = scanner.top
    if env_timeout is not None:
        top = replace(top, timeout=_flag("RMSFLEET_SCAN_TIMEOUT", _seconds, env_timeout))
    if flags.timeout is not None:
        top = replace(top, timeout=_flag("--timeout", _seconds, flags.timeout))
    if flags.forest is not None:
        top = replace(top, forest=_flag("--forest", _text, flags.forest))
    smb = scanner.smb
    if flags.allow_smb1 is not None:
        smb = replace(smb, allow_smb1=flags.allow_smb1)
    if flags.start_remote_registry is not None:
        smb = replace(smb, start_remote_registry=flags.start_remote_registry)
    return ScanConfig(
        agent=agent,
        state_dir_explicit=explicit,
        targets_file=flags.targets_file or scanner.targets_file,
        credentials_file=flags.credentials_file or scanner.credentials_file,
        concurrency=concurrency,
        interval=interval,
        top=top,
        smb=smb,
        groups=scanner.groups,
        hosts=scanner.hosts,
        config_file=file,
    )
