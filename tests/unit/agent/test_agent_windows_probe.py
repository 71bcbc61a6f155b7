"""The mapping from documented facts (probe/documented.py) and the local Windows probe, against
hosts recorded in tests/fixtures/windows_hosts/ (registry, files, version resources)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rmsfleet.agent.config import load_config
from rmsfleet.agent.probe import (
    ClusterKey,
    ClusterUrls,
    DocumentedHost,
    DocumentedSettings,
    HostIdentity,
    HostOverrides,
    HostSources,
    HostStatus,
    ProbeAccessDenied,
    ProbeError,
    RecordedFiles,
    RecordedHost,
    RecordedRegistry,
    RecordedRmsClient,
    RecordedVersions,
    WindowsPaths,
    WindowsProbe,
    read_documented_host,
)
from rmsfleet.agent.probe.documented import (
    cluster_key_from_key_protection,
    cluster_key_from_logging_service,
    normalize_cluster_url,
    parse_cluster_key,
)
from rmsfleet.agent.probe.windows_probe import read_identity
from rmsfleet.contract.facts import Activation, ClusterKind, Enrollment, Version, facts_from_json, facts_to_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "windows_hosts"
HOSTS = sorted(path.stem for path in FIXTURES.glob("*.json"))
TCPIP = "SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters"
DRMS = "SOFTWARE\\Microsoft\\DRMS\\1.0"
NT = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
PROFILES = NT + "\\ProfileList"
KERNEL = "%SystemRoot%\\system32\\ntoskrnl.exe"
MSDRM = "%SystemRoot%\\system32\\msdrm.dll"
ASSEMBLY = "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\bin\\Plugin.DirectoryServices.dll"
IDENTITY = HostIdentity("h1", "h1.corp.example", "corp.example")
XP_CERT = "Local Settings\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm"


def fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return document


def settings_for(name: str, tmp_path: Path, extra_toml: str = "") -> DocumentedSettings:
    """The settings an operator's agent.toml gives, through the real configuration loader."""
    text = str(fixture(name).get("agent_toml", "")) + extra_toml
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return load_config({}, {}, path, platform="linux").documented_settings()


def settings_from(tmp_path: Path, text: str) -> DocumentedSettings:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return load_config({}, {}, path, platform="linux").documented_settings()


def read(name: str, tmp_path: Path, extra_toml: str = "") -> DocumentedHost:
    host = RecordedHost.load(FIXTURES / f"{name}.json")
    identity = read_identity(host.registry)
    return read_documented_host(host.sources(), settings_for(name, tmp_path, extra_toml), identity)


def host(
    keys: dict[str, dict[str, str | int]],
    files: tuple[str, ...] = (),
    versions: dict[str, tuple[int, int, int, int]] | None = None,
    *,
    denied_keys: tuple[str, ...] = (),
    denied_files: tuple[str, ...] = (),
    client: RecordedRmsClient | None = None,
) -> HostSources:
    """A small host for one rule: Windows Server 2003 unless `versions` says otherwise."""
    recorded_versions = {KERNEL: (5, 2, 3790, 3959), **(versions or {})}
    return HostSources(
        RecordedRegistry(keys, denied_keys),
        RecordedFiles((KERNEL, *files), denied_files),
        RecordedVersions(recorded_versions, denied_files),
        client,
    )


def server_keys(**drms: str | int) -> dict[str, dict[str, str | int]]:
    return {
        DRMS: {"GicURL": "https://rms.corp.example/_wmcs/certification", **drms},
        DRMS + "\\KeyProtection": {"PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_corp_example_443": 1},
    }


def test_every_kind_of_host_the_issue_names_is_recorded() -> None:
    assert set(HOSTS) >= {
        "sp1_root_server",
        "sp2_licensing_server_x64",
        "rtm_client_no_activated_user",
        "sp2_client_two_users",
        "windows7_builtin_client",
        "nothing_installed",
        "unmapped_versions",
        "unconfigured_cluster",
        "access_denied",
    }


