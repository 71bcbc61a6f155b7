"""Agent configuration: file, environment and flags merged with flags > environment > file > defaults."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from rmsfleet.agent.config import (
    AgentConfig,
    ConfigError,
    add_arguments,
    config_file_path,
    flag_values,
    load_config,
    render_effective,
)
from rmsfleet.agent.probe import ClusterKey
from rmsfleet.agent.probe.version_map import Role
from rmsfleet.contract.facts import Version

FULL = """\
# a complete agent.toml
[agent]
collectors = ["collector-1.corp.example:50051", "collector-2.corp.example:50051"]
interval_seconds = 120
jitter = 0.2
state_dir = "state"
probe = "auto"

[sender]
initial_backoff = 2
max_backoff = 60
backoff_multiplier = 2.0
rpc_deadline_seconds = 5

[tls]
ca_file = "pki/ca.pem"
cert_file = "pki/agent.pem"
key_file = "pki/agent.key"

[enroll]
secret_file = "enroll.secret"

[outbox]
max_changes = 50

[host]
forest = "corp.example"
client_cluster = "https://RMS.corp.example/_wmcs/licensing"

[windows]
server_assembly_folders = ['D:\\RMS\\_wmcs\\bin', '%SystemRoot%\\assembly\\GAC\\Plugin.DirectoryServices\\*']
rtm_machine_certificate = '%SystemDrive%\\Documents and Settings\\All Users\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm'

[versions.client]
"5.2.3790.100" = "SP1"

