"""The shared mapping (rmsfleet.agent.probe.documented) reading real Samba hosts through the
remote readers: the seam between the probe's mapping and the scanner's I/O, end to end below
the scanner command (which has its own tests)."""

from __future__ import annotations

from rmsfleet.agent.probe.documented import (
    DocumentedHost,
    DocumentedSettings,
    HostIdentity,
    HostSources,
    HostStatus,
    read_documented_host,
)
from rmsfleet.agent.scanner.remote import RemoteOptions, open_remote_host
from rmsfleet.contract.facts import Activation, ClusterKind, Enrollment, Version

from .conftest import StartHost
from .fake_hosts import (
    SERVER_SP1,
    SERVER_SP2,
    VISTA_DRM_FOLDER,
    WINDOWS_7,
    WINDOWS_2003,
    WINDOWS_XP,
    FakeWindowsHost,
    Profile,
    RegValue,
    RunningFakeHost,
)

DRMS = "SOFTWARE\\Microsoft\\DRMS\\1.0"
ASSEMBLY = "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\bin\\Plugin.DirectoryServices.dll"
SP2_CLIENT = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{1B0B4E3C-0000-0000-0000-000000000000}"


def read(running: RunningFakeHost, name: str, smb1_allowed: bool = True) -> DocumentedHost:
    options = RemoteOptions(timeout=30, smb1_allowed=smb1_allowed)
    with open_remote_host(running.target(name), running.credentials, options) as host:
        sources = HostSources(registry=host.registry, files=host.files, versions=host.versions)
        return read_documented_host(sources, DocumentedSettings(), HostIdentity(name, name, "corp.example"))


def test_an_sp1_root_certification_server_over_smb1(fake_host: StartHost) -> None:
    running = fake_host(
        FakeWindowsHost(
            "RMSROOT01",
            windows_version=WINDOWS_2003,
            smb1_only=True,
            registry={
                DRMS: {"GicURL": "https://rmsroot.corp.example/_wmcs/certification"},
                DRMS + "\\KeyProtection": {
                    "PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_RMSROOT_443": RegValue.binary(b"\x01" * 64)
                },
            },
            files={ASSEMBLY: SERVER_SP1},
        )
    )
    result = read(running, "rmsroot01.corp.example")
    assert result.facts is not None
    server = result.facts.server
    assert server is not None
    assert server.version is Version.SP1
    assert server.cluster_kind is ClusterKind.ROOT_CERTIFICATION
    assert server.enrollment is Enrollment.OFFLINE
    assert "rmsroot" in server.cluster
    assert result.facts.host_id == "rmsroot01.corp.example"


def test_an_sp2_licensing_server_on_x64_reads_the_32_bit_view(fake_host: StartHost) -> None:
    running = fake_host(
        FakeWindowsHost(
            "RMSLIC01",
            windows_version=WINDOWS_2003,
            registry={
                "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0": {
                    "SubEnrollmentURL": "https://rmsroot.corp.example/_wmcs/certification/subenrollservice.asmx"
                },
                "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0\\KeyProtection": {
                    "PASSWORDDERIVEDKEY_SQL02_DRMS_CONFIG_RMSLIC_80": RegValue.binary(b"\x02" * 64)
                },
            },
            files={ASSEMBLY: SERVER_SP2},
        )
    )
    result = read(running, "rmslic01.corp.example", smb1_allowed=False)
    assert result.facts is not None and result.facts.server is not None
    assert result.facts.server.version is Version.SP2
    assert result.facts.server.cluster_kind is ClusterKind.LICENSING
    assert result.facts.server.root_cluster is not None
    assert "rmsroot.corp.example" in result.facts.server.root_cluster


def test_an_sp2_client_with_two_activated_users(fake_host: StartHost) -> None:
    running = fake_host(
        FakeWindowsHost(
            "DESK01",
            windows_version=WINDOWS_XP,
            smb1_only=True,
            registry={SP2_CLIENT: {"DisplayName": "Windows Rights Management Client with Service Pack 2"}},
            files={"%SystemRoot%\\system32\\msdrm.dll": (5, 2, 3790, 433)},
            profiles=[
                Profile("alice", "S-1-5-21-1-2-3-1001", activated=True),
                Profile("bob", "S-1-5-21-1-2-3-1002", activated=True),
                Profile("carol", "S-1-5-21-1-2-3-1003", activated=False),
            ],
        )
    )
    result = read(running, "desk01.corp.example")
    assert result.facts is not None and result.facts.client is not None
    assert result.facts.server is None
    assert result.facts.client.version is Version.SP2
    assert result.facts.client.activated_users == 2
    assert result.facts.client.activation is not Activation.UNKNOWN


def test_windows_7_has_the_builtin_client(fake_host: StartHost) -> None:
    running = fake_host(
        FakeWindowsHost(
            "WIN7DESK",
            windows_version=WINDOWS_7,
            files={"%SystemRoot%\\system32\\msdrm.dll": (6, 1, 7601, 17514)},
            profiles=[
                Profile(
                    "dave", "S-1-5-21-1-2-3-1005", True, home="%SystemDrive%\\Users\\dave", drm_folder=VISTA_DRM_FOLDER
                )
            ],
        )
    )
    result = read(running, "win7desk.corp.example")
    assert result.facts is not None and result.facts.client is not None
    assert result.facts.client.version is Version.BUILTIN


def test_a_host_without_rms(fake_host: StartHost) -> None:
    running = fake_host(FakeWindowsHost("PLAIN01", windows_version=WINDOWS_2003))
    result = read(running, "plain01.corp.example")
    assert result.status is HostStatus.RMS_NOT_FOUND
    assert result.facts is None
