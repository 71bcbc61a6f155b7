"""The RMS client API (msdrm.dll) behind a two-question interface.

`RmsClientApi` asks only what the facts need: which client version is installed, and whether the
machine is activated. `MsdrmClientApi` asks msdrm.dll through ctypes (loaded on first use, and
only on Windows); `RecordedRmsClient` answers from a fixture.

Read-only by design. The agent NEVER calls DRMActivate: activating replaces the machine
certificate (and, on an RTM client, goes out to the internet, D10). DRMIsActivated only looks.

The declarations follow msdrm.h / msdrmdefs.h of the RMS SDK:

    typedef struct _DRM_CLIENT_VERSION_INFO {
        UINT  uStructVersion;           // in: DRMCLIENTSTRUCTVERSION (1)
        DWORD dwVersion[4];             // out: major, minor, build, private
        WCHAR wszHierarchy[256];        // out: e.g. Production / Pre-production
        WCHAR wszProductId[256];
        WCHAR wszProductDescription[256];
    } DRM_CLIENT_VERSION_INFO;          // 1556 bytes

    HRESULT DRMGetClientVersion(DRM_CLIENT_VERSION_INFO *pDRMClientVersionInfo);
    HRESULT DRMCreateClientSession(DRMCALLBACK pfnCallback, UINT uCallbackVersion,
                                   PWSTR wszGroupIDProviderType, PWSTR wszGroupID,
                                   DRMHSESSION *phClient);          // DRMHSESSION is a ULONG
    HRESULT DRMIsActivated(DRMHSESSION hClient, UINT uFlags, DRM_ACTSERV_INFO *pActServInfo);
    HRESULT DRMCloseSession(DRMHSESSION hSession);
"""

from __future__ import annotations

import ctypes
import logging
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from rmsfleet.agent.probe.base import ProbeError

log = logging.getLogger(__name__)

ClientVersion = tuple[int, int, int, int]

DRMCLIENTSTRUCTVERSION = 1
DRM_ACTIVATE_MACHINE = 0x1
DRM_DEFAULTGROUPIDTYPE_WINDOWSAUTH = "WindowsAuthProvider"
S_OK = 0
E_DRM_NEEDS_MACHINE_ACTIVATION = 0x8004CF3D


class RmsClientApi(Protocol):
    def client_version(self) -> ClientVersion | None:
        """The installed RMS client's four-part version, or None when no RMS client is installed.
        Raises RmsClientError when a client is installed but its version cannot be read."""
        ...

    def is_activated(self) -> bool | None:
        """Whether the machine is activated; None when that cannot be told (no client, or the
        API refused to answer). Never activates anything."""
        ...


class RmsClientError(ProbeError):
    """msdrm.dll is present but a call failed; the message names the call and its HRESULT."""


@dataclass(frozen=True, slots=True)
class RecordedRmsClient:
    """Answers recorded from a host (fixtures). `error` replays a failing DRMGetClientVersion."""

    version: ClientVersion | None
    activated: bool | None = None
    error: str | None = None

    def client_version(self) -> ClientVersion | None:
        if self.error is not None:
            raise RmsClientError(self.error)
        return self.version

    def is_activated(self) -> bool | None:
        return None if self.version is None else self.activated


class DrmClientVersionInfo(ctypes.Structure):
    # WCHAR is UTF-16 on Windows, which is where this structure is used (c_wchar is 2 bytes
    # there; on other platforms the class still imports but is never passed to a call).
    _fields_ = (
        ("uStructVersion", ctypes.c_uint),
        ("dwVersion", ctypes.c_uint32 * 4),
        ("wszHierarchy", ctypes.c_wchar * 256),
        ("wszProductId", ctypes.c_wchar * 256),
        ("wszProductDescription", ctypes.c_wchar * 256),
    )


def hresult_text(hr: int) -> str:
    return f"0x{hr & 0xFFFFFFFF:08X}"