[clusters]
"rms_corp_example:443" = "https://rms.corp.example"
"""


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config({}, {}, write(tmp_path, text), platform="linux")
    return str(caught.value)


def test_defaults() -> None:
    config = load_config({}, {}, None, platform="linux")
    assert config.collectors == ()
    assert config.interval_seconds == 60
    assert config.jitter == 0.1
    assert config.state_dir == Path("/var/lib/rmsfleet-agent")
    assert config.probe == "auto"
    assert config.facts_file is None
    assert config.tls.insecure is False
    assert (config.sender.initial_backoff, config.sender.max_backoff) == (5, 30)
    assert (config.sender.backoff_multiplier, config.sender.rpc_deadline_seconds) == (1.5, 10)
    assert config.outbox_max_changes == 1000
    assert config.version_map.overrides == ()
    assert config.clusters.by_name == ()
    assert config.source_of("interval_seconds") == "default"


def test_default_state_dir_follows_the_platform() -> None:
    windows = load_config({}, {"ProgramData": "D:\\ProgramData"}, None, platform="win32")
    assert windows.state_dir == Path("D:\\ProgramData") / "rmsfleet"
    systemd = load_config({}, {"STATE_DIRECTORY": "/var/lib/custom"}, None, platform="linux")
    assert systemd.state_dir == Path("/var/lib/custom")


def test_a_complete_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config({}, {}, path, platform="linux")
    assert config.collectors == ("collector-1.corp.example:50051", "collector-2.corp.example:50051")
    assert config.interval_seconds == 120
    assert config.jitter == 0.2
    # Relative paths in the file are relative to the file.
    assert config.state_dir == tmp_path / "state"
    assert config.tls.ca_file == tmp_path / "pki" / "ca.pem"
    assert config.enroll_secret_file == tmp_path / "enroll.secret"
    assert (config.sender.initial_backoff, config.sender.max_backoff, config.sender.backoff_multiplier) == (2, 60, 2)
    assert config.sender.rpc_deadline_seconds == 5
    assert config.outbox_max_changes == 50
    assert config.host.forest == "corp.example"
    assert config.windows.server_assembly_folders == (
        "D:\\RMS\\_wmcs\\bin",
        "%SystemRoot%\\assembly\\GAC\\Plugin.DirectoryServices\\*",
    )
    settings = config.documented_settings()
    assert settings.versions.release(Role.CLIENT, "5.2.3790.100") is Version.SP1
    assert settings.versions.release(Role.SERVER, "5.2.3790.300") is Version.SP2  # the known rules stay
    assert settings.clusters.url_for(ClusterKey("rms_corp_example", 443)) == "https://rms.corp.example"
    assert settings.clusters.client == "https://rms.corp.example"  # normalised when loaded
    assert config.source_of("interval_seconds") == f"{path}:4"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\ninterval_seconds = 120\njitter = 0.2\nprobe = 'file'\n")
    environ = {"RMSFLEET_INTERVAL": "90", "RMSFLEET_JITTER": "0.3"}
    config = load_config({"interval_seconds": "30"}, environ, path, platform="linux")
    assert config.interval_seconds == 30
    assert config.jitter == 0.3
    assert config.probe == "file"
    assert config.source_of("interval_seconds") == "flag --interval"
    assert config.source_of("jitter") == "env RMSFLEET_JITTER"
    assert config.source_of("probe") == f"{path}:4"


def test_flags_not_given_do_not_hide_the_environment() -> None:
    config = load_config({"interval_seconds": None}, {"RMSFLEET_INTERVAL": "90"}, None, platform="linux")
    assert config.interval_seconds == 90


def test_empty_environment_variables_count_as_unset() -> None:
    config = load_config({}, {"RMSFLEET_FACTS": "", "RMSFLEET_INTERVAL": " "}, None, platform="linux")
    assert config.facts_file is None
    assert config.interval_seconds == 60


def test_collectors_from_environment_and_flags() -> None:
    env = {"RMSFLEET_COLLECTOR": "a.corp.example:50051, b.corp.example:50051"}
    assert load_config({}, env, None, platform="linux").collectors == ("a.corp.example:50051", "b.corp.example:50051")
    flags = {"collectors": ["c:1", "d:2,c:1", "[::1]:50051"]}
    assert load_config(flags, env, None, platform="linux").collectors == ("c:1", "d:2", "[::1]:50051")


@pytest.mark.parametrize("bad", ["collector", "collector:0", "collector:70000", "http://collector:50051"])
def test_bad_collector_addresses(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^--collector: expected HOST:PORT"):
        load_config({"collectors": [bad]}, {}, None, platform="linux")


def test_booleans_from_the_environment() -> None:
    assert load_config({}, {"RMSFLEET_INSECURE": "yes"}, None, platform="linux").tls.insecure is True
    with pytest.raises(ConfigError, match=r'^RMSFLEET_INSECURE: expected true or false, got "maybe"$'):
        load_config({}, {"RMSFLEET_INSECURE": "maybe"}, None, platform="linux")


def test_a_wrong_type_names_file_line_section_and_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[agent]\nprobe = "auto"\n\n[sender]\ninitial_backoff = "x"\n')
    assert (
        message == f'{tmp_path / "agent.toml"}:5: [sender] initial_backoff: expected a number of seconds > 0, got "x"'
    )


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({}, {"RMSFLEET_JITTER": "lots"}, None, platform="linux")
    assert str(caught.value) == 'RMSFLEET_JITTER: expected a fraction from 0 to 1, got "lots"'


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r'^--interval: expected a number of seconds > 0, got "-3"$'):
        load_config({"interval_seconds": "-3"}, {}, None, platform="linux")


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[agent]\ninterval_seconds = \n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}: not valid TOML:")
    assert "line 2" in message


def test_unknown_keys_and_sections_are_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[sender]\ninitial_backof = 5\n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}:2: [sender] initial_backof: unknown key; known keys: ")
    assert "initial_backoff" in message
    message = error_of(tmp_path, "[agent]\njitter = 0.1\n[database]\nurl = 'x'\n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}:3: [database]: unknown section")


def test_bad_version_rules_name_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[versions.server]\n"5.2.3790.300" = "SP3"\n')
    assert message == (
        f"{tmp_path / 'agent.toml'}:2: [versions.server] \"5.2.3790.300\": expected one of RTM, SP1, SP2, UNKNOWN, got 'SP3'"
    )
    message = error_of(tmp_path, '[versions.client]\n"6.1" = "BUILTIN"\n')
    assert "expected one of RTM, SP1, SP2, UNKNOWN" in message  # BUILTIN comes from the Windows version


def test_the_old_version_map_section_says_what_it_became(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[version_map]\ninclude_assumptions = true\n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}:1: [version_map]: [version_map] is now [versions]")


def test_bad_cluster_entries_name_the_file_line_and_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[clusters]\n"rms_corp_example" = "https://rms.corp.example"\n')
    assert message.startswith(
        f'{tmp_path / "agent.toml"}:2: [clusters] "rms_corp_example": expected "<cluster name>:<port>"'
    )
    message = error_of(tmp_path, '[clusters]\n"rms:443" = "ftp://rms"\n')
    assert (
        message
        == f'{tmp_path / "agent.toml"}:2: [clusters] "rms:443": expected an http(s) URL of an RMS cluster, got "ftp://rms"'
    )
    message = error_of(tmp_path, '[clusters]\n"RMS:443" = "https://a"\n"rms:443" = "https://b"\n')
    assert "given twice" in message


def test_bad_windows_paths_name_what_is_expected(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[windows]\nkernel = 'system32\\ntoskrnl.exe'\n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}:2: [windows] kernel: expected a Windows path starting with")
    message = error_of(tmp_path, "[windows]\nserver_version_values = ['ProductVersion']\n")
    assert "[windows] server_version_values: unknown key" in message  # an invented value name, gone
    message = error_of(tmp_path, "[host]\nserver_cluster = 'not a url'\n")
    assert "[host] server_cluster: expected an http(s) URL" in message


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, {}, tmp_path / "nope.toml", platform="linux")


def test_insecure_and_tls_files_together_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="insecure = true turns TLS off"):
        load_config({"tls.insecure": True, "tls.ca_file": "ca.pem"}, {}, None, platform="linux")


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config({"tls.cert_file": "agent.pem"}, {}, None, platform="linux")


def test_max_backoff_below_initial_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[sender]\ninitial_backoff = 10\nmax_backoff = 5\n")
    assert "max_backoff (5s) is below initial_backoff (10s)" in message


def test_the_config_file_comes_from_the_flag_or_the_environment() -> None:
    assert config_file_path("a.toml", {"RMSFLEET_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_file_path(None, {"RMSFLEET_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_file_path(None, {}) is None


def test_argparse_flags_feed_load_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--collector", "a:1", "--collector", "b:2", "--interval", "15", "--insecure", "--state-dir", "/tmp/s"]
    )
    config = load_config(flag_values(args), {"RMSFLEET_JITTER": "0.5"}, config_file_path(args.config, {}))
    assert config.collectors == ("a:1", "b:2")
    assert config.interval_seconds == 15
    assert config.tls.insecure is True
    assert config.state_dir == Path("/tmp/s")
    assert config.jitter == 0.5  # not overridden by an argparse default


def test_render_effective_hides_the_secret_and_round_trips(tmp_path: Path) -> None:
    secret = tmp_path / "enroll.secret"
    secret.write_text("s3cret-enrollment-token", encoding="utf-8")
    config = load_config({"collectors": ["a:1"]}, {}, write(tmp_path, FULL), platform="linux")
    text = render_effective(config)
    assert "s3cret-enrollment-token" not in text
    assert str(secret) in text
    assert "# flag --collector" in text
    tomllib.loads(text)  # it is valid TOML
    again = load_config({}, {}, write(tmp_path, text, "effective.toml"), platform="linux")
    assert again == config


def test_the_config_is_frozen() -> None:
    config = load_config({}, {}, None, platform="linux")
    with pytest.raises(AttributeError):
        config.jitter = 0.5  # type: ignore[misc]
    assert isinstance(config, AgentConfig)


def test_sections_another_reader_owns_are_left_to_it(tmp_path: Path) -> None:
    # The scanner shares the agent's file and reads [clusters] and [scan] itself.
    path = write(tmp_path, '[scan]\nconcurrency = 8\n[clusters]\n"rms:443" = 5\n[agent]\njitter = 0.2\n')
    config = load_config({}, {}, path, platform="linux", other_sections=("scan", "clusters"))
    assert config.jitter == 0.2
    assert config.clusters.by_name == ()
    message = error_of(tmp_path, "[scan]\nconcurrency = 8\n")
    assert "[scan]: unknown section" in message
