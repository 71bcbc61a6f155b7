"""`rmsfleet-scan` against fake Windows hosts: real Samba servers on loopback ports whose registry
(MS-RRP) and administrative shares hold what each kind of RMS host holds (tests/scanner/fake_hosts.py),
a real collector, the scanner as a real process. One test per kind of target, each ending in the
collector: its facts (`rmsfleet-collector hosts --json`) and violations (`violations --json`).

The scanner logs on with the fake hosts' administrator; its password must never show in what the
scanner prints or leaves in its state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_or_fail
from processes import Collector, make_token, start_collector
from scanner.fake_hosts import (
    ADMIN_PASSWORD,
    ADMIN_USER,
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
    running_fake_host,
)
from scanner.pe_fixture import PACKAGE, WINDRES, tools_available
from scanner.samba import SambaTools, require_samba
from scanner_run import ScanDone, run_scan, tree_text

from rmsfleet.agent.multihost import HostOutboxes

pytestmark = pytest.mark.e2e

DRMS = "SOFTWARE\\Microsoft\\DRMS\\1.0"
DRMS_X64 = "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0"
ASSEMBLY = "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\bin\\Plugin.DirectoryServices.dll"
MSDRM = "%SystemRoot%\\system32\\msdrm.dll"
UNINSTALL = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
SERVICE_LOCATION = "SOFTWARE\\Microsoft\\MSDRM\\ServiceLocation"
ROOT_URL = "https://rms.corp.example"
LICENSING_URL = "https://rms-lic.corp.example"
# No msdrm.dll version is published (domain.md): the operator maps the one confirmed on an RTM
# client, as the test configuration does here.
RTM_MSDRM = (5, 2, 3790, 100)
FOREST = "corp.example"


def key_protection(database: str, cluster: str, port: int) -> dict[str, RegValue]:
    """The `KeyProtection` value that names the cluster (domain.md): its data is the key blob."""
    return {f"PASSWORDDERIVEDKEY_{database}_DRMS_CONFIG_{cluster}_{port}": RegValue.binary(b"\x01\x00\x00\x00")}


SP1_ROOT = FakeWindowsHost(
    netbios_name="RMSROOT01",
    windows_version=WINDOWS_2003,
    registry={
        DRMS: {"GicURL": f"{ROOT_URL}/_wmcs/certification"},
        DRMS + "\\KeyProtection": key_protection("SQL01", "rms_corp_example", 443),
    },
    files={ASSEMBLY: SERVER_SP1},
)
SP2_LICENSING_X64 = FakeWindowsHost(
    netbios_name="RMSLIC01",
    windows_version=WINDOWS_2003,
    registry={
        # 64-bit Windows Server 2003: the 32-bit RMS server's keys are under WOW6432Node (D15).
        DRMS_X64: {"SubEnrollmentURL": f"{ROOT_URL}/_wmcs/certification/subenrollservice.asmx"},
        DRMS_X64 + "\\KeyProtection": key_protection("SQL02", "rms_lic_corp_example", 443),
    },
    files={ASSEMBLY: SERVER_SP2},
)
RTM_CLIENT = FakeWindowsHost(
    netbios_name="XPRTM01",
    windows_version=WINDOWS_XP,
    registry={SERVICE_LOCATION + "\\EnterprisePublishing": {"": f"{ROOT_URL}/_wmcs/licensing"}},
    files={MSDRM: RTM_MSDRM},
    profiles=[Profile("carol", "S-1-5-21-100-200-300-1003", activated=False)],
)
SP2_CLIENT = FakeWindowsHost(
    netbios_name="XPSP201",
    windows_version=WINDOWS_XP,
    registry={
        # Cc747749: the SP2 client is this Windows Installer product.
        UNINSTALL + "\\{7D6E5E4C-4DD5-4E9E-9A7F-RMSSP2CLIENT}": {
            "DisplayName": "Windows Rights Management Client with Service Pack 2"
        },
    },
    files={MSDRM: (5, 2, 3790, 433)},
    profiles=[
        Profile("alice", "S-1-5-21-100-200-300-1001", activated=True),
        Profile("bob", "S-1-5-21-100-200-300-1002", activated=True),
        Profile("dave", "S-1-5-21-100-200-300-1004", activated=False),
    ],
)
WINDOWS_7_CLIENT = FakeWindowsHost(
    netbios_name="WIN7DESK01",
    windows_version=WINDOWS_7,
    profiles=[
        Profile(
            "erin",
            "S-1-5-21-100-200-300-1005",
            activated=True,
            home="%SystemDrive%\\Users\\erin",
            drm_folder=VISTA_DRM_FOLDER,
        )
    ],
)
NO_RMS = FakeWindowsHost(netbios_name="FILESRV01", windows_version=WINDOWS_2003)


@pytest.fixture(scope="module")
def samba_tools() -> SambaTools:
    return require_samba()


@pytest.fixture(scope="module")
def pe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not tools_available():
        skip_or_fail(f"`{WINDRES}` not found on PATH (install Debian's `{PACKAGE}` package)")
    return tmp_path_factory.mktemp("pe-cache")


@pytest.fixture(scope="module")
def hosts(samba_tools: SambaTools, pe_cache: Path) -> Iterator[dict[str, RunningFakeHost]]:
    """Every fake host, started once for this module (each is its own Samba on its own port)."""
    with contextlib.ExitStack() as stack:
        started = {
            name: stack.enter_context(running_fake_host(host, samba_tools, pe_cache))
            for name, host in {
                "rms-root-01.corp.example": SP1_ROOT,
                "rms-lic-01.corp.example": SP2_LICENSING_X64,
                "xp-rtm-01.corp.example": RTM_CLIENT,
                "xp-sp2-01.corp.example": SP2_CLIENT,
                "win7-01.corp.example": WINDOWS_7_CLIENT,
                "filesrv-01.corp.example": NO_RMS,
            }.items()
        }
        yield started


@pytest.fixture
def collector(tmp_path: Path, sqlite_url: str) -> Iterator[Collector]:
    started = start_collector(tmp_path, sqlite_url)
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Scanned:
    done: ScanDone
    targets: dict[str, dict[str, Any]]
    state: Path


def scan(
    tmp_path: Path,
    collector: str,
    hosts: Mapping[str, RunningFakeHost],
    names: list[str],
    *,
    password: str = ADMIN_PASSWORD,
    extra: tuple[str, ...] = (),
) -> Scanned:
    """Scan `names` (each listed under its name, at its Samba's port) once, with --json, reporting
    to the collector at `collector` (HOST:PORT)."""
    config = tmp_path / "scan.toml"
    config.write_text(
        f"""
[agent]
collectors = ["{collector}"]

[scan]
forest = "{FOREST}"
timeout = 20

[clusters]
"rms_corp_example:443" = "{ROOT_URL}"
"rms_lic_corp_example:443" = "{LICENSING_URL}"

[versions.client]
"{".".join(map(str, RTM_MSDRM))}" = "RTM"
"""
    )
    targets = tmp_path / "targets.txt"
    targets.write_text(
        "".join(f"{name}   {hosts[name].address}:{hosts[name].port}\n" for name in names), encoding="utf-8"
    )
    state = tmp_path / "scan-state"
    done = run_scan(
        "--config",
        str(config),
        "--targets-file",
        str(targets),
        "--state-dir",
        str(state),
        "--json",
        "--log-level",
        "DEBUG",
        *extra,
        username=ADMIN_USER,
        password=password,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert password not in done.stdout + done.stderr + tree_text(state), "the password leaked"
    return Scanned(done, done.targets(), state)


def collector_hosts(collector: Collector) -> dict[str, dict[str, Any]]:
    return {host["host_id"]: host for host in collector.cli_json("hosts")}


def open_violations(collector: Collector) -> set[tuple[str, str, str]]:
    """The open violations once evaluation has covered every report the collector acknowledged
    (the scan's included), so an absence means something too."""
    return {
        (v["policy"], v["subject_kind"], v["subject"])
        for v in collector.cli_json("violations", "--wait-for-evaluation")
    }


def wait_violations(collector: Collector, expected: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    found = open_violations(collector)
    assert expected <= found, f"missing {expected - found}"
    return found


def test_an_sp1_root_certification_server(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    name = "rms-root-01.corp.example"
    scanned = scan(tmp_path, collector.address, hosts, [name])
    assert scanned.done.returncode == 0, scanned.done.stderr
    target = scanned.targets[name]
    assert (target["outcome"], target["delivery"]) == ("reported", "delivered")
    stored = collector_hosts(collector)[name]
    assert stored["forest"] == FOREST
    assert stored["server"] == {
        "version": "SP1",  # Plugin.DirectoryServices 5.2.3790.134 ([MS-RMPRS] 2.3.1.2)
        "cluster": ROOT_URL,  # KeyProtection names rms_corp_example:443, mapped by [clusters]
        "cluster_kind": "root-certification",
        "root_cluster": None,
        "enrollment": "offline",  # D9
    }
    assert stored["client"] is None
    # An SP1 root enrolls offline (D9, D16): nothing to flag about it.
    assert not {v for v in open_violations(collector) if v[2] in (name, ROOT_URL, FOREST)}


def test_an_sp2_licensing_server_under_its_sp1_root_on_x64(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    root, licensing = "rms-root-01.corp.example", "rms-lic-01.corp.example"
    scanned = scan(tmp_path, collector.address, hosts, [root, licensing])
    assert scanned.done.returncode == 0, scanned.done.stderr
    # The host has the DRMS keys only under WOW6432Node: found there, as on 64-bit Windows.
    stored = collector_hosts(collector)[licensing]
    assert stored["server"] == {
        "version": "SP2",
        "cluster": LICENSING_URL,
        "cluster_kind": "licensing",
        "root_cluster": ROOT_URL,  # SubEnrollmentURL (D16)
        "enrollment": "offline",
    }
    violations = wait_violations(
        collector,
        {
            ("licensing-ahead-of-root", "cluster", LICENSING_URL),  # D6: SP2 under an SP1 root
            ("mixed-versions-in-forest", "forest", FOREST),  # D8
        },
    )
    assert not any(v[0] == "server-no-offline-enrollment" for v in violations)


def test_an_rtm_client_with_no_activated_user(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    client, root = "xp-rtm-01.corp.example", "rms-root-01.corp.example"
    scanned = scan(tmp_path, collector.address, hosts, [client, root])
    assert scanned.done.returncode == 0, scanned.done.stderr
    stored = collector_hosts(collector)[client]
    assert stored["server"] is None
    assert stored["client"] == {
        "version": "RTM",  # msdrm.dll 5.2.3790.100, mapped by the configured rule
        "activation": "unknown",  # D17: an RTM client's certificate is per machine, its place undocumented
        "cluster": ROOT_URL,  # ServiceLocation\EnterprisePublishing
        "activated_users": 0,
    }
    # D10. (Its cluster has an SP1 server, so the rulebook's D14 policy client-cannot-publish-online
    # applies to it as well where that policy exists.)
    wait_violations(collector, {("client-not-self-activating", "host", client)})


def test_an_sp2_client_with_two_activated_users(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    name = "xp-sp2-01.corp.example"
    scanned = scan(tmp_path, collector.address, hosts, [name])
    assert scanned.done.returncode == 0, scanned.done.stderr
    stored = collector_hosts(collector)[name]
    assert stored["client"] == {
        "version": "SP2",  # the Uninstall entry of the SP2 client product (Cc747749)
        "activation": "self",  # D10
        "cluster": None,  # found through Active Directory: no ServiceLocation override
        "activated_users": 2,  # alice and bob hold CERT-Machine.drm, dave does not (D17)
    }
    assert not {v for v in open_violations(collector) if v[2] == name}


def test_a_windows_7_host_with_the_builtin_client(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    name = "win7-01.corp.example"
    scanned = scan(tmp_path, collector.address, hosts, [name])
    assert scanned.done.returncode == 0, scanned.done.stderr
    stored = collector_hosts(collector)[name]
    assert stored["client"] == {
        "version": "BUILTIN",  # ntoskrnl.exe 6.1: the client Windows ships (D15)
        "activation": "self",
        "cluster": None,
        "activated_users": 1,
    }
    assert stored["server"] is None
    assert not {v for v in open_violations(collector) if v[2] == name}


def test_a_host_without_rms_is_counted_not_reported(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    name = "filesrv-01.corp.example"
    scanned = scan(tmp_path, collector.address, hosts, [name])
    assert scanned.done.returncode == 0, scanned.done.stderr
    target = scanned.targets[name]
    assert (target["outcome"], target["facts"], target["delivery"]) == ("rms-not-found", None, None)
    summary = scanned.done.document()["summary"]
    assert (summary["scanned"], summary["reported"], summary["outcomes"]["rms-not-found"]) == (1, 0, 1)
    assert "RMS not found" in scanned.done.stderr
    assert collector_hosts(collector) == {}


def test_a_wrong_password_is_access_denied(
    tmp_path: Path, collector: Collector, hosts: dict[str, RunningFakeHost]
) -> None:
    name = "rms-root-01.corp.example"
    wrong = "Not-The-Adm1n-Passw0rd"
    scanned = scan(tmp_path, collector.address, hosts, [name], password=wrong)
    assert scanned.done.returncode == 1, scanned.done.stderr
    target = scanned.targets[name]
    assert target["outcome"] == "access-denied", target
    assert target["facts"] is None
    assert scanned.done.document()["summary"]["outcomes"]["access-denied"] == 1
    assert collector_hosts(collector) == {}


def test_each_failure_is_reported_as_its_own_reason(
    tmp_path: Path, collector: Collector, samba_tools: SambaTools, pe_cache: Path
) -> None:
    """What real estates do to a scanner: XP's ForceGuest, the Remote Registry service stopped, a
    host that speaks only SMB1 while SMB1 is off on the scanner's side. Each is its own outcome
    in --json and in the summary, never a traceback; nothing reaches the collector."""
    kinds = {
        "xp-guest.corp.example": FakeWindowsHost(netbios_name="XPGUEST", windows_version=WINDOWS_XP, force_guest=True),
        "vista-norrp.corp.example": FakeWindowsHost(
            netbios_name="NORRP", windows_version=WINDOWS_7, remote_registry=False
        ),
        "w2k3-smb1.corp.example": FakeWindowsHost(
            netbios_name="SMB1ONLY", windows_version=WINDOWS_2003, smb1_only=True, files={ASSEMBLY: SERVER_SP1}
        ),
    }
    with contextlib.ExitStack() as stack:
        running = {
            name: stack.enter_context(running_fake_host(host, samba_tools, pe_cache)) for name, host in kinds.items()
        }
        scanned = scan(tmp_path, collector.address, running, list(kinds), extra=("--no-smb1",))
    assert scanned.done.returncode == 1, scanned.done.stderr
    outcomes = {name: target["outcome"] for name, target in scanned.targets.items()}
    assert outcomes == {
        "xp-guest.corp.example": "guest-only",
        "vista-norrp.corp.example": "remote-registry-off",
        "w2k3-smb1.corp.example": "smb1-only",
    }
    for target in scanned.targets.values():
        assert target["message"] and "\n" not in target["message"]
    for label in ("access denied as guest", "remote registry off", "SMB1 only"):
        assert label in scanned.done.stderr
    assert collector_hosts(collector) == {}


def test_an_smb1_host_read_by_many_scans_at_once_and_each_name_is_its_own_host(
    tmp_path: Path, collector: Collector, samba_tools: SambaTools, pe_cache: Path
) -> None:
    """Windows 2003 speaks only SMB1 (SMB1 is on by default). Eight names for one host, read at
    the same time, open the same files together: the server then breaks oplocks, which the SMB1
    reads must not trip over. Each name is reported as its own host (its identity)."""
    host = dataclasses.replace(SP2_CLIENT, netbios_name="XPSMB1", smb1_only=True)
    names = [f"xp-smb1-{n}.corp.example" for n in range(8)]
    with running_fake_host(host, samba_tools, pe_cache) as running:
        scanned = scan(tmp_path, collector.address, dict.fromkeys(names, running), names, extra=("--concurrency", "8"))
    assert scanned.done.returncode == 0, scanned.done.stderr
    assert {target["dialect"] for target in scanned.targets.values()} == {"NT LM 0.12"}
    assert {target["outcome"] for target in scanned.targets.values()} == {"reported"}
    stored = collector_hosts(collector)
    assert sorted(stored) == names
    assert {host["client"]["activated_users"] for host in stored.values()} == {2}


def test_reports_wait_for_a_collector_that_is_down_and_go_with_the_next_run(
    tmp_path: Path, sqlite_url: str, hosts: dict[str, RunningFakeHost]
) -> None:
    """Exit 3 while no collector answers; the report stays in the target's outbox. The next run
    sends it even though it cannot read the target itself this time (a wrong password): only
    the kept report can have reached the collector."""
    name = "xp-sp2-01.corp.example"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{sock.getsockname()[1]}"
    first = scan(tmp_path, down, hosts, [name])
    assert first.done.returncode == 3, first.done.stderr
    assert (first.targets[name]["outcome"], first.targets[name]["delivery"]) == ("reported", "queued")
    assert "kept for the next run" in first.done.stderr

    collector = start_collector(tmp_path, sqlite_url)
    try:
        second = scan(tmp_path, collector.address, hosts, [name], password="Wr0ng-Passw0rd")
        assert second.done.returncode == 1, second.done.stderr
        assert second.targets[name]["outcome"] == "access-denied"
        assert "also sent 1 report(s) an earlier run had left" in second.done.stderr
        assert collector_hosts(collector)[name]["client"]["activated_users"] == 2
    finally:
        collector.stop()


def test_with_enrollment_each_target_enrolls_as_its_own_host(
    tmp_path: Path, sqlite_url: str, hosts: dict[str, RunningFakeHost]
) -> None:
    """A collector that requires enrollment: each target gets its own node key (kept in its own
    outbox), as each agent would; the second run sends with the keys from the first."""
    secrets = tmp_path / "enroll.secrets"
    secrets.write_text("scanner-enroll-secret\n")
    secrets.chmod(0o600)
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secrets)])
    names = ["xp-sp2-01.corp.example", "win7-01.corp.example"]
    try:
        first = scan(tmp_path, collector.address, hosts, names, extra=("--enroll-secret-file", str(secrets)))
        assert first.done.returncode == 0, first.done.stderr
        for name in names:
            assert f"enrolled host {name} with the collector" in first.done.stderr
        scanned = scan(tmp_path, collector.address, hosts, names, extra=("--enroll-secret-file", str(secrets)))
        assert scanned.done.returncode == 0, scanned.done.stderr
        assert "enrolled host" not in scanned.done.stderr, "the second run uses the node keys it has"
        assert sorted(collector_hosts(collector)) == sorted(names)
        outboxes = HostOutboxes(scanned.state)
        try:
            keys = {name: outboxes.node_key(name) for name in names}
        finally:
            outboxes.close()
        assert all(keys.values()) and len(set(keys.values())) == 2, "one node key per target"
        assert "scanner-enroll-secret" not in scanned.done.stdout + scanned.done.stderr
    finally:
        collector.stop()


def test_with_a_scanner_token_each_target_enrolls_as_its_own_host_without_the_secret(
    tmp_path: Path, sqlite_url: str, hosts: dict[str, RunningFakeHost]
) -> None:
    """`--enroll-token-file`: an API token with the scanner role stands in for the enrollment
    secret (docs/security.md); each target still gets its own node key, and the collector's audit
    trail says the token enrolled it."""
    secrets = tmp_path / "enroll.secrets"
    secrets.write_text("the-agents-secret-the-scanner-never-sees\n")
    secrets.chmod(0o600)
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secrets)])
    names = ["xp-sp2-01.corp.example", "win7-01.corp.example"]
    try:
        # A token without the scanner role: the collector answers, and refuses each host id to
        # this scanner (exit 6, not "unreachable"); the reports wait for the next run.
        reader = make_token(tmp_path, sqlite_url, "reader-1", "reader")
        refused = scan(tmp_path, collector.address, hosts, names, extra=("--enroll-token-file", str(reader)))
        assert refused.done.returncode == 6, refused.done.stderr
        why = f"with the enrollment token in {reader}: token:reader-1 has the role reader; this call needs scanner"
        assert "collector: refuses 2 host id(s) to this scanner, their reports are kept: " in refused.done.stderr
        assert all(why in target["delivery_message"] for target in refused.targets.values()), refused.targets
        assert collector_hosts(collector) == {}

        token_file = make_token(tmp_path, sqlite_url, "scanner-1", "scanner")
        scanned = scan(tmp_path, collector.address, hosts, names, extra=("--enroll-token-file", str(token_file)))
        assert scanned.done.returncode == 0, scanned.done.stderr
        for name in names:
            assert f"enrolled host {name} with the collector" in scanned.done.stderr
        assert sorted(collector_hosts(collector)) == sorted(names)
        outboxes = HostOutboxes(scanned.state)
        try:
            keys = {name: outboxes.node_key(name) for name in names}
        finally:
            outboxes.close()
        assert all(keys.values()) and len(set(keys.values())) == 2, "one node key per target"
        assert "by token:scanner-1" in collector.log()
        token = token_file.read_text().strip()
        assert token not in scanned.done.stdout + scanned.done.stderr + tree_text(scanned.state) + collector.log()
    finally:
        collector.stop()
