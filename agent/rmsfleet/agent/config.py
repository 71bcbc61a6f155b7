"""The agent's configuration: one TOML file, RMSFLEET_* environment variables and flags, merged
once into a frozen AgentConfig that is passed down (design.md: configuration is read once).

Precedence, highest first: flags > environment > file > defaults. Only settings that have a flag
have an environment variable (its name is the flag's, upper-cased: --state-dir ->
RMSFLEET_STATE_DIR); the rest are set in the file. `load_config` takes the environment as an
argument, so tests pass a dict and never touch os.environ.

Every error is one line that names where the bad value came from, with the file's line when it
can be found:

    agent.toml:7: [sender] initial_backoff: expected a number of seconds > 0, got "x"
    RMSFLEET_JITTER: expected a fraction from 0 to 1, got "lots"

The reference (every key, flag and variable) is docs/agent.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from rmsfleet.agent.probe.documented import (
    ClusterKey,
    ClusterUrls,
    DocumentedSettings,
    WindowsPaths,
    normalize_cluster_url,
    parse_cluster_key,
)
from rmsfleet.agent.probe.version_map import Role, VersionMapConfig, VersionRule, configured_rule
from rmsfleet.agent.probe.windows_probe import HostOverrides
from rmsfleet.contract.address import AddressError, is_loopback_address, parse_address

ProbeKind = Literal["auto", "file", "windows"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("auto", "file", "windows")
CONFIG_ENV = "RMSFLEET_CONFIG"


class ConfigError(Exception):
    """A configuration that cannot be used; the message is the one line the operator sees."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Plaintext gRPC to any collector. Off by default: reports name hosts and the node key travels
    # with them. A collector on a loopback address is spoken to in plaintext without it, unless a
    # TLS file is set (see `plaintext_to`).
    insecure: bool = False

    @property
    def has_files(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None or self.key_file is not None

    def plaintext_to(self, address: str) -> bool:
        """Whether to speak plaintext gRPC to `address` (HOST:PORT): with `insecure`, or to a
        loopback address (127.0.0.0/8, ::1, localhost) when no TLS file is set; traffic that never
        leaves the host gains nothing from TLS, and the one-command demo needs no certificates.
        Any other address gets TLS (the system's root CAs unless `ca_file` is set)."""
        if self.insecure:
            return True
        if self.has_files:
            return False
        return is_loopback_address(address)


@dataclass(frozen=True, slots=True)
class SenderConfig:
    initial_backoff: float = 5.0
    max_backoff: float = 30.0
    backoff_multiplier: float = 1.5
    rpc_deadline_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """`[spool]`: the folder of facts files the agent sends as their hosts (`rmsfleet-agent spool`,
    docs/agent.md). A file is taken once its size and modification time stayed the same for
    `settle_seconds` (writers write `NAME.tmp` and rename it to `NAME.json`; the wait covers
    those that do not); at most `batch_size` files per pass; `concurrency` hosts sent at a time."""

    dir: Path | None = None
    settle_seconds: float = 2.0
    poll_seconds: float = 1.0
    batch_size: int = 200
    concurrency: int = 16
    keep_done: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    state_dir: Path
    collectors: tuple[str, ...] = ()
    interval_seconds: float = 60.0
    jitter: float = 0.1
    facts_file: Path | None = None
    probe: ProbeKind = "auto"
    tls: TlsConfig = TlsConfig()
    enroll_secret_file: Path | None = None
    # An API token with the scanner role, sent on Enroll in place of the secret (enrollment.py).
    enroll_token_file: Path | None = None
    sender: SenderConfig = SenderConfig()
    spool: SpoolConfig = SpoolConfig()
    outbox_max_changes: int = 1000
    host: HostOverrides = field(default_factory=HostOverrides)
    windows: WindowsPaths = field(default_factory=WindowsPaths)
    version_map: VersionMapConfig = field(default_factory=VersionMapConfig)
    clusters: ClusterUrls = field(default_factory=ClusterUrls)
    # Where the configuration came from; not part of the configuration's value.
    config_file: Path | None = field(default=None, compare=False)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def enrolls(self) -> bool:
        """Whether an enrollment credential (secret or token file) is configured."""
        return self.enroll_secret_file is not None or self.enroll_token_file is not None

    def source_of(self, name: str) -> str:
        """Where setting `name` came from: `flag --x`, `env RMSFLEET_X`, `FILE:LINE` or `default`."""
        return dict(self.sources).get(name, "default")

    def documented_settings(self) -> DocumentedSettings:
        """What the mapping from documented facts (probe/documented.py) needs of this configuration."""
        return DocumentedSettings(paths=self.windows, versions=self.version_map.build(), clusters=self.clusters)


def default_state_dir(platform: str, environ: Mapping[str, str]) -> Path:
    if platform == "win32":
        return Path(environ.get("ProgramData") or "C:\\ProgramData") / "rmsfleet"
    # systemd's StateDirectory= sets STATE_DIRECTORY (a colon-separated list; the first is ours).
    state_directory = environ.get("STATE_DIRECTORY")
    if state_directory:
        return Path(state_directory.split(":", 1)[0])
    return Path("/var/lib/rmsfleet-agent")


def config_file_path(flag_value: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """The config file to load: --config, else RMSFLEET_CONFIG, else none."""
    if flag_value:
        return Path(flag_value)
    from_env = environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else None


# --- the settings table ---------------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, expected: str, got: object) -> None:
        super().__init__(expected)
        self.expected = expected
        self.got = got


Parser = Callable[[object, "Path | None"], object]


@dataclass(frozen=True, slots=True)
class _Setting:
    name: str  # the AgentConfig attribute path and the argv_values key
    section: str
    key: str
    parse: Parser
    flag: str | None = None

    @property
    def env(self) -> str | None:
        return None if self.flag is None else "RMSFLEET_" + self.flag.lstrip("-").upper().replace("-", "_")


def _number(value: object, *, expected: str) -> float:
    if isinstance(value, bool):
        raise _Bad(expected, value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Bad(expected, value) from None
    raise _Bad(expected, value)


def _seconds(value: object, base: Path | None) -> float:
    expected = "a number of seconds > 0"
    number = _number(value, expected=expected)
    if not number > 0 or number == float("inf"):
        raise _Bad(expected, value)
    return number


def _fraction(value: object, base: Path | None) -> float:
    expected = "a fraction from 0 to 1"
    number = _number(value, expected=expected)
    if not 0 <= number < 1:
        raise _Bad(expected, value)
    return number


def _multiplier(value: object, base: Path | None) -> float:
    expected = "a number >= 1"
    number = _number(value, expected=expected)
    if not 1 <= number < float("inf"):
        raise _Bad(expected, value)
    return number


def _count(value: object, base: Path | None) -> int:
    expected = "a whole number >= 1"
    if isinstance(value, bool):
        raise _Bad(expected, value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 1:
        raise _Bad(expected, value)
    return value


def _bool(value: object, base: Path | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    raise _Bad("true or false", value)


def _path(value: object, base: Path | None) -> Path:
    if isinstance(value, PurePath):
        return Path(value)
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a path", value)
    path = Path(value.strip())
    # A relative path in the file is relative to the file, so the file means the same thing
    # whatever directory the agent starts in.
    return base / path if base is not None and not path.is_absolute() else path


def _text(value: object, base: Path | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a non-empty string", value)
    return value.strip()


_WINDOWS_PATH = re.compile(r"^(%SystemRoot%|%SystemDrive%|[A-Za-z]:)(\\[^\\]+)+\\?$", re.IGNORECASE)
_WINDOWS_PATH_EXPECTED = "a Windows path starting with %SystemRoot%\\, %SystemDrive%\\ or a drive letter (X:\\)"


def _windows_path(value: object, base: Path | None) -> str:
    if not isinstance(value, str) or not _WINDOWS_PATH.match(value.strip()):
        raise _Bad(_WINDOWS_PATH_EXPECTED, value)
    return value.strip().rstrip("\\")


def _windows_folders(value: object, base: Path | None) -> tuple[str, ...]:
    expected = f"a list of folders, each {_WINDOWS_PATH_EXPECTED}"
    if not isinstance(value, list | tuple) or not value:
        raise _Bad(expected, value)
    for item in value:
        if not isinstance(item, str) or not _WINDOWS_PATH.match(item.strip()):
            raise _Bad(expected, item)
    return tuple(str(item).strip().rstrip("\\") for item in value)


def _profile_relative(value: object, base: Path | None) -> str:
    expected = "a path inside a user profile, such as 'AppData\\Local\\Microsoft\\DRM\\CERT-Machine.drm'"
    if not isinstance(value, str) or not value.strip() or ":" in value or value.strip().startswith(("\\", "%")):
        raise _Bad(expected, value)
    return value.strip().strip("\\")


def _registry_key(value: object, base: Path | None) -> str:
    expected = "a key under HKLM, such as 'SOFTWARE\\Microsoft\\DRMS\\1.0'"
    if not isinstance(value, str) or not value.strip() or value.strip().upper().startswith(("HKLM", "HKEY_")):
        raise _Bad(expected, value)
    return value.strip().strip("\\")


def _url(value: object, base: Path | None) -> str:
    expected = "an http(s) URL of an RMS cluster"
    if not isinstance(value, str):
        raise _Bad(expected, value)
    try:
        return normalize_cluster_url(value)
    except ValueError:
        raise _Bad(expected, value) from None


def _probe(value: object, base: Path | None) -> str:
    if isinstance(value, str) and value.strip().lower() in PROBE_KINDS:
        return value.strip().lower()
    raise _Bad("one of " + ", ".join(f'"{kind}"' for kind in PROBE_KINDS), value)


def _collectors(value: object, base: Path | None) -> tuple[str, ...]:
    expected = "HOST:PORT addresses (a list, or separated by commas)"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise _Bad(expected, value)
    addresses: list[str] = []
    for address in (part.strip() for item in value for part in item.split(",") if part.strip()):
        try:
            parse_address(address)
        except AddressError:
            raise _Bad("HOST:PORT addresses with a port from 1 to 65535", address) from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _Bad(expected, value)
    return tuple(addresses)


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("collectors", "agent", "collectors", _collectors, "--collector"),
    _Setting("interval_seconds", "agent", "interval_seconds", _seconds, "--interval"),
    _Setting("jitter", "agent", "jitter", _fraction, "--jitter"),
    _Setting("state_dir", "agent", "state_dir", _path, "--state-dir"),
    _Setting("facts_file", "agent", "facts_file", _path, "--facts"),
    _Setting("probe", "agent", "probe", _probe, "--probe"),
    _Setting("sender.initial_backoff", "sender", "initial_backoff", _seconds),
    _Setting("sender.max_backoff", "sender", "max_backoff", _seconds),
    _Setting("sender.backoff_multiplier", "sender", "backoff_multiplier", _multiplier),
    _Setting("sender.rpc_deadline_seconds", "sender", "rpc_deadline_seconds", _seconds, "--deadline"),
    _Setting("spool.dir", "spool", "dir", _path, "--spool-dir"),
    _Setting("spool.settle_seconds", "spool", "settle_seconds", _seconds),
    _Setting("spool.poll_seconds", "spool", "poll_seconds", _seconds),
    _Setting("spool.batch_size", "spool", "batch_size", _count),
    _Setting("spool.concurrency", "spool", "concurrency", _count),
    _Setting("spool.keep_done", "spool", "keep_done", _bool),
    _Setting("tls.ca_file", "tls", "ca_file", _path, "--tls-ca"),
    _Setting("tls.cert_file", "tls", "cert_file", _path, "--tls-cert"),
    _Setting("tls.key_file", "tls", "key_file", _path, "--tls-key"),
    _Setting("tls.insecure", "tls", "insecure", _bool, "--insecure"),
    _Setting("enroll_secret_file", "enroll", "secret_file", _path, "--enroll-secret-file"),
    _Setting("enroll_token_file", "enroll", "token_file", _path, "--enroll-token-file"),
    _Setting("outbox_max_changes", "outbox", "max_changes", _count),
    _Setting("host.host_id", "host", "host_id", _text),
    _Setting("host.hostname", "host", "hostname", _text),
    _Setting("host.forest", "host", "forest", _text),
    _Setting("clusters.server", "host", "server_cluster", _url),
    _Setting("clusters.client", "host", "client_cluster", _url),
    _Setting("windows.drms_key", "windows", "drms_key", _registry_key),
    _Setting("windows.service_location_key", "windows", "service_location_key", _registry_key),
    _Setting("windows.server_assembly_folders", "windows", "server_assembly_folders", _windows_folders),
    _Setting("windows.server_assembly_suffix", "windows", "server_assembly_suffix", _text),
    _Setting("windows.kernel", "windows", "kernel", _windows_path),
    _Setting("windows.msdrm", "windows", "msdrm", _windows_path),
    _Setting("windows.profile_certificate", "windows", "profile_certificate", _profile_relative),
    _Setting("windows.builtin_profile_certificate", "windows", "builtin_profile_certificate", _profile_relative),
    _Setting("windows.rtm_machine_certificate", "windows", "rtm_machine_certificate", _windows_path),
)
_BY_NAME = {setting.name: setting for setting in _SETTINGS}
_SECTIONS: dict[str, list[str]] = {}
for _setting in _SETTINGS:
    _SECTIONS.setdefault(_setting.section, []).append(_setting.key)
# Tables of the operator's own entries: [versions.server], [versions.client] and [clusters].
_SECTIONS["versions"] = [role.value for role in Role]
_SECTIONS["clusters"] = []
_RENAMED = {
    "version_map": "[version_map] is now [versions] (its tables [versions.server] and [versions.client]); "
    "include_assumptions is gone, as no built-in rule is an assumption any more",
}

FLAG_SETTINGS: Mapping[str, str] = {s.flag: s.name for s in _SETTINGS if s.flag is not None}


# --- loading ---------------------------------------------------------------------------------------


def load_config(
    argv_values: Mapping[str, object],
    environ: Mapping[str, str],
    file: Path | None,
    *,
    platform: str | None = None,
    other_sections: Collection[str] = (),
) -> AgentConfig:
    """Merge defaults, the file, the environment and the flags (in rising precedence).

    `argv_values` maps setting names (the keys of FLAG_SETTINGS' values, e.g. "collectors",
    "state_dir", "tls.insecure") to flag values; None means "flag not given". `platform` (default
    sys.platform) only chooses the default state directory. `other_sections` are sections of the
    file that another reader handles (the scanner's own, in a file that shares the agent's
    collector, TLS, enrollment and sender sections): skipped here. Raises ConfigError."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    tables = _Tables()
    if file is not None:
        tables = _load_file(file, values, sources, other_sections)
    for setting in _SETTINGS:
        env_name = setting.env
        if env_name is None:
            continue
        raw = environ.get(env_name)
        if raw is None or not raw.strip():
            continue
        values[setting.name] = _parse(setting, raw, None, env_name)
        sources[setting.name] = f"env {env_name}"
    for name, raw_value in argv_values.items():
        if name not in _BY_NAME:
            raise ValueError(f"load_config: unknown setting {name!r} in argv_values")
        if raw_value is None:
            continue
        setting = _BY_NAME[name]
        flag = setting.flag or name
        values[name] = _parse(setting, raw_value, None, flag)
        sources[name] = f"flag {flag}"
    state_dir = values.pop("state_dir", None)
    if state_dir is None:
        state_dir = default_state_dir(platform or sys.platform, environ)
    assert isinstance(state_dir, Path)
    config = _build(values, state_dir, tables, file, sources)
    _check(config)
    return config


@dataclass(frozen=True, slots=True)
class _Tables:
    """The file's tables of free-form entries: version rules and cluster URLs."""

    rules: tuple[VersionRule, ...] = ()
    clusters: tuple[tuple[ClusterKey, str], ...] = ()


def _load_file(
    file: Path, values: dict[str, Any], sources: dict[str, str], other_sections: Collection[str] = ()
) -> _Tables:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message ends with "(at line N, column M)".
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    for section, table in document.items():
        if section in other_sections:
            continue
        if section in _RENAMED:
            raise ConfigError(f"{_at(file, text, section, None)}[{section}]: {_RENAMED[section]}")
        if section not in _SECTIONS:
            known = ", ".join(f"[{name}]" for name in [*_SECTIONS, *other_sections])
            raise ConfigError(f"{_at(file, text, section, None)}[{section}]: unknown section; known sections: {known}")
        if not isinstance(table, dict):
            raise ConfigError(f"{_at(file, text, None, section)}{section}: expected a [{section}] table")
        if section == "clusters":
            continue
        for key, raw in table.items():
            if key not in _SECTIONS[section]:
                known = ", ".join(_SECTIONS[section])
                raise ConfigError(f"{_at(file, text, section, key)}[{section}] {key}: unknown key; known keys: {known}")
            if section == "versions":
                continue
            setting = next(s for s in _SETTINGS if s.section == section and s.key == key)
            where = f"{_at(file, text, section, key)}[{section}] {key}"
            values[setting.name] = _parse(setting, raw, file.parent, where)
            sources[setting.name] = _at(file, text, section, key).rstrip(": ")

    def own_table(name: str) -> Any:
        return {} if name in other_sections else document.get(name, {})

    return _Tables(
        rules=_version_rules(file, text, own_table("versions")),
        clusters=_cluster_urls(file, text, own_table("clusters")),
    )


def _cluster_urls(file: Path, text: str, table: Mapping[str, Any]) -> tuple[tuple[ClusterKey, str], ...]:
    """`[clusters] "<cluster name>:<port>" = "URL"`: the URL of each cluster the registry names
    only by `DRMS_Config_<cluster name>_<port>` (no registry value holds a cluster's URL)."""
    urls: dict[ClusterKey, str] = {}
    for key, raw in table.items():
        where = f"{_at(file, text, 'clusters', key)}[clusters] {json.dumps(key)}"
        try:
            cluster = parse_cluster_key(key)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if cluster in urls:
            raise ConfigError(f"{where}: cluster {cluster} is given twice (names compare without case)")
        try:
            urls[cluster] = _url(raw, None)
        except _Bad as bad:
            raise ConfigError(f"{where}: expected {bad.expected}, got {_show(bad.got)}") from None
    return tuple(sorted(urls.items()))


def _version_rules(file: Path, text: str, table: Mapping[str, Any]) -> tuple[VersionRule, ...]:
    rules: list[VersionRule] = []
    for role in Role:
        entries = table.get(role.value)
        if entries is None:
            continue
        section = f"versions.{role.value}"
        if not isinstance(entries, dict):
            raise ConfigError(
                f'{_at(file, text, "versions", role.value)}[versions] {role.value}: expected a table of "version prefix" = "RTM|SP1|SP2|UNKNOWN"'
            )
        for prefix, release in entries.items():
            where = f"{_at(file, text, section, prefix)}[{section}] {json.dumps(prefix)}"
            if not isinstance(release, str):
                raise ConfigError(f"{where}: expected one of RTM, SP1, SP2, UNKNOWN, got {_show(release)}")
            try:
                rules.append(configured_rule(role, prefix, release))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    return tuple(rules)


def _parse(setting: _Setting, raw: object, base: Path | None, where: str) -> object:
    try:
        return setting.parse(raw, base)
    except _Bad as bad:
        raise ConfigError(f"{where}: expected {bad.expected}, got {_show(bad.got)}") from None


def _show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return json.dumps(value) if isinstance(value, list | int | float) else repr(value)


def _at(file: Path, text: str, section: str | None, key: str | None) -> str:
    line = _line_of(text, section, key)
    return f"{file}:{line}: " if line is not None else f"{file}: "


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def _line_of(text: str, section: str | None, key: str | None) -> int | None:
    """The line of `key` in `[section]` (or of the section header when key is None). A simple
    scan that understands plain tables and quoted keys; None when it cannot tell."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section:
            stripped = line.lstrip()
            for spelled in (key, json.dumps(key), f"'{key}'"):
                if stripped.startswith(spelled) and stripped[len(spelled) :].lstrip().startswith("="):
                    return number
    return None


def _build(
    values: Mapping[str, Any],
    state_dir: Path,
    tables: _Tables,
    file: Path | None,
    sources: Mapping[str, str],
) -> AgentConfig:
    def group(prefix: str) -> dict[str, Any]:
        return {name.split(".", 1)[1]: value for name, value in values.items() if name.startswith(prefix + ".")}

    top = {name: value for name, value in values.items() if "." not in name}
    return AgentConfig(
        state_dir=state_dir,
        tls=TlsConfig(**group("tls")),
        sender=SenderConfig(**group("sender")),
        spool=SpoolConfig(**group("spool")),
        host=HostOverrides(**group("host")),
        windows=WindowsPaths(**group("windows")),
        version_map=VersionMapConfig(overrides=tables.rules),
        clusters=ClusterUrls(by_name=tables.clusters, **group("clusters")),
        config_file=file,
        sources=tuple(sorted(sources.items())),
        **top,
    )


def _check(config: AgentConfig) -> None:
    """Rules that involve more than one setting."""
    tls = config.tls
    if tls.insecure and (tls.ca_file or tls.cert_file or tls.key_file):
        raise ConfigError(
            "tls: insecure = true turns TLS off, but ca_file, cert_file or key_file is also set: "
            f"remove one ({config.source_of('tls.insecure')})"
        )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError("tls: cert_file and key_file go together (a client certificate needs its key)")
    if config.enroll_secret_file is not None and config.enroll_token_file is not None:
        # One credential per process: the collector would take the token and ignore the secret,
        # and an operator reading the configuration could not tell which one enrolled a host.
        raise ConfigError(
            f"enroll: secret_file ({config.source_of('enroll_secret_file')}) and token_file "
            f"({config.source_of('enroll_token_file')}) are both set: keep one (a scanner token needs no secret)"
        )
    if config.sender.max_backoff < config.sender.initial_backoff:
        raise ConfigError(
            f"sender: max_backoff ({config.sender.max_backoff:g}s) is below initial_backoff "
            f"({config.sender.initial_backoff:g}s)"
        )
    try:
        config.version_map.build()
    except ValueError as exc:
        raise ConfigError(f"versions: {exc}") from None


# --- flags -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the configuration flags to the agent's parser (dest = the setting name; default None,
    so an absent flag never hides the environment or the file). `--config` names the file."""
    help_texts = {
        "--collector": "collector address HOST:PORT; repeat or separate with commas for several",
        "--interval": "seconds between reports (default 60)",
        "--jitter": "random share of the interval added or taken off each wait (default 0.1)",
        "--state-dir": "directory of the outbox and node key",
        "--facts": "facts file (the file probe)",
        "--probe": "auto, file or windows (default auto)",
        "--deadline": "seconds to wait for each RPC (default 10)",
        "--tls-ca": "CA certificates that sign the collector's certificate (PEM)",
        "--tls-cert": "client certificate (PEM), with --tls-key",
        "--tls-key": "client private key (PEM)",
        "--insecure": "plaintext gRPC to any collector (loopback collectors get plaintext without it)",
        "--enroll-secret-file": "file holding the enrollment secret",
        "--enroll-token-file": "file holding an API token with the scanner role, sent on Enroll instead of a secret",
        "--spool-dir": "folder of facts files to send as their hosts (the spool subcommand)",
    }
    parser.add_argument("--config", type=Path, default=None, help=f"agent config file (TOML; {CONFIG_ENV})")
    for setting in _SETTINGS:
        if setting.flag is None:
            continue
        help_text = f"{help_texts[setting.flag]} ({setting.env})"
        if setting.flag == "--collector":
            parser.add_argument(setting.flag, dest=setting.name, action="append", default=None, help=help_text)
        elif setting.flag == "--insecure":
            parser.add_argument(setting.flag, dest=setting.name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(setting.flag, dest=setting.name, default=None, help=help_text)


def flag_values(namespace: argparse.Namespace) -> dict[str, object]:
    """The configuration flags of a parsed namespace, keyed for load_config."""
    return {name: getattr(namespace, name, None) for name in FLAG_SETTINGS.values()}


# --- showing ---------------------------------------------------------------------------------------


def render_effective(config: AgentConfig) -> str:
    """The effective configuration as TOML, each value annotated with where it came from. Secrets
    are never shown: the enrollment secret and token are named by their files, whose content is not read."""
    lines = ["# rmsfleet-agent effective configuration (secrets are not shown)"]
    if config.config_file is not None:
        lines.append(f"# config file: {config.config_file}")

    def add(key: str, name: str, value: object, note: str) -> None:
        rendered = f"# {key} is not set" if value is None else f"{key} = {_toml_value(value)}"
        comment = f"  # {config.source_of(name)}" + (f"; {note}" if note else "")
        lines.append(rendered + comment)

    sections: dict[str, list[tuple[str, str, object, str]]] = {
        "agent": [
            ("collectors", "collectors", list(config.collectors) if config.collectors else None, ""),
            ("interval_seconds", "interval_seconds", config.interval_seconds, ""),
            ("jitter", "jitter", config.jitter, ""),
            ("state_dir", "state_dir", config.state_dir, ""),
            ("facts_file", "facts_file", config.facts_file, ""),
            ("probe", "probe", config.probe, ""),
        ],
        "sender": [
            (key, f"sender.{key}", getattr(config.sender, key), "")
            for key in ("initial_backoff", "max_backoff", "backoff_multiplier", "rpc_deadline_seconds")
        ],
        "spool": [
            (key, f"spool.{key}", getattr(config.spool, key), "")
            for key in ("dir", "settle_seconds", "poll_seconds", "batch_size", "concurrency", "keep_done")
        ],
        "tls": [(key, f"tls.{key}", getattr(config.tls, key), "") for key in ("ca_file", "cert_file", "key_file")]
        + [
            (
                "insecure",
                "tls.insecure",
                config.tls.insecure,
                "loopback collectors get plaintext unless a TLS file is set",
            )
        ],
        "enroll": [
            ("secret_file", "enroll_secret_file", config.enroll_secret_file, "the secret itself is never shown"),
            ("token_file", "enroll_token_file", config.enroll_token_file, "the token itself is never shown"),
        ],
        "outbox": [("max_changes", "outbox_max_changes", config.outbox_max_changes, "")],
        "host": [(key, f"host.{key}", getattr(config.host, key), "") for key in ("host_id", "hostname", "forest")]
        + [
            ("server_cluster", "clusters.server", config.clusters.server, "this server's cluster URL"),
            ("client_cluster", "clusters.client", config.clusters.client, "when ServiceLocation names none"),
        ],
        "windows": [
            (key, f"windows.{key}", getattr(config.windows, key), _WINDOWS_NOTES.get(key, ""))
            for key in (
                "drms_key",
                "service_location_key",
                "server_assembly_folders",
                "server_assembly_suffix",
                "kernel",
                "msdrm",
                "profile_certificate",
                "builtin_profile_certificate",
                "rtm_machine_certificate",
            )
        ],
    }
    for section, entries in sections.items():
        lines.append("")
        lines.append(f"[{section}]")
        for key, name, value, note in entries:
            add(key, name, value, note)
    for role in Role:
        rules = [rule for rule in config.version_map.overrides if rule.role is role]
        if rules:
            lines.append("")
            lines.append(f"[versions.{role.value}]")
            lines.extend(f"{json.dumps(rule.prefix_text)} = {json.dumps(rule.release.value)}" for rule in rules)
    if config.clusters.by_name:
        lines.append("")
        lines.append("[clusters]")
        lines.extend(f"{json.dumps(str(key))} = {json.dumps(url)}" for key, url in config.clusters.by_name)
    return "\n".join(lines) + "\n"


_WINDOWS_NOTES = {
    "server_assembly_folders": "an assumption: no document says where the server assembly lies",
    "rtm_machine_certificate": "not documented: set it once confirmed on an RTM client",
}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, PurePath):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Iterable):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {value!r}")
