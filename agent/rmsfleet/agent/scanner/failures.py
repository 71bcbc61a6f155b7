"""What went wrong talking to a host, as a ScanReason and one line for the operator.

impacket reports trouble in several shapes: the OSError its socket set-up wraps around the real
socket error, NetBIOSTimeout / NetBIOSError from reading the session, SessionError with an
NTSTATUS from SMB, DCERPCException with a Win32 or RPC code from a call, KerberosError. This module
is the one place that knows them, so every reader and the session classify alike.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from rmsfleet.agent.scanner.remote import ScanFailure, ScanReason, Target

# NTSTATUS codes of a logon the host refused: the account, not the network, is the problem.
LOGON_REFUSED = frozenset(
    {
        0xC000006D,  # STATUS_LOGON_FAILURE (unknown user or wrong password)
        0xC000006A,  # STATUS_WRONG_PASSWORD
        0xC0000064,  # STATUS_NO_SUCH_USER
        0xC0000022,  # STATUS_ACCESS_DENIED
        0xC000006E,  # STATUS_ACCOUNT_RESTRICTION
        0xC000006F,  # STATUS_INVALID_LOGON_HOURS
        0xC0000070,  # STATUS_INVALID_WORKSTATION
        0xC0000071,  # STATUS_PASSWORD_EXPIRED
        0xC0000072,  # STATUS_ACCOUNT_DISABLED
        0xC0000193,  # STATUS_ACCOUNT_EXPIRED
        0xC0000224,  # STATUS_PASSWORD_MUST_CHANGE
        0xC0000234,  # STATUS_ACCOUNT_LOCKED_OUT
        0xC000015B,  # STATUS_LOGON_TYPE_NOT_GRANTED
        0xC000018D,  # STATUS_TRUSTED_RELATIONSHIP_FAILURE
        0xC0000413,  # STATUS_AUTHENTICATION_FIREWALL_FAILED
    }
)
STATUS_ACCESS_DENIED = 0xC0000022
# Win32 / RPC code 5: ERROR_ACCESS_DENIED from a call, rpc_s_access_denied from Samba's RPC layer.
ERROR_ACCESS_DENIED = 5

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED: "connection refused (port closed, or the firewall rejects it)",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset by the host",
    errno.EADDRNOTAVAIL: "address not available",
}


def nt_status(exc: BaseException) -> int | None:
    """The NTSTATUS of an impacket SMB SessionError, None for anything else."""
    from impacket import smb, smb3, smbconnection

    code: object = None
    if isinstance(exc, smbconnection.SessionError):
        code = exc.getErrorCode()
    elif isinstance(exc, (smb.SessionError, smb3.SessionError)):
        code = exc.get_error_code()
    return code if isinstance(code, int) else None


def rpc_code(exc: BaseException) -> int | None:
    """The Win32 or RPC error code of an impacket DCERPCException, None for anything else."""
    from impacket.dcerpc.v5.rpcrt import DCERPCException

    if isinstance(exc, DCERPCException):
        code = exc.get_error_code()
        return code if isinstance(code, int) else None
    return None


def status_name(code: int) -> str:
    from impacket import nt_errors

    known: Any = nt_errors.ERROR_MESSAGES.get(code)
    return str(known[0]) if known else f"NTSTATUS 0x{code:08X}"


def describe(exc: BaseException) -> str:
    """One line naming what impacket said, without a traceback."""
    code = nt_status(exc)
    if code is not None:
        return status_name(code)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_from(exc: BaseException, target: Target, doing: str, *, logon: bool = False) -> ScanFailure:
    """Classify an exception raised while `doing` something with `target`; `logon`: it was the
    logon, so a refusal means the account (wrong password, disabled...) and not a resource."""
    from impacket import nmb
    from impacket.krb5.kerberosv5 import KerberosError

    if isinstance(exc, ScanFailure):
        return exc
    where = f"{target.name} ({target.connect_address}:{target.port})"
    socket_error = _socket_error(exc)
    if isinstance(exc, nmb.NetBIOSTimeout) or isinstance(socket_error, TimeoutError):
        return ScanFailure(ScanReason.TIMEOUT, f"{where}: no answer in time while {doing}")
    if isinstance(socket_error, socket.gaierror):
        return ScanFailure(ScanReason.UNREACHABLE, f"{where}: the name does not resolve ({socket_error.strerror})")
    if isinstance(socket_error, OSError) and socket_error.errno in _UNREACHABLE_ERRNOS:
        return ScanFailure(ScanReason.UNREACHABLE, f"{where}: {_UNREACHABLE_ERRNOS[socket_error.errno]}")
    if isinstance(socket_error, OSError):
        return ScanFailure(ScanReason.UNREACHABLE, f"{where}: cannot connect ({socket_error})")
    if isinstance(exc, KerberosError):
        return ScanFailure(ScanReason.ACCESS_DENIED, f"{where}: Kerberos refused the logon ({describe(exc)})")
    code = nt_status(exc)
    if logon and code in LOGON_REFUSED:
        return ScanFailure(ScanReason.ACCESS_DENIED, f"{where}: logon refused ({status_name(code)})")
    if code == STATUS_ACCESS_DENIED:
        return ScanFailure(ScanReason.ACCESS_DENIED, f"{where}: access denied while {doing}")
    if isinstance(exc, nmb.NetBIOSError):
        return ScanFailure(ScanReason.PROTOCOL, f"{where}: the host closed the connection while {doing}")
    return ScanFailure(ScanReason.PROTOCOL, f"{where}: {describe(exc)} while {doing}")


def _socket_error(exc: BaseException) -> OSError | None:
    """The socket error behind `exc`: impacket wraps a failed connect in a new OSError whose
    second argument is the original one."""
    if not isinstance(exc, OSError):
        return None
    if len(exc.args) == 2 and isinstance(exc.args[1], OSError):
        return exc.args[1]
    return exc