class MsdrmClientApi:
    """The real RMS client, through msdrm.dll. The DLL is loaded on first use: a host without the
    RMS client has no msdrm.dll, which means "no client", not an error."""

    def __init__(self, dll_name: str = "msdrm.dll") -> None:
        self._dll_name = dll_name
        self._dll: Any = None
        self._absent = False

    def _library(self) -> Any:
        if self._dll is None and not self._absent:
            try:
                self._dll = _load_windll(self._dll_name)
            except OSError as exc:
                # LoadLibrary fails with ERROR_MOD_NOT_FOUND when the client is not installed.
                log.debug("cannot load %s (%s): no RMS client on this host", self._dll_name, exc)
                self._absent = True
        return self._dll

    def client_version(self) -> ClientVersion | None:
        dll = self._library()
        if dll is None:
            return None
        info = DrmClientVersionInfo()
        info.uStructVersion = DRMCLIENTSTRUCTVERSION
        try:
            function = dll.DRMGetClientVersion
        except AttributeError as exc:
            raise RmsClientError(f"{self._dll_name} has no DRMGetClientVersion export") from exc
        function.argtypes = (ctypes.POINTER(DrmClientVersionInfo),)
        function.restype = ctypes.c_long
        hr = int(function(ctypes.byref(info)))
        if hr < 0:
            raise RmsClientError(f"DRMGetClientVersion failed with HRESULT {hresult_text(hr)}")
        parts = [int(part) for part in info.dwVersion]
        log.debug(
            "RMS client %s (hierarchy %r, product %r)",
            ".".join(map(str, parts)),
            info.wszHierarchy,
            info.wszProductDescription,
        )
        return (parts[0], parts[1], parts[2], parts[3])

    def is_activated(self) -> bool | None:
        dll = self._library()
        if dll is None:
            return None
        try:
            return _is_machine_activated(dll)
        except (AttributeError, OSError) as exc:
            log.warning("cannot ask %s whether the machine is activated: %s", self._dll_name, exc)
            return None


def _load_windll(name: str) -> Any:
    if sys.platform != "win32":
        raise OSError(f"{name} exists only on Windows")
    return ctypes.WinDLL(name)


def _is_machine_activated(dll: Any) -> bool | None:
    if sys.platform != "win32":
        raise OSError("msdrm.dll exists only on Windows")
    callback_type = ctypes.WINFUNCTYPE(ctypes.c_long, ctypes.c_int, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)

    def status_callback(msg: int, hr: int, param: int | None, context: int | None) -> int:
        # Only asynchronous calls (activation, license acquisition) report here; the agent
        # makes none, so there is nothing to do.
        return S_OK

    callback = callback_type(status_callback)  # kept referenced until the session is closed
    session = ctypes.c_ulong(0)
    create = dll.DRMCreateClientSession
    create.argtypes = (callback_type, ctypes.c_uint, ctypes.c_wchar_p, ctypes.c_wchar_p, ctypes.POINTER(ctypes.c_ulong))
    create.restype = ctypes.c_long
    # A NULL group ID (user) is enough for the machine question; the session is the agent's
    # own account (LocalSystem for the service), whose activation state is what we report.
    hr = int(create(callback, 0, DRM_DEFAULTGROUPIDTYPE_WINDOWSAUTH, None, ctypes.byref(session)))
    if hr < 0:
        log.warning("DRMCreateClientSession failed with HRESULT %s: activation state unknown", hresult_text(hr))
        return None
    try:
        is_activated = dll.DRMIsActivated
        is_activated.argtypes = (ctypes.c_ulong, ctypes.c_uint, ctypes.c_void_p)
        is_activated.restype = ctypes.c_long
        # DRMIsActivated only inspects the certificate store. Never call DRMActivate here: it
        # replaces the machine certificate.
        hr = int(is_activated(session, DRM_ACTIVATE_MACHINE, None)) & 0xFFFFFFFF
    finally:
        close = dll.DRMCloseSession
        close.argtypes = (ctypes.c_ulong,)
        close.restype = ctypes.c_long
        close(session)
    if hr == S_OK:
        return True
    if hr == E_DRM_NEEDS_MACHINE_ACTIVATION:
        return False
    log.warning("DRMIsActivated returned HRESULT %s: activation state unknown", hresult_text(hr))
    return None
