"""One remote Windows host, opened for reading: its registry over MS-RRP, its files over the
administrative shares and the version resources of those files, as the three readers the shared
probe mapping reads through (`RegistryReader`, `FileReader`, `VersionResourceReader`).

    with open_remote_host(Target("rms01", "10.0.0.5"), credentials, RemoteOptions(timeout=30)) as host:
        host.registry.read_value("SOFTWARE\\\\Microsoft\\\\DRMS\\\\1.0", "GicURL")
        host.versions.file_version("%SystemRoot%\\\\system32\\\\ntoskrnl.exe")

Everything that keeps the scanner from reading a host is a `ScanFailure` with a `ScanReason`
the scanner can count and a one-line message for the operator, never a traceback:
`open_remote_host` raises it for connecting, negotiating, logging on and opening the remote
registry; the readers raise it when the connection breaks or times out mid-read. A key or file
the account may not read is the probe's own `RegistryAccessDenied` / `FileAccessDenied`.

This module imports nothing beyond the standard library and the agent: the SMB and PE code
(impacket, pefile; the `scanner` extra) is imported when a host is first opened, so the scanner's
command line can name these types even where the extra is missing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rmsfleet.agent.scanner.pe_version import RemoteVersionReader
    from rmsfleet.agent.scanner.rrp import RemoteRegistryReader
    from rmsfleet.agent.scanner.session import SmbSession
    from rmsfleet.agent.scanner.shares import ShareFileReader

DEFAULT_PORT = 445


class ScanReason(enum.Enum):
    """Why a host could not be read. The values are stable: the scanner prints and counts them."""

    UNREACHABLE = "unreachable"  # port closed, connection refused, no route, name not resolved
    TIMEOUT = "timeout"  # no answer within the per-target timeout
    ACCESS_DENIED = "access-denied"  # wrong password, unknown account, account not allowed
    GUEST_ONLY = "guest-only"  # logged on as Guest (XP's ForceGuest in a workgroup)
    REMOTE_REGISTRY_OFF = "remote-registry-off"  # the \winreg pipe is not there (service stopped)
    SMB1_ONLY = "smb1-only"  # the host speaks only SMB1 and SMB1 is off on the scanner side
    PROTOCOL = "protocol"  # anything else the SMB or RPC layer reported


class ScanFailure(Exception):
    """A host could not be read. `str(failure)` is `message`: one line, no traceback."""

    def __init__(self, reason: ScanReason, message: str) -> None:
        # One line whatever the library said: the message goes into a progress line and a summary.
        line = " ".join(message.split())
        super().__init__(line)
        self.reason = reason
        self.message = line

    def __repr__(self) -> str:
        return f"ScanFailure({self.reason.name}, {self.message!r})"


@dataclass(frozen=True)
class Target:
    """A host to scan. `name` is the name it was listed under and becomes its identity; `address`
    (default: `name`) and `port` are where to connect."""

    name: str
    address: str | None = None
    port: int = DEFAULT_PORT

    @property
    def connect_address(self) -> str:
        return self.address or self.name


@dataclass(frozen=True)
class Credentials:
    """The account the scanner logs on with. The secrets (password, LM and NT hashes) never appear
    in repr() or str(), so a credentials object can be logged by mistake without leaking them.

    `domain` "" is the target's local account database. With `use_kerberos` the ticket cache
    (KRB5CCNAME) is used as impacket does, `kdc` naming the KDC when DNS cannot find it."""

    username: str
    password: str = field(default="", repr=False)
    domain: str = ""
    lmhash: str = field(default="", repr=False)
    nthash: str = field(default="", repr=False)
    use_kerberos: bool = False
    kdc: str | None = None

    def __repr__(self) -> str:
        hidden = [name for name in ("password", "lmhash", "nthash") if getattr(self, name)]
        secrets = f", secrets=<hidden: {', '.join(hidden)}>" if hidden else ""
        return (
            f"Credentials(username={self.username!r}, domain={self.domain!r}{secrets}, "
            f"use_kerberos={self.use_kerberos}, kdc={self.kdc!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class RemoteOptions:
    """How to read a host.

    - `timeout`: seconds for connecting and for every SMB/RPC exchange with the host.
    - `smb1_allowed`: offer SMB1 (`NT LM 0.12`) beside SMB2/3. Windows 2000/XP/2003, where RMS 1.0
      lives (D15), speak only SMB1; with False such a host fails as SMB1_ONLY.
    - `start_remote_registry`: when the Remote Registry service is stopped (the default from Vista
      on), start it over SVCCTL and put it back as it was (stopped, same start type) on close;
      off: the host fails as REMOTE_REGISTRY_OFF.
    - `system_drive_share`: the share for `%SystemDrive%` paths (`%SystemRoot%` is always `ADMIN$`).
    - `max_pe_bytes`: the most bytes read from one file to find its version resource.
    """

    timeout: float = 30.0
    smb1_allowed: bool = True
    start_remote_registry: bool = False
    system_drive_share: str = "C$"
    max_pe_bytes: int = 64 * 1024 * 1024


class RemoteHost:
    """An opened host: `.registry`, `.files` and `.versions` read it until `close()` (or the end
    of the `with` block), which also puts the Remote Registry service back if it was started."""

    def __init__(
        self,
        target: Target,
        session: SmbSession,
        registry: RemoteRegistryReader,
        files: ShareFileReader,
        versions: RemoteVersionReader,
    ) -> None:
        self.target = target
        self._session = session
        self.registry = registry
        self.files = files
        self.versions = versions

    @property
    def dialect(self) -> str:
        """The SMB dialect spoken with the host, e.g. "NT LM 0.12" or "SMB 3.1.1"."""
        return self._session.dialect_name

    def close(self) -> None:
        """Close the registry handle, restore the Remote Registry service if this scan started it,
        and log off. Never raises: a host that went away is already closed."""
        self.registry.close()
        self._session.close()

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_remote_host(target: Target, credentials: Credentials, options: RemoteOptions) -> RemoteHost:
    """Connect to `target`, log on with `credentials` and open its remote registry.

    Raises ScanFailure (UNREACHABLE, TIMEOUT, ACCESS_DENIED, GUEST_ONLY, REMOTE_REGISTRY_OFF,
    SMB1_ONLY or PROTOCOL); on failure nothing stays open and a service it started is put back."""
    from rmsfleet.agent.scanner.pe_version import RemoteVersionReader
    from rmsfleet.agent.scanner.rrp import RemoteRegistryReader
    from rmsfleet.agent.scanner.session import SmbSession
    from rmsfleet.agent.scanner.shares import ShareFileReader

    session = SmbSession.open(target, credentials, options)
    try:
        registry = RemoteRegistryReader.open(session, options)
    except BaseException:
        session.close()
        raise
    files = ShareFileReader(session, system_drive_share=options.system_drive_share)
    versions = RemoteVersionReader(files, max_bytes=options.max_pe_bytes)
    return RemoteHost(target, session, registry, files, versions)
