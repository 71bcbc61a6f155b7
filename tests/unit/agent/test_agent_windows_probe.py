"""The Windows probe against recorded hosts (tests/fixtures/windows_hosts/)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rmsfleet.agent.probe import (
    HostIdentity,
    HostOverrides,
    ProbeAccessDenied,
    ProbeError,
    RecordedHost,
    RecordedRegistry,
    RecordedRmsClient,
    WindowsProbe,
    WindowsProbeSettings,
)
from rmsfleet.agent.probe.version_map import Role, VersionMap, configured_rule
from rmsfleet.agent.probe.windows_probe import cluster_from_config_database, normalize_cluster_url
from rmsfleet.contract.facts import Activation, ClusterKind, Enrollment, Version, facts_from_json, facts_to_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "windows_hosts"
HOSTS = sorted(path.stem for path in FIXTURES.glob("*.json"))
TCPIP = "SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters"
DRMS = "SOFTWARE\\Microsoft\\DRMS\\1.0"
IDENTITY = {TCPIP: {"Hostname": "H1", "Domain": "corp.example"}}


def probe_for(name: str, **kwargs: object) -> WindowsProbe:
    host = RecordedHost.load(FIXTURES / f"{name}.json")
    return WindowsProbe(host.registry, host.client, **kwargs)  # type: ignore[arg-type]


def expectation(name: str) -> dict[str, object]:
    document: dict[str, object] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return document


def test_every_recorded_host_named_in_the_brief_is_there() -> None:
    assert set(HOSTS) >= {
        "rtm_server",
        "sp1_server",
        "sp2_server",
        "client_only",
        "server_and_client",
        "nothing_installed",
        "access_denied",
        "unknown_version",
    }


@pytest.mark.parametrize("name", HOSTS)
def test_recorded_host_gives_the_expected_facts_or_error(name: str) -> None:
    fixture = expectation(name)
    probe = probe_for(name)
    if "expected_error" in fixture:
        with pytest.raises(ProbeError) as caught:
            probe.read()
        assert str(fixture["expected_error"]) in str(caught.value)
    else:
        facts = probe.read()
        assert facts_to_json(facts) == fixture["expected"]
        # What the probe produces is a valid facts document (the file probe would accept it).
        assert facts_from_json(facts_to_json(facts)) == facts


def test_rtm_server_enrolls_online_and_is_a_root_cluster() -> None:
    facts = probe_for("rtm_server").read()
    assert facts.server is not None
    assert facts.server.version is Version.RTM
    assert facts.server.enrollment is Enrollment.ONLINE  # D9
    assert facts.server.cluster_kind is ClusterKind.ROOT_CERTIFICATION
    assert facts.client is None


def test_sp1_server_on_x64_is_found_under_wow6432node_and_names_its_root() -> None:
    facts = probe_for("sp1_server").read()
    assert facts.server is not None
    assert facts.server.version is Version.SP1
    assert facts.server.enrollment is Enrollment.OFFLINE  # D9
    assert facts.server.cluster == "https://lic.corp.example"  # from DRMS_Config_lic_corp_example_443
    assert facts.server.cluster_kind is ClusterKind.LICENSING
    assert facts.server.root_cluster == "https://rms.corp.example"


def test_client_only_host_is_self_activating_and_names_its_cluster() -> None:
    facts = probe_for("client_only").read()
    assert facts.server is None
    assert facts.client is not None
    assert facts.client.version is Version.SP2
    assert facts.client.activation is Activation.SELF  # D10
    assert facts.client.cluster == "https://rms.corp.example"


def test_server_and_client_reports_both_roles() -> None:
    facts = probe_for("server_and_client").read()
    assert facts.server is not None and facts.server.version is Version.SP2
    assert facts.client is not None and facts.client.version is Version.RTM
    assert facts.client.activation is Activation.INTERNET  # D10: an RTM client activates over the internet


def test_access_denied_is_its_own_error_naming_the_key() -> None:
    with pytest.raises(ProbeAccessDenied, match=r"access denied reading HKLM\\SOFTWARE\\Microsoft\\DRMS\\1\.0"):
        probe_for("access_denied").read()


def test_unknown_versions_are_unknown_never_guessed_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    probe = probe_for("unknown_version")
    with caplog.at_level(logging.WARNING):
        facts = probe.read()
        probe.read()
    assert facts.server is not None and facts.server.version is Version.UNKNOWN
    assert facts.server.enrollment is Enrollment.ONLINE  # no capability claimed for an unknown server
    assert facts.client is not None and facts.client.version is Version.UNKNOWN
    assert facts.client.activation is Activation.NONE
    warnings = [r.getMessage() for r in caplog.records if "not in the version map" in r.getMessage()]
    assert len(warnings) == 2  # one for the server, one for the client, not one per read
    assert any("6.1.7601.17514" in w and "[version_map.client]" in w for w in warnings)


def test_a_configured_rule_maps_a_version_the_defaults_do_not_know() -> None:
    versions = VersionMap.with_defaults(
        [configured_rule(Role.CLIENT, "6.1.7601", "SP2"), configured_rule(Role.SERVER, "1.0.999", "SP2")]
    )
    facts = probe_for("unknown_version", version_map=versions).read()
    assert facts.server is not None and facts.server.version is Version.SP2
    assert facts.client is not None and facts.client.version is Version.SP2
    assert facts.client.activation is Activation.SELF


def test_without_assumed_rules_every_default_version_is_unknown() -> None:
    facts = probe_for("server_and_client", version_map=VersionMap.with_defaults(include_assumptions=False)).read()
    assert facts.server is not None and facts.server.version is Version.UNKNOWN
    assert facts.client is not None and facts.client.version is Version.UNKNOWN


def test_a_client_not_activated_reports_activation_none() -> None:
    registry = RecordedRegistry(IDENTITY)
    facts = WindowsProbe(registry, RecordedRmsClient((6, 0, 6406, 0), activated=False)).read()
    assert facts.client is not None
    assert facts.client.version is Version.SP2
    assert facts.client.activation is Activation.NONE


def test_a_client_whose_version_cannot_be_read_is_reported_unknown() -> None:
    registry = RecordedRegistry(IDENTITY)
    client = RecordedRmsClient((0, 0, 0, 0), activated=True, error="DRMGetClientVersion failed with HRESULT 0x80004005")
    facts = WindowsProbe(registry, client).read()
    assert facts.client is not None
    assert facts.client.version is Version.UNKNOWN


def test_a_server_without_a_cluster_url_is_an_error_naming_the_values_tried() -> None:
    registry = RecordedRegistry({**IDENTITY, DRMS: {"ProductVersion": "1.0.701.0"}})
    with pytest.raises(ProbeError, match="IntranetLicensingUrl") as caught:
        WindowsProbe(registry, RecordedRmsClient(None)).read()
    assert "[windows] cluster_url_values" in str(caught.value)


def test_value_names_are_configurable() -> None:
    registry = RecordedRegistry(
        {**IDENTITY, DRMS: {"BuildNumber": "1.0.701.0", "LicensingUrl": "https://rms.corp.example"}}
    )
    settings = WindowsProbeSettings(server_version_values=("BuildNumber",), cluster_url_values=("LicensingUrl",))
    facts = WindowsProbe(registry, RecordedRmsClient(None), settings=settings).read()
    assert facts.server is not None
    assert facts.server.version is Version.SP2
    assert facts.server.cluster == "https://rms.corp.example"


def test_a_parent_equal_to_the_cluster_itself_is_a_root_cluster() -> None:
    registry = RecordedRegistry(
        {
            **IDENTITY,
            DRMS: {
                "ProductVersion": "1.0.701.0",
                "IntranetLicensingUrl": "https://rms.corp.example",
                "EnrollmentParentUrl": "https://rms.corp.example/_wmcs/certification",
            },
        }
    )
    facts = WindowsProbe(registry, RecordedRmsClient(None)).read()
    assert facts.server is not None
    assert facts.server.cluster_kind is ClusterKind.ROOT_CERTIFICATION
    assert facts.server.root_cluster is None


def test_injected_identity_wins_over_the_registry() -> None:
    identity = HostIdentity("id-7", "id-7.emea.corp.example", "corp.example")
    facts = probe_for("client_only", identity=identity).read()
    assert (facts.host_id, facts.hostname, facts.forest) == ("id-7", "id-7.emea.corp.example", "corp.example")


def test_a_child_domain_host_takes_the_configured_forest() -> None:
    registry = RecordedRegistry({TCPIP: {"Hostname": "WS-9", "Domain": "emea.corp.example"}})
    probe = WindowsProbe(
        registry, RecordedRmsClient((6, 0, 6406, 0), True), overrides=HostOverrides(forest="corp.example")
    )
    facts = probe.read()
    assert facts.hostname == "ws-9.emea.corp.example"
    assert facts.forest == "corp.example"


def test_a_host_without_a_dns_domain_needs_a_configured_forest() -> None:
    registry = RecordedRegistry({TCPIP: {"Hostname": "WS-9"}})
    with pytest.raises(ProbeError, match=r"cannot tell the forest.*set \[host\] forest"):
        WindowsProbe(registry, RecordedRmsClient((6, 0, 6406, 0), True)).read()


def test_the_registry_reader_falls_back_to_wow6432node_and_ignores_case() -> None:
    registry = RecordedRegistry({"SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0": {"ProductVersion": "1.0.502.0"}})
    assert registry.read_value("software\\microsoft\\drms\\1.0", "productversion") == "1.0.502.0"
    assert registry.key_exists(DRMS)
    assert registry.subkeys("SOFTWARE\\Microsoft") == ["DRMS"]
    assert registry.read_value(DRMS, "Missing") is None
    assert not registry.key_exists("SOFTWARE\\Microsoft\\Nothing")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://RMS.corp.example/_wmcs/licensing", "https://rms.corp.example"),
        ("http://rms.corp.example:80/", "http://rms.corp.example"),
        ("https://rms.corp.example:8443/_wmcs/certification/", "https://rms.corp.example:8443"),
        ("rms.corp.example", "http://rms.corp.example"),
    ],
)
def test_cluster_urls_are_normalised_so_servers_and_clients_agree(raw: str, expected: str) -> None:
    assert normalize_cluster_url(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DRMS_Config_rms_corp_example_80", "http://rms.corp.example"),
        ("DRMS_Config_rms_corp_example_443", "https://rms.corp.example"),
        (
            "Server=SQL01;Database=DRMS_Config_rms-01_corp_example_8080;Trusted_Connection=yes",
            "http://rms-01.corp.example:8080",
        ),
        ("DRMS_Logging_rms_corp_example_80", None),
    ],
)
def test_the_cluster_is_derived_from_the_config_database_name(text: str, expected: str | None) -> None:
    assert cluster_from_config_database(text) == expected


def test_a_broken_recording_is_a_probe_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"registry": {"keys": []}}', encoding="utf-8")
    with pytest.raises(ProbeError, match="not a recorded host"):
        RecordedHost.load(path)
