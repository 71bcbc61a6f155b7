"""An SMB session with one host (impacket's SMBConnection): connect, negotiate a dialect, log on,
refuse a Guest logon, and close without raising.

Negotiation: with SMB1 allowed, impacket's multi-protocol negotiate offers `NT LM 0.12` beside
SMB 2.x, so Windows 2000/XP/2003 answer in SMB1 and newer hosts in SMB2/3. With SMB1 off, only
an SMB2 NEGOTIATE is sent; a host that drops it is asked once more with a bare SMB1 NEGOTIATE
(no logon, no credentials) only to tell "speaks SMB1 only" (SMB1_ONLY) from "broken" (PROTOCOL).
"""

from __future__ import annotations

import contextlib
from typing import Any

from rmsfleet.agent.scanner.failures import failure_from
from rmsfleet.agent.scanner.remote import Credentials, RemoteOptions, ScanFailure, ScanReason, Target

_DIALECTS = {0x0202: "SMB 2.0.2", 0x0210: "SMB 2.1", 0x0300: "SMB 3.0", 0x0302: "SMB 3.0.2", 0x0311: "SMB 3.1.1"}


class SmbSession:
    """A logged-on SMB session. `connection` is impacket's SMBConnection; `target` where it goes."""

    def __init__(self, target: Target, connection: Any) -> None:
        self.target = target
        self.connection = connection
        self._closed = False

    @property
    def dialect_name(self) -> str:
        dialect = self.connection.getDialect()
        if isinstance(dialect, int):
            return _DIALECTS.get(dialect, f"SMB 0x{dialect:04x}")
        return str(dialect)

    @classmethod
    def open(cls, target: Target, credentials: Credentials, options: RemoteOptions) -> SmbSession:
        """Connect and log on. Raises ScanFailure; nothing stays open when it does."""
        connection = _negotiate(target, options)
        try:
            _login(connection, target, credentials)
            if connection.isGuestSession():
                raise ScanFailure(
                    ScanReason.GUEST_ONLY,
                    f"{target.name}: the logon as {_account(credentials)} was mapped to Guest (simple file "
                    "sharing/ForceGuest on XP in a workgroup): Guest may not read the registry; "
                    "turn ForceGuest off or join the host to the domain",
                )
        except BaseException as exc:
            _quietly_close(connection)
            if isinstance(exc, Exception):
                raise failure_from(exc, target, "logging on", logon=True) from None
            raise
        return cls(target, connection)

    def close(self) -> None:
        """Log off and close the socket; never raises (a host that went away is closed already)."""
        if self._closed:
            return
        self._closed = True
        # SMBConnection.close() logs off first; a host that is gone raises, and there is nothing
        # left to do about it.
        _quietly_close(self.connection)


def _negotiate(target: Target, options: RemoteOptions) -> Any:
    from impacket.smbconnection import SMBConnection

    try:
        if options.smb1_allowed:
            return SMBConnection(target.name, target.connect_address, sess_port=target.port, timeout=options.timeout)
        return _negotiate_smb2_only(target, options)
    except ScanFailure:
        raise
    except Exception as exc:
        raise failure_from(exc, target, "connecting") from None


def _negotiate_smb2_only(target: Target, options: RemoteOptions) -> Any:
    from impacket import smb3
    from impacket.smbconnection import SMBConnection

    try:
        # impacket's SMB3 client negotiates 2.0.2 to 3.1.1 with an SMB2 NEGOTIATE, never SMB1;
        # SMBConnection then wraps it so everything else is the same code as with SMB1 on.
        smb2 = smb3.SMB3(target.name, target.connect_address, sess_port=target.port, timeout=options.timeout)
    except Exception as exc:
        failure = failure_from(exc, target, "negotiating SMB2/3")
        if failure.reason in (ScanReason.PROTOCOL, ScanReason.TIMEOUT) and _speaks_smb1(target, options):
            raise ScanFailure(
                ScanReason.SMB1_ONLY,
                f"{target.name}: the host offers only SMB1 (NT LM 0.12), which is off on the scanner side "
                "(Windows 2000/XP/2003 speak no SMB2: allow SMB1 for them)",
            ) from None
        raise failure from None
    return SMBConnection(existingConnection=smb2)


def _speaks_smb1(target: Target, options: RemoteOptions) -> bool:
    """Whether the host answers a bare SMB1 NEGOTIATE for NT LM 0.12 (no session, no logon)."""
    from impacket import smb

    try:
        probe = smb.SMB(target.name, target.connect_address, sess_port=target.port, timeout=options.timeout)
    except Exception:
        return False
    with contextlib.suppress(Exception):
        probe.close_session()
    return True


def _login(connection: Any, target: Target, credentials: Credentials) -> None:
    if credentials.use_kerberos:
        # The ticket cache (KRB5CCNAME) is used when there is one, as impacket's own tools do.
        connection.kerberosLogin(
            credentials.username,
            credentials.password,
            credentials.domain,
            credentials.lmhash,
            credentials.nthash,
            kdcHost=credentials.kdc,
            useCache=True,
        )
        return
    connection.login(
        credentials.username, credentials.password, credentials.domain, credentials.lmhash, credentials.nthash
    )


def _account(credentials: Credentials) -> str:
    return f"{credentials.domain}\\{credentials.username}" if credentials.domain else credentials.username


def _quietly_close(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.close()
