"""HKEY_LOCAL_MACHINE over MS-RRP (the `\\winreg` named pipe; impacket.dcerpc.v5.rrp): the
RegistryReader the shared probe mapping reads through, remotely.

It behaves as the local `WinRegReader` does (same `candidate_paths` order, so a `SOFTWARE\\...`
path falls back to its WOW6432Node twin; same value conversion), opens keys for KEY_READ only
(the scanner never writes), and keeps the keys it opened for the rest of the scan, so reading
several values of one key costs one round trip each.

A stopped Remote Registry service shows as a missing `\\winreg` pipe (Windows answers
STATUS_OBJECT_NAME_NOT_FOUND or STATUS_PIPE_NOT_AVAILABLE, Samba STATUS_CONNECTION_REFUSED);
with `start_remote_registry` the service is started over SVCCTL and put back on close.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from rmsfleet.agent.probe.registry import RegistryAccessDenied, RegistryValue, candidate_paths
from rmsfleet.agent.scanner.failures import ERROR_ACCESS_DENIED, describe, failure_from, nt_status, rpc_code
from rmsfleet.agent.scanner.remote import RemoteOptions, ScanFailure, ScanReason
from rmsfleet.agent.scanner.service import REMOTE_REGISTRY, StartedService, start_service
from rmsfleet.agent.scanner.session import SmbSession

KEY_READ = 0x00020019
ERROR_FILE_NOT_FOUND = 2
ERROR_NO_MORE_ITEMS = 259

# Opening the pipe of a service that is not running.
_PIPE_ABSENT = frozenset(
    {
        0xC0000034,  # STATUS_OBJECT_NAME_NOT_FOUND (Windows: Remote Registry stopped)
        0xC00000AC,  # STATUS_PIPE_NOT_AVAILABLE
        0xC00000AD,  # STATUS_INVALID_PIPE_STATE
        0xC00000AE,  # STATUS_PIPE_BUSY
        0xC00000B0,  # STATUS_PIPE_DISCONNECTED
        0xC000014B,  # STATUS_PIPE_BROKEN
        0xC0000236,  # STATUS_CONNECTION_REFUSED (Samba: no RPC server behind the pipe)
    }
)
_NOT_FOUND = object()  # a cached "this key does not exist"


class RemoteRegistryReader:
    """RegistryReader (plus `value_names`) over MS-RRP."""

    def __init__(self, session: SmbSession, dce: Any, hklm: Any, started: StartedService | None) -> None:
        self._session = session
        self._dce = dce
        self._hklm = hklm
        self._started = started
        self._keys: dict[str, Any] = {}
        self._closed = False

    @property
    def started_service(self) -> bool:
        """Whether this scan started the Remote Registry service (and will stop it on close)."""
        return self._started is not None

    @classmethod
    def open(cls, session: SmbSession, options: RemoteOptions) -> RemoteRegistryReader:
        """Bind to `\\winreg` and open HKLM. Raises ScanFailure: REMOTE_REGISTRY_OFF when the pipe
        is not there (and cannot be started), ACCESS_DENIED when the account may not use it."""
        started: StartedService | None = None
        try:
            dce = _bind_winreg(session)
        except _PipeAbsent as absent:
            if not options.start_remote_registry:
                raise ScanFailure(
                    ScanReason.REMOTE_REGISTRY_OFF,
                    f"{session.target.name}: the remote registry is not available ({absent.status}): the Remote "
                    "Registry service is stopped (start it, or let the scanner start it for the scan)",
                ) from None
            started = start_service(session, REMOTE_REGISTRY, options.timeout)
            try:
                dce = _bind_winreg_after_start(session, options.timeout)
            except BaseException:
                if started is not None:
                    started.restore()
                raise
        try:
            hklm = _open_hklm(session, dce)
        except BaseException:
            with contextlib.suppress(Exception):
                dce.disconnect()
            if started is not None:
                started.restore()
            raise
        return cls(session, dce, hklm, started)

    # --- RegistryReader ---------------------------------------------------------------------------

    def read_value(self, path: str, name: str) -> RegistryValue:
        from impacket.dcerpc.v5 import rrp

        for candidate in candidate_paths(path):
            key = self._key(candidate)
            if key is None:
                continue
            try:
                kind, data = rrp.hBaseRegQueryValue(self._dce, key, name)
            except (UnicodeDecodeError, struct.error):
                # Data that does not decode as its type says: as a value of another type, None.
                continue
            except Exception as exc:
                code = rpc_code(exc)
                if code == ERROR_FILE_NOT_FOUND:
                    continue
                if code == ERROR_ACCESS_DENIED:
                    raise RegistryAccessDenied(candidate) from None
                raise self._failure(exc, f"reading HKLM\\{candidate}\\{name}") from None
            value = _convert(kind, data)
            if value is not None:
                return value
        return None

    def subkeys(self, path: str) -> list[str]:
        for candidate in candidate_paths(path):
            key = self._key(candidate)
            if key is not None:
                return self._enumerate(candidate, key, values=False)
        return []

    def key_exists(self, path: str) -> bool:
        return any(self._key(candidate) is not None for candidate in candidate_paths(path))

    def value_names(self, path: str) -> list[str]:
        """Names of the values of HKLM\\`path` (the first view where the key exists; "" is the
        (Default) value when it is set); empty when the key does not exist."""
        for candidate in candidate_paths(path):
            key = self._key(candidate)
            if key is not None:
                return self._enumerate(candidate, key, values=True)
        return []

    # --- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the keys and the pipe, then put the Remote Registry service back if this scan
        started it. Never raises."""
        if self._closed:
            return
        self._closed = True
        from impacket.dcerpc.v5 import rrp

        for key in [*self._keys.values(), self._hklm]:
            if key is not _NOT_FOUND:
                with contextlib.suppress(Exception):
                    rrp.hBaseRegCloseKey(self._dce, key)
        self._keys.clear()
        with contextlib.suppress(Exception):
            self._dce.disconnect()
        if self._started is not None:
            self._started.restore()

    # --- helpers ----------------------------------------------------------------------------------

    def _key(self, path: str) -> Any:
        """The open handle of HKLM\\`path`, None when it does not exist; RegistryAccessDenied."""
        from impacket.dcerpc.v5 import rrp

        cache_key = path.strip("\\").lower()
        cached = self._keys.get(cache_key)
        if cached is not None:
            return None if cached is _NOT_FOUND else cached
        try:
            handle = rrp.hBaseRegOpenKey(self._dce, self._hklm, path.strip("\\"), samDesired=KEY_READ)["phkResult"]
        except Exception as exc:
            code = rpc_code(exc)
            if code == ERROR_FILE_NOT_FOUND:
                self._keys[cache_key] = _NOT_FOUND
                return None
            if code == ERROR_ACCESS_DENIED:
                raise RegistryAccessDenied(path) from None
            raise self._failure(exc, f"opening HKLM\\{path}") from None
        self._keys[cache_key] = handle
        return handle

    def _enumerate(self, path: str, key: Any, *, values: bool) -> list[str]:
        from impacket.dcerpc.v5 import rrp

        names: list[str] = []
        index = 0
        while True:
            try:
                if values:
                    # Room for long names (KeyProtection's PASSWORDDERIVEDKEY_<db>_DRMS_CONFIG_<cluster>_<port>).
                    name = rrp.hBaseRegEnumValue(self._dce, key, index, dataLen=1024)["lpValueNameOut"]
                else:
                    name = rrp.hBaseRegEnumKey(self._dce, key, index)["lpNameOut"]
            except Exception as exc:
                code = rpc_code(exc)
                if code == ERROR_NO_MORE_ITEMS:
                    return names
                if code == ERROR_ACCESS_DENIED:
                    raise RegistryAccessDenied(path) from None
                raise self._failure(exc, f"enumerating HKLM\\{path}") from None
            names.append(_text(name))
            index += 1

    def _failure(self, exc: Exception, doing: str) -> ScanFailure:
        return failure_from(exc, self._session.target, doing)


