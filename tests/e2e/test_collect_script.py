"""The Windows collection script (deploy/windows/collect-rms-facts.vbs) run by a real VBScript
host, Wine's `cscript`, over a Wine prefix laid out like each kind of RMS host (registry keys
imported with `regedit`, PE files with real version resources from tests/scanner/pe_fixture.py);
then every facts file it wrote goes through a real `rmsfleet-agent spool` to a real collector.

What Wine's script host cannot do, so what these tests do not cover: calling WMI provider methods
(StdRegProv.EnumKey), so the script's WMI listing fails here and it falls back to reg.exe (the
fallback is what runs; the forced WMI mode is shown to fail cleanly), and WScript.StdErr, so
notes arrive on standard output. Wine's VBScript also lacks ChrW/AscW, ReDim and
WScript.Arguments.Named, which the script therefore does without.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool, skip_or_fail
from processes import ROOT, run_agent, start_collector, wait_for
from scanner.pe_fixture import build_version_dll, tools_available

from rmsfleet.agent.spool import parse_facts
from rmsfleet.contract.facts import facts_to_json

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "deploy" / "windows" / "collect-rms-facts.vbs"
WINDOWS_2003 = (5, 2, 3790, 3959)
WINDOWS_XP = (5, 1, 2600, 5512)
# The test's own operator rule: no msdrm.dll version is published (domain.md), so a site confirms
# one per release and configures it; this number stands for such a confirmed value.
RTM_MSDRM = (5, 2, 3790, 134)
UNINSTALL = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
PROFILE_LIST = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
CERT = "Local Settings\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm"
BUILTIN_CERT = "AppData\\Local\\Microsoft\\DRM\\CERT-Machine.drm"


@dataclass(frozen=True)
class Expand:
    """A REG_EXPAND_SZ value."""

    text: str


RegistryValue = str | int | bytes | Expand


@dataclass
class Host:
    """One kind of Windows host: registry keys (HKLM-relative), files on C: (a version tuple is a
    PE file with that version resource, bytes are written as they are), the .ini beside the script."""

    registry: Mapping[str, Mapping[str, RegistryValue]] = field(default_factory=dict)
    files: Mapping[str, tuple[int, int, int, int] | bytes] = field(default_factory=dict)
    ini: str = ""
    msdrm: tuple[int, int, int, int] | None = None  # None: no msdrm.dll in system32


def windows_path(path: Path) -> str:
    return "Z:" + str(path).replace("/", "\\")


def reg_value(value: RegistryValue) -> str:
    if isinstance(value, Expand):
        data = (value.text + "\0").encode("utf-16-le")
        return "hex(2):" + ",".join(f"{byte:02x}" for byte in data)
    if isinstance(value, bool):
        raise TypeError("no booleans in the registry")
    if isinstance(value, int):
        return f"dword:{value:08x}"
    if isinstance(value, bytes):
        return "hex:" + ",".join(f"{byte:02x}" for byte in value)
    return json.dumps(value)


# Keys every Windows has: what a host adds below them is removed with the next host.
EXISTING_PARENTS = (
    "SOFTWARE\\Microsoft",
    "SOFTWARE\\Wow6432Node\\Microsoft",
    UNINSTALL,
    "SOFTWARE\\Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
    PROFILE_LIST,
    "SYSTEM\\CurrentControlSet\\Services",
)


def created_root(key: str) -> str:
    """The outermost key a host's `key` adds: the longest existing parent plus one name."""
    parent = max((p for p in EXISTING_PARENTS if key.lower().startswith(p.lower() + "\\")), key=len)
    return parent + "\\" + key[len(parent) + 1 :].split("\\", 1)[0]


