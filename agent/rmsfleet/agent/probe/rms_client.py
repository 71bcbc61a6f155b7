"""The RMS client API (msdrm.dll) behind a one-question interface, for the local probe only.

`RmsClientApi` asks which client version is installed (DRMGetClientVersion); the mapping
(documented.py) uses it only when msdrm.dll's file version cannot be read. `MsdrmClientApi` asks
msdrm.dll through ctypes (loaded on first use, and only on Windows); `RecordedRmsClient` answers
from a fixture.

Activation is NOT asked here. DRMIsActivated answers for the calling account, and from SP1 on
activation is per user (D17): the agent's service account (LocalSystem) says nothing about the
users, so the mapping counts the users' machine certificates instead. And the agent never calls
DRMActivate: activating replaces the machine certificate (and an RTM client would go out to the
internet, D10; its activation service is gone, D18).

The declarations follow msdrm.h / msdrmdefs.h of the RMS SDK:

    typedef struct _DRM_CLIENT_VERSION_INFO {
        UINT  uStructVersion;           // in: DRMCLIENTSTRUCTVERSION (1)
        DWORD dwVersion[4];             // out: major, minor, build, private
        WCHAR wszHierarchy[256];        // out: e.g. Production / Pre-production
        WCHAR wszProductId[256];
        WCHAR wszProductDescription[256];
    } DRM_CLIENT_VERSION_INFO;          // 1556 bytes

    HRESULT DRMGetClientVersion(DRM_CLIENT_VERSION_INFO *pDRMClientVersionInfo);
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


class RmsClientApi(Protocol):
    def client_version(self) -> ClientVersion | None:
        """The installed RMS client's four-part version, or None when no RMS client is installed.
        Raises RmsClientError when a client is installed but its version cannot be read."""
        ...


class RmsClientError(ProbeError):
    """msdrm.dll is present but a call failed; the message names the call and its HRESULT."""


@dataclass(frozen=True, slots=True)
class RecordedRmsClient:
    """Answers recorded from a host (fixtures). `error` replays a failing DRMGetClientVersion."""

    version: ClientVersion | None
    error: str | None = None

    def client_version(self) -> ClientVersion | None:
        if self.error is not None:
            raise RmsClientError(self.error)
        return self.version


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


def _load_windll(name: str) -> Any:
    if sys.platform != "win32":
        raise OSError(f"{name} exists only on Windows")
    return ctypes.WinDLL(name)