class _PipeAbsent(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _bind_winreg(session: SmbSession) -> Any:
    from impacket.dcerpc.v5 import rrp, transport

    rpc = transport.SMBTransport(
        session.target.name, session.target.port, r"\winreg", smb_connection=session.connection
    )
    dce = rpc.get_dce_rpc()
    try:
        dce.connect()
    except Exception as exc:
        code = nt_status(exc)
        if code in _PIPE_ABSENT:
            raise _PipeAbsent(describe(exc)) from None
        raise failure_from(exc, session.target, "opening the remote registry pipe") from None
    try:
        dce.bind(rrp.MSRPC_UUID_RRP)
    except Exception as exc:
        with contextlib.suppress(Exception):
            dce.disconnect()
        raise failure_from(exc, session.target, "binding to the remote registry") from None
    return dce


def _bind_winreg_after_start(session: SmbSession, timeout: float) -> Any:
    try:
        return _bind_winreg(session)
    except _PipeAbsent as absent:
        raise ScanFailure(
            ScanReason.REMOTE_REGISTRY_OFF,
            f"{session.target.name}: the Remote Registry service runs but its pipe \\winreg is not available "
            f"({absent.status})",
        ) from None


def _open_hklm(session: SmbSession, dce: Any) -> Any:
    from impacket.dcerpc.v5 import rrp

    try:
        return rrp.hOpenLocalMachine(dce, KEY_READ)["phKey"]
    except Exception as exc:
        if rpc_code(exc) == ERROR_ACCESS_DENIED:
            raise ScanFailure(
                ScanReason.ACCESS_DENIED,
                f"{session.target.name}: the account may not open HKEY_LOCAL_MACHINE remotely",
            ) from None
        raise failure_from(exc, session.target, "opening HKEY_LOCAL_MACHINE") from None


def _text(raw: object) -> str:
    """impacket returns strings decoded with their terminating NUL (and whatever follows)."""
    return str(raw).split("\x00", 1)[0]


def _convert(kind: int, data: object) -> RegistryValue:
    """As WinRegReader: strings (REG_SZ, REG_EXPAND_SZ unexpanded, the first of REG_MULTI_SZ) and
    integers (REG_DWORD, REG_QWORD); None for other types and for data that does not decode."""
    from impacket.dcerpc.v5 import rrp

    if kind in (rrp.REG_SZ, rrp.REG_EXPAND_SZ) and isinstance(data, str):
        return _text(data)
    if kind == rrp.REG_MULTI_SZ and isinstance(data, str):
        first = _text(data)
        return first or None
    if kind in (rrp.REG_DWORD, rrp.REG_QWORD) and isinstance(data, int):
        return data
    return None
