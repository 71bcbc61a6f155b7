"""The scanner's configuration: the agent's collector sections read by the agent's loader, the
scanner's own sections, per-group and per-host settings, and errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmsfleet.agent.config import ConfigError
from rmsfleet.agent.probe.documented import ClusterKey
from rmsfleet.agent.probe.version_map import Role
from rmsfleet.agent.scanner.settings import ScanConfig, ScanFlags, SmbSettings, load_scan_config
from rmsfleet.contract.facts import Version

CONFIG = """\
[agent]
collectors = ["collector.corp.example:50051"]

[tls]
ca_file = "ca.pem"

[scan]
targets_file = "targets.txt"
concurrency = 8
timeout = 20
forest = "corp.example"

[smb]
allow_smb1 = true

[clusters]
"rms_corp_example:443" = "https://rms.corp.example"

[versions.client]
"5.2.3790.100" = "SP1"

[groups.amsterdam]
forest = "ams.corp.example"
timeout = 60
clusters = { "rms_ams:443" = "https://rms.ams.corp.example" }
smb = { allow_smb1 = false, start_remote_registry = true }
versions = { client = { "5.2.3790.200" = "sp2" } }

[hosts."rms09.ams.corp.example"]
server_cluster = "https://rms9.ams.corp.example"
"""


def load(tmp_path: Path, text: str, flags: ScanFlags | None = None, env: dict[str, str] | None = None) -> ScanConfig:
    path = tmp_path / "scan.toml"
    path.write_text(text)
    return load_scan_config({}, flags or ScanFlags(), env or {}, path, platform="linux")


def test_levels_merge_scan_then_group_then_host(tmp_path: Path) -> None:
    config = load(tmp_path, CONFIG)
    assert config.agent.collectors == ("collector.corp.example:50051",)
    assert config.agent.tls.ca_file == tmp_path / "ca.pem"
    assert config.targets_file == tmp_path / "targets.txt"
    assert config.concurrency == 8 and config.interval is None
    plain = config.for_target("rms01", None)
    assert (plain.forest, plain.timeout, plain.smb) == ("corp.example", 20.0, SmbSettings())
    assert plain.documented.clusters.url_for(ClusterKey("rms_corp_example", 443)) == "https://rms.corp.example"
    host = config.for_target("RMS09.ams.corp.example", "amsterdam")
    assert (host.forest, host.timeout) == ("ams.corp.example", 60.0)
    assert host.documented.clusters.server == "https://rms9.ams.corp.example"
    assert host.smb == SmbSettings(allow_smb1=False, start_remote_registry=True)
    assert {key.name for key, _url in host.documented.clusters.by_name} == {"rms_corp_example", "rms_ams"}
    versions = host.documented.versions
    assert versions.release(Role.CLIENT, "5.2.3790.100") is Version.SP1
    assert versions.release(Role.CLIENT, "5.2.3790.200") is Version.SP2
    assert versions.release(Role.SERVER, "5.2.3790.300") is Version.SP2  # [MS-RMPRS], built in
    assert plain.documented.versions.release(Role.CLIENT, "5.2.3790.200") is Version.UNKNOWN


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        CONFIG,
        ScanFlags(concurrency="4", allow_smb1=False),
        {"RMSFLEET_SCAN_CONCURRENCY": "6", "RMSFLEET_SCAN_TIMEOUT": "5", "RMSFLEET_SCAN_INTERVAL": "3600"},
    )
    assert config.concurrency == 4 and config.interval == 3600.0
    target = config.for_target("rms01", None)
    assert target.timeout == 5.0 and target.smb.allow_smb1 is False


def test_the_state_directory_defaults_to_the_scanners_own(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert str(config.agent.state_dir) == "/var/lib/rmsfleet-scan"
    assert config.state_dir_explicit is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[scan]\nconcurency = 3\n", "scan.toml:2: [scan] concurency: unknown key"),
        (
            "[scan]\nforest = 'x'\ntimeout = 'soon'\n",
            'scan.toml:3: [scan] timeout: expected a number of seconds > 0, got "soon"',
        ),
        (
            "[clusters]\n'rms_corp' = 'https://rms'\n",
            'scan.toml:2: [clusters] "rms_corp": expected "<cluster name>:<port>"',
        ),
        (
            "[clusters]\n'rms:443' = 'ftp://rms'\n",
            'scan.toml:2: [clusters] "rms:443": expected an http(s) URL of an RMS cluster, got "ftp://rms"',
        ),
        ("[versions.client]\n'5.2.x' = 'SP1'\n", 'scan.toml:2: [versions.client] "5.2.x": expected a dotted version'),
        (
            "[versions.client]\n'5.2' = 'SP3'\n",
            'scan.toml:2: [versions.client] "5.2": expected one of RTM, SP1, SP2, UNKNOWN',
        ),
        (
            "[groups.a]\n\n[groups.b]\nsmb = { allow_smb1 = 'yes' }\n",
            "scan.toml:4: [groups.b.smb] allow_smb1: expected true or false",
        ),
        (
            "[agent]\ninterval_seconds = 60\n",
            "scan.toml:2: interval_seconds: an agent setting the scanner does not use",
        ),
        (
            "[groups.a]\nversions = { client = { '5.2' = 'SP3' } }\n",
            'scan.toml:2: [groups.a.versions.client] "5.2": expected one of RTM, SP1, SP2, UNKNOWN',
        ),
        ("[sender]\ninitial_backof = 1\n", "scan.toml:2: [sender] initial_backof: unknown key"),
        ("[scann]\n", "[scann]: unknown section; known sections:"),
    ],
)
def test_a_bad_setting_is_one_line_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert message in str(raised.value), str(raised.value)