@pytest.mark.parametrize("name", HOSTS)
def test_recorded_host_gives_the_expected_facts_status_and_notes(name: str, tmp_path: Path) -> None:
    document = fixture(name)
    if "expected_status" not in document:
        with pytest.raises(ProbeAccessDenied) as caught:
            read(name, tmp_path)
        assert str(document["expected_error"]) in str(caught.value)
        return
    answer = read(name, tmp_path)
    assert answer.status.value == document["expected_status"]
    notes = "\n".join(answer.notes)
    for expected in document.get("expected_notes", []):
        assert expected in notes
    if "expected" in document:
        assert answer.facts is not None
        assert facts_to_json(answer.facts) == document["expected"]
        # What the mapping produces is a facts document the file probe and the collector accept.
        assert facts_from_json(facts_to_json(answer.facts)) == answer.facts
    else:
        assert answer.facts is None
        assert str(document["expected_error"]) in notes


@pytest.mark.parametrize("name", HOSTS)
def test_the_local_probe_reports_what_the_mapping_gives_or_one_clear_error(name: str, tmp_path: Path) -> None:
    document = fixture(name)
    recorded = RecordedHost.load(FIXTURES / f"{name}.json")
    probe = WindowsProbe(recorded.sources(), settings=settings_for(name, tmp_path))
    if "expected" in document:
        assert facts_to_json(probe.read()) == document["expected"]
    else:
        with pytest.raises(ProbeError) as caught:
            probe.read()
        assert str(document["expected_error"]) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_sp1_root_certification_server_enrolls_offline_under_its_configured_url(tmp_path: Path) -> None:
    answer = read("sp1_root_server", tmp_path)
    assert answer.facts is not None and answer.facts.server is not None
    server = answer.facts.server
    assert server.version is Version.SP1  # [MS-RMPRS] 2.3.1.2: Plugin.DirectoryServices 5.2.3790.134
    assert server.enrollment is Enrollment.OFFLINE  # D9
    assert server.cluster_kind is ClusterKind.ROOT_CERTIFICATION  # no SubEnrollmentURL (D16)
    assert server.cluster == "https://rms.corp.example"  # [clusters] "rms_corp_example:443", normalised
    assert answer.notes == ()
    licensing_bin = "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\licensing\\bin\\Plugin.DirectoryServices.dll"
    assert ("server assembly", f"{licensing_bin} 5.2.3790.134") in answer.readings


def test_sp2_licensing_server_on_x64_names_its_root_from_subenrollmenturl(tmp_path: Path) -> None:
    answer = read("sp2_licensing_server_x64", tmp_path)
    assert answer.facts is not None and answer.facts.server is not None
    server = answer.facts.server
    assert server.version is Version.SP2  # the assembly in the global assembly cache
    assert server.cluster_kind is ClusterKind.LICENSING
    # .../_wmcs/certification/subenrollservice.asmx is the root's service, not part of its name.
    assert server.root_cluster == "https://rms.corp.example"
    # The cluster's name came from the DRMS_Logging_<name>_<port> service (no password-derived key).
    assert server.cluster == "https://lic.corp.example"


def test_an_unconfigured_cluster_is_named_by_its_documented_name_and_port(tmp_path: Path) -> None:
    answer = read("unconfigured_cluster", tmp_path)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.cluster == "urn:rmsfleet:cluster:rms_corp_example:443"
    [note] = [n for n in answer.notes if "urn:" in n]
    assert note.endswith('add [clusters] "rms_corp_example:443" = "https://..." to name it by its URL')
    # Doing what the note says maps the cluster to its URL.
    again = read("unconfigured_cluster", tmp_path, '[clusters]\n"RMS_corp_example:443" = "https://rms.corp.example"\n')
    assert again.facts is not None and again.facts.server is not None
    assert again.facts.server.cluster == "https://rms.corp.example"
    assert not any("urn:" in n for n in again.notes)