class Wine:
    """A Wine prefix, one host kind at a time: `install` removes what the previous kind put there."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.prefix = base / "prefix"
        self.env = {
            **os.environ,
            "WINEPREFIX": str(self.prefix),
            "WINEDEBUG": "-all",
            # No Mono or Gecko installers (they would wait for a display).
            "WINEDLLOVERRIDES": "mscoree,mshtml=",
        }
        self.pe_cache = base / "pe-cache"
        self.script_dir = base / "script"
        self.keys: list[str] = []
        self.paths: list[Path] = []

    def wine(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["wine", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def drive_c(self, windows: str) -> Path:
        assert windows[:3].upper() == "C:\\", windows
        return self.prefix / "drive_c" / windows[3:].replace("\\", "/")

    def regedit(self, lines: list[str]) -> None:
        reg = self.base / "import.reg"
        reg.write_text("Windows Registry Editor Version 5.00\r\n\r\n" + "\r\n".join(lines) + "\r\n", encoding="utf-16")
        done = self.wine("regedit", "/S", windows_path(reg))
        assert done.returncode == 0, done.stderr

    def install(self, host: Host) -> None:
        self.regedit([f"[-HKEY_LOCAL_MACHINE\\{key}]\r\n" for key in self.keys])
        for path in self.paths:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self.keys = sorted({created_root(key) for key in host.registry})
        lines: list[str] = []
        for key, values in host.registry.items():
            lines.append(f"[HKEY_LOCAL_MACHINE\\{key}]")
            lines.extend(f"{json.dumps(name) if name else '@'}={reg_value(value)}" for name, value in values.items())
            lines.append("")
        self.regedit(lines)
        self.paths = []
        files = dict(host.files)
        msdrm = self.drive_c("C:\\windows\\system32\\msdrm.dll")
        msdrm.unlink(missing_ok=True)
        if host.msdrm is not None:
            files["C:\\windows\\system32\\msdrm.dll"] = host.msdrm
        for windows, content in files.items():
            path = self.drive_c(windows)
            # Remember the outermost folder (or the file) this puts there, to remove it next time.
            created = path
            while not created.parent.exists():
                created = created.parent
            if created not in self.paths:
                self.paths.append(created)
            if isinstance(content, bytes):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            else:
                build_version_dll(path, content, cache_dir=self.pe_cache)
        self.script_dir.mkdir(exist_ok=True)
        shutil.copyfile(SCRIPT, self.script_dir / SCRIPT.name)
        (self.script_dir / "collect-rms-facts.ini").write_text(host.ini.replace("\n", "\r\n"), encoding="ascii")

    def collect(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.wine("cscript", "//nologo", windows_path(self.script_dir / SCRIPT.name), *args, timeout=120)


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    require_tool("wine", "wine")
    if not tools_available():
        skip_or_fail("the mingw binutils that build PE fixtures are not installed (binutils-mingw-w64-i686)")
    host = Wine(tmp_path_factory.mktemp("wine"))
    booted = host.wine("wineboot", "-i", timeout=600)
    if booted.returncode != 0:
        skip_or_fail(f"wineboot failed ({booted.returncode}): {booted.stderr.strip()[-500:]}")
    probe = host.base / "hello.vbs"
    probe.write_text('WScript.Echo "hello"\r\n')
    hello = host.wine("cscript", "//nologo", windows_path(probe))
    if "hello" not in hello.stdout:
        skip_or_fail(f"Wine's cscript does not run VBScript here: {hello.stdout} {hello.stderr[-500:]}")
    yield host
    subprocess.run(["wineserver", "-k"], env=host.env, timeout=60, check=False)


def facts_in(folder: Path) -> dict[str, Any]:
    """The one facts file in `folder`, as facts-file JSON (the script writes UTF-16)."""
    written = sorted(folder.glob("*"))
    assert [p.suffix for p in written] == [".json"], f"expected one .json (no .tmp left): {written}"
    return facts_to_json(parse_facts(written[0], written[0].read_bytes()))


def run_case(wine: Wine, host: Host, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    wine.install(host)
    out.mkdir(parents=True, exist_ok=True)
    return wine.collect(f"/out:{windows_path(out)}", *args)


def server_2003(**more: Any) -> dict[str, Any]:
    return {"kernel": WINDOWS_2003, **more}


def profiles(users: dict[str, bool], certificate: str = CERT) -> tuple[dict[str, Any], dict[str, Any]]:
    """ProfileList entries (REG_EXPAND_SZ paths, as Windows writes them) and the activated users'
    certificates (D17)."""
    keys: dict[str, Any] = {}
    files: dict[str, Any] = {}
    for number, (user, activated) in enumerate(users.items(), start=1001):
        keys[f"{PROFILE_LIST}\\S-1-5-21-7-7-7-{number}"] = {
            "ProfileImagePath": Expand(f"%SystemDrive%\\Documents and Settings\\{user}")
        }
        folder = f"C:\\Documents and Settings\\{user}"
        files[f"{folder}\\NTUSER.DAT"] = b"profile"
        if activated:
            files[f"{folder}\\{certificate}"] = b"a machine certificate"
    return keys, files


KERNEL_2003 = "[windows]\nkernel = C:\\fixture\\ntoskrnl.exe\n"


def test_hosts_of_every_kind_are_collected_and_reported_through_the_spool(wine: Wine, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    expected: dict[str, dict[str, Any]] = {}

    # An SP1 server of a root certification cluster, with the SP2 client (Uninstall entry) and
    # one activated user of two.
    users, certs = profiles({"alice": True, "bob": False})
    sp1 = Host(
        registry={
            "SOFTWARE\\Microsoft\\DRMS\\1.0": {"GicURL": "https://rms.corp.example/_wmcs/certification"},
            "SOFTWARE\\Microsoft\\DRMS\\1.0\\KeyProtection": {
                "PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_corp_443": b"\x01\x02"
            },
            f"{UNINSTALL}\\{{0E2C5A42-RMSFLEET-TEST}}": {
                "DisplayName": "Windows Rights Management Client with Service Pack 2"
            },
            **users,
        },
        files={
            "C:\\fixture\\ntoskrnl.exe": WINDOWS_2003,
            "C:\\Inetpub\\wwwroot\\_wmcs\\bin\\Microsoft.DigitalRightsManagement.Plugin.DirectoryServices.dll": (
                5,
                2,
                3790,
                134,
            ),
            **certs,
        },
        ini=KERNEL_2003 + '[clusters]\n"rms_corp:443" = "https://RMS.corp.example:443/_wmcs/licensing/"\n',
        msdrm=(6, 0, 6001, 18000),
    )
    done = run_case(
        wine, sp1, spool / "a", "/host_id:AMS-RMS-01", "/hostname:ams-rms-01.corp.example", "/forest:corp.example"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected["ams-rms-01"] = {
        "host_id": "ams-rms-01",
        "hostname": "ams-rms-01.corp.example",
        "forest": "corp.example",
        "server": {
            "version": "SP1",
            "cluster": "https://rms.corp.example",
            "cluster_kind": "root-certification",
            "root_cluster": None,
            "enrollment": "offline",
        },
        "client": {"version": "SP2", "activation": "self", "cluster": None, "activated_users": 1},
    }
    assert facts_in(spool / "a") == expected["ams-rms-01"]

    # An SP2 licensing-only server on x64 Windows (WOW6432Node), its cluster named only by the
    # logging service, its assembly in the global assembly cache; pre-production (UddiProvider).
    lic = Host(
        registry={
            "SOFTWARE\\Wow6432Node\\Microsoft\\DRMS\\1.0": {
                "SubEnrollmentURL": "https://RMS.corp.example/_wmcs/certification/subenrollservice.asmx",
                "UddiProvider": "https://uddi.test.example",
            },
            "SYSTEM\\CurrentControlSet\\Services\\DRMS_Logging_rms_lic_80\\Params": {"ConnectionString": "x"},
        },
        files={
            "C:\\fixture\\ntoskrnl.exe": WINDOWS_2003,
            "C:\\windows\\assembly\\GAC\\Plugin.DirectoryServices\\5.2.3790.300__31bf3856ad364e35\\"
            "Plugin.DirectoryServices.dll": (5, 2, 3790, 300),
        },
        ini=KERNEL_2003,
    )
    done = run_case(
        wine, lic, spool / "b", "/host_id:ams-lic-01", "/hostname:ams-lic-01.corp.example", "/forest:corp.example"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'note: cluster "rms_lic" port 80 is reported as urn:rmsfleet:cluster:rms_lic:80' in done.stdout
    assert '"rms_lic:80" = https://... under [clusters]' in done.stdout
    assert "note: pre-production hierarchy" in done.stdout
    expected["ams-lic-01"] = {
        "host_id": "ams-lic-01",
        "hostname": "ams-lic-01.corp.example",
        "forest": "corp.example",
        "server": {
            "version": "SP2",
            "cluster": "urn:rmsfleet:cluster:rms_lic:80",
            "cluster_kind": "licensing",
            "root_cluster": "https://rms.corp.example",
            "enrollment": "offline",
        },
        "client": None,
    }
    assert facts_in(spool / "b") == expected["ams-lic-01"]

    # An RTM client (by the site's own msdrm.dll rule) whose users hold no certificate: with the
    # RTM machine certificate's path configured and absent, it is not activated (D10, D18).
    users, certs = profiles({"carol": False})
    rtm = Host(
        registry=users,
        files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP, **certs},
        ini=KERNEL_2003
        + "rtm_machine_certificate = C:\\fixture\\rtm-machine.drm\n"
        + '[versions.client]\n"5.2.3790.134" = "RTM"\n'
        + "[host]\nforest = corp.example\n",
        msdrm=RTM_MSDRM,
    )
    done = run_case(wine, rtm, spool / "c", "/host_id:xp-rtm-01", "/hostname:xp-rtm-01.corp.example")
    assert done.returncode == 0, done.stdout + done.stderr
    expected["xp-rtm-01"] = {
        "host_id": "xp-rtm-01",
        "hostname": "xp-rtm-01.corp.example",
        "forest": "corp.example",
        "server": None,
        "client": {"version": "RTM", "activation": "none", "cluster": None, "activated_users": 0},
    }
    assert facts_in(spool / "c") == expected["xp-rtm-01"]

    # An SP2 client with two activated users of three and a ServiceLocation override.
    users, certs = profiles({"dave": True, "erin": True, "frank": False})
    sp2 = Host(
        registry={
            f"{UNINSTALL}\\{{0E2C5A42-RMSFLEET-TEST}}": {
                "DisplayName": "Windows Rights Management Client with Service Pack 2"
            },
            "SOFTWARE\\Microsoft\\MSDRM\\ServiceLocation\\EnterprisePublishing": {
                "": "https://RMS.corp.example/_wmcs/licensing"
            },
            **users,
        },
        files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP, **certs},
        ini=KERNEL_2003,
        msdrm=(6, 0, 6001, 18000),
    )
    done = run_case(
        wine, sp2, spool / "d", "/host_id:xp-sp2-01", "/hostname:xp-sp2-01.corp.example", "/forest:corp.example"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected["xp-sp2-01"] = {
        "host_id": "xp-sp2-01",
        "hostname": "xp-sp2-01.corp.example",
        "forest": "corp.example",
        "server": None,
        "client": {"version": "SP2", "activation": "self", "cluster": "https://rms.corp.example", "activated_users": 2},
    }
    assert facts_in(spool / "d") == expected["xp-sp2-01"]

    # Windows 7 (the prefix's own kernel, version 6 or later): the client built into Windows
    # (D15), its users' certificates under AppData; the host id from the .ini's environment.
    users, certs = profiles({"gina": True}, certificate=BUILTIN_CERT)
    win7 = Host(registry=users, files=certs, ini="[host]\nhost_id = %COMPUTERNAME%-W7\nhostname = w7.corp.example\n")
    done = run_case(wine, win7, spool / "e", "/forest:corp.example")
    assert done.returncode == 0, done.stdout + done.stderr
    win7_id = facts_in(spool / "e")["host_id"]
    assert win7_id.endswith("-w7") and win7_id == win7_id.lower() and "%" not in win7_id
    expected[win7_id] = {
        "host_id": win7_id,
        "hostname": "w7.corp.example",
        "forest": "corp.example",
        "server": None,
        "client": {"version": "BUILTIN", "activation": "self", "cluster": None, "activated_users": 1},
    }
    assert facts_in(spool / "e") == expected[win7_id]

    # Everything the script wrote, dropped into one spool folder, sent by the real agent.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for written in spool.glob("*/*.json"):
        shutil.copyfile(written, inbox / written.name)
    db = tmp_path / "rmsfleet.db"
    collector = start_collector(tmp_path, f"sqlite:///{db}")
    try:
        sent = run_agent(
            "spool",
            "--collector",
            collector.address,
            "--spool-dir",
            str(inbox),
            "--state-dir",
            str(tmp_path / "state"),
            "--once",
        )
        assert sent.returncode == 0, sent.stderr
        hosts = {host["host_id"]: host for host in collector.cli_json("hosts")}
        # D10/D18: the RTM client that is not activated is flagged once the evaluator ran.
        wait_for(
            lambda: any(
                v["policy"] == "client-not-self-activating" and v["subject"] == "xp-rtm-01"
                for v in collector.cli_json("violations")
            ),
            what="the RTM client's violation",
        )
    finally:
        assert collector.stop() == 0, collector.log()
    assert set(hosts) == set(expected)
    for host_id, facts in expected.items():
        for part in ("server", "client"):
            want = facts[part]
            got = hosts[host_id][part]
            assert (got is None) == (want is None), (host_id, part, got)
            if want is not None:
                assert {k: got[k] for k in ("version", "cluster")} == {k: want[k] for k in ("version", "cluster")}
    with sqlite3.connect(db) as connection:
        users_by_host = dict(connection.execute("SELECT host_id, client_activated_users FROM hosts").fetchall())
    assert users_by_host == {
        host_id: (facts["client"] or {}).get("activated_users") for host_id, facts in expected.items()
    }


def test_what_the_host_cannot_tell_is_a_note_or_a_clear_failure(wine: Wine, tmp_path: Path) -> None:
    # An msdrm.dll version no rule maps: UNKNOWN, with the .ini line that would map it; an RTM
    # client's activation without its configured certificate path: unknown, never guessed.
    unmapped = Host(files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP}, ini=KERNEL_2003, msdrm=(5, 2, 3790, 999))
    done = run_case(wine, unmapped, tmp_path / "a", "/host_id:xp-01", "/hostname:xp-01", "/forest:corp.example")
    assert done.returncode == 0, done.stdout
    assert (
        "note: msdrm.dll 5.2.3790.999 (C:\\windows\\system32\\msdrm.dll) maps to no release: client version UNKNOWN; "
        'once you know its release, add "5.2.3790.999" = RTM|SP1|SP2 under [versions.client]'
    ) in done.stdout
    assert facts_in(tmp_path / "a")["client"] == {
        "version": "UNKNOWN",
        "activation": "unknown",
        "cluster": None,
        "activated_users": 0,
    }

    rtm = Host(
        files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP},
        ini=KERNEL_2003 + '[versions.client]\n"5.2.3790" = "RTM"\n',
        msdrm=RTM_MSDRM,
    )
    done = run_case(wine, rtm, tmp_path / "b", "/host_id:xp-02", "/hostname:xp-02", "/forest:corp.example")
    assert done.returncode == 0, done.stdout
    assert "set rtm_machine_certificate under [windows]" in done.stdout
    assert facts_in(tmp_path / "b")["client"]["activation"] == "unknown"

    # No RMS at all: nothing written, exit 3.
    nothing = Host(files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP}, ini=KERNEL_2003)
    done = run_case(wine, nothing, tmp_path / "c", "/host_id:xp-03", "/hostname:xp-03", "/forest:corp.example")
    assert done.returncode == 3, done.stdout
    assert "error: no RMS server" in done.stdout and not list((tmp_path / "c").iterdir())

    # A server whose registry names two clusters: which one is not a guess to make; exit 5.
    two = Host(
        registry={
            "SOFTWARE\\Microsoft\\DRMS\\1.0\\KeyProtection": {
                "PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_a_443": b"\x01",
                "PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_b_443": b"\x02",
            }
        },
        files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_2003},
        ini=KERNEL_2003,
    )
    done = run_case(wine, two, tmp_path / "d", "/host_id:srv-01", "/hostname:srv-01", "/forest:corp.example")
    assert done.returncode == 5, done.stdout
    assert "the registry names several clusters (rms_a:443, rms_b:443)" in done.stdout
    assert not list((tmp_path / "d").iterdir())
    # ... and with the URL given, it is reported.
    done = wine.collect(
        f"/out:{windows_path(tmp_path / 'd')}",
        "/host_id:srv-01",
        "/hostname:srv-01",
        "/forest:corp.example",
        "/server_cluster:https://rms-a.corp.example/",
    )
    assert done.returncode == 0, done.stdout
    server = facts_in(tmp_path / "d")["server"]
    assert server["cluster"] == "https://rms-a.corp.example" and server["version"] == "UNKNOWN"
    assert "no file ending in Plugin.DirectoryServices.dll" in done.stdout

    # Wine cannot call WMI provider methods: forcing WMI is a clear failure, not a wrong answer.
    done = wine.collect(
        f"/out:{windows_path(tmp_path / 'd')}", "/registry:wmi", "/host_id:x", "/hostname:x", "/forest:f"
    )
    assert done.returncode == 6, done.stdout
    assert "error: WMI StdRegProv cannot list HKLM\\SOFTWARE\\Microsoft\\DRMS\\1.0" in done.stdout


def test_bad_arguments_and_ini_lines_are_named(wine: Wine, tmp_path: Path) -> None:
    host = Host(ini="[host]\nforest = corp.example\n[clusters]\nrms_corp = https://rms.corp.example\n")
    done = run_case(wine, host, tmp_path / "a", "/host_id:x", "/hostname:x")
    assert done.returncode == 2, done.stdout
    ini = windows_path(wine.script_dir / "collect-rms-facts.ini")
    assert f'error: {ini}:4: [clusters] "rms_corp": expected "<cluster name>:<port>"' in done.stdout

    host = Host(ini="[host]\nforrest = corp.example\n")
    done = run_case(wine, host, tmp_path / "a", "/host_id:x", "/hostname:x")
    assert done.returncode == 2, done.stdout
    assert f"error: {ini}:2: [host] forrest: unknown key; known keys: host_id, hostname, forest" in done.stdout

    done = run_case(wine, Host(), tmp_path / "a", "/host_id:x", "/hostname:x")
    assert done.returncode == 2 and "error: no forest: pass /forest:NAME" in done.stdout
    done = wine.collect("/forest:f", "/outt:x")
    assert done.returncode == 2 and "error: unknown argument /outt" in done.stdout
    client = Host(ini=KERNEL_2003, files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP}, msdrm=RTM_MSDRM)
    wine.install(client)
    missing = windows_path(tmp_path / "missing")
    done = wine.collect("/forest:f", "/host_id:x", "/hostname:x", f"/out:{missing}")
    assert done.returncode == 4, done.stdout
    assert f"error: output folder {missing} does not exist or cannot be reached" in done.stdout


def test_the_shipped_ini_example_works_as_it_is(wine: Wine, tmp_path: Path) -> None:
    example = (SCRIPT.parent / "collect-rms-facts.ini.example").read_text(encoding="ascii")
    host = Host(
        registry={
            f"{UNINSTALL}\\{{0E2C5A42-RMSFLEET-TEST}}": {
                "DisplayName": "Windows Rights Management Client with Service Pack 2"
            }
        },
        ini=example + "kernel = C:\\fixture\\ntoskrnl.exe\n",
        files={"C:\\fixture\\ntoskrnl.exe": WINDOWS_XP},
    )
    wine.install(host)
    # /print: the facts on standard output, nothing written (the example's folder is a UNC path).
    done = wine.collect("/print", "/host_id:xp-04", "/hostname:xp-04.corp.example")
    assert done.returncode == 0, done.stdout
    facts = json.loads(done.stdout)
    assert facts["forest"] == "corp.example"
    assert facts["client"]["version"] == "SP2"
