"""Fake Windows hosts for the scanner's tests: a small description -> a real Samba on a loopback
port that answers the remote registry (MS-RRP over `\\winreg`) and the administrative shares
(`ADMIN$`, `C$`) as that host would.

How to use it (any test under tests/, e.g. the scanner's end-to-end tests):

    from scanner.fake_hosts import (FakeWindowsHost, Profile, RegValue, SERVER_SP1, WINDOWS_2003,
                                    running_fake_host)

    host = FakeWindowsHost(
        netbios_name="RMS01",
        windows_version=WINDOWS_2003,                 # system32\\ntoskrnl.exe's version resource
        registry={"SOFTWARE\\\\Microsoft\\\\DRMS\\\\1.0": {"GicURL": "https://rms01/_wmcs/certification",
                                                         "Flags": 1,             # int -> REG_DWORD
                                                         "Path": RegValue.expand("%SystemRoot%\\\\x")}},
        files={"%SystemRoot%\\\\system32\\\\msdrm.dll": (5, 2, 3790, 433),       # a PE with that version
               "%SystemDrive%\\\\Program Files\\\\x.txt": b"raw bytes"},
        profiles=[Profile("alice", "S-1-5-21-1-2-3-1001", activated=True)],
    )
    with running_fake_host(host) as running:           # or the `fake_host` fixture in this folder
        target = running.target("rms01.example")        # Target(name, "127.0.0.1", running.port)
        creds = running.credentials                     # an administrator of the host
        ...

What a description turns into:
- `registry`: keys and typed values created over MS-RRP with impacket (str -> REG_SZ, int ->
  REG_DWORD, `RegValue` for REG_EXPAND_SZ/REG_MULTI_SZ/REG_QWORD/REG_BINARY). Below
  `SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion`, where Samba refuses to create keys over
  MS-RRP, they are written locally with `net registry` (REG_SZ and REG_DWORD only there).
- `profiles`: `ProfileList\\<SID>` with `ProfileImagePath` (by default `%SystemDrive%\\Documents and
  Settings\\<user>`), the profile folder, and for an activated user `Local Settings\\Application
  Data\\Microsoft\\DRM\\CERT-Machine.drm` (D17).
- `files` and `windows_version`: files on the system drive (`C$`; `%SystemRoot%` is its `WINDOWS`
  folder, shared as `ADMIN$`); a version tuple becomes a PE file with that version resource.
- `smb1_only`: the host speaks only SMB1 (`server max protocol = NT1`), as Windows 2000/XP/2003.
- `remote_registry=False`: `\\winreg` is not served (Remote Registry service stopped).
- `force_guest=True`: the scanner's account is unknown to the host and `map to guest = Bad User`,
  so its logon becomes a Guest session, which is what XP's ForceGuest does to every network logon.
- `denied_keys` / `denied_files`: refused to `running.limited_credentials` (an account that is not
  root on the Samba side; the administrator's account maps to root, which Samba lets read anything).

Known differences from Windows (Samba's, not the harness's): Samba answers `Windows NT\\CurrentVersion`
itself (`CurrentVersion` is always 6.1; other values there are not found) and calls itself
"Windows 6.1" in SMB, hence `windows_version` through the kernel's version resource. Samba's
SVCCTL always reports RemoteRegistry running and refuses to start or stop services.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rmsfleet.agent.scanner.remote import Credentials, Target

from .pe_fixture import build_version_dll
from .samba import SambaServer, SambaSettings, SambaTools, Share, require_samba

Version = tuple[int, int, int, int]

# ntoskrnl.exe file versions (the Windows version a scanner reads, D15).
WINDOWS_2000 = (5, 0, 2195, 7045)
WINDOWS_XP = (5, 1, 2600, 5512)
WINDOWS_2003 = (5, 2, 3790, 3959)
WINDOWS_7 = (6, 1, 7601, 17514)
# Plugin.DirectoryServices file versions per server release ([MS-RMPRS] 2.3.1.2).
SERVER_RTM = (1, 0, 3246, 0)
SERVER_SP1 = (5, 2, 3790, 134)
SERVER_SP2 = (5, 2, 3790, 300)

ADMIN_PASSWORD = "Adm1n-Passw0rd"
LIMITED_PASSWORD = "L1mited-Passw0rd"
ADMIN_USER = "Administrator"
LIMITED_USER = "auditor"
SETUP_USER = "fixture-setup"  # the harness's own account, for writing the registry
CURRENT_VERSION = "software\\microsoft\\windows nt\\currentversion"
PROFILE_LIST = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
XP_DRM_FOLDER = "Local Settings\\Application Data\\Microsoft\\DRM"
VISTA_DRM_FOLDER = "AppData\\Local\\Microsoft\\DRM"
# Denies every right to everyone; root (the administrator here) is not held to it by Samba.
_DENY_ALL = "O:BAG:SYD:(D;;0x000f003f;;;WD)"

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 7, 11


@dataclass(frozen=True)
class RegValue:
    """A registry value of an explicit type (plain str and int are REG_SZ and REG_DWORD)."""

    kind: int
    data: str | int | bytes

    @classmethod
    def sz(cls, text: str) -> RegValue:
        return cls(REG_SZ, text)

    @classmethod
    def expand(cls, text: str) -> RegValue:
        return cls(REG_EXPAND_SZ, text)

    @classmethod
    def multi(cls, items: Sequence[str]) -> RegValue:
        return cls(REG_MULTI_SZ, "\x00".join(items) + "\x00")

    @classmethod
    def dword(cls, number: int) -> RegValue:
        return cls(REG_DWORD, number)

    @classmethod
    def qword(cls, number: int) -> RegValue:
        return cls(REG_QWORD, number)

    @classmethod
    def binary(cls, data: bytes) -> RegValue:
        return cls(REG_BINARY, data)


RegData = str | int | RegValue


@dataclass(frozen=True)
class Profile:
    """A user profile. `activated`: the user holds a machine certificate (CERT-Machine.drm, D17)."""

    user: str
    sid: str
    activated: bool = False
    home: str = ""  # ProfileImagePath; default %SystemDrive%\Documents and Settings\<user>
    drm_folder: str = XP_DRM_FOLDER  # below the profile; VISTA_DRM_FOLDER from Vista on

    @property
    def image_path(self) -> str:
        return self.home or f"%SystemDrive%\\Documents and Settings\\{self.user}"


@dataclass(frozen=True)
class FakeWindowsHost:
    netbios_name: str
    windows_version: Version | None = WINDOWS_2003
    registry: Mapping[str, Mapping[str, RegData]] = field(default_factory=dict)
    files: Mapping[str, Version | bytes] = field(default_factory=dict)
    profiles: Sequence[Profile] = ()
    smb1_only: bool = False
    remote_registry: bool = True
    force_guest: bool = False
    denied_keys: Sequence[str] = ()
    denied_files: Sequence[str] = ()
    system_root: str = "WINDOWS"  # the Windows folder's name on C: (WINNT on Windows 2000)


@dataclass
class RunningFakeHost:
    host: FakeWindowsHost
    server: SambaServer
    root: Path  # the local folder holding the host's drives

    address = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.port

    def target(self, name: str | None = None) -> Target:
        """Where the scanner finds this host; `name` is the identity it is listed under."""
        return Target(name or self.host.netbios_name.lower(), self.address, self.port)

    @property
    def credentials(self) -> Credentials:
        """An administrator of the host (the scanner's account)."""
        return Credentials(ADMIN_USER, ADMIN_PASSWORD)

    @property
    def limited_credentials(self) -> Credentials:
        """An account the host's `denied_keys` and `denied_files` are refused to."""
        return Credentials(LIMITED_USER, LIMITED_PASSWORD)

    def local_path(self, windows_path: str) -> Path:
        """Where a Windows path of this host lives on the local disk."""
        return _local_path(self.root, self.host, windows_path)


@contextlib.contextmanager
def running_fake_host(
    host: FakeWindowsHost, tools: SambaTools | None = None, pe_cache: Path | None = None
) -> Iterator[RunningFakeHost]:
    """Start a Samba that looks like `host`; stop it and remove its files afterwards.
    Skips the test (fails under CI=true) when Samba or root are missing."""
    tools = tools or require_samba()
    if host.registry and not host.remote_registry:
        raise ValueError(f"{host.netbios_name}: a host without remote registry cannot be given registry values here")
    # Under /tmp, not pytest's tmp_path: every folder above a share must be searchable by the
    # limited account's Unix user, and pytest's are private to root.
    root = Path(tempfile.mkdtemp(prefix=f"rmsfleet-{host.netbios_name.lower()}-"))
    root.chmod(0o755)
    server: SambaServer | None = None
    try:
        _lay_out_drives(root, host, pe_cache)
        server = SambaServer(tools, _settings(root, host), root / "samba")
        server.write_config(445)  # accounts and the registry need a config; start() picks the port
        server.add_account("root", ADMIN_PASSWORD)
        server.add_account("nobody", LIMITED_PASSWORD)
        _write_local_registry(server, host)
        server.start()
        if host.remote_registry:
            _write_registry_over_rrp(server.port, host)
        for key in host.denied_keys:
            server.net_registry("setsd_sddl", "HKLM\\" + key, _DENY_ALL)
        yield RunningFakeHost(host, server, root)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _settings(root: Path, host: FakeWindowsHost) -> SambaSettings:
    admin_names = (SETUP_USER,) if host.force_guest else (SETUP_USER, ADMIN_USER)
    drive = root / "C"
    return SambaSettings(
        netbios_name=host.netbios_name,
        shares=(Share("ADMIN$", drive / host.system_root), Share("C$", drive)),
        smb1_only=host.smb1_only,
        map_to_guest="Bad User" if host.force_guest else "Never",
        username_map=(("root", admin_names), ("nobody", (LIMITED_USER,))),
        winreg=host.remote_registry,
    )


def _local_path(root: Path, host: FakeWindowsHost, windows_path: str) -> Path:
    head, _, rest = windows_path.replace("/", "\\").partition("\\")
    lowered = head.lower()
    if lowered == "%systemroot%":
        base = root / "C" / host.system_root
    elif lowered in ("%systemdrive%", "c:"):
        base = root / "C"
    else:
        raise ValueError(f"{windows_path!r}: fake hosts have %SystemRoot%, %SystemDrive% and C: paths only")
    parts = [part for part in rest.split("\\") if part]
    return base.joinpath(*parts)


def _lay_out_drives(root: Path, host: FakeWindowsHost, pe_cache: Path | None) -> None:
    windows = root / "C" / host.system_root
    (windows / "system32").mkdir(parents=True)
    files: dict[str, Version | bytes] = dict(host.files)
    if host.windows_version is not None:
        files.setdefault("%SystemRoot%\\system32\\ntoskrnl.exe", host.windows_version)
    for profile in host.profiles:
        home = _local_path(root, host, profile.image_path)
        (home / Path(*profile.drm_folder.split("\\"))).mkdir(parents=True, exist_ok=True)
        if profile.activated:
            files.setdefault(f"{profile.image_path}\\{profile.drm_folder}\\CERT-Machine.drm", _certificate(profile))
    for windows_path, content in files.items():
        local = _local_path(root, host, windows_path)
        local.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            local.write_bytes(content)
        else:
            build_version_dll(local, content, cache_dir=pe_cache)
    for folder, subfolders, names in os.walk(root):
        Path(folder).chmod(0o755)
        for name in names:
            (Path(folder) / name).chmod(0o644)
        del subfolders
    for windows_path in host.denied_files:
        _local_path(root, host, windows_path).chmod(0o600)


def _certificate(profile: Profile) -> bytes:
    # The content is never parsed: the probe asks only whether the file exists (D17).
    return f'<XrML><BODY type="Machine"><ISSUEDTO>{profile.user}</ISSUEDTO></BODY></XrML>'.encode("utf-16-le")


def _write_local_registry(server: SambaServer, host: FakeWindowsHost) -> None:
    for profile in host.profiles:
        key = f"HKLM\\{PROFILE_LIST}\\{profile.sid}"
        server.net_registry("createkey", key)
        server.net_registry("setvalue", key, "ProfileImagePath", "sz", profile.image_path)
    for path, values in host.registry.items():
        if not _below_current_version(path):
            continue
        server.net_registry("createkey", "HKLM\\" + path)
        for name, value in values.items():
            kind, data = _typed(value)
            if kind == REG_SZ:
                server.net_registry("setvalue", "HKLM\\" + path, name, "sz", str(data))
            elif kind == REG_DWORD:
                server.net_registry("setvalue", "HKLM\\" + path, name, "dword", str(data))
            else:
                raise ValueError(
                    f"{path}\\{name}: below Windows NT\\CurrentVersion only REG_SZ and REG_DWORD can be set"
                )


def _write_registry_over_rrp(port: int, host: FakeWindowsHost) -> None:
    from impacket.dcerpc.v5 import rrp, transport
    from impacket.smbconnection import SMBConnection

    connection = SMBConnection(host.netbios_name, "127.0.0.1", sess_port=port, timeout=30)
    try:
        connection.login(SETUP_USER, ADMIN_PASSWORD)
        rpc = transport.SMBTransport(host.netbios_name, port, r"\winreg", smb_connection=connection)
        dce = rpc.get_dce_rpc()
        dce.connect()
        dce.bind(rrp.MSRPC_UUID_RRP)
        hklm = rrp.hOpenLocalMachine(dce)["phKey"]
        for path, values in host.registry.items():
            if _below_current_version(path):
                continue
            key = rrp.hBaseRegCreateKey(dce, hklm, path.strip("\\"))["phkResult"]
            for name, value in values.items():
                kind, data = _typed(value)
                rrp.hBaseRegSetValue(dce, key, name, kind, data)
            rrp.hBaseRegCloseKey(dce, key)
        dce.disconnect()
    finally:
        connection.close()


def _below_current_version(path: str) -> bool:
    lowered = path.strip("\\").lower()
    return lowered == CURRENT_VERSION or lowered.startswith(CURRENT_VERSION + "\\")


def _typed(value: RegData) -> tuple[int, str | int | bytes]:
    if isinstance(value, RegValue):
        return value.kind, value.data
    if isinstance(value, bool):
        raise TypeError("registry values are str, int or RegValue, not bool")
    if isinstance(value, int):
        return REG_DWORD, value
    return REG_SZ, value