def test_an_unmapped_server_version_is_unknown_claims_no_offline_enrollment_and_says_what_to_add(
    tmp_path: Path,
) -> None:
    answer = read("unmapped_versions", tmp_path)
    assert answer.status is HostStatus.VERSION_UNKNOWN
    assert answer.facts is not None and answer.facts.server is not None and answer.facts.client is not None
    assert answer.facts.server.version is Version.UNKNOWN
    assert answer.facts.server.enrollment is Enrollment.ONLINE  # D9: nothing claimed that is not known
    assert answer.facts.client.version is Version.UNKNOWN
    assert answer.facts.client.activation is Activation.UNKNOWN
    # Adding the rules the notes name maps both.
    fixed = read(
        "unmapped_versions",
        tmp_path,
        '[versions.server]\n"5.2.3790.999" = "SP2"\n[versions.client]\n"5.2.3790.100" = "SP2"\n',
    )
    assert fixed.status is HostStatus.REPORTED
    assert fixed.facts is not None and fixed.facts.server is not None and fixed.facts.client is not None
    assert (fixed.facts.server.version, fixed.facts.client.version) == (Version.SP2, Version.SP2)
    assert fixed.facts.client.activation is Activation.SELF  # one profile holds a machine certificate


def test_unmapped_versions_are_logged_once_however_often_the_agent_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = RecordedHost.load(FIXTURES / "unmapped_versions.json")
    probe = WindowsProbe(recorded.sources(), settings=settings_for("unmapped_versions", tmp_path))
    with caplog.at_level(logging.WARNING):
        probe.read()
        probe.read()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "[versions.server]" in w]) == 1
    assert len([w for w in warnings if '[versions.client] "5.2.3790.100"' in w]) == 1


def test_the_sp2_client_product_counts_only_users_holding_a_machine_certificate(tmp_path: Path) -> None:
    answer = read("sp2_client_two_users", tmp_path)
    assert answer.facts is not None and answer.facts.client is not None
    client = answer.facts.client
    assert client.version is Version.SP2  # Cc747749, with no client rule configured at all
    assert client.activated_users == 2  # alice and bob; not carol, not LocalSystem (S-1-5-18)
    assert client.activation is Activation.SELF  # D10
    assert client.cluster == "https://rms.corp.example"  # ServiceLocation\EnterprisePublishing


def test_the_kernel_version_wins_over_what_currentversion_says(tmp_path: Path) -> None:
    # Samba (the scanner's test hosts) always answers CurrentVersion 6.1; the kernel says XP.
    answer = read("sp2_client_two_users", tmp_path)
    assert ("windows", f"{KERNEL} 5.1.2600.5512") in answer.readings
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.version is not Version.BUILTIN


def test_an_sp2_client_nobody_activated_reports_activation_none() -> None:
    keys: dict[str, dict[str, str | int]] = {
        PROFILES + "\\S-1-5-21-1-2-3-1003": {"ProfileImagePath": "%SystemDrive%\\Documents and Settings\\alice"},
        "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{X}": {
            "DisplayName": "windows rights management client with service pack 2"
        },
    }
    answer = read_documented_host(host(keys, (MSDRM,), {KERNEL: (5, 1, 2600, 5512)}), DocumentedSettings(), IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert (answer.facts.client.activation, answer.facts.client.activated_users) == (Activation.NONE, 0)


def test_an_rtm_client_without_per_user_certificates_has_unknown_activation_until_configured(
    tmp_path: Path,
) -> None:
    answer = read("rtm_client_no_activated_user", tmp_path)
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.version is Version.RTM  # the configured [versions.client] rule
    assert answer.facts.client.activated_users == 0
    # D17: per-user certificates only from SP1 on; where RTM keeps its own is not documented.
    assert answer.facts.client.activation is Activation.UNKNOWN
    machine = "'%SystemDrive%\\Documents and Settings\\All Users\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm'"
    confirmed = read("rtm_client_no_activated_user", tmp_path, f"[windows]\nrtm_machine_certificate = {machine}\n")
    assert confirmed.facts is not None and confirmed.facts.client is not None
    assert confirmed.facts.client.activation is Activation.NONE  # D18: it can never be activated now
    assert not any("rtm_machine_certificate" in n for n in confirmed.notes)


def test_an_rtm_client_whose_configured_machine_certificate_exists_activated_over_the_internet(
    tmp_path: Path,
) -> None:
    machine = "%SystemDrive%\\Documents and Settings\\All Users\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm"
    keys: dict[str, dict[str, str | int]] = {PROFILES: {"ProfilesDirectory": "x"}}
    sources = host(keys, (MSDRM, machine), {KERNEL: (5, 1, 2600, 2180), MSDRM: (5, 2, 3790, 100)})
    settings = settings_from(
        tmp_path, f'[windows]\nrtm_machine_certificate = \'{machine}\'\n[versions.client]\n"5.2.3790.100" = "RTM"\n'
    )
    answer = read_documented_host(sources, settings, IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.activation is Activation.INTERNET  # D10


def test_windows_7_has_the_builtin_client_with_per_user_activation(tmp_path: Path) -> None:
    answer = read("windows7_builtin_client", tmp_path)
    assert answer.facts is not None and answer.facts.client is not None
    client = answer.facts.client
    assert client.version is Version.BUILTIN  # D15, from the kernel's version 6.1
    assert (client.activation, client.activated_users) == (Activation.SELF, 1)


def test_without_a_kernel_version_currentversion_tells_the_windows_version() -> None:
    keys: dict[str, dict[str, str | int]] = {NT: {"CurrentVersion": "6.0"}, PROFILES: {"ProfilesDirectory": "x"}}
    sources = HostSources(RecordedRegistry(keys), RecordedFiles(()), RecordedVersions({}), None)
    answer = read_documented_host(sources, DocumentedSettings(), IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.version is Version.BUILTIN
    assert (answer.facts.client.activation, answer.facts.client.activated_users) == (Activation.NONE, 0)


def test_a_profile_that_cannot_be_read_makes_activation_unknown_not_an_error() -> None:
    alice = "%SystemDrive%\\Documents and Settings\\alice"
    keys: dict[str, dict[str, str | int]] = {
        PROFILES + "\\S-1-5-21-1-2-3-1003": {"ProfileImagePath": alice},
        "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{X}": {
            "DisplayName": "Windows Rights Management Client with Service Pack 2"
        },
    }
    answer = read_documented_host(host(keys, (MSDRM,), denied_files=(alice,)), DocumentedSettings(), IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert (answer.facts.client.activation, answer.facts.client.activated_users) == (Activation.UNKNOWN, None)
    assert any(alice in note and "activation unknown" in note for note in answer.notes)


def test_access_denied_on_the_drms_key_is_its_own_clear_error(tmp_path: Path) -> None:
    recorded = RecordedHost.load(FIXTURES / "access_denied.json")
    with pytest.raises(ProbeAccessDenied) as caught:
        WindowsProbe(recorded.sources()).read()
    assert str(caught.value) == (
        "access denied reading HKLM\\SOFTWARE\\Microsoft\\DRMS\\1.0: "
        "run the agent as LocalSystem or grant its account read access"
    )


def test_a_host_without_rms_is_counted_and_the_local_probe_says_so(tmp_path: Path) -> None:
    answer = read("nothing_installed", tmp_path)
    assert (answer.status, answer.facts) == (HostStatus.RMS_NOT_FOUND, None)
    recorded = RecordedHost.load(FIXTURES / "nothing_installed.json")
    with pytest.raises(ProbeError, match="nothing to report"):
        WindowsProbe(recorded.sources()).read()


def test_values_no_microsoft_document_names_are_not_read() -> None:
    # What earlier versions of the probe read: IntranetLicensingUrl, ProductVersion, ConfigDatabase...
    keys: dict[str, dict[str, str | int]] = {
        DRMS: {
            "ProductVersion": "1.0.701.0",
            "IntranetLicensingUrl": "https://rms.corp.example",
            "EnrollmentParentUrl": "https://root.corp.example",
            "ConfigDatabase": "DRMS_Config_rms_corp_example_443",
        }
    }
    answer = read_documented_host(host(keys), DocumentedSettings(), IDENTITY)
    assert (answer.status, answer.facts) == (HostStatus.CLUSTER_UNKNOWN, None)
    assert any("set [host] server_cluster" in note for note in answer.notes)
    # Told its cluster, the server is reported, but its version still only from the assembly.
    told = DocumentedSettings(clusters=ClusterUrls(server="https://rms.corp.example"))
    answer = read_documented_host(host(keys), told, IDENTITY)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.version is Version.UNKNOWN
    assert answer.facts.server.cluster_kind is ClusterKind.ROOT_CERTIFICATION
    assert any("[windows] server_assembly_folders" in note for note in answer.notes)


def test_a_server_naming_several_clusters_needs_its_own_configured_cluster() -> None:
    keys = server_keys()
    keys[DRMS + "\\KeyProtection"]["PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_old_corp_example_80"] = 1
    sources = host(keys, (ASSEMBLY,), {ASSEMBLY: (5, 2, 3790, 300)})
    answer = read_documented_host(sources, DocumentedSettings(), IDENTITY)
    assert answer.status is HostStatus.CLUSTER_UNKNOWN
    assert any("old_corp_example:80, rms_corp_example:443" in note for note in answer.notes)
    told = DocumentedSettings(clusters=ClusterUrls(server="https://RMS.corp.example/_wmcs/licensing"))
    answer = read_documented_host(sources, told, IDENTITY)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.cluster == "https://rms.corp.example"


def test_pre_production_hosts_are_reported_with_a_note() -> None:
    keys = server_keys(UddiProvider="uddi.corp.example")
    keys["SOFTWARE\\Microsoft\\uDRM"] = {"Hierarchy": 1}
    answer = read_documented_host(host(keys, (ASSEMBLY,), {ASSEMBLY: (1, 0, 3246, 0)}), DocumentedSettings(), IDENTITY)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.version is Version.RTM  # [MS-RMPRS] 2.3.1.2: 1.0.3246.0
    assert answer.facts.server.enrollment is Enrollment.ONLINE  # D9
    [note] = [n for n in answer.notes if "pre-production" in n]
    assert "UddiProvider is set" in note and "Hierarchy = 1" in note


def test_the_server_assembly_folders_are_configurable() -> None:
    elsewhere = "D:\\RMS\\bin\\Microsoft.DigitalRightsManagement.Plugin.DirectoryServices.dll"
    sources = host(server_keys(), (elsewhere,), {elsewhere: (5, 2, 3790, 134)})
    answer = read_documented_host(sources, DocumentedSettings(), IDENTITY)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.version is Version.UNKNOWN
    moved = DocumentedSettings(paths=WindowsPaths(server_assembly_folders=("D:\\RMS\\bin",)))
    answer = read_documented_host(sources, moved, IDENTITY)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.version is Version.SP1


def test_two_different_server_assemblies_are_not_guessed_between() -> None:
    cached = "%SystemRoot%\\assembly\\GAC\\Plugin.DirectoryServices\\5.2.3790.134__31bf3856ad364e35\\Plugin.DirectoryServices.dll"
    newer = "%SystemRoot%\\assembly\\GAC\\Plugin.DirectoryServices\\5.2.3790.300__31bf3856ad364e35\\Plugin.DirectoryServices.dll"
    sources = host(server_keys(), (cached, newer), {cached: (5, 2, 3790, 134), newer: (5, 2, 3790, 300)})
    answer = read_documented_host(sources, DocumentedSettings(), IDENTITY)
    assert answer.facts is not None and answer.facts.server is not None
    assert answer.facts.server.version is Version.UNKNOWN
    assert any("several versions" in n and "narrow [windows] server_assembly_folders" in n for n in answer.notes)


def test_a_subenrollmenturl_that_is_no_url_is_an_error_naming_the_value() -> None:
    sources = host(server_keys(SubEnrollmentURL="ftp://"), (ASSEMBLY,), {ASSEMBLY: (5, 2, 3790, 300)})
    with pytest.raises(ProbeError, match=r"HKLM\\SOFTWARE\\Microsoft\\DRMS\\1\.0 SubEnrollmentURL: expected a URL"):
        read_documented_host(sources, DocumentedSettings(), IDENTITY)


def test_drmgetclientversion_supplies_the_version_when_msdrm_has_no_version_resource(tmp_path: Path) -> None:
    sources = host(
        {PROFILES: {"ProfilesDirectory": "x"}},
        (MSDRM,),
        {KERNEL: (5, 1, 2600, 2180)},
        client=RecordedRmsClient((5, 2, 3790, 100)),
    )
    settings = settings_from(tmp_path, '[versions.client]\n"5.2.3790" = "SP1"\n')
    answer = read_documented_host(sources, settings, IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.version is Version.SP1
    assert ("client", "DRMGetClientVersion 5.2.3790.100") in answer.readings


def test_the_configured_client_cluster_applies_when_service_location_names_none() -> None:
    sources = host({PROFILES: {"ProfilesDirectory": "x"}}, versions={KERNEL: (6, 1, 7601, 17514)})
    settings = DocumentedSettings(clusters=ClusterUrls(client="https://rms.corp.example/_wmcs/licensing"))
    answer = read_documented_host(sources, settings, IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.cluster == "https://rms.corp.example"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_corp_example_443", ClusterKey("rms_corp_example", 443)),
        ("passwordderivedkey_SQL01\\INST_drms_config_RMS_80", ClusterKey("rms", 80)),
        ("PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_70000", None),
        ("SomethingElse", None),
    ],
)
def test_the_cluster_name_and_port_come_from_the_keyprotection_value_name(
    name: str, expected: ClusterKey | None
) -> None:
    assert cluster_key_from_key_protection(name) == expected


def test_the_cluster_name_and_port_come_from_the_logging_service_name() -> None:
    assert cluster_key_from_logging_service("DRMS_Logging_lic_corp_example_443") == ClusterKey("lic_corp_example", 443)
    assert cluster_key_from_logging_service("DRMS_Logging_") is None
    assert parse_cluster_key(" Lic_Corp_Example:443 ") == ClusterKey("lic_corp_example", 443)
    assert ClusterKey("LIC_corp_example", 443) == ClusterKey("lic_corp_example", 443)
    with pytest.raises(ValueError, match="<cluster name>:<port>"):
        parse_cluster_key("lic_corp_example")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://RMS.corp.example/_wmcs/certification/subenrollservice.asmx", "https://rms.corp.example"),
        ("https://RMS.corp.example/_wmcs/licensing", "https://rms.corp.example"),
        ("http://rms.corp.example:80/", "http://rms.corp.example"),
        ("https://rms.corp.example:8443/_wmcs/certification/", "https://rms.corp.example:8443"),
        ("rms.corp.example", "http://rms.corp.example"),
    ],
)
def test_cluster_urls_are_normalised_so_servers_and_clients_agree(raw: str, expected: str) -> None:
    assert normalize_cluster_url(raw) == expected


def test_injected_identity_wins_over_the_registry(tmp_path: Path) -> None:
    recorded = RecordedHost.load(FIXTURES / "sp2_client_two_users.json")
    identity = HostIdentity("id-7", "id-7.emea.corp.example", "corp.example")
    facts = WindowsProbe(recorded.sources(), identity=identity).read()
    assert (facts.host_id, facts.hostname, facts.forest) == ("id-7", "id-7.emea.corp.example", "corp.example")


def test_a_child_domain_host_takes_the_configured_forest() -> None:
    registry = RecordedRegistry({TCPIP: {"Hostname": "WS-9", "Domain": "emea.corp.example"}})
    identity = read_identity(registry, HostOverrides(forest="corp.example"))
    assert (identity.hostname, identity.forest) == ("ws-9.emea.corp.example", "corp.example")


def test_a_host_without_a_dns_domain_needs_a_configured_forest() -> None:
    registry = RecordedRegistry({TCPIP: {"Hostname": "WS-9"}})
    with pytest.raises(ProbeError, match=r"cannot tell the forest.*set \[host\] forest"):
        read_identity(registry)


def test_the_registry_reader_falls_back_to_wow6432node_ignores_case_and_lists_value_names() -> None:
    registry = RecordedRegistry(
        {
            "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0": {"GicURL": "https://rms.corp.example"},
            "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0\\KeyProtection": {"PASSWORDDERIVEDKEY_A_DRMS_CONFIG_B_80": 1},
        }
    )
    assert registry.read_value("software\\microsoft\\drms\\1.0", "gicurl") == "https://rms.corp.example"
    assert registry.key_exists(DRMS)
    assert registry.subkeys("SOFTWARE\\Microsoft\\DRMS") == ["1.0"]
    assert registry.value_names(DRMS + "\\keyprotection") == ["PASSWORDDERIVEDKEY_A_DRMS_CONFIG_B_80"]
    assert registry.value_names("SOFTWARE\\Microsoft\\Nothing") == []
    assert not registry.key_exists("SOFTWARE\\Microsoft\\Nothing")


def test_value_names_of_a_denied_key_are_access_denied() -> None:
    registry = RecordedRegistry({DRMS + "\\KeyProtection": {"x": 1}}, denied=[DRMS])
    with pytest.raises(ProbeAccessDenied, match=r"HKLM\\SOFTWARE\\Microsoft\\DRMS\\1\.0"):
        registry.value_names(DRMS + "\\KeyProtection")


def test_recorded_files_list_folders_like_a_disk() -> None:
    files = RecordedFiles(["%SystemRoot%\\assembly\\GAC\\P\\1.0__x\\P.dll", "%SystemRoot%\\System32\\MSDRM.dll"])
    assert files.list_dir("%systemroot%\\assembly\\gac\\p") == ["1.0__x"]
    assert files.list_dir("%SystemRoot%\\system32") == ["MSDRM.dll"]
    assert files.exists(MSDRM) and files.exists("%SystemRoot%\\assembly")
    assert not files.exists("%SystemRoot%\\system32\\ntoskrnl.exe")
    assert files.list_dir("%SystemRoot%\\nothing") == []


def test_a_broken_recording_is_a_probe_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"registry": {"keys": []}}', encoding="utf-8")
    with pytest.raises(ProbeError, match="not a recorded host"):
        RecordedHost.load(path)
    path.write_text('{"version_resources": {"%SystemRoot%\\\\x.dll": [1, 2]}}', encoding="utf-8")
    with pytest.raises(ProbeError, match="four numbers"):
        RecordedHost.load(path)


def test_the_settings_a_scanner_builds_per_host_override_the_shared_ones() -> None:
    shared = DocumentedSettings(clusters=ClusterUrls(by_name=((ClusterKey("rms_corp_example", 443), "https://a"),)))
    per_host = replace(shared, clusters=replace(shared.clusters, server="https://b"))
    sources = host(server_keys(), (ASSEMBLY,), {ASSEMBLY: (5, 2, 3790, 300)})
    a = read_documented_host(sources, shared, IDENTITY)
    b = read_documented_host(sources, per_host, IDENTITY)
    assert a.facts is not None and a.facts.server is not None and a.facts.server.cluster == "https://a"
    assert b.facts is not None and b.facts.server is not None and b.facts.server.cluster == "https://b"


def test_a_configured_client_rule_decides_without_reading_the_uninstall_entries(tmp_path: Path) -> None:
    recorded = RecordedHost.load(FIXTURES / "sp2_client_two_users.json")
    ruled = settings_from(tmp_path, '[versions.client]\n"5.2.3790.200" = "SP1"\n')
    answer = read_documented_host(recorded.sources(), ruled, IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    # The operator's confirmed rule for this msdrm.dll is the answer; the SP2 product entry was not read.
    assert answer.facts.client.version is Version.SP1
    assert not any("DisplayName" in value for _, value in answer.readings)
    # A rule mapping the version to UNKNOWN decides nothing: the product entry still tells SP2.
    silenced = settings_from(tmp_path, '[versions.client]\n"5.2.3790.200" = "UNKNOWN"\n')
    answer = read_documented_host(recorded.sources(), silenced, IDENTITY)
    assert answer.facts is not None and answer.facts.client is not None
    assert answer.facts.client.version is Version.SP2


def test_the_host_id_is_the_fqdn_so_two_forests_ws_9_are_two_hosts() -> None:
    corp = read_identity(RecordedRegistry({TCPIP: {"Hostname": "WS-9", "Domain": "corp.example"}}))
    fabrikam = read_identity(RecordedRegistry({TCPIP: {"Hostname": "WS-9", "Domain": "Fabrikam.example"}}))
    assert (corp.host_id, fabrikam.host_id) == ("ws-9.corp.example", "ws-9.fabrikam.example")


def test_a_configured_host_id_is_kept_as_written() -> None:
    # A fleet that reported under short names keeps them with [host] host_id.
    registry = RecordedRegistry({TCPIP: {"Hostname": "WS-9", "Domain": "corp.example"}})
    assert read_identity(registry, HostOverrides(host_id="WS-9")).host_id == "WS-9"
